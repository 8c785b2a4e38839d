//! [`DynamoTable`]: the lease table in Amazon DynamoDB (aws-sdk-dynamodb), blocking calls on a
//! tokio runtime handle.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use crate::{
    Checkpoint, CommitOutcome, Delta, HourClaim, HourState, Lease, LeaseError, LeaseTable,
    ShardCommit, Snapshot, MAX_COMMIT_SHARDS,
};

/// The hash key of the table.
pub const KEY: &str = "leaseKey";
/// How long [`LeaseTable::ensure`] waits for a new table to become ACTIVE.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

type Item = HashMap<String, AttributeValue>;

/// The lease table in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoTable {
    client: Client,
    table: String,
    handle: tokio::runtime::Handle,
}

impl DynamoTable {
    /// A table named `table`, called through `client` on the runtime behind `handle`. The methods
    /// block: call them from outside the runtime.
    pub fn new(client: Client, table: impl Into<String>, handle: tokio::runtime::Handle) -> Self {
        DynamoTable { client, table: table.into(), handle }
    }

    /// A client from the standard AWS configuration (`AWS_ENDPOINT_URL_DYNAMODB` or
    /// `AWS_ENDPOINT_URL` for a local endpoint).
    pub async fn client_from_env() -> Client {
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Client::new(&conf)
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.table
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    fn err<E>(
        &self,
        op: &'static str,
        e: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> LeaseError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let retryable = match &e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(s) => {
                let code = s.err().code().unwrap_or_default();
                s.raw().status().as_u16() >= 500
                    || matches!(
                        code,
                        "ProvisionedThroughputExceededException"
                            | "ThrottlingException"
                            | "RequestLimitExceeded"
                            | "InternalServerError"
                            | "TransactionConflictException"
                            | "TransactionInProgressException"
                            | "ServiceUnavailable"
                    )
            }
            _ => false,
        };
        let message = match e.as_service_error() {
            Some(s) => {
                format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or_default())
            }
            None => format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&e)),
        };
        LeaseError::Dynamo { op, table: self.table.clone(), message, retryable }
    }

    fn build_err(&self, op: &'static str, e: impl std::fmt::Display) -> LeaseError {
        LeaseError::Dynamo {
            op,
            table: self.table.clone(),
            message: e.to_string(),
            retryable: false,
        }
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> LeaseError {
        LeaseError::BadItem {
            table: self.table.clone(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn parse_into(&self, item: &Item, snap: &mut Snapshot) -> Result<(), LeaseError> {
        let key = s_attr(item, KEY).ok_or_else(|| self.bad("?", "no leaseKey"))?;
        let num = |name: &str| -> Result<Option<i64>, LeaseError> {
            match item.get(name) {
                None => Ok(None),
                Some(AttributeValue::N(n)) => n
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| self.bad(&key, format!("{name} is not an integer: {n}"))),
                Some(_) => Err(self.bad(&key, format!("{name} is not a number"))),
            }
        };
        if key.starts_with("delta#") {
            let file = s_attr(item, "file").ok_or_else(|| self.bad(&key, "no file"))?;
            let hours = match item.get("hours") {
                Some(AttributeValue::Ns(v)) => v
                    .iter()
                    .map(|h| h.parse::<i64>().map_err(|_| self.bad(&key, "bad hour")))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            snap.deltas.insert(key.clone(), Delta { id: key, file, hours });
        } else if key == crate::FRONTIER_KEY {
            snap.frontier = num("hour")?;
        } else if let Some(h) = key.strip_prefix("hour#") {
            let hour = h.parse::<i64>().map_err(|_| self.bad(&key, "bad hour key"))?;
            let parts = match item.get("parts") {
                Some(AttributeValue::Ss(v)) => v.clone(),
                _ => Vec::new(),
            };
            let state = match s_attr(item, "state").as_deref() {
                Some("DONE") => HourState::Done,
                _ => HourState::Claimed,
            };
            snap.hours.insert(
                hour,
                HourClaim {
                    hour,
                    owner: s_attr(item, "owner").unwrap_or_default(),
                    parts,
                    state,
                    claimed_at: num("claimedAt")?.unwrap_or(0),
                },
            );
        } else {
            let lease = Lease {
                owner: s_attr(item, "leaseOwner"),
                counter: num("leaseCounter")?.unwrap_or(0).max(0) as u64,
                checkpoint: Checkpoint::parse(&s_attr(item, "checkpoint").unwrap_or_default()),
                parents: match item.get("parentShardIds") {
                    Some(AttributeValue::Ss(v)) => v.clone(),
                    _ => Vec::new(),
                },
                owner_switches: num("ownerSwitchesSinceCheckpoint")?.unwrap_or(0).max(0) as u64,
                max_start: max_start_of(item, &key),
                watermark: num("watermark")?,
                shard_id: key.clone(),
            };
            snap.leases.insert(key, lease);
        }
        Ok(())
    }

    /// A conditional update; `Ok(None)` when the condition failed.
    async fn update(
        &self,
        op: &'static str,
        key: &str,
        expr: &str,
        cond: Option<&str>,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Option<Item>, LeaseError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(key.to_owned()))
            .update_expression(expr)
            .return_values(ReturnValue::AllNew);
        if let Some(c) = cond {
            req = req.condition_expression(c);
        }
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(r) => Ok(Some(r.attributes().cloned().unwrap_or_default())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err(op, e)),
        }
    }
}

fn s_attr(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A lease's `maxStart`: an unsigned number, as [`LeaseTable::commit`] writes it (any `u64`: a
/// value past `i64::MAX` is decoded, not refused; the worker judges whether it is plausible). A
/// value that is not an unsigned integer is logged and read as absent — never an error: one bad
/// item must not stop every worker of the group at each scan.
fn max_start_of(item: &Item, key: &str) -> Option<u64> {
    match item.get("maxStart") {
        None => None,
        Some(AttributeValue::N(v)) => match v.parse::<u64>() {
            Ok(m) => Some(m),
            Err(_) => {
                tracing::warn!(lease_key = key, max_start = %v, "maxStart is not an unsigned integer; ignored");
                None
            }
        },
        Some(_) => {
            tracing::warn!(lease_key = key, "maxStart is not a number; ignored");
            None
        }
    }
}

fn counter_of(item: &Item) -> Option<u64> {
    match item.get("leaseCounter") {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

const LEASE_NAMES: [(&str, &str); 2] = [("#o", "leaseOwner"), ("#c", "leaseCounter")];

impl LeaseTable for DynamoTable {
    fn ensure(&self) -> Result<(), LeaseError> {
        self.block(async {
            let exists = match self.client.describe_table().table_name(&self.table).send().await {
                Ok(_) => true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    false
                }
                Err(e) => return Err(self.err("DescribeTable", e)),
            };
            if !exists {
                let ks = KeySchemaElement::builder()
                    .attribute_name(KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| self.build_err("CreateTable", e))?;
                let ad = AttributeDefinition::builder()
                    .attribute_name(KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| self.build_err("CreateTable", e))?;
                match self
                    .client
                    .create_table()
                    .table_name(&self.table)
                    .key_schema(ks)
                    .attribute_definitions(ad)
                    .billing_mode(BillingMode::PayPerRequest)
                    .send()
                    .await
                {
                    Ok(_) => tracing::info!(table = %self.table, "lease table created"),
                    // Another worker created it at the same moment.
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_in_use_exception()) => {}
                    Err(e) => return Err(self.err("CreateTable", e)),
                }
            }
            let deadline = Instant::now() + CREATE_TIMEOUT;
            loop {
                let d = self
                    .client
                    .describe_table()
                    .table_name(&self.table)
                    .send()
                    .await
                    .map_err(|e| self.err("DescribeTable", e))?;
                if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(LeaseError::Dynamo {
                        op: "DescribeTable",
                        table: self.table.clone(),
                        message: "table not ACTIVE after 120 s".into(),
                        retryable: true,
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    fn snapshot(&self) -> Result<Snapshot, LeaseError> {
        self.block(async {
            let mut snap = Snapshot::default();
            let mut start: Option<Item> = None;
            loop {
                let r = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| self.err("Scan", e))?;
                for item in r.items() {
                    self.parse_into(item, &mut snap)?;
                }
                match r.last_evaluated_key() {
                    Some(k) if !k.is_empty() => start = Some(k.clone()),
                    _ => return Ok(snap),
                }
            }
        })
    }

    fn create_lease(&self, shard: &str, parents: &[String]) -> Result<bool, LeaseError> {
        self.block(async {
            let mut req = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(KEY, s(shard))
                .item("leaseCounter", n(0))
                .item("checkpoint", s(crate::INITIAL))
                .item("ownerSwitchesSinceCheckpoint", n(0))
                .condition_expression("attribute_not_exists(leaseKey)");
            if !parents.is_empty() {
                req = req.item("parentShardIds", AttributeValue::Ss(parents.to_vec()));
            }
            match req.send().await {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.err("PutItem", e)),
            }
        })
    }

    fn take(&self, shard: &str, seen_counter: u64, owner: &str) -> Result<Option<u64>, LeaseError> {
        self.block(async {
            let r = self
                .update(
                    "UpdateItem(take)",
                    shard,
                    "SET #o = :me, #c = #c + :one ADD ownerSwitchesSinceCheckpoint :one",
                    Some("#c = :seen"),
                    &LEASE_NAMES,
                    vec![(":me", s(owner)), (":one", n(1)), (":seen", n(seen_counter))],
                )
                .await?;
            Ok(r.as_ref().and_then(counter_of))
        })
    }

    fn renew(&self, shard: &str, owner: &str, counter: u64) -> Result<Option<u64>, LeaseError> {
        self.block(async {
            let r = self
                .update(
                    "UpdateItem(renew)",
                    shard,
                    "SET #c = #c + :one",
                    Some("#o = :me AND #c = :seen"),
                    &LEASE_NAMES,
                    vec![(":me", s(owner)), (":one", n(1)), (":seen", n(counter))],
                )
                .await?;
            Ok(r.as_ref().and_then(counter_of))
        })
    }

    fn release(&self, shard: &str, owner: &str, counter: u64) -> Result<bool, LeaseError> {
        self.block(async {
            let r = self
                .update(
                    "UpdateItem(release)",
                    shard,
                    "SET #c = #c + :one REMOVE #o",
                    Some("#o = :me AND #c = :seen"),
                    &LEASE_NAMES,
                    vec![(":me", s(owner)), (":one", n(1)), (":seen", n(counter))],
                )
                .await?;
            Ok(r.is_some())
        })
    }

    fn commit(
        &self,
        shards: &[ShardCommit],
        delta: Option<&Delta>,
    ) -> Result<CommitOutcome, LeaseError> {
        if shards.len() > MAX_COMMIT_SHARDS {
            return Err(LeaseError::TooManyItems(shards.len() + 1));
        }
        if shards.is_empty() && delta.is_none() {
            return Ok(CommitOutcome::Done);
        }
        let mut items = Vec::new();
        for c in shards {
            let mut expr =
                String::from("SET #c = #c + :one, #k = :cp, ownerSwitchesSinceCheckpoint = :zero");
            let mut u = Update::builder()
                .table_name(&self.table)
                .key(KEY, s(&c.shard_id))
                .condition_expression("#o = :me AND #c = :seen")
                .expression_attribute_names("#o", "leaseOwner")
                .expression_attribute_names("#c", "leaseCounter")
                .expression_attribute_names("#k", "checkpoint")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":cp", s(c.checkpoint.as_str()))
                .expression_attribute_values(":me", s(&c.owner))
                .expression_attribute_values(":seen", n(c.counter));
            if let Some(m) = c.max_start {
                expr.push_str(", maxStart = :ms");
                u = u.expression_attribute_values(":ms", n(m));
            }
            if let Some(w) = c.watermark {
                expr.push_str(", #w = :wm");
                u = u
                    .expression_attribute_names("#w", "watermark")
                    .expression_attribute_values(":wm", n(w));
            }
            let u = u
                .update_expression(expr)
                .build()
                .map_err(|e| self.build_err("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().update(u).build());
        }
        if let Some(d) = delta {
            let mut p = aws_sdk_dynamodb::types::Put::builder()
                .table_name(&self.table)
                .item(KEY, s(&d.id))
                .item("file", s(&d.file))
                .condition_expression("attribute_not_exists(leaseKey)");
            if !d.hours.is_empty() {
                p = p.item(
                    "hours",
                    AttributeValue::Ns(d.hours.iter().map(|h| h.to_string()).collect()),
                );
            }
            let p = p.build().map_err(|e| self.build_err("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().put(p).build());
        }
        self.block(async {
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => Ok(CommitOutcome::Done),
                Err(e) => {
                    let lost: Option<Vec<String>> = e.as_service_error().and_then(|se| match se {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => Some(
                            t.cancellation_reasons()
                                .iter()
                                .zip(shards)
                                .filter(|(r, _)| r.code() == Some("ConditionalCheckFailed"))
                                .map(|(_, c)| c.shard_id.clone())
                                .collect(),
                        ),
                        _ => None,
                    });
                    match lost {
                        Some(l) if !l.is_empty() => Ok(CommitOutcome::Lost(l)),
                        // Cancelled for another reason (a conflicting transaction, throttling):
                        // nothing was applied; worth retrying.
                        Some(_) => {
                            let mut err = self.err("TransactWriteItems", e);
                            if let LeaseError::Dynamo { retryable, .. } = &mut err {
                                *retryable = true;
                            }
                            Err(err)
                        }
                        None => Err(self.err("TransactWriteItems", e)),
                    }
                }
            }
        })
    }

    fn claim_hour(&self, claim: &HourClaim) -> Result<bool, LeaseError> {
        let op = "TransactWriteItems(claim)";
        let mut put = aws_sdk_dynamodb::types::Put::builder()
            .table_name(&self.table)
            .item(KEY, s(crate::hour_key(claim.hour)))
            .item("owner", s(&claim.owner))
            .item("state", s("CLAIMED"))
            .item("claimedAt", n(claim.claimed_at))
            .condition_expression("attribute_not_exists(leaseKey)");
        if !claim.parts.is_empty() {
            put = put.item("parts", AttributeValue::Ss(claim.parts.clone()));
        }
        let put = put.build().map_err(|e| self.build_err(op, e))?;
        // Claims only move forward: the frontier item holds the highest claimed hour.
        let frontier = Update::builder()
            .table_name(&self.table)
            .key(KEY, s(crate::FRONTIER_KEY))
            .update_expression("SET #h = :h")
            .condition_expression("attribute_not_exists(#h) OR #h < :h")
            .expression_attribute_names("#h", "hour")
            .expression_attribute_values(":h", n(claim.hour))
            .build()
            .map_err(|e| self.build_err(op, e))?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(frontier).build(),
        ];
        self.block(async {
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => Ok(true),
                Err(e) => {
                    let refused = e.as_service_error().and_then(|se| match se {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => Some(
                            t.cancellation_reasons()
                                .iter()
                                .any(|r| r.code() == Some("ConditionalCheckFailed")),
                        ),
                        _ => None,
                    });
                    match refused {
                        Some(true) => Ok(false),
                        Some(false) => {
                            let mut err = self.err(op, e);
                            if let LeaseError::Dynamo { retryable, .. } = &mut err {
                                *retryable = true;
                            }
                            Err(err)
                        }
                        None => Err(self.err(op, e)),
                    }
                }
            }
        })
    }

    fn take_over_hour(
        &self,
        hour: i64,
        seen_owner: &str,
        seen_at: i64,
        owner: &str,
        now: i64,
    ) -> Result<bool, LeaseError> {
        self.block(async {
            let r = self
                .update(
                    "UpdateItem(take over hour)",
                    &crate::hour_key(hour),
                    "SET #o = :me, claimedAt = :now",
                    Some("#o = :seen AND claimedAt = :at AND #s = :claimed"),
                    &[("#o", "owner"), ("#s", "state")],
                    vec![
                        (":me", s(owner)),
                        (":now", n(now)),
                        (":seen", s(seen_owner)),
                        (":at", n(seen_at)),
                        (":claimed", s("CLAIMED")),
                    ],
                )
                .await?;
            Ok(r.is_some())
        })
    }

    fn hour_done(&self, hour: i64) -> Result<(), LeaseError> {
        self.block(async {
            self.update(
                "UpdateItem(hour done)",
                &crate::hour_key(hour),
                "SET #s = :done",
                Some("attribute_exists(leaseKey)"),
                &[("#s", "state")],
                vec![(":done", s("DONE"))],
            )
            .await
            .map(|_| ())
        })
    }

    fn remove_delta_hour(&self, delta_id: &str, hour: i64) -> Result<bool, LeaseError> {
        self.block(async {
            let r = self
                .update(
                    "UpdateItem(delta hour)",
                    delta_id,
                    "DELETE hours :h",
                    Some("attribute_exists(leaseKey)"),
                    &[],
                    vec![(":h", AttributeValue::Ns(vec![hour.to_string()]))],
                )
                .await?;
            Ok(match r {
                None => true,
                Some(item) => {
                    !matches!(item.get("hours"), Some(AttributeValue::Ns(v)) if !v.is_empty())
                }
            })
        })
    }

    fn delete(&self, key: &str) -> Result<(), LeaseError> {
        self.block(async {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key(KEY, s(key))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteItem", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: Option<AttributeValue>, expected: Option<u64>) {
        let mut item = Item::new();
        if let Some(v) = value.clone() {
            item.insert("maxStart".into(), v);
        }
        assert_eq!(max_start_of(&item, "shardId-0"), expected, "{value:?}");
    }

    fn table() -> (tokio::runtime::Runtime, DynamoTable) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        let t = DynamoTable::new(Client::from_conf(conf), "leases", rt.handle().clone());
        (rt, t)
    }

    /// Regression (#28 item 1): a lease item whose `maxStart` (written unsigned) is past
    /// `i64::MAX` made every scan of the table fail with `BadItem`, on every worker.
    #[test]
    fn lease_item_with_max_start_past_i64_is_read() {
        let (_rt, t) = table();
        for (value, want) in [(n(u64::MAX), Some(u64::MAX)), (n("-1"), None), (n(7200), Some(7200))]
        {
            let mut item = Item::new();
            item.insert(KEY.into(), s("shardId-0"));
            item.insert("leaseCounter".into(), n(3));
            item.insert("maxStart".into(), value.clone());
            let mut snap = Snapshot::default();
            t.parse_into(&item, &mut snap).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(snap.leases["shardId-0"].max_start, want, "{value:?}");
        }
    }

    /// Regression: `maxStart` is written unsigned (`n(u64)`) but was read as `i64`, so a lease
    /// holding a `start` past `i64::MAX` (one far-future record) made every scan fail on `BadItem`.
    #[test]
    fn max_start_past_i64_decodes() {
        check(Some(n(u64::MAX)), Some(u64::MAX));
        check(Some(n(i64::MAX as u64 + 1)), Some(i64::MAX as u64 + 1));
        check(Some(n(7200u64)), Some(7200));
        check(None, None);
        // Not an unsigned integer (or not a number): ignored, not an error.
        check(Some(n("-5")), None);
        check(Some(n("18446744073709551616")), None);
        check(Some(n("1e12")), None);
        check(Some(s("7200")), None);
    }
}
