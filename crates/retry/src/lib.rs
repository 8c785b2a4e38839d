//! One retry policy and one classification of AWS SDK errors, shared by every AWS call of
//! flowspike (S3 state and archive, Kinesis reads and PutRecords, DynamoDB leases).
//!
//! Two layers:
//! 1. the SDK's own retries ([`sdk_config`]: standard mode, [`SDK_MAX_ATTEMPTS`] attempts), which
//!    absorb most single faults inside one call;
//! 2. flowspike's loop ([`retry`], [`retry_blocking`], or [`Retrier`] for hand-written loops), which
//!    retries what the SDK gave up on, with capped exponential backoff and full jitter: forever in
//!    the services ([`Policy::Forever`]), for a bounded time in `replay` ([`Policy::For`]).
//!
//! What is retried ([`classify`]): throttling (S3 `SlowDown`, Kinesis and DynamoDB
//! `ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`, KMS
//! throttling, HTTP 429), transient service faults (HTTP 5xx, `InternalError`,
//! `ServiceUnavailable`, DynamoDB transaction conflicts), timeouts, and transport failures
//! (connection refused or dropped, a response cut short). Everything else — access denied, a
//! missing bucket, stream or table, a validation error — is [`Class::Fatal`]: the caller stops at
//! once with the service's message.
//!
//! Every retry, recovery, give-up and fatal error is counted per operation in a process-wide table
//! ([`counts`], exported as `flowspike_aws_retries_total{operation,outcome}`), and a warning is
//! logged at most every [`WARN_EVERY`] per operation.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use rand::Rng;

/// Attempts the SDK makes per call before flowspike's own loop sees the error (the SDK default is 3).
pub const SDK_MAX_ATTEMPTS: u32 = 5;
/// First backoff step of flowspike's loop.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between two attempts of flowspike's loop.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// At most one warning per operation in this interval; the failures in between are counted in the
/// next warning's `suppressed` field (and always in the metric).
pub const WARN_EVERY: Duration = Duration::from_secs(5);

/// How long a failing call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Until it succeeds or fails with a non-retryable error (the long-running services).
    Forever,
    /// Until this much time has passed since the first attempt (`replay`): then the last error is
    /// returned.
    For(Duration),
}

/// What a failed call means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The service refused the call for now (throttling): nothing was applied.
    Throttled,
    /// A timeout, a dropped connection, a 5xx: the call may or may not have been applied.
    Transient,
    /// Configuration, permission or validation: retrying cannot help.
    Fatal,
}

impl Class {
    /// True for [`Class::Throttled`] and [`Class::Transient`].
    pub fn is_retryable(self) -> bool {
        self != Class::Fatal
    }

    /// True when a failed attempt may nevertheless have taken effect (the request may have reached
    /// the service): a retry of a conditional write must then expect to find its own earlier write.
    pub fn is_ambiguous(self) -> bool {
        self == Class::Transient
    }

    fn label(self) -> &'static str {
        match self {
            Class::Throttled => "throttled",
            Class::Transient => "transient",
            Class::Fatal => "fatal",
        }
    }
}

/// True for the error codes with which S3, Kinesis, DynamoDB, STS and KMS throttle a caller.
pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "LimitExceededException"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
            | "KMSThrottlingException"
    )
}

/// True for the error codes of transient faults that the same call may get past later (besides
/// every HTTP 5xx): internal errors, unavailability, request timeouts, DynamoDB transaction
/// conflicts (another transaction held an item) and Kinesis' expired iterators (renewed by the
/// reader).
pub fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "InternalError"
            | "InternalFailure"
            | "InternalServerError"
            | "InternalServerException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "TransactionConflict"
            | "TransactionConflictException"
            | "TransactionInProgressException"
            | "ExpiredIteratorException"
            | "IDPCommunicationError"
    )
}

/// The class of a service's answer: its error code first, then its HTTP status (429 and 5xx are
/// retryable whatever the code says).
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> Class {
    match code {
        Some(c) if is_throttling_code(c) => return Class::Throttled,
        Some(c) if is_transient_code(c) => return Class::Transient,
        _ => {}
    }
    match status {
        Some(429) => Class::Throttled,
        Some(s) if s >= 500 => Class::Transient,
        _ => Class::Fatal,
    }
}

