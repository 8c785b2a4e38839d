//! [`DynamoTable`]: the lease table in Amazon DynamoDB (aws-sdk-dynamodb), blocking calls on a
//! tokio runtime handle.
//!
//! Every call is retried under the table's [`Policy`] (forever by default) with the classification
//! of `flowspike-retry`: throttling, 5xx, timeouts and dropped connections, and transactions
//! cancelled for throttled or conflicting items. A retried conditional write may find its own
//! earlier attempt applied (the answer was lost, or the SDK retried it underneath): when a
//! condition fails, the item is read back and an update that is visibly this call's own counts as
//! done (see `update`, `commit`, `claim_hour`).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use flowspike_retry::{Class, Policy};

use crate::{
    AlertClaim, Checkpoint, CommitOutcome, Delta, HourClaim, HourState, Lease, LeaseError,
    LeaseTable, ShardCommit, Snapshot, MAX_COMMIT_SHARDS,
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
    policy: Policy,
}

impl DynamoTable {
    /// A table named `table`, called through `client` on the runtime behind `handle`. The methods
    /// block: call them from outside the runtime.
    /// Retryable errors are retried forever ([`DynamoTable::with_policy`] changes that).
    pub fn new(client: Client, table: impl Into<String>, handle: tokio::runtime::Handle) -> Self {
        DynamoTable { client, table: table.into(), handle, policy: Policy::Forever }
    }

    /// The same table with another retry policy.
    pub fn with_policy(self, policy: Policy) -> Self {
        DynamoTable { policy, ..self }
    }

