//! From parsed arguments to library settings, shared by every command: the pipeline's settings
//! (framing and format, the counting rule, counter and detection settings), the state store, times.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use flowlog::{DecodeOptions, Format, Framing};
use flowspike_aws::{Policy, S3Store, S3Url, S3};
use flowspike_counter::{CounterConfig, Pipeline, Rule};
use flowspike_detect::DetectConfig;
use flowspike_engine::Output;
use flowspike_findings::{AwsContext, Encoder, FindingsError};
use flowspike_history::{LocalStore, Store};

use crate::args::{DetectArgs, DetectionsArgs, FindingsArgs, InputArgs, PipelineArgs};

/// Framing and format from the arguments.
pub fn decode_options(a: &InputArgs) -> anyhow::Result<DecodeOptions> {
    let framing: Framing =
        a.framing.parse().map_err(|e| anyhow::anyhow!("--framing {}: {e}", a.framing))?;
    let format = match &a.format {
        Some(f) => Some(Format::parse(f).with_context(|| format!("--format {f:?}"))?),
        None => None,
    };
    Ok(DecodeOptions { framing, format, ..DecodeOptions::default() })
}

/// The pipeline's settings from the flags every pipeline command shares.
/// The other detections' settings from their arguments; `s3` is made when a threat list is in
/// S3.
pub fn detections(
    a: &DetectionsArgs,
    s3: &mut Option<S3>,
) -> anyhow::Result<flowspike_detections::DetectionsConfig> {
    let set: flowspike_detections::DetectionSet = a.detections.parse()?;
    let volume = flowspike_detections::VolumeConfig {
        unit_bytes: a.volume_unit_bytes,
        ..Default::default()
    };
    let scan = flowspike_scan::ScanConfig {
        vertical_min_ports: a.scan_min_ports,
        vertical_min_low_ports: a.scan_min_low_ports,
        horizontal_min_dests: a.sweep_min_dests,
        ..Default::default()
    };
    // Lists are read only for the detection that uses them (a 100k-entry list takes a good part
    // of a second's CPU to parse and index).
    let reloader = if set.contains(flowspike_detections::Detection::ThreatList) {
        threat_reloader(&a.threat_lists, s3)?.map(Arc::new)
    } else {
        if !a.threat_lists.is_empty() {
            tracing::warn!(detections = %set, "--threat-list ignored: the threat-list detection is off");
        }
        None
    };
    Ok(flowspike_detections::DetectionsConfig {
        set,
        volume,
        scan,
        threat_lists: reloader.as_ref().map(|r| r.current()),
        threat_reloader: reloader,
        ..Default::default()
    })
}

/// Reloads the threat lists of `cfg` (when it has a reloader) every `every` on a thread of its
/// own, for the services: batches decoded after a change match against the new lists. A list
/// that fails to read or parse keeps its previous version (logged). `every` zero: never.
pub fn spawn_threat_reload(cfg: &flowspike_detections::DetectionsConfig, every: Duration) {
    let Some(reloader) = cfg.threat_reloader.clone() else { return };
    if every.is_zero() {
        return;
    }
    let spawned = std::thread::Builder::new().name("threat-reload".into()).spawn(move || loop {
        std::thread::sleep(every);
        match reloader.reload_if_changed() {
            Ok(true) => tracing::info!(lists = ?reloader.names(), "threat lists reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "threat list not reloaded; the previous one stays")
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the threat list reload: lists stay as loaded");
    }
}

/// The threat lists of `--threat-list` (files or `s3://` objects; `None` when there is none),
/// each named after its file name without extension; `s3` is made for an S3 list.
pub fn threat_lists(
    lists: &[String],
    s3: &mut Option<S3>,
) -> anyhow::Result<Option<std::sync::Arc<flowspike_threat::ThreatLists>>> {
    Ok(threat_reloader(lists, s3)?.map(|r| r.current()))
}

/// The loaded lists of `--threat-list` with their sources, to reload them when they change.
pub fn threat_reloader(
    lists: &[String],
    s3: &mut Option<S3>,
) -> anyhow::Result<Option<flowspike_threat::Reloader>> {
    use flowspike_threat::{FileSource, ListSource, Reloader};
    let mut sources: Vec<Box<dyn ListSource>> = Vec::new();
    for l in lists.iter().filter(|l| !l.is_empty()) {
        if l.starts_with("s3://") {
            sources.push(Box::new(flowspike_aws::S3ListSource::new(s3_client(s3)?, l)?));
        } else {
            sources.push(Box::new(FileSource::named_by_stem(l)));
        }
    }
    if sources.is_empty() {
        return Ok(None);
    }
    Ok(Some(Reloader::load(sources).context("cannot load the threat lists")?))
}

/// The pipeline settings from their arguments.
pub fn pipeline(a: &PipelineArgs) -> anyhow::Result<Pipeline> {
    let decode = decode_options(&a.input)?;
    let (rule, counter, detect) = detect_settings(&a.detect)?;
    Ok(Pipeline { decode, rule, counter, detect })
}

/// The output of spike records from the arguments: `stream` (None: standard output) in
/// `--output-format`, plus Security Hub and EventBridge if asked. The account is
/// `--aws-account-id`; the region, when ASFF or Security Hub need one (or OCSF gets the account),
/// the AWS configuration's.
pub fn output(a: &FindingsArgs, stream: Option<String>) -> anyhow::Result<Output> {
    let format = a.output_format.parse()?;
    let aws = match &a.aws_account_id {
        None if a.securityhub => return Err(FindingsError::MissingAccount("--securityhub").into()),
        None => None,
        Some(account) => {
            let region = flowspike_aws::configured_region()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "--aws-account-id needs a region: set AWS_REGION or the AWS profile's region"
                )
            })?;
            Some(AwsContext::new(account, &region)?)
        }
    };
    if matches!(&a.eventbridge_bus, Some(b) if b.trim().is_empty()) {
        bail!("--eventbridge-bus must not be empty");
    }
    Ok(Output {
        stream,
        encoder: Encoder::new(format, aws.clone())?,
        securityhub: if a.securityhub { aws } else { None },
        eventbridge_bus: a.eventbridge_bus.clone(),
    })
}

