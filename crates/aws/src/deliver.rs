//! The delivery loop every batch sink shares (Kinesis PutRecords, Security Hub
//! BatchImportFindings, EventBridge PutEvents): send a batch, send again alone the entries the
//! service refused, back off between attempts, stop only on an error retrying cannot fix.

use std::future::Future;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flowspike_engine::EngineError;
use flowspike_retry::{Class, Policy, Retrier};

/// The answer to one attempt of a batch call.
pub(crate) enum Answer<E> {
    /// The service answered; these entries were refused, each with its error code and message.
    Refused(Vec<(E, String, String)>),
    /// The call itself failed (its class and description).
    Failed(Class, String),
}

impl<E> Answer<E> {
    /// The answer of a call: `refused` picks the refused entries out of a response; an error is
    /// classified by `flowspike-retry`.
    pub(crate) fn of<T, O>(
        resp: Result<T, SdkError<O, HttpResponse>>,
        refused: impl FnOnce(T) -> Vec<(E, String, String)>,
    ) -> Answer<E>
    where
        O: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match resp {
            Ok(out) => Answer::Refused(refused(out)),
            Err(e) => Answer::Failed(flowspike_retry::classify(&e), flowspike_retry::describe(&e)),
        }
    }
}

/// The refused entries of a call whose answer lists one result per entry, in order (Kinesis
/// PutRecords, EventBridge PutEvents): those whose result has an error code, with its message.
pub(crate) fn refused_in_order<'a, E>(
    batch: Vec<E>,
    results: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Vec<(E, String, String)> {
    results
        .zip(batch)
        .filter_map(|((code, message), e)| {
            Some((e, code?.to_string(), message.unwrap_or_default().to_string()))
        })
        .collect()
}

/// The class of a refused entry from its error code: throttling and transient codes are retried;
/// `other` is the class of every other code (Kinesis: transient; Security Hub and EventBridge:
/// fatal, since an entry refused as invalid is refused again).
pub(crate) fn entry_class(code: &str, other: Class) -> Class {
    match flowspike_retry::classify_code(Some(code), None) {
        Class::Fatal => other,
        c => c,
    }
}

/// Sends `entries` through `call` until every entry is accepted, retrying under `policy`
/// ([`Policy::Forever`] in the services) unless an error is [`Class::Fatal`]: then `Err` with the
/// service's message. `target` names the
/// destination in errors; `other` classifies refused entries' unknown codes ([`entry_class`]).
pub(crate) async fn deliver<E, F, Fut>(
    operation: &'static str,
    policy: Policy,
    target: &str,
    other: Class,
    mut entries: Vec<E>,
    mut call: F,
) -> Result<(), EngineError>
where
    E: Clone,
    F: FnMut(Vec<E>) -> Fut,
    Fut: Future<Output = Answer<E>>,
{
    let mut retrier = Retrier::new(operation, policy);
    while !entries.is_empty() {
        let sent = entries.len();
        let (failed, class, why) = match call(entries.clone()).await {
            Answer::Refused(refused) => {
                if refused.is_empty() {
                    retrier.succeeded();
                    return Ok(());
                }
                flowspike_retry::count_failed_entries(operation, refused.len() as u64);
                let mut class = Class::Transient;
                let mut why = String::new();
                let mut failed = Vec::with_capacity(refused.len());
                for (e, code, message) in refused {
                    // The worst class wins: one fatal entry stops, one throttled entry backs off
                    // like a throttled call.
                    match (entry_class(&code, other), class) {
                        (Class::Fatal, _) | (_, Class::Fatal) => class = Class::Fatal,
                        (Class::Throttled, _) => class = Class::Throttled,
                        _ => {}
                    }
                    why = format!("{code}: {message}");
                    failed.push(e);
                }
                (failed, class, why)
            }
            Answer::Failed(class, why) => (entries.clone(), class, why),
        };
        let err = EngineError::Output {
            message: format!(
                "{operation} to {target}: {} of {sent} entries failed: {why}",
                failed.len()
            ),
            retryable: class.is_retryable(),
        };
        match retrier.failed(class, &err) {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return Err(err),
        }
        entries = failed;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F, Fut>(operation: &'static str, entries: Vec<u32>, call: F) -> Result<(), EngineError>
    where
        F: FnMut(Vec<u32>) -> Fut,
        Fut: Future<Output = Answer<u32>>,
    {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(deliver(operation, Policy::Forever, "target", Class::Fatal, entries, call))
    }

    #[test]
    fn refused_entries_are_sent_again_alone() {
        let mut calls: Vec<Vec<u32>> = Vec::new();
        let r = run("test:Refused", vec![1, 2, 3], |batch| {
            calls.push(batch.clone());
            let refused = if calls.len() == 1 {
                vec![(2, "ThrottlingException".to_string(), "slow down".to_string())]
            } else {
                Vec::new()
            };
            async move { Answer::Refused(refused) }
        });
        assert!(r.is_ok());
        assert_eq!(calls, vec![vec![1, 2, 3], vec![2]]);
        assert!(flowspike_retry::failed_entries().contains(&("test:Refused", 1)));
    }

    #[test]
    fn failed_calls_are_retried_and_fatal_entries_stop() {
        let mut n = 0;
        let r = run("test:Failed", vec![1], |_| {
            n += 1;
            let a = if n < 3 {
                Answer::Failed(Class::Transient, "503".into())
            } else {
                Answer::Refused(Vec::new())
            };
            async move { a }
        });
        assert!(r.is_ok());
        assert_eq!(n, 3);
        let r = run("test:Fatal", vec![1, 2], |_| async {
            Answer::Refused(vec![(1, "InvalidInput".into(), "bad finding".into())])
        });
        let e = r.unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("InvalidInput: bad finding"), "{e}");
    }
}