    /// A client from the standard AWS configuration (`AWS_ENDPOINT_URL_DYNAMODB` or
    /// `AWS_ENDPOINT_URL` for a local endpoint) with flowspike's SDK retry settings.
    pub async fn client_from_env() -> Client {
        Client::new(&flowspike_retry::sdk_config().await)
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
        let retryable = flowspike_retry::classify(&e).is_retryable();
        let message = match e.as_service_error() {
            Some(s) => {
                format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or_default())
            }
            None => format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&e)),
        };
        LeaseError::Dynamo { op, table: self.table.clone(), message, retryable }
    }

    /// [`DynamoTable::err`] with the error's retry class, for the retry loop.
    fn failed<E>(
        &self,
        op: &'static str,
        e: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> Failed
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let class = flowspike_retry::classify(&e);
        Failed { class, err: self.err(op, e) }
    }

    /// Runs `call` under the table's policy until it succeeds or fails for good.
    async fn retried<T, F, Fut>(&self, op: &'static str, mut call: F) -> Result<T, LeaseError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failed>>,
    {
        flowspike_retry::retry(metric_op(op), self.policy, |f: &Failed| f.class, |_| call())
            .await
            .map_err(|f| f.err)
    }

    /// Sets the `state` of the item at `key`, if it exists (a claim).
    async fn set_state(&self, op: &'static str, key: &str, state: &str) -> Result<(), LeaseError> {
        let cond = Some("attribute_exists(leaseKey)");
        let value = vec![(":state", s(state))];
        self.update(op, key, "SET #s = :state", cond, &[("#s", "state")], value, |_| false)
            .await
            .map(|_| ())
    }

    /// A conditional PutItem, retried; false when its condition failed.
    async fn put_if(
        &self,
        op: &'static str,
        req: PutItemFluentBuilder,
    ) -> Result<bool, LeaseError> {
        self.retried(op, || async {
            match req.clone().send().await {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.failed(op, e)),
            }
        })
        .await
    }

    /// The item at `key` (strongly consistent), or `None`.
    async fn get_item(&self, key: &str) -> Result<Option<Item>, LeaseError> {
        self.retried("GetItem", || async {
            self.client
                .get_item()
                .table_name(&self.table)
                .key(KEY, s(key))
                .consistent_read(true)
                .send()
                .await
                .map(|r| r.item().cloned())
                .map_err(|e| self.failed("GetItem", e))
        })
        .await
    }

    /// A transaction cancelled for a reason other than a failed condition: nothing was applied, and
    /// throttled or conflicting items are retried ([`cancellation_class`]).
    fn cancelled<E>(
        &self,
        op: &'static str,
        reasons: &[String],
        e: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> Failed
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let class = cancellation_class(reasons);
        let mut err = self.err(op, e);
        if let LeaseError::Dynamo { retryable, message, .. } = &mut err {
            *retryable = class.is_retryable();
            message.push_str(&format!(" (reasons: {})", reasons.join(", ")));
        }
        Failed { class, err }
    }

    /// True when the table shows this commit applied: its delta registered (delta ids are unique
    /// per worker and generation), or without a delta every lease at the commit's counter and
    /// checkpoint, still the worker's.
    async fn commit_applied(
        &self,
        shards: &[ShardCommit],
        delta: Option<&Delta>,
    ) -> Result<bool, LeaseError> {
        if let Some(d) = delta {
            let item = self.get_item(&d.id).await?;
            return Ok(item.is_some_and(|i| s_attr(&i, "file").as_deref() == Some(d.file.as_str())));
        }
        for c in shards {
            let Some(item) = self.get_item(&c.shard_id).await? else { return Ok(false) };
            if !owned_at(&item, &c.owner, c.counter + 1)
                || s_attr(&item, "checkpoint").as_deref() != Some(c.checkpoint.as_str())
            {
                return Ok(false);
            }
        }
        Ok(true)
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
            // Absent in a delta of a release without the other detections: no taps.
            let taps_file = s_attr(item, "tapsFile");
            snap.deltas.insert(key.clone(), Delta { id: key, file, taps_file, hours });
        } else if let Some(id) = key.strip_prefix("alert#") {
            let alert = AlertClaim {
                id: id.to_owned(),
                hour: num("hour")?.ok_or_else(|| self.bad(&key, "no hour"))?,
                owner: s_attr(item, "owner").unwrap_or_default(),
                sent: s_attr(item, "state").as_deref() == Some("SENT"),
            };
            snap.alerts.insert(alert.id.clone(), alert);
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

    /// A conditional update; `Ok(None)` when the condition failed. When it failed but the item
    /// as read back satisfies `applied` (the update is visibly this call's own: an earlier attempt
    /// took effect and its answer was lost), the update counts as done and that item is returned.
    #[allow(clippy::too_many_arguments)] // reason: one DynamoDB UpdateItem request, spelled out
    async fn update(
        &self,
        op: &'static str,
        key: &str,
        expr: &str,
        cond: Option<&str>,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
        applied: impl Fn(&Item) -> bool,
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
        let done = self
            .retried(op, || async {
                match req.clone().send().await {
                    Ok(r) => Ok(Some(r.attributes().cloned().unwrap_or_default())),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(self.failed(op, e)),
                }
            })
            .await?;
        if done.is_some() {
            return Ok(done);
        }
        Ok(self.get_item(key).await?.filter(|item| applied(item)))
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

/// True when the lease item is `owner`'s at `counter`: what a take or renew of this worker leaves.
fn owned_at(item: &Item, owner: &str, counter: u64) -> bool {
    s_attr(item, "leaseOwner").as_deref() == Some(owner) && counter_of(item) == Some(counter)
}

/// A failed call and its retry class.
struct Failed {
    class: Class,
    err: LeaseError,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.err.fmt(f)
    }
}

/// The cancellation reason codes of a cancelled transaction (one per item, `None` for items that
/// were fine), or `None` for any other error.
fn cancellation<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<String>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(t) => Some(
            t.cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_owned())
                .collect(),
        ),
        _ => None,
    }
}

/// The retry class of a transaction cancelled without a failed condition, from its items'
/// cancellation reasons: throttled items (`ThrottlingError`, `ProvisionedThroughputExceeded`,
/// `RequestLimitExceeded`) and conflicts with other transactions (`TransactionConflict`) are
/// retried; a validation error or a full item collection never succeeds and is fatal.
fn cancellation_class(reasons: &[String]) -> Class {
    let any = |codes: &[&str]| reasons.iter().any(|r| codes.contains(&r.as_str()));
    if any(&["ValidationError", "ItemCollectionSizeLimitExceeded"]) {
        Class::Fatal
    } else if any(&["ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"]) {
        Class::Throttled
    } else {
        Class::Transient
    }
}

