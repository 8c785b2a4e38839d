//! Threat lists for flowspike (GuardDuty's TorClient / MaliciousIPCaller.Custom findings): flows
//! between internal hosts and addresses on user-supplied lists, matched at line rate and
//! aggregated per (hour, internal address, list).
//!
//! - [`ThreatList`]: one list, parsed from text (one IP or CIDR per line, IPv4 and IPv6, `#`
//!   comments and blank lines allowed).
//! - [`ThreatLists`]: up to 64 lists compiled into a prefix table; [`ThreatLists::matches`] gives
//!   the [`ListMask`] of the lists an address is on (a miss in a /16 no list touches is one load
//!   from an 8 KiB bitmap; figures in `benches/threat.rs`).
//! - [`ListSource`], [`FileSource`], [`Reloader`]: where lists come from and their reload when they
//!   change (a bad new list keeps the old one).
//! - [`ThreatTap`]: one per worker; [`ThreatTap::add`] a [`Flow`], [`ThreatTap::merge`] the
//!   workers' taps, [`ThreatTap::finish`] into [`MatchRow`]s, with bounded memory per row;
//!   [`merge_match_rows`] merges rows already made (late records of a written hour).
//! - [`match_schema`], [`match_batch`], [`match_rows`]: the rows as Arrow (the history table).
//! - [`naive`]: the exact reference the fast path is property-tested against.
//!
//! An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is an IPv6 address here: it matches IPv6
//! entries only (`::ffff:a.b.c.d` or a network holding it), never the IPv4 entry `a.b.c.d`. VPC
//! Flow Logs write IPv4 flows as IPv4, so a mapped address in a record is what the packet carried.
//!
//! ```
//! use flowspike_threat::{ThreatList, ThreatLists};
//! let tor = ThreatList::parse("tor", b"# exits\n185.220.101.0/24\n2001:db8::1\n").unwrap();
//! let lists = ThreatLists::new(vec![tor]).unwrap();
//! assert_eq!(lists.matches("185.220.101.7".parse().unwrap()), 0b1);
//! assert_eq!(lists.matches("185.220.102.7".parse().unwrap()), 0);
//! assert_eq!(lists.matches("::ffff:185.220.101.7".parse().unwrap()), 0);
//! ```

mod arrow;
mod error;
mod list;
pub mod naive;
mod reload;
mod table;
mod tap;

pub use arrow::{match_batch, match_rows, match_schema};
pub use error::ThreatError;
pub use list::ThreatList;
pub use reload::{list_name, FileSource, ListSource, Reloader};
pub use table::{ThreatLists, MAX_LISTS};
pub use tap::{merge_match_rows, Flow, MatchRow, ThreatConfig, ThreatSnapshot, ThreatTap};

/// The lists an address is on: bit `i` set when list `i` (in [`ThreatLists::names`] order)
/// holds it; `0` when it is on none.
pub type ListMask = u64;
