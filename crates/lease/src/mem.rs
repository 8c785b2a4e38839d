//! [`MemTable`]: the lease table in memory, with the same conditional semantics as DynamoDB (unit
//! tests of the lease logic and of the consumer's worker loop).

use std::sync::Mutex;

use crate::{
    AlertClaim, Checkpoint, CommitOutcome, Delta, HourClaim, HourState, Lease, LeaseError,
    LeaseTable, ShardCommit, Snapshot, MAX_COMMIT_SHARDS,
};

/// An in-memory lease table.
#[derive(Debug, Default)]
pub struct MemTable {
    state: Mutex<Snapshot>,
}

impl MemTable {
    /// An empty table.
    pub fn new() -> MemTable {
        MemTable::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Snapshot) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl LeaseTable for MemTable {
    fn ensure(&self) -> Result<(), LeaseError> {
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, LeaseError> {
        Ok(self.with(|s| s.clone()))
    }

    fn create_lease(&self, shard: &str, parents: &[String]) -> Result<bool, LeaseError> {
        Ok(self.with(|s| {
            if s.leases.contains_key(shard) {
                return false;
            }
            s.leases.insert(
                shard.to_owned(),
                Lease {
                    shard_id: shard.to_owned(),
                    owner: None,
                    counter: 0,
                    checkpoint: Checkpoint::Initial,
                    parents: parents.to_vec(),
                    owner_switches: 0,
                    max_start: None,
                    watermark: None,
                },
            );
            true
        }))
    }

    fn take(&self, shard: &str, seen_counter: u64, owner: &str) -> Result<Option<u64>, LeaseError> {
        Ok(self.with(|s| {
            let l = s.leases.get_mut(shard)?;
            if l.counter != seen_counter {
                return None;
            }
            l.counter += 1;
            l.owner = Some(owner.to_owned());
            l.owner_switches += 1;
            Some(l.counter)
        }))
    }

    fn renew(&self, shard: &str, owner: &str, counter: u64) -> Result<Option<u64>, LeaseError> {
        Ok(self.with(|s| {
            let l = s.leases.get_mut(shard)?;
            if l.counter != counter || l.owner.as_deref() != Some(owner) {
                return None;
            }
            l.counter += 1;
            Some(l.counter)
        }))
    }

    fn release(&self, shard: &str, owner: &str, counter: u64) -> Result<bool, LeaseError> {
        Ok(self.with(|s| match s.leases.get_mut(shard) {
            Some(l) if l.counter == counter && l.owner.as_deref() == Some(owner) => {
                l.counter += 1;
                l.owner = None;
                true
            }
            _ => false,
        }))
    }

    fn commit(
        &self,
        shards: &[ShardCommit],
        delta: Option<&Delta>,
    ) -> Result<CommitOutcome, LeaseError> {
        if shards.len() > MAX_COMMIT_SHARDS {
            return Err(LeaseError::TooManyItems(shards.len() + 1));
        }
        self.with(|s| {
            let lost: Vec<String> = shards
                .iter()
                .filter(|c| {
                    s.leases.get(&c.shard_id).is_none_or(|l| {
                        l.counter != c.counter || l.owner.as_deref() != Some(c.owner.as_str())
                    })
                })
                .map(|c| c.shard_id.clone())
                .collect();
            if !lost.is_empty() {
                return Ok(CommitOutcome::Lost(lost));
            }
            if let Some(d) = delta.filter(|d| s.deltas.contains_key(&d.id)) {
                // DynamoDB's put condition (attribute_not_exists) cancels the whole transaction.
                return Err(LeaseError::Dynamo {
                    op: "TransactWriteItems",
                    table: "memory".into(),
                    message: format!("TransactionCanceledException: {} exists", d.id),
                    retryable: true,
                });
            }
            for c in shards {
                if let Some(l) = s.leases.get_mut(&c.shard_id) {
                    l.counter += 1;
                    l.checkpoint = c.checkpoint.clone();
                    l.owner_switches = 0;
                    if c.max_start.is_some() {
                        l.max_start = c.max_start;
                    }
                    if c.watermark.is_some() {
                        l.watermark = c.watermark;
                    }
                }
            }
            if let Some(d) = delta {
                s.deltas.insert(d.id.clone(), d.clone());
            }
            Ok(CommitOutcome::Done)
        })
    }

    fn claim_hour(&self, claim: &HourClaim) -> Result<bool, LeaseError> {
        Ok(self.with(|s| {
            if s.hours.contains_key(&claim.hour) || s.frontier.is_some_and(|f| f >= claim.hour) {
                return false;
            }
            s.hours.insert(claim.hour, claim.clone());
            s.frontier = Some(claim.hour);
            true
        }))
    }

    fn take_over_hour(
        &self,
        hour: i64,
        seen_owner: &str,
        seen_at: i64,
        owner: &str,
        now: i64,
    ) -> Result<bool, LeaseError> {
        Ok(self.with(|s| match s.hours.get_mut(&hour) {
            Some(c)
                if c.state == HourState::Claimed
                    && c.owner == seen_owner
                    && c.claimed_at == seen_at =>
            {
                c.owner = owner.to_owned();
                c.claimed_at = now;
                true
            }
            _ => false,
        }))
    }

    fn hour_done(&self, hour: i64) -> Result<(), LeaseError> {
        self.with(|s| {
            if let Some(c) = s.hours.get_mut(&hour) {
                c.state = HourState::Done;
            }
        });
        Ok(())
    }

    fn remove_delta_hour(&self, delta_id: &str, hour: i64) -> Result<bool, LeaseError> {
        Ok(self.with(|s| match s.deltas.get_mut(delta_id) {
            Some(d) => {
                d.hours.retain(|h| *h != hour);
                d.hours.is_empty()
            }
            None => true,
        }))
    }

    fn claim_alert(&self, alert: &AlertClaim) -> Result<bool, LeaseError> {
        Ok(self.with(|s| match s.alerts.get(&alert.id) {
            Some(a) => a.owner == alert.owner && !a.sent,
            None => {
                s.alerts.insert(alert.id.clone(), AlertClaim { sent: false, ..alert.clone() });
                true
            }
        }))
    }

    fn alert_sent(&self, id: &str) -> Result<(), LeaseError> {
        self.with(|s| {
            if let Some(a) = s.alerts.get_mut(id) {
                a.sent = true;
            }
        });
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), LeaseError> {
        self.with(|s| {
            s.leases.remove(key);
            s.deltas.remove(key);
            if let Some(id) = key.strip_prefix("alert#") {
                s.alerts.remove(id);
            }
            if let Some(h) = key.strip_prefix("hour#").and_then(|h| h.parse::<i64>().ok()) {
                s.hours.remove(&h);
            }
        });
        Ok(())
    }
}
