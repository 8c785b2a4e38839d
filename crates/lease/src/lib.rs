//! Shard leases for several `flowspike consume` tasks on one Kinesis stream, in a DynamoDB table,
//! after the Kinesis Client Library's design.
//!
//! # The table
//! One table per consumer application (`--lease-table`), hash key `leaseKey` (S), on-demand
//! capacity; created if absent. Five kinds of items:
//! - **shard leases** (`leaseKey` = the shard id): `leaseOwner` (absent = free), `leaseCounter` (N,
//!   increased by every renewal, take and checkpoint, and the fence of every conditional write),
//!   `checkpoint` (`TRIM_HORIZON` before the first commit, a sequence number, or `SHARD_END`),
//!   `parentShardIds` (SS), `ownerSwitchesSinceCheckpoint` (N), and flowspike's `maxStart` (N, the
//!   largest committed flow `start`) and `watermark` (N, the shard's committed event-time watermark);
//! - **deltas** (`leaseKey` = `delta#<worker>#<generation>`): one per commit of one worker, naming the
//!   Parquet file with the aggregates of the records that commit covered (`file`), the snapshot of
//!   the other detections' taps of those records (`tapsFile`, absent when none) and the hours of
//!   those rows and taps not yet accounted for (`hours`, NS);
//! - **hour claims** (`leaseKey` = `hour#<unix hour>`): the one worker that finalizes an hour, the
//!   deltas it merges (`parts`, fixed by the claim) and `state` (`CLAIMED`, `DONE`); and the claim
//!   frontier (`leaseKey` = `meta#frontier`, `hour`): the highest hour claimed, moved forward by each
//!   claim in the same transaction, so hours are claimed in increasing order only;
//! - **early alerts** (`leaseKey` = `alert#<spike id>`): the one worker that sends an early alert of
//!   an open hour (`hour`, `owner`, `state` `CLAIMED` then `SENT`), so that no other worker and not
//!   the hour's close sends it again ([`LeaseTable::claim_alert`]).
//!
//! # Guarantees
//! - A commit is one `TransactWriteItems`: every shard position it advances is conditioned on the
//!   committing worker still owning the lease with the counter it knows, and the delta item is
//!   written in the same transaction. A worker that lost a lease (expired or stolen) cannot commit
//!   records of that shard: its delta never becomes visible, and the next owner reads from the last
//!   committed position. Nothing is lost or counted twice.
//! - An hour is claimed by exactly one conditional put; the claim fixes the parts. Deltas committed
//!   later with rows of that hour are late corrections, published separately.
//!
//! [`LeaseTable`] is the interface ([`DynamoTable`] for DynamoDB, [`MemTable`] in memory for unit
//! tests); [`plan_takes`] and [`global_watermark`] are the pure decisions over a [`Snapshot`].

mod dynamo;
mod mem;
mod plan;

use std::collections::BTreeMap;

pub use dynamo::DynamoTable;
pub use mem::MemTable;
pub use plan::{active_leases, global_watermark, plan_takes, Expiry, Take};

/// The checkpoint sentinel of a lease nothing was committed for yet.
pub const INITIAL: &str = "TRIM_HORIZON";
/// The checkpoint sentinel of a shard read to its end.
pub const SHARD_END: &str = "SHARD_END";

/// Where a shard's committed position is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Nothing committed yet: start at the consumer's configured start position.
    Initial,
    /// Resume after this sequence number.
    After(String),
    /// The shard is closed and was read to its end.
    ShardEnd,
}

impl Checkpoint {
    /// The attribute value.
    pub fn as_str(&self) -> &str {
        match self {
            Checkpoint::Initial => INITIAL,
            Checkpoint::After(s) => s,
            Checkpoint::ShardEnd => SHARD_END,
        }
    }

    /// Parses the attribute value (the KCL's sentinels `TRIM_HORIZON`, `LATEST` and `AT_TIMESTAMP`
    /// all mean "nothing committed").
    pub fn parse(s: &str) -> Checkpoint {
        match s {
            SHARD_END => Checkpoint::ShardEnd,
            "TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP" | "" => Checkpoint::Initial,
            seq => Checkpoint::After(seq.to_owned()),
        }
    }
}

