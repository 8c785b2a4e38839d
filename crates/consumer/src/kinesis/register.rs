//! Registration of the enhanced fan-out stream consumer (`--efo`).

use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ConsumerStatus;
use aws_sdk_kinesis::Client;
use flowspike_retry::{Policy, Retrier};

use super::{classed, no_such_stream, Classed};
use crate::ConsumeError;

/// Pause between two DescribeStreamConsumer calls while a consumer is being created or deleted.
const CONSUMER_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Registers the enhanced fan-out consumer `name` on `stream` (or finds it, if it exists) and
/// waits until it is ACTIVE; returns its ARN. A consumer being deleted is waited for and
/// registered again. Gives up when it is not ACTIVE after `timeout`; throttled and failed calls are
/// retried without end (a permission or an unknown stream stops at once).
pub async fn register_consumer(
    client: &Client,
    stream: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, ConsumeError> {
    let stream_arn = stream_arn(client, stream).await?;
    let mut r = Registration {
        client,
        stream,
        stream_arn: &stream_arn,
        name,
        describe_retry: Retrier::new("kinesis:DescribeStreamConsumer", Policy::Forever),
        register_retry: Retrier::new("kinesis:RegisterStreamConsumer", Policy::Forever),
    };
    // `timeout` bounds the wait for the consumer to become ACTIVE; a throttled or failed call is
    // retried (forever, like every AWS call of the service) without spending it.
    let mut deadline = Instant::now() + timeout;
    loop {
        let started = Instant::now();
        match r.step().await? {
            Step::Active(arn) => return Ok(arn),
            Step::Retried => {
                deadline += started.elapsed();
                continue;
            }
            Step::Waiting => {}
        }
        if Instant::now() >= deadline {
            return Err(ConsumeError::Kinesis {
                op: "DescribeStreamConsumer",
                stream: stream.to_owned(),
                shard: None,
                message: format!("consumer {name:?} not ACTIVE after {timeout:?}"),
                retryable: true,
            });
        }
        tokio::time::sleep(CONSUMER_POLL_INTERVAL).await;
    }
}

/// The stream's ARN (DescribeStreamSummary). Throttling and transient faults are retried without
/// end, as on every other AWS path of the service; only an unknown stream or a refused permission
/// stops.
async fn stream_arn(client: &Client, stream: &str) -> Result<String, ConsumeError> {
    let summary = flowspike_retry::retry(
        "kinesis:DescribeStreamSummary",
        Policy::Forever,
        |e: &Classed| e.0,
        |_| {
            let req = client.describe_stream_summary().stream_name(stream);
            async move {
                req.send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) {
                        no_such_stream(stream)
                    } else {
                        classed("DescribeStreamSummary", stream, None, &e)
                    }
                })
            }
        },
    )
    .await
    .map_err(|e| e.1)?;
    summary.stream_description_summary().map(|s| s.stream_arn().to_owned()).ok_or_else(|| {
        ConsumeError::Kinesis {
            op: "DescribeStreamSummary",
            stream: stream.to_owned(),
            shard: None,
            message: "no stream description in the answer".into(),
            retryable: true,
        }
    })
}

/// Pauses after a failed call as its retry streak says; the error when it is not retried.
async fn back_off(retry: &mut Retrier, Classed(class, err): Classed) -> Result<Step, ConsumeError> {
    let pause = retry.failed(class, &err).ok_or(err)?;
    tokio::time::sleep(pause).await;
    Ok(Step::Retried)
}

/// What one describe-or-register step found.
enum Step {
    /// The consumer is ACTIVE, with this ARN.
    Active(String),
    /// Being created or deleted, or just registered: look again after a pause.
    Waiting,
    /// A call failed and was paused for: look again at once, the wait not counted.
    Retried,
}

/// The calls of one registration, with their retry streaks.
struct Registration<'a> {
    client: &'a Client,
    stream: &'a str,
    stream_arn: &'a str,
    name: &'a str,
    describe_retry: Retrier,
    register_retry: Retrier,
}

impl Registration<'_> {
    /// Describes the consumer, and registers it when there is none.
    async fn step(&mut self) -> Result<Step, ConsumeError> {
        let described = self
            .client
            .describe_stream_consumer()
            .stream_arn(self.stream_arn)
            .consumer_name(self.name)
            .send()
            .await;
        let status = match described {
            Ok(out) => out
                .consumer_description()
                .map(|d| (d.consumer_arn().to_owned(), d.consumer_status().clone())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                None
            }
            Err(e) => {
                let e = classed("DescribeStreamConsumer", self.stream, None, &e);
                return back_off(&mut self.describe_retry, e).await;
            }
        };
        self.describe_retry.succeeded();
        self.describe_retry = Retrier::new("kinesis:DescribeStreamConsumer", Policy::Forever);
        let name = self.name;
        match status {
            Some((arn, ConsumerStatus::Active)) => {
                tracing::info!(consumer = name, consumer_arn = %arn, "enhanced fan-out consumer active");
                Ok(Step::Active(arn))
            }
            Some((arn, status)) => {
                tracing::info!(consumer = name, consumer_arn = %arn, status = %status, "waiting for the stream consumer");
                Ok(Step::Waiting)
            }
            None => self.register().await,
        }
    }

    /// RegisterStreamConsumer; a consumer registered meanwhile (by another task) is described
    /// again at the next step.
    async fn register(&mut self) -> Result<Step, ConsumeError> {
        let reg = self
            .client
            .register_stream_consumer()
            .stream_arn(self.stream_arn)
            .consumer_name(self.name)
            .send()
            .await;
        match reg {
            Ok(out) => {
                self.register_retry.succeeded();
                self.register_retry =
                    Retrier::new("kinesis:RegisterStreamConsumer", Policy::Forever);
                tracing::info!(consumer = self.name, consumer_arn = ?out.consumer().map(|c| c.consumer_arn()), "registered the stream consumer");
                Ok(Step::Waiting)
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
                Ok(Step::Waiting)
            }
            Err(e) => {
                let e = classed("RegisterStreamConsumer", self.stream, None, &e);
                back_off(&mut self.register_retry, e).await
            }
        }
    }
}