/// The `operation` label of the retry metric for a lease-table call.
fn metric_op(op: &str) -> &'static str {
    match op.split('(').next().unwrap_or_default() {
        "UpdateItem" => "dynamodb:UpdateItem",
        "TransactWriteItems" => "dynamodb:TransactWriteItems",
        "PutItem" => "dynamodb:PutItem",
        "GetItem" => "dynamodb:GetItem",
        "Scan" => "dynamodb:Scan",
        "DeleteItem" => "dynamodb:DeleteItem",
        "DescribeTable" => "dynamodb:DescribeTable",
        "CreateTable" => "dynamodb:CreateTable",
        _ => "dynamodb:other",
    }
}

impl LeaseTable for DynamoTable {
    fn ensure(&self) -> Result<(), LeaseError> {
        self.block(async {
            let exists = self
                .retried("DescribeTable", || async {
                    match self.client.describe_table().table_name(&self.table).send().await {
                        Ok(_) => Ok(true),
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|s| s.is_resource_not_found_exception()) =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(self.failed("DescribeTable", e)),
                    }
                })
                .await?;
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
                let req = self
                    .client
                    .create_table()
                    .table_name(&self.table)
                    .key_schema(ks)
                    .attribute_definitions(ad)
                    .billing_mode(BillingMode::PayPerRequest);
                self.retried("CreateTable", || async {
                    match req.clone().send().await {
                        Ok(_) => {
                            tracing::info!(table = %self.table, "lease table created");
                            Ok(())
                        }
                        // Another worker created it at the same moment (or an earlier attempt
                        // of this call did, and its answer was lost).
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|s| s.is_resource_in_use_exception()) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(self.failed("CreateTable", e)),
                    }
                })
                .await?;
            }
            let deadline = Instant::now() + CREATE_TIMEOUT;
            loop {
                let d = self
                    .retried("DescribeTable", || async {
                        self.client
                            .describe_table()
                            .table_name(&self.table)
                            .send()
                            .await
                            .map_err(|e| self.failed("DescribeTable", e))
                    })
                    .await?;
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
                let from = start.take();
                let r = self
                    .retried("Scan", || async {
                        self.client
                            .scan()
                            .table_name(&self.table)
                            .consistent_read(true)
                            .set_exclusive_start_key(from.clone())
                            .send()
                            .await
                            .map_err(|e| self.failed("Scan", e))
                    })
                    .await?;
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
            // A lease found in place after a lost answer was made by this call or another
            // worker's: either way the lease exists, which is all the caller needs.
            self.put_if("PutItem", req).await
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
                    |item| owned_at(item, owner, seen_counter + 1),
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
                    |item| owned_at(item, owner, counter + 1),
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
                    |item| {
                        !item.contains_key("leaseOwner") && counter_of(item) == Some(counter + 1)
                    },
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
            if let Some(t) = &d.taps_file {
                p = p.item("tapsFile", s(t));
            }
            if !d.hours.is_empty() {
                p = p.item(
                    "hours",
                    AttributeValue::Ns(d.hours.iter().map(|h| h.to_string()).collect()),
                );
            }
            let p = p.build().map_err(|e| self.build_err("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().put(p).build());
        }
        let op = "TransactWriteItems";
        let req = self.client.transact_write_items().set_transact_items(Some(items));
        self.block(async {
            // `None`: committed; `Some(lost)`: a condition failed (`lost`: the shards whose lease
            // condition failed). Cancellations for throttled or conflicting items applied nothing
            // and are retried.
            let refused = self
                .retried(op, || async {
                    match req.clone().send().await {
                        Ok(_) => Ok(None),
                        Err(e) => match cancellation(&e) {
                            Some(reasons)
                                if reasons.iter().any(|r| r == "ConditionalCheckFailed") =>
                            {
                                Ok(Some(
                                    reasons
                                        .iter()
                                        .zip(shards)
                                        .filter(|(r, _)| *r == "ConditionalCheckFailed")
                                        .map(|(_, c)| c.shard_id.clone())
                                        .collect::<Vec<_>>(),
                                ))
                            }
                            Some(reasons) => Err(self.cancelled(op, &reasons, e)),
                            None => Err(self.failed(op, e)),
                        },
                    }
                })
                .await?;
            let Some(lost) = refused else { return Ok(CommitOutcome::Done) };
            if self.commit_applied(shards, delta).await? {
                tracing::info!(table = %self.table, "commit found applied by an earlier attempt");
                return Ok(CommitOutcome::Done);
            }
            if lost.is_empty() {
                // Only the delta's condition failed, and the delta there is not this commit's.
                return Err(LeaseError::Dynamo {
                    op,
                    table: self.table.clone(),
                    message: format!(
                        "delta {} exists already with another file",
                        delta.map(|d| d.id.as_str()).unwrap_or_default()
                    ),
                    retryable: false,
                });
            }
            Ok(CommitOutcome::Lost(lost))
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
        let req = self.client.transact_write_items().set_transact_items(Some(items));
        self.block(async {
            let claimed = self
                .retried(op, || async {
                    match req.clone().send().await {
                        Ok(_) => Ok(true),
                        Err(e) => match cancellation(&e) {
                            Some(reasons) if reasons.iter().any(|r| r == "ConditionalCheckFailed") => {
                                Ok(false)
                            }
                            Some(reasons) => Err(self.cancelled(op, &reasons, e)),
                            None => Err(self.failed(op, e)),
                        },
                    }
                })
                .await?;
            if claimed {
                return Ok(true);
            }
            // Refused: by another worker's claim, or by this call's own earlier attempt.
            let item = self.get_item(&crate::hour_key(claim.hour)).await?;
            Ok(item.is_some_and(|item| {
                s_attr(&item, "owner").as_deref() == Some(claim.owner.as_str())
                    && matches!(item.get("claimedAt"), Some(AttributeValue::N(v)) if *v == claim.claimed_at.to_string())
            }))
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
                    |item| {
                        s_attr(item, "owner").as_deref() == Some(owner)
                            && matches!(item.get("claimedAt"), Some(AttributeValue::N(v)) if *v == now.to_string())
                    },
                )
                .await?;
            Ok(r.is_some())
        })
    }

    fn claim_alert(&self, alert: &AlertClaim) -> Result<bool, LeaseError> {
        // One conditional put, no read back: absent, or this owner's own unsent claim (an earlier
        // attempt whose answer or emission was lost) is overwritten with the same item.
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, s(crate::alert_key(&alert.id)))
            .item("hour", n(alert.hour))
            .item("owner", s(&alert.owner))
            .item("state", s("CLAIMED"))
            .condition_expression("attribute_not_exists(leaseKey) OR (#o = :me AND #s = :claimed)")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":me", s(&alert.owner))
            .expression_attribute_values(":claimed", s("CLAIMED"));
        self.block(self.put_if("PutItem(alert)", req))
    }