/// Rule, counter and detection settings from the arguments.
pub fn detect_settings(a: &DetectArgs) -> anyhow::Result<(Rule, CounterConfig, DetectConfig)> {
    let rule = if a.internal.is_empty() {
        Rule::default()
    } else {
        let nets = a
            .internal
            .iter()
            .map(|s| s.trim().parse().with_context(|| format!("--internal {s:?} is not a CIDR")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Rule::new(nets)
    }
    .with_max_future_secs(a.max_future_secs);
    let counter = CounterConfig {
        dest_cap: a.dest_cap,
        max_sources_per_hour: a.max_sources_per_hour,
        ..CounterConfig::default()
    };
    let mode = a.mode.parse().map_err(|e| anyhow::anyhow!("--mode {}: {e}", a.mode))?;
    let defaults = DetectConfig::for_mode(mode);
    let detect = DetectConfig {
        mode,
        window_hours: a.window_hours,
        min_points: u64::from(a.min_points),
        deviations: a.deviations,
        min_count: a.min_count.unwrap_or(defaults.min_count),
        alpha: a.alpha.unwrap_or(defaults.alpha),
    };
    Ok((rule, counter, detect))
}

/// `--metrics-addr` of the services: `IP:PORT`, or `off` (`None`).
pub fn metrics_addr(v: &str) -> anyhow::Result<Option<SocketAddr>> {
    match v.trim() {
        "off" => Ok(None),
        v => Ok(Some(v.parse().map_err(|_| {
            anyhow::anyhow!("--metrics-addr {v:?}: expected IP:PORT (e.g. 0.0.0.0:9090) or off")
        })?)),
    }
}

/// The state store: a local directory or `s3://bucket/prefix` (S3 calls retried forever, as the
/// services need).
pub fn open_state(state: &str, s3: &mut Option<S3>) -> anyhow::Result<Arc<dyn Store>> {
    open_state_with(state, s3, Policy::Forever)
}

/// [`open_state`] with the retry policy of an S3 state.
pub fn open_state_with(
    state: &str,
    s3: &mut Option<S3>,
    policy: Policy,
) -> anyhow::Result<Arc<dyn Store>> {
    if state.starts_with("s3://") {
        let url = S3Url::parse(state)?;
        Ok(Arc::new(S3Store::new(s3_client(s3)?, url).with_policy(policy)))
    } else {
        std::fs::create_dir_all(state)
            .with_context(|| format!("cannot create state dir {state}"))?;
        Ok(Arc::new(LocalStore::new(state)))
    }
}

/// The S3 client, built on first use and shared by the commands' S3 state and archives.
pub fn s3_client(s3: &mut Option<S3>) -> anyhow::Result<S3> {
    if s3.is_none() {
        *s3 = Some(S3::from_env().context("cannot set up the AWS S3 client")?);
    }
    Ok(s3.clone().expect("set above"))
}

/// Parses `--from/--to`: RFC 3339, `YYYY-MM-DD`, `YYYY-MM-DDTHH`, or unix seconds.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    use chrono::{NaiveDate, NaiveDateTime};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&format!("{s}:00:00"), "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc().timestamp());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or_default());
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    bail!("not a time: {s:?} (use RFC 3339, YYYY-MM-DD, YYYY-MM-DDTHH or unix seconds)")
}