/// One shard's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard id (`leaseKey`).
    pub shard_id: String,
    /// The worker holding it; `None` when free.
    pub owner: Option<String>,
    /// The fence: increased by every renewal, take and commit.
    pub counter: u64,
    /// The committed position.
    pub checkpoint: Checkpoint,
    /// Parent shards (read to their end before this one starts).
    pub parents: Vec<String>,
    /// Times the lease changed owner since its last checkpoint.
    pub owner_switches: u64,
    /// Largest committed flow-record `start` (unix seconds).
    pub max_start: Option<u64>,
    /// The committed event-time watermark of the shard (unix seconds).
    pub watermark: Option<i64>,
}

/// A worker's committed aggregates of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// `delta#<worker>#<generation>`.
    pub id: String,
    /// The Parquet file (state store key) with the rows.
    pub file: String,
    /// The snapshot of the other detections' taps of the same commit (state store key of
    /// `flowspike_detections::Taps::to_snapshot`, by hour), attribute `tapsFile`; `None`: no taps
    /// (detections off, or a delta of a release without them).
    pub taps_file: Option<String>,
    /// Hours with rows or taps in the files that no final or correction file accounts for yet.
    pub hours: Vec<i64>,
}

/// The state of an hour claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HourState {
    /// Claimed; the final file, detection and spikes may not be done yet.
    Claimed,
    /// Final file written, hour evaluated, spikes emitted.
    Done,
}

/// The claim of one hour's finalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourClaim {
    /// The hour (unix seconds, multiple of 3600).
    pub hour: i64,
    /// The claiming (or last taking-over) worker.
    pub owner: String,
    /// The ids of the deltas whose rows of this hour the final file holds.
    pub parts: Vec<String>,
    /// Progress.
    pub state: HourState,
    /// Wall-clock second of the claim or takeover (a claim left unfinished this long is taken over).
    pub claimed_at: i64,
}

/// Everything in the table, read with one strongly consistent scan (not isolated from concurrent
/// transactions: an item may be seen before a transaction and another one after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Shard leases by shard id.
    pub leases: BTreeMap<String, Lease>,
    /// Deltas by id.
    pub deltas: BTreeMap<String, Delta>,
    /// Hour claims by hour.
    pub hours: BTreeMap<i64, HourClaim>,
    /// The highest hour ever claimed (item [`FRONTIER_KEY`]): hours are claimed in increasing order
    /// only; rows of a lower hour without a claim are late corrections.
    pub frontier: Option<i64>,
    /// Early alerts claimed by a worker, by spike id.
    pub alerts: BTreeMap<String, AlertClaim>,
}

/// An early alert of an open hour, claimed by the worker that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertClaim {
    /// The spike id.
    pub id: String,
    /// The alert's hour (unix seconds).
    pub hour: i64,
    /// The claiming worker.
    pub owner: String,
    /// True once the alert was sent ([`LeaseTable::alert_sent`]). A claim left unsent (its worker
    /// stopped between the claim and the emission) does not keep the hour's close from sending it.
    pub sent: bool,
}

/// The `leaseKey` of the claim frontier item.
pub const FRONTIER_KEY: &str = "meta#frontier";

/// A shard position to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCommit {
    /// The shard.
    pub shard_id: String,
    /// The committing worker (must still own the lease).
    pub owner: String,
    /// The counter the worker knows (must still be the lease's).
    pub counter: u64,
    /// The new position.
    pub checkpoint: Checkpoint,
    /// Largest flow `start` committed.
    pub max_start: Option<u64>,
    /// The shard's event-time watermark.
    pub watermark: Option<i64>,
}

/// The outcome of [`LeaseTable::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed: every lease's counter is now one more than given.
    Done,
    /// Nothing committed: these shards' leases are no longer the worker's (or have another
    /// counter). Drop them and commit the rest again.
    Lost(Vec<String>),
}

