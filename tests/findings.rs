//! Finding formats and sinks (issue #31): `--output-format native|ocsf|asff` on replay's spike
//! records (native byte for byte today's record, OCSF validated against the vendored OCSF 1.1.0
//! schema by `tests/ocsf/validate.py`, ASFF against its documented required attributes), and
//! `--securityhub` / `--eventbridge-bus` against moto_server behind the [`FaultProxy`]: every
//! spike read back from Security Hub (GetFindings) and from the bus (a rule to an SQS queue),
//! through throttles, 5xx and dropped answers; a second run updates the findings, it does not
//! add any. The other detections' findings (issue #32: port scans, sweeps, threat lists) reach
//! both sinks beside the spikes. `consume` with Security Hub unreachable commits nothing it did
//! not deliver.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flowspike_synth::generate_to_dir;
use serde_json::Value;

use crate::consume::{
    consume_command, create_stream, hours_ago_base, kinesis, line, put_lines, read, runtime,
    spawn_logged, KillOnDrop,
};
use crate::faults::{FaultProxy, Service};
use crate::replay::small_config;
use crate::util::{assert_code, flowspike, run, Moto};

const ACCOUNT: &str = "123456789012";

fn python() -> String {
    std::env::var("FLOWSPIKE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Replays `archive` into `state` with `extra` arguments; the spikes file's lines.
fn replay(
    archive: &Path,
    state: &Path,
    spikes: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<String> {
    let mut cmd = flowspike();
    cmd.arg("replay")
        .arg(archive)
        .arg("--state")
        .arg(state)
        .arg("--spikes")
        .arg(spikes)
        .args(["--mode", "window"])
        .args(extra)
        .envs(env.iter().copied());
    let out = run(&mut cmd);
    assert_code(&out, 0);
    std::fs::read_to_string(spikes).expect("spikes file").lines().map(String::from).collect()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The native records of a default replay of the small archive, and the paths to replay it again.
struct Setup {
    dir: tempfile::TempDir,
    native: Vec<String>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_to_dir(&small_config(31), &dir.path().join("archive")).expect("generate");
        let native = replay(
            &dir.path().join("archive"),
            &dir.path().join("state"),
            &dir.path().join("default.jsonl"),
            &[],
            &[],
        );
        assert!(native.len() >= 3, "the small archive's bursts: {native:?}");
        Setup { dir, native }
    }

    fn replay(&self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Vec<String> {
        let p = self.dir.path();
        replay(&p.join("archive"), &p.join("state"), &p.join(name), extra, env)
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.native.iter().map(|l| json(l)["id"].as_str().expect("id").to_owned()).collect();
        ids.sort();
        ids
    }
}

#[test]
fn output_formats_of_replay() {
    let s = Setup::new();
    // native is today's record, byte for byte.
    assert_eq!(s.replay("native.jsonl", &["--output-format", "native"], &[]), s.native);

    // OCSF: valid against the schema, one finding per spike, keyed by the spike's id.
    let ocsf = s.replay("ocsf.jsonl", &["--output-format", "ocsf"], &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ocsf/validate.py");
    let out = run(Command::new(python())
        .arg(&script)
        .arg("detection_finding")
        .arg(s.dir.path().join("ocsf.jsonl")));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "OCSF validation failed:\n{report}");
    assert!(report.contains(&format!("{} events valid", s.native.len())), "{report}");
    let mut uids: Vec<String> = ocsf
        .iter()
        .map(|l| json(l)["finding_info"]["uid"].as_str().expect("uid").to_owned())
        .collect();
    uids.sort();
    assert_eq!(uids, s.ids());
    for (o, n) in ocsf.iter().zip(&s.native) {
        let (o, n) = (json(o), json(n));
        assert_eq!(o["class_uid"], 2004);
        assert_eq!(o["type_uid"], 200401);
        assert_eq!(o["evidences"][0]["src_endpoint"]["ip"], n["src_ip"]);
        assert_eq!(o["evidences"][0]["data"]["blocked_count"], n["blocked_count"]);
        assert_eq!(o["unmapped"]["flowspike"]["baseline"]["threshold"], n["threshold"]);
    }

    // ASFF: the account from the flag, the region from the AWS configuration.
    let asff = s.replay(
        "asff.jsonl",
        &["--output-format", "asff", "--aws-account-id", ACCOUNT],
        &[("AWS_REGION", "eu-west-1")],
    );
    assert_eq!(asff.len(), s.native.len());
    for (a, n) in asff.iter().zip(&s.native) {
        let (a, n) = (json(a), json(n));
        for k in flowspike_findings::asff::REQUIRED_ATTRIBUTES {
            assert!(a.get(k).is_some(), "{k} missing: {a}");
        }
        assert_eq!(
            a["ProductArn"],
            format!("arn:aws:securityhub:eu-west-1:{ACCOUNT}:product/{ACCOUNT}/default")
        );
        assert_eq!(a["Id"], format!("flowspike/eu-west-1/{ACCOUNT}/{}", n["id"].as_str().unwrap()));
        assert_eq!(a["Network"]["SourceIpV4"], n["src_ip"]);
        assert!(a["Title"].as_str().unwrap().chars().count() <= 256);
        assert!(a["Description"].as_str().unwrap().chars().count() <= 1024);
    }

    // ASFF without an account is refused before any work.
    let mut cmd = flowspike();
    cmd.args(["replay", "/nonexistent", "--state"])
        .arg(s.dir.path().join("state"))
        .args(["--output-format", "asff"]);
    let out = run(&mut cmd);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--aws-account-id"));
}

/// Runs `code` (Python with boto3, which moto brings) against `endpoint`; its standard output.
fn boto(endpoint: &str, code: &str) -> String {
    let prelude = format!(
        "import boto3, json, sys\n\
         kw = dict(endpoint_url={endpoint:?}, region_name='us-east-1', \
         aws_access_key_id='testing', aws_secret_access_key='testing')\n"
    );
    let out = run(Command::new(python()).arg("-c").arg(prelude + code));
    assert!(out.status.success(), "boto3 failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An event bus `flowspike-test` whose rule sends flowspike's events to the SQS queue `spikes`.
fn bus_to_queue(endpoint: &str) {
    boto(
        endpoint,
        "ev = boto3.client('events', **kw); sqs = boto3.client('sqs', **kw)\n\
         ev.create_event_bus(Name='flowspike-test')\n\
         q = sqs.create_queue(QueueName='spikes')['QueueUrl']\n\
         arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         ev.put_rule(Name='r', EventBusName='flowspike-test', EventPattern=json.dumps({'source': ['flowspike']}))\n\
         ev.put_targets(Rule='r', EventBusName='flowspike-test', Targets=[{'Id': '1', 'Arn': arn}])\n",
    );
}

/// What the sinks hold: Security Hub's findings (`Id`, `Types`, `Network`) and the events on the
/// queue, whose detail-type is a spike's or a finding's.
struct Delivered {
    /// Security Hub's findings as GetFindings returns them, sorted by `Id`.
    findings: Vec<Value>,
    /// The ids of the events of detail-type `Blocked Outbound Spike`, sorted (with repeats).
    spike_events: Vec<String>,
    /// The ids of the events of detail-type `Flowspike Finding`, sorted (with repeats).
    finding_events: Vec<String>,
}

impl Delivered {
    fn finding_ids(&self) -> Vec<String> {
        self.findings.iter().map(|f| f["Id"].as_str().expect("Id").to_owned()).collect()
    }
}

/// Reads back (and empties) what Security Hub and the queue of [`bus_to_queue`] received; fails
/// on an event of any other source or detail-type.
fn delivered_all(endpoint: &str) -> Delivered {
    let out = boto(
        endpoint,
        "sh = boto3.client('securityhub', **kw); sqs = boto3.client('sqs', **kw)\n\
         found = [{k: f.get(k) for k in ('Id', 'Types', 'Network', 'GeneratorId')} \
                  for p in sh.get_paginator('get_findings').paginate() for f in p['Findings']]\n\
         q = sqs.get_queue_url(QueueName='spikes')['QueueUrl']\n\
         events = []\n\
         while True:\n\
         \x20   m = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10).get('Messages', [])\n\
         \x20   if not m: break\n\
         \x20   events += [json.loads(x['Body']) for x in m]\n\
         \x20   sqs.delete_message_batch(QueueUrl=q, Entries=[{'Id': str(i), 'ReceiptHandle': x['ReceiptHandle']} for i, x in enumerate(m)])\n\
         kinds = {'Blocked Outbound Spike': [], 'Flowspike Finding': []}\n\
         for e in events:\n\
         \x20   assert e['source'] == 'flowspike', e\n\
         \x20   kinds[e['detail-type']].append(e['detail']['id'])\n\
         print(json.dumps([sorted(found, key=lambda f: f['Id']), sorted(kinds['Blocked Outbound Spike']), sorted(kinds['Flowspike Finding'])]))\n",
    );
    let (findings, spike_events, finding_events): (Vec<Value>, Vec<String>, Vec<String>) =
        serde_json::from_str(out.trim()).expect("what the sinks hold");
    Delivered { findings, spike_events, finding_events }
}

#[test]
fn securityhub_and_eventbridge_get_every_spike_through_faults() {
    let s = Setup::new();
    let moto = Moto::start();
    bus_to_queue(&moto.endpoint);
    // The first 7 Security Hub calls are throttled: more than the SDK's own 5 attempts, so
    // flowspike's retry loop must carry the import; 20% of the other calls fault.
    let proxy = FaultProxy::start_with_burst(&moto.endpoint, 20, 31, Service::SecurityHub, 7);
    let args =
        ["--securityhub", "--aws-account-id", ACCOUNT, "--eventbridge-bus", "flowspike-test"];
    let env = [
        ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("FLOWSPIKE_LOG", "warn"),
    ];
    let mut cmd = flowspike();
    cmd.arg("replay")
        .arg(s.dir.path().join("archive"))
        .arg("--state")
        .arg(s.dir.path().join("state"))
        .arg("--spikes")
        .arg(s.dir.path().join("sinks.jsonl"))
        .arg("--findings-out")
        .arg(s.dir.path().join("sinks-findings.jsonl"))
        .args(["--mode", "window"])
        .args(args)
        .envs(env);
    let out = run(&mut cmd);
    assert_code(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("securityhub:BatchImportFindings"),
        "flowspike's own retry of the throttled import: {stderr}"
    );
    assert!(proxy.stats.throttled.load(std::sync::atomic::Ordering::Relaxed) >= 7);

    // The archive's other detections' findings (volume) go too, each once (issue #32).
    let finding_ids = ids_in(&s.dir.path().join("sinks-findings.jsonl"));
    let want = asff_ids(&s.ids(), &finding_ids);
    let d = delivered_all(&moto.endpoint);
    assert_eq!(
        d.finding_ids(),
        want,
        "Security Hub holds exactly one finding per spike and finding"
    );
    // EventBridge: at least once (a dropped answer makes the same event twice).
    let (mut spike_events, mut finding_events) = (d.spike_events, d.finding_events);
    spike_events.dedup();
    finding_events.dedup();
    assert_eq!(spike_events, s.ids(), "every spike on the bus");
    assert_eq!(finding_events, finding_ids, "every finding on the bus");

    // A second run (no faults) updates the findings rather than adding any.
    drop(proxy);
    let mut again = flowspike();
    again
        .arg("replay")
        .arg(s.dir.path().join("archive"))
        .arg("--state")
        .arg(s.dir.path().join("state"))
        .arg("--spikes")
        .arg(s.dir.path().join("again.jsonl"))
        .arg("--findings-out")
        .arg(s.dir.path().join("again-findings.jsonl"))
        .args(["--mode", "window"])
        .args(args);
    moto.env(&mut again);
    assert_code(&run(&mut again), 0);
    let d = delivered_all(&moto.endpoint);
    assert_eq!(d.finding_ids(), want);
    assert_eq!(d.spike_events, s.ids(), "the second run's spike events, once each");
    assert_eq!(d.finding_events, finding_ids, "the second run's finding events, once each");
}

/// The Security Hub `Id`s (us-east-1, [`ACCOUNT`]) of the records with these ids, sorted.
fn asff_ids(spike_ids: &[String], finding_ids: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = spike_ids
        .iter()
        .chain(finding_ids)
        .map(|id| format!("flowspike/us-east-1/{ACCOUNT}/{id}"))
        .collect();
    ids.sort();
    ids
}

/// The `id`s of a JSON Lines file of records, sorted.
fn ids_in(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut ids: Vec<String> =
        text.lines().map(|l| json(l)["id"].as_str().expect("id").to_owned()).collect();
    ids.sort();
    ids
}

/// Issue #32: replay with `--securityhub` and `--eventbridge-bus` delivers the other detections'
/// findings too (labelled port scan, port sweep and threat-list contact of `gen --cases 1`, and
/// whatever volume finds), after the spikes, through throttles, 5xx and dropped answers: Security
/// Hub holds exactly one ASFF finding per spike and per finding (a finding's `Id` from its id, its
/// detection's type, a sweep's port and protocol), the bus every one of them under its own
/// detail-type, and `--findings-out` is still written.
#[test]
fn securityhub_and_eventbridge_get_every_finding_through_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    let gen = ["gen", "--hours", "400", "--hosts", "80", "--seed", "5", "--cases", "1", "--out"];
    assert_code(&run(flowspike().args(gen).arg(&archive)), 0);
    let lists = ["tor-exits", "custom"]
        .map(|n| archive.join("threat-lists").join(format!("{n}.txt")).display().to_string())
        .join(",");
    let moto = Moto::start();
    bus_to_queue(&moto.endpoint);
    // The first 7 Security Hub calls are throttled (past the SDK's own attempts), 20% of the
    // other calls fault.
    let proxy = FaultProxy::start_with_burst(&moto.endpoint, 20, 32, Service::SecurityHub, 7);
    let (spikes, findings) = (dir.path().join("spikes.jsonl"), dir.path().join("findings.jsonl"));
    let mut cmd = flowspike();
    cmd.arg("replay")
        .arg(archive.join("AWSLogs"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--spikes")
        .arg(&spikes)
        .arg("--findings-out")
        .arg(&findings)
        .args(["--threat-list", &lists])
        .args(["--internal", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8"])
        .args(["--securityhub", "--aws-account-id", ACCOUNT, "--eventbridge-bus", "flowspike-test"])
        .envs([
            ("AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("FLOWSPIKE_LOG", "warn"),
        ]);
    let out = run(&mut cmd);
    assert_code(&out, 0);
    assert!(proxy.stats.throttled.load(std::sync::atomic::Ordering::Relaxed) >= 7);

    let records: Vec<Value> =
        std::fs::read_to_string(&findings).expect("findings file").lines().map(json).collect();
    for detection in ["port_scan", "port_sweep", "threat_list"] {
        assert!(
            records.iter().any(|f| f["detection"] == detection),
            "the labelled {detection} case was found: {records:?}"
        );
    }
    let (spike_ids, finding_ids) = (ids_in(&spikes), ids_in(&findings));
    let want = asff_ids(&spike_ids, &finding_ids);
    let d = delivered_all(&moto.endpoint);
    assert_eq!(d.finding_ids(), want, "Security Hub holds one finding per spike and per finding");
    // Each finding under its detection's type and generator; a sweep with its port and protocol,
    // a scan with its target.
    for r in &records {
        let id = format!("flowspike/us-east-1/{ACCOUNT}/{}", r["id"].as_str().unwrap());
        let f = d.findings.iter().find(|f| f["Id"] == id.as_str()).expect("imported");
        let detection = r["detection"].as_str().unwrap();
        assert_eq!(f["GeneratorId"], format!("flowspike/{detection}"));
        let kind = flowspike_findings::Kind::of(detection);
        assert_eq!(f["Types"], serde_json::json!([kind.asff_type]), "{f}");
        assert_eq!(
            f["Network"]["SourceIpV4"].as_str().or(f["Network"]["SourceIpV6"].as_str()),
            r["src_ip"].as_str()
        );
        if detection == "port_sweep" {
            assert_eq!(f["Network"]["DestinationPort"], r["dst_port"], "{f}");
            assert!(f["Network"]["Protocol"].is_string(), "{f}");
        }
        if detection == "port_scan" {
            let dst = &f["Network"];
            assert!(
                dst["DestinationIpV4"] == r["dst_ip"] || dst["DestinationIpV6"] == r["dst_ip"],
                "{f}"
            );
        }
    }
    // EventBridge: at least once (a dropped answer makes the same event twice), each kind under
    // its own detail-type.
    let (mut spike_events, mut finding_events) = (d.spike_events, d.finding_events);
    spike_events.dedup();
    finding_events.dedup();
    assert_eq!(spike_events, spike_ids, "every spike on the bus");
    assert_eq!(finding_events, finding_ids, "every finding on the bus");
}

/// The consumer's Security Hub sink is in the checkpoint's path: while Security Hub cannot be
/// reached the spike is retried (never committed as emitted), a `kill -9` then loses nothing, and
/// the restarted consumer delivers it — once in Security Hub, and its OCSF record on stdout.
#[test]
fn consume_delivers_to_securityhub_before_it_checkpoints() {
    let moto = Moto::start();
    let rt = runtime();
    let k = kinesis(&moto);
    let base = hours_ago_base(2);
    rt.block_on(create_stream(&k, "flows", 1));
    // Ten quiet hours of one source, then a burst.
    let mut lines = Vec::new();
    for h in 0..10i64 {
        for i in 0..if h == 9 { 40 } else { 2 + h % 2 } {
            let dst = format!("203.0.113.{}", i % 5 + 1);
            lines.push(line(
                "eni-0a1b2c3d",
                "10.0.0.5",
                &dst,
                base + h * 3600 + 60 + i * 60,
                "REJECT",
                40,
            ));
        }
    }
    rt.block_on(put_lines(&k, "flows", &lines));
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let sinks = ["--output-format", "ocsf", "--securityhub", "--aws-account-id", ACCOUNT];

    // Security Hub unreachable (a closed port): the import is retried, the spike not committed.
    let closed = format!("http://127.0.0.1:{}", crate::util::free_port());
    let mut cmd = consume_command("flows", &state, 120);
    moto.env(&mut cmd).env("AWS_ENDPOINT_URL_SECURITYHUB", &closed).args(sinks);
    let log = dir.path().join("first.log");
    let mut first = KillOnDrop(spawn_logged(cmd, &log));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read(&log).contains("securityhub:BatchImportFindings") {
        assert!(Instant::now() < deadline, "no retried import:\n{}", read(&log));
        assert!(first.0.try_wait().expect("wait").is_none(), "exited:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(200));
    }
    first.0.kill().expect("kill -9");
    let _ = first.0.wait();
    assert_eq!(delivered_findings(&moto.endpoint), Vec::<String>::new());

    // Restarted with Security Hub reachable: the spike goes out, once.
    let mut cmd = consume_command("flows", &state, 120);
    moto.env(&mut cmd).args(sinks).args(["--exit-when-idle-secs", "4"]);
    let out = run(&mut cmd);
    assert_code(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records: Vec<Value> = stdout.lines().map(json).collect();
    assert_eq!(records.len(), 1, "{stdout}");
    assert_eq!(records[0]["class_uid"], 2004);
    assert_eq!(records[0]["evidences"][0]["src_endpoint"]["ip"], "10.0.0.5");
    assert_eq!(records[0]["evidences"][0]["data"]["blocked_count"], 40);
    let id = records[0]["finding_info"]["uid"].as_str().expect("uid");
    assert_eq!(
        delivered_findings(&moto.endpoint),
        vec![format!("flowspike/us-east-1/{ACCOUNT}/{id}")]
    );
}

/// The ids of the findings in Security Hub, sorted.
fn delivered_findings(endpoint: &str) -> Vec<String> {
    let out = boto(
        endpoint,
        "sh = boto3.client('securityhub', **kw)\n\
         ids = [f['Id'] for p in sh.get_paginator('get_findings').paginate() for f in p['Findings']]\n\
         print(json.dumps(sorted(ids)))\n",
    );
    serde_json::from_str(out.trim()).expect("ids")
}
