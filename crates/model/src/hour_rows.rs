//! [`HourRows`]: one hour's aggregates borrowed in whichever form the caller holds.

use crate::{AggregateRow, Columns};

/// The rows of one hour, as [`AggregateRow`]s or as [`Columns`] (what a replay builds; columns
/// shorter than `hour` read as zero counts and empty lists past their end). What the history
/// writes (`History::write_hour_file`) and the detection reads, so neither form is converted into
/// the other on the way.
#[derive(Debug, Clone, Copy)]
pub enum HourRows<'a> {
    /// Rows.
    Rows(&'a [AggregateRow]),
    /// Rows as columns.
    Columns(&'a Columns),
}

impl<'a> From<&'a [AggregateRow]> for HourRows<'a> {
    fn from(rows: &'a [AggregateRow]) -> Self {
        HourRows::Rows(rows)
    }
}

impl<'a> From<&'a Vec<AggregateRow>> for HourRows<'a> {
    fn from(rows: &'a Vec<AggregateRow>) -> Self {
        HourRows::Rows(rows)
    }
}

impl<'a> From<&'a Columns> for HourRows<'a> {
    fn from(columns: &'a Columns) -> Self {
        HourRows::Columns(columns)
    }
}

impl<'a> HourRows<'a> {
    /// Number of rows.
    pub fn len(self) -> usize {
        match self {
            HourRows::Rows(r) => r.len(),
            HourRows::Columns(c) => c.len(),
        }
    }

    /// True when there is no row.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s hour (`i < len`).
    pub fn hour(self, i: usize) -> i64 {
        match self {
            HourRows::Rows(r) => r[i].hour,
            HourRows::Columns(c) => c.hour[i],
        }
    }

    /// Row `i`'s source (`i < len`).
    pub fn src_ip(self, i: usize) -> &'a str {
        match self {
            HourRows::Rows(r) => &r[i].src_ip,
            HourRows::Columns(c) => c.src_ip.get(i),
        }
    }

    /// Row `i`'s count (`i < len`).
    pub fn blocked_count(self, i: usize) -> u64 {
        match self {
            HourRows::Rows(r) => r[i].blocked_count,
            HourRows::Columns(c) => c.blocked_count.get(i).copied().unwrap_or_default(),
        }
    }

    /// Row `i`'s destination count, destinations and interface ids (`i < len`).
    pub fn dests_and_interfaces(self, i: usize) -> (u64, Vec<String>, Vec<String>) {
        match self {
            HourRows::Rows(r) => {
                (r[i].unique_dest_count, r[i].dest_ips.clone(), r[i].interface_ids.clone())
            }
            HourRows::Columns(c) => (
                c.unique_dest_count.get(i).copied().unwrap_or_default(),
                c.dest_ips.list(i).map(str::to_owned).collect(),
                c.interface_ids.list(i).map(str::to_owned).collect(),
            ),
        }
    }

    /// True when every row has `hour` and the sources are strictly ascending as text (one row per
    /// source, in the history's order).
    pub fn is_hour_sorted_unique(self, hour: i64) -> bool {
        match self {
            HourRows::Rows(r) => {
                r.iter().all(|r| r.hour == hour) && r.windows(2).all(|w| w[0].src_ip < w[1].src_ip)
            }
            HourRows::Columns(c) => c.is_hour_sorted_unique(hour),
        }
    }

    /// The rows, owned.
    pub fn to_rows(self) -> Vec<AggregateRow> {
        match self {
            HourRows::Rows(r) => r.to_vec(),
            HourRows::Columns(c) => c.to_rows(),
        }
    }
}