/// Lease table errors.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A DynamoDB call failed.
    #[error("dynamodb {op} on table {table}: {message}")]
    Dynamo {
        /// The operation.
        op: &'static str,
        /// The table.
        table: String,
        /// The service's error or the transport error.
        message: String,
        /// Throttling, timeouts, 5xx, transaction conflicts: worth retrying.
        retryable: bool,
    },
    /// An item of the table has an unexpected shape.
    #[error("lease table {table}: item {key}: {reason}")]
    BadItem {
        /// The table.
        table: String,
        /// The item's `leaseKey`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A commit names more items than one transaction takes.
    #[error("a commit of {0} items exceeds the transaction limit of 100")]
    TooManyItems(usize),
}

impl LeaseError {
    /// True when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LeaseError::Dynamo { retryable: true, .. })
    }
}

/// The most items one commit may name (DynamoDB transactions take 100; one is the delta).
pub const MAX_COMMIT_SHARDS: usize = 99;

/// The lease table. Every write is conditional; methods that can lose a race return `false` or
/// `None` instead of an error.
pub trait LeaseTable: Send + Sync {
    /// Creates the table if absent and waits until it is usable.
    fn ensure(&self) -> Result<(), LeaseError>;
    /// Reads every item (strongly consistent).
    fn snapshot(&self) -> Result<Snapshot, LeaseError>;
    /// Creates a free lease at [`INITIAL`] for `shard` unless one exists; true if created.
    fn create_lease(&self, shard: &str, parents: &[String]) -> Result<bool, LeaseError>;
    /// Takes `shard` for `owner` if its counter is still `seen_counter` (free, expired or stolen);
    /// the new counter, or `None` if the lease changed meanwhile.
    fn take(&self, shard: &str, seen_counter: u64, owner: &str) -> Result<Option<u64>, LeaseError>;
    /// Renews `owner`'s lease on `shard` if its counter is still `counter`; the new counter, or
    /// `None` if the lease was lost.
    fn renew(&self, shard: &str, owner: &str, counter: u64) -> Result<Option<u64>, LeaseError>;
    /// Gives the lease up (free for others at once); false if it was no longer `owner`'s.
    fn release(&self, shard: &str, owner: &str, counter: u64) -> Result<bool, LeaseError>;
    /// Atomically advances the given leases (each conditioned on owner and counter) and writes
    /// `delta` (if any).
    fn commit(
        &self,
        shards: &[ShardCommit],
        delta: Option<&Delta>,
    ) -> Result<CommitOutcome, LeaseError>;
    /// Puts `claim` unless the hour is claimed or a later hour was (the frontier moves with the claim,
    /// in one transaction); true if this call claimed it.
    fn claim_hour(&self, claim: &HourClaim) -> Result<bool, LeaseError>;
    /// Takes an unfinished claim over if it is still the one seen (`seen_owner`, `seen_at`).
    fn take_over_hour(
        &self,
        hour: i64,
        seen_owner: &str,
        seen_at: i64,
        owner: &str,
        now: i64,
    ) -> Result<bool, LeaseError>;
    /// Marks the hour [`HourState::Done`].
    fn hour_done(&self, hour: i64) -> Result<(), LeaseError>;
    /// Removes `hour` from the delta's hours; true when the delta has no hours left.
    fn remove_delta_hour(&self, delta_id: &str, hour: i64) -> Result<bool, LeaseError>;
    /// Claims the early alert `alert` unless it is claimed (a conditional put of
    /// [`alert_key`], `state` `CLAIMED`); true if this call claimed it, or if `alert.owner` holds
    /// an unsent claim of it (an earlier attempt whose answer or emission was lost).
    fn claim_alert(&self, alert: &AlertClaim) -> Result<bool, LeaseError>;
    /// Marks the claimed early alert `id` as sent.
    fn alert_sent(&self, id: &str) -> Result<(), LeaseError>;
    /// Deletes an item (a delta with no hours left, the lease of a shard Kinesis no longer lists,
    /// the early alerts of a finalized hour).
    fn delete(&self, key: &str) -> Result<(), LeaseError>;
}

/// The `leaseKey` of a delta.
pub fn delta_key(worker: &str, generation: u64) -> String {
    format!("delta#{worker}#{generation:020}")
}

/// The `leaseKey` of an early alert claim.
pub fn alert_key(id: &str) -> String {
    format!("alert#{id}")
}

/// The `leaseKey` of an hour claim.
pub fn hour_key(hour: i64) -> String {
    format!("hour#{hour}")
}

#[cfg(test)]
mod tests;
