//! [`Columns`]: aggregate rows stored column by column, texts in one buffer per column.
//!
//! A replay turns hundreds of thousands of aggregates into history files at once. As
//! [`AggregateRow`]s that is one `String` per address (a source and every destination): about a
//! million small allocations to make, copy into Arrow builders and free. Columns hold the same
//! values with every text of a column appended to one buffer, which is what an Arrow array is made
//! of, so the Parquet encoder copies whole buffers and the detection reads sources in place.

use crate::AggregateRow;

/// Texts one after another in one buffer: text `i` is `data[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    /// `len + 1` ascending positions in `data`, starting at 0.
    offsets: Vec<usize>,
    data: String,
}

impl Default for Texts {
    fn default() -> Self {
        Texts { offsets: vec![0], data: String::new() }
    }
}

impl Texts {
    /// Empty, with room for `items` texts of `bytes` bytes in all.
    pub fn with_capacity(items: usize, bytes: usize) -> Texts {
        let mut offsets = Vec::with_capacity(items + 1);
        offsets.push(0);
        Texts { offsets, data: String::with_capacity(bytes) }
    }

    /// Appends a text.
    #[inline]
    pub fn push(&mut self, s: &str) {
        self.data.push_str(s);
        self.offsets.push(self.data.len());
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when there is no text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Text `i` (empty when out of range).
    #[inline]
    pub fn get(&self, i: usize) -> &str {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.data.get(a..b).unwrap_or_default(),
            _ => "",
        }
    }

    /// The `len + 1` positions where texts start (the last one: where the last text ends).
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// All texts, one after another.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// Texts `range` (indices), in order.
    fn slice(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &str> + '_ {
        range.map(move |i| self.get(i))
    }
}

/// A list of texts per row: row `i`'s texts are `items` `starts[i]..starts[i + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLists {
    /// `rows + 1` ascending indices into `items`, starting at 0.
    starts: Vec<usize>,
    items: Texts,
}

impl Default for TextLists {
    fn default() -> Self {
        TextLists { starts: vec![0], items: Texts::default() }
    }
}

impl TextLists {
    /// Empty, with room for `rows` lists holding `items` texts of `bytes` bytes in all.
    pub fn with_capacity(rows: usize, items: usize, bytes: usize) -> TextLists {
        let mut starts = Vec::with_capacity(rows + 1);
        starts.push(0);
        TextLists { starts, items: Texts::with_capacity(items, bytes) }
    }

    /// Appends a text to the list being built (the row's list ends at [`TextLists::end_list`]).
    #[inline]
    pub fn push_item(&mut self, s: &str) {
        self.items.push(s);
    }

    /// Ends the current row's list.
    #[inline]
    pub fn end_list(&mut self) {
        self.starts.push(self.items.len());
    }

    /// Number of lists.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// True when there is no list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The texts of list `i` (none when out of range).
    pub fn list(&self, i: usize) -> impl Iterator<Item = &str> + '_ {
        let range = match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => a..b,
            _ => 0..0,
        };
        self.items.slice(range)
    }

    /// The `len + 1` indices into [`TextLists::items`] where lists start.
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }

    /// Every list's texts, one list after another.
    pub fn items(&self) -> &Texts {
        &self.items
    }
}

/// Aggregate rows as columns, one entry per row in each (the fields of [`AggregateRow`]). Built
/// by [`crate::columns_of_maps`] (rows sorted by `src_ip` as text; the counter's
/// `ShardedCounter::into_hour_columns`) or from rows with [`Columns::from_rows`]; [`Columns::row`]
/// gives a row back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    /// [`AggregateRow::hour`].
    pub hour: Vec<i64>,
    /// [`AggregateRow::src_ip`].
    pub src_ip: Texts,
    /// [`AggregateRow::blocked_count`].
    pub blocked_count: Vec<u64>,
    /// [`AggregateRow::unique_dest_count`].
    pub unique_dest_count: Vec<u64>,
    /// [`AggregateRow::dest_ips`].
    pub dest_ips: TextLists,
    /// [`AggregateRow::interface_ids`].
    pub interface_ids: TextLists,
    /// [`AggregateRow::bytes`].
    pub bytes: Vec<u64>,
    /// [`AggregateRow::packets`].
    pub packets: Vec<u64>,
    /// [`AggregateRow::dest_ips_truncated`].
    pub dest_ips_truncated: Vec<bool>,
    /// [`AggregateRow::dest_hll`].
    pub dest_hll: Vec<Option<Vec<u8>>>,
}

impl Columns {
    /// Empty, with room for `rows` rows: sources of `src_bytes` bytes in all, and `(count, bytes)`
    /// of their destinations and of their interface ids.
    pub(crate) fn with_capacity(
        rows: usize,
        src_bytes: usize,
        (dests, dest_bytes): (usize, usize),
        (ids, id_bytes): (usize, usize),
    ) -> Columns {
        Columns {
            hour: Vec::with_capacity(rows),
            src_ip: Texts::with_capacity(rows, src_bytes),
            blocked_count: Vec::with_capacity(rows),
            unique_dest_count: Vec::with_capacity(rows),
            dest_ips: TextLists::with_capacity(rows, dests, dest_bytes),
            interface_ids: TextLists::with_capacity(rows, ids, id_bytes),
            bytes: Vec::with_capacity(rows),
            packets: Vec::with_capacity(rows),
            dest_ips_truncated: Vec::with_capacity(rows),
            dest_hll: Vec::with_capacity(rows),
        }
    }