/// The class of an SDK error: the one classification every AWS call of flowspike uses.
///
/// Timeouts, dispatch failures (connection refused, reset or dropped before a response) and
/// unreadable responses are [`Class::Transient`]; a service error goes by [`classify_code`]; a
/// request that could not be built is [`Class::Fatal`].
pub fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Class {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        SdkError::ServiceError(s) => classify_code(s.err().code(), Some(s.raw().status().as_u16())),
        _ => Class::Fatal,
    }
}

/// The text of an SDK error with its whole chain of causes (the service's code and message when
/// there is one).
pub fn describe<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> String {
    DisplayErrorContext(e).to_string()
}

/// The SDK's retry configuration, the first layer: standard mode with [`SDK_MAX_ATTEMPTS`]
/// attempts. (Adaptive mode would add a client-side rate limiter shared by every call of a client,
/// so one throttled shard would slow the reads of all others; flowspike's loop backs off per call
/// instead.)
pub fn sdk_retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS)
}

/// The standard AWS configuration (credential chain, region, `AWS_ENDPOINT_URL*`) with
/// [`sdk_retry_config`]: what every client of flowspike is built from.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(sdk_retry_config())
        .load()
        .await
}

/// Capped exponential backoff with full jitter: a uniformly random pause between zero and
/// `min(MAX_DELAY, BASE_DELAY * 2^attempt)` (AWS's "full jitter", which spreads the retries of many
/// callers throttled at once).
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_DELAY.saturating_mul(1u32 << attempt.min(16)).min(MAX_DELAY);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// One row of [`counts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryCount {
    /// The operation (`s3:GetObject`, `kinesis:GetRecords`, `dynamodb:TransactWriteItems`, ...).
    pub operation: &'static str,
    /// `throttled` or `transient` (a failed attempt that is retried), `recovered` (a call that
    /// succeeded after retries), `gave_up` (retryable, but [`Policy::For`] ran out) or `fatal`.
    pub outcome: &'static str,
    /// How many times.
    pub count: u64,
}

struct Table {
    counts: BTreeMap<(&'static str, &'static str), u64>,
    /// Per operation: entries of batch calls the service refused (sent again alone).
    failed_entries: BTreeMap<&'static str, u64>,
    /// Per operation: when the last warning was logged, and the failures since.
    warned: HashMap<&'static str, (Instant, u64)>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with_table<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    // A panic elsewhere while the lock was held leaves plain counters behind: still usable.
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let table = guard.get_or_insert_with(|| Table {
        counts: BTreeMap::new(),
        failed_entries: BTreeMap::new(),
        warned: HashMap::new(),
    });
    f(table)
}

fn count(operation: &'static str, outcome: &'static str) {
    with_table(|t| *t.counts.entry((operation, outcome)).or_insert(0) += 1);
}

/// Every (operation, outcome) counted so far in this process, sorted.
pub fn counts() -> Vec<RetryCount> {
    with_table(|t| {
        t.counts
            .iter()
            .map(|(&(operation, outcome), &count)| RetryCount { operation, outcome, count })
            .collect()
    })
}

/// Counts `n` entries of a batch call of `operation` (Kinesis PutRecords, Security Hub
/// BatchImportFindings, EventBridge PutEvents) that the service refused in an answered call: the
/// caller sends them again alone, or stops if their error is not retryable.
pub fn count_failed_entries(operation: &'static str, n: u64) {
    with_table(|t| *t.failed_entries.entry(operation).or_insert(0) += n);
}

/// Every operation's refused entries so far in this process ([`count_failed_entries`]), sorted.
pub fn failed_entries() -> Vec<(&'static str, u64)> {
    with_table(|t| t.failed_entries.iter().map(|(&op, &n)| (op, n)).collect())
}

/// The state of one call's retries, for loops that cannot use [`retry`] (a reader that must also
/// watch a stop signal, a batch that shrinks between attempts).
#[derive(Debug)]
pub struct Retrier {
    operation: &'static str,
    policy: Policy,
    started: Instant,
    failures: u32,
    ambiguous: bool,
}