    fn alert_sent(&self, id: &str) -> Result<(), LeaseError> {
        self.block(self.set_state("UpdateItem(alert sent)", &crate::alert_key(id), "SENT"))
    }

    fn hour_done(&self, hour: i64) -> Result<(), LeaseError> {
        self.block(self.set_state("UpdateItem(hour done)", &crate::hour_key(hour), "DONE"))
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
                    |_| false,
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
        // Deleting an item that is gone already succeeds: a repeated delete is harmless.
        self.block(self.retried("DeleteItem", || async {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key(KEY, s(key))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.failed("DeleteItem", e))
        }))
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    /// Regression (issue #34): a transaction cancelled for throttled items is retried, and one
    /// cancelled for a validation error is not (it was retried at every tick for ever).
    #[test]
    fn transaction_cancellation_reasons_classify() {
        let check = |reasons: &[&str], want: Class| {
            let r: Vec<String> = reasons.iter().map(|s| s.to_string()).collect();
            assert_eq!(cancellation_class(&r), want, "{reasons:?}");
        };
        check(&["None", "ThrottlingError"], Class::Throttled);
        check(&["ProvisionedThroughputExceeded", "None"], Class::Throttled);
        check(&["TransactionConflict"], Class::Transient);
        check(&["None", "ValidationError"], Class::Fatal);
        check(&["ItemCollectionSizeLimitExceeded"], Class::Fatal);
    }

    #[test]
    fn own_lease_write_is_recognised() {
        let item: Item = [("leaseOwner".to_string(), s("w1")), ("leaseCounter".to_string(), n(8))]
            .into_iter()
            .collect();
        assert!(owned_at(&item, "w1", 8));
        assert!(!owned_at(&item, "w1", 7));
        assert!(!owned_at(&item, "w2", 8));
        assert_eq!(metric_op("UpdateItem(take)"), "dynamodb:UpdateItem");
        assert_eq!(metric_op("TransactWriteItems(claim)"), "dynamodb:TransactWriteItems");
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