    /// The rows as columns, in the same order.
    pub fn from_rows(rows: &[AggregateRow]) -> Columns {
        let count = |f: fn(&AggregateRow) -> &[String]| {
            rows.iter().map(f).fold((0, 0), |(k, b), v| {
                (k + v.len(), b + v.iter().map(String::len).sum::<usize>())
            })
        };
        let src_bytes = rows.iter().map(|r| r.src_ip.len()).sum();
        let mut c = Columns::with_capacity(
            rows.len(),
            src_bytes,
            count(|r| &r.dest_ips),
            count(|r| &r.interface_ids),
        );
        for r in rows {
            c.hour.push(r.hour);
            c.src_ip.push(&r.src_ip);
            c.blocked_count.push(r.blocked_count);
            c.unique_dest_count.push(r.unique_dest_count);
            r.dest_ips.iter().for_each(|d| c.dest_ips.push_item(d));
            c.dest_ips.end_list();
            r.interface_ids.iter().for_each(|i| c.interface_ids.push_item(i));
            c.interface_ids.end_list();
            c.bytes.push(r.bytes);
            c.packets.push(r.packets);
            c.dest_ips_truncated.push(r.dest_ips_truncated);
            c.dest_hll.push(r.dest_hll.clone());
        }
        c
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.hour.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.hour.is_empty()
    }

    /// True when every column has [`Columns::len`] entries (the fields are public; the builders
    /// of this crate always keep them so). The history's `encode_parquet` refuses others;
    /// reading them gives default values past a shorter column, never a panic.
    pub fn lengths_agree(&self) -> bool {
        let n = self.len();
        [
            self.src_ip.len(),
            self.blocked_count.len(),
            self.unique_dest_count.len(),
            self.dest_ips.len(),
            self.interface_ids.len(),
            self.bytes.len(),
            self.packets.len(),
            self.dest_ips_truncated.len(),
            self.dest_hll.len(),
        ]
        .iter()
        .all(|&l| l == n)
    }

    /// Row `i` (a default row when out of range; default values past a shorter column).
    pub fn row(&self, i: usize) -> AggregateRow {
        if i >= self.len() {
            return AggregateRow::default();
        }
        let at = |v: &[u64]| v.get(i).copied().unwrap_or_default();
        AggregateRow {
            hour: self.hour[i],
            src_ip: self.src_ip.get(i).to_owned(),
            blocked_count: at(&self.blocked_count),
            unique_dest_count: at(&self.unique_dest_count),
            dest_ips: self.dest_ips.list(i).map(str::to_owned).collect(),
            interface_ids: self.interface_ids.list(i).map(str::to_owned).collect(),
            bytes: at(&self.bytes),
            packets: at(&self.packets),
            dest_ips_truncated: self.dest_ips_truncated.get(i).copied().unwrap_or_default(),
            dest_hll: self.dest_hll.get(i).cloned().flatten(),
        }
    }

    /// Every row, in order.
    pub fn to_rows(&self) -> Vec<AggregateRow> {
        (0..self.len()).map(|i| self.row(i)).collect()
    }

    /// True when every row has `hour` and the sources are strictly ascending as text (one row per
    /// source, in the history's order).
    pub fn is_hour_sorted_unique(&self, hour: i64) -> bool {
        self.hour.iter().all(|&h| h == hour)
            && (1..self.len()).all(|i| self.src_ip.get(i - 1) < self.src_ip.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(src: &str, dests: &[&str], ids: &[&str], hll: Option<Vec<u8>>) -> AggregateRow {
        AggregateRow {
            hour: 7200,
            src_ip: src.into(),
            blocked_count: 3,
            unique_dest_count: dests.len() as u64 + u64::from(hll.is_some()),
            dest_ips: dests.iter().map(|s| s.to_string()).collect(),
            interface_ids: ids.iter().map(|s| s.to_string()).collect(),
            bytes: 120,
            packets: 4,
            dest_ips_truncated: hll.is_some(),
            dest_hll: hll,
        }
    }

    #[test]
    fn rows_round_trip_through_columns() {
        let rows = vec![
            row("10.0.0.1", &["1.1.1.1", "8.8.8.8"], &["eni-1"], None),
            row("10.0.0.2", &[], &[], None),
            row("fd00::1", &["2001:db8::1"], &["eni-2", "eni-3"], Some(vec![1, 2, 3])),
            row("10.0.0.3", &["9.9.9.9"], &[], None),
        ];
        let c = Columns::from_rows(&rows);
        assert_eq!(c.len(), 4);
        assert_eq!(c.to_rows(), rows);
        assert_eq!(c.src_ip.get(2), "fd00::1");
        assert_eq!(c.dest_ips.starts(), [0, 2, 2, 3, 4]);
        assert_eq!(c.dest_ips.items().data(), "1.1.1.18.8.8.82001:db8::19.9.9.9");
        assert_eq!(c.row(4), AggregateRow::default());
        assert_eq!(c.src_ip.get(9), "");
        // Sources 10.0.0.1, 10.0.0.2, fd00::1, 10.0.0.3: not ascending.
        assert!(!c.is_hour_sorted_unique(7200));
        let sorted = Columns::from_rows(&rows[..3]);
        assert!(sorted.is_hour_sorted_unique(7200));
        assert!(!sorted.is_hour_sorted_unique(3600));
        // Public fields can disagree: reads give defaults, never a panic.
        let mut short = sorted.clone();
        short.packets.truncate(1);
        short.dest_hll.clear();
        assert!(sorted.lengths_agree() && !short.lengths_agree());
        assert_eq!(short.row(2), AggregateRow { packets: 0, dest_hll: None, ..rows[2].clone() });
        let dup = Columns::from_rows(&[rows[0].clone(), rows[0].clone()]);
        assert!(!dup.is_hour_sorted_unique(7200));
        assert!(Columns::default().is_empty() && Columns::default().is_hour_sorted_unique(0));
    }
}