impl Retrier {
    /// A call of `operation` under `policy`, starting now.
    pub fn new(operation: &'static str, policy: Policy) -> Retrier {
        Retrier { operation, policy, started: Instant::now(), failures: 0, ambiguous: false }
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// True when an earlier attempt failed in a way that may have applied it ([`Class::is_ambiguous`]).
    pub fn had_ambiguous_failure(&self) -> bool {
        self.ambiguous
    }

    /// Records a failed attempt: `Some(pause)` to wait before the next attempt, or `None` when the
    /// error is final (fatal, or the policy's time is up). Counts the outcome and logs a warning
    /// at most every [`WARN_EVERY`] for this operation.
    pub fn failed(&mut self, class: Class, error: &dyn Display) -> Option<Duration> {
        let op = self.operation;
        if !class.is_retryable() {
            count(op, "fatal");
            tracing::error!(operation = op, attempts = self.failures + 1, error = %error, "aws call failed; not retryable");
            return None;
        }
        self.failures += 1;
        self.ambiguous |= class.is_ambiguous();
        let pause = backoff(self.failures);
        if let Policy::For(limit) = self.policy {
            if self.started.elapsed() + pause >= limit {
                count(op, "gave_up");
                tracing::error!(operation = op, attempts = self.failures, elapsed_ms = self.started.elapsed().as_millis() as u64, error = %error, "aws call still failing; giving up");
                return None;
            }
        }
        count(op, class.label());
        let now = Instant::now();
        let suppressed = with_table(|t| {
            let entry = t.warned.entry(op).or_insert((now - WARN_EVERY, 0));
            if now.duration_since(entry.0) >= WARN_EVERY {
                let s = entry.1;
                *entry = (now, 0);
                Some(s)
            } else {
                entry.1 += 1;
                None
            }
        });
        match suppressed {
            Some(suppressed) => tracing::warn!(
                operation = op,
                class = class.label(),
                attempt = self.failures,
                pause_ms = pause.as_millis() as u64,
                suppressed,
                error = %error,
                "aws call failed; retrying"
            ),
            None => {
                tracing::debug!(operation = op, class = class.label(), attempt = self.failures, error = %error, "aws call failed; retrying")
            }
        }
        Some(pause)
    }

    /// Records the success that ends the call (counted as `recovered` after failures).
    pub fn succeeded(&self) {
        if self.failures > 0 {
            count(self.operation, "recovered");
            tracing::debug!(
                operation = self.operation,
                attempts = self.failures + 1,
                "aws call recovered"
            );
        }
    }
}

/// Runs `call` until it succeeds, fails with an error `class_of` calls [`Class::Fatal`], or
/// `policy` runs out; pauses with [`backoff`] between attempts. `call` gets the [`Retrier`], so it
/// can see whether an earlier attempt may have been applied.
pub async fn retry<T, E, F, Fut>(
    operation: &'static str,
    policy: Policy,
    class_of: impl Fn(&E) -> Class,
    mut call: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut(&Retrier) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut r = Retrier::new(operation, policy);
    loop {
        match call(&r).await {
            Ok(v) => {
                r.succeeded();
                return Ok(v);
            }
            Err(e) => match r.failed(class_of(&e), &e) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(e),
            },
        }
    }
}

/// The blocking form of [`retry`], for synchronous callers (the state store, the archive).
pub fn retry_blocking<T, E, F>(
    operation: &'static str,
    policy: Policy,
    class_of: impl Fn(&E) -> Class,
    mut call: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut(&Retrier) -> Result<T, E>,
{
    let mut r = Retrier::new(operation, policy);
    loop {
        match call(&r) {
            Ok(v) => {
                r.succeeded();
                return Ok(v);
            }
            Err(e) => match r.failed(class_of(&e), &e) {
                Some(pause) => std::thread::sleep(pause),
                None => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service(code: &str, status: u16) -> SdkError<ErrorMetadata, HttpResponse> {
        let raw =
            HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::empty());
        SdkError::service_error(ErrorMetadata::builder().code(code).build(), raw)
    }

    #[test]
    fn classification_of_service_errors() {
        let check = |code: &str, status: u16, want: Class| {
            assert_eq!(classify(&service(code, status)), want, "{code} {status}");
        };
        // Throttling of every service, whatever the status.
        check("SlowDown", 503, Class::Throttled);
        check("ProvisionedThroughputExceededException", 400, Class::Throttled);
        check("ThrottlingException", 400, Class::Throttled);
        check("RequestLimitExceeded", 400, Class::Throttled);
        check("LimitExceededException", 400, Class::Throttled);
        check("KMSThrottlingException", 400, Class::Throttled);
        check("Whatever", 429, Class::Throttled);
        // Transient faults.
        check("InternalError", 500, Class::Transient);
        check("ServiceUnavailable", 503, Class::Transient);
        check("", 502, Class::Transient);
        check("TransactionConflictException", 400, Class::Transient);
        check("TransactionInProgressException", 400, Class::Transient);
        check("ExpiredIteratorException", 400, Class::Transient);
        check("RequestTimeout", 400, Class::Transient);
        // Configuration and permission errors stop at once.
        check("AccessDenied", 403, Class::Fatal);
        check("NoSuchBucket", 404, Class::Fatal);
        check("ResourceNotFoundException", 400, Class::Fatal);
        check("ValidationException", 400, Class::Fatal);
        check("InvalidArgumentException", 400, Class::Fatal);
        check("ConditionalCheckFailedException", 400, Class::Fatal);
    }

    #[test]
    fn transport_errors_are_transient_and_ambiguous() {
        let t: SdkError<ErrorMetadata, HttpResponse> = SdkError::timeout_error("slow");
        assert_eq!(classify(&t), Class::Transient);
        assert!(classify(&t).is_ambiguous());
        let c: SdkError<ErrorMetadata, HttpResponse> = SdkError::construction_failure("bad");
        assert_eq!(classify(&c), Class::Fatal);
        assert!(!Class::Throttled.is_ambiguous());
        assert!(Class::Throttled.is_retryable());
    }

    /// Regression (issue #29): the Kinesis copy of the classification did not retry DynamoDB's
    /// `RequestLimitExceeded` or transaction conflicts, and the DynamoDB copy not
    /// `LimitExceededException` or KMS throttling; both now use this one.
    #[test]
    fn kinesis_and_dynamodb_codes_share_one_retry_set() {
        for code in [
            "ProvisionedThroughputExceededException",
            "LimitExceededException",
            "KMSThrottlingException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TransactionConflictException",
            "TransactionInProgressException",
            "InternalServerError",
            "ServiceUnavailable",
        ] {
            assert!(classify_code(Some(code), Some(400)).is_retryable(), "{code}");
        }
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        for attempt in 0..40 {
            let ceiling = BASE_DELAY.saturating_mul(1 << attempt.min(16)).min(MAX_DELAY);
            for _ in 0..20 {
                assert!(backoff(attempt) <= ceiling, "{attempt}");
            }
        }
        // Full jitter: pauses spread from near zero to the ceiling.
        let pauses: Vec<Duration> = (0..200).map(|_| backoff(20)).collect();
        assert!(pauses.iter().any(|d| *d < MAX_DELAY / 4));
        assert!(pauses.iter().any(|d| *d > MAX_DELAY * 3 / 4));
    }

    #[test]
    fn bounded_policy_gives_up_and_forever_does_not() {
        let mut calls = 0;
        let r: Result<(), String> = retry_blocking(
            "test:bounded",
            Policy::For(Duration::ZERO),
            |_| Class::Throttled,
            |_| {
                calls += 1;
                Err("slow down".to_string())
            },
        );
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: Result<u32, String> = retry_blocking(
            "test:forever",
            Policy::Forever,
            |_| Class::Throttled,
            |rt| {
                calls += 1;
                if rt.failures() < 2 {
                    Err("slow down".to_string())
                } else {
                    Ok(7)
                }
            },
        );
        assert_eq!(r, Ok(7));
        assert_eq!(calls, 3);
        let c = counts();
        let get = |op: &str, outcome: &str| {
            c.iter().find(|r| r.operation == op && r.outcome == outcome).map(|r| r.count)
        };
        assert_eq!(get("test:bounded", "gave_up"), Some(1));
        assert_eq!(get("test:forever", "throttled"), Some(2));
        assert_eq!(get("test:forever", "recovered"), Some(1));
    }

    #[test]
    fn fatal_errors_stop_at_once() {
        let mut calls = 0;
        let r: Result<(), String> = retry_blocking(
            "test:fatal",
            Policy::Forever,
            |_| Class::Fatal,
            |_| {
                calls += 1;
                Err("access denied".to_string())
            },
        );
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
