//! `flowspike consume` across resharding, against kinesis-local (the emulator that closes shards
//! faithfully: a closed shard ends with a null NextShardIterator and `ChildShards`, and serves
//! SubscribeToShard). Records are put, the stream is split and merged between rounds of records,
//! and the final Parquet aggregates must equal the input exactly — nothing lost, nothing read
//! twice — with every parent finished (and checkpointed) before its children were read. Polling,
//! enhanced fan-out (`--efo`) and a `kill -9` restart across a split.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::Value;

use crate::consume::{
    expected, history_rows, hours_ago_base, line, put_lines, read, runtime, spawn_logged,
    wait_with_timeout, KillOnDrop,
};
use crate::util::{assert_code, run, KinesisLocal};

const HOUR: i64 = 3600;

type Flow = (String, String, String, i64, bool, u64);

/// `n` flow lines of three recent hours, deterministic per `seed`; about four in five are blocked
/// outbound. The hours end at least an hour ago, so that idle shards (watermark `now - 60 s`) close
/// all of them even in the first minute of an hour.
fn round(seed: u64, n: usize) -> (Vec<String>, Vec<Flow>) {
    let base = hours_ago_base(0) - 4 * HOUR;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let (mut lines, mut flows) = (Vec::new(), Vec::new());
    for _ in 0..n {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let r = x >> 33;
        let start = base + (r % 3) as i64 * HOUR + ((r >> 4) % 3500) as i64;
        let src = format!("10.1.{}.{}", r % 4, (r >> 8) % 5 + 1);
        let dst = if r.is_multiple_of(13) {
            "10.9.9.9".to_string()
        } else {
            format!("198.51.100.{}", (r >> 12) % 30)
        };
        let reject = !r.is_multiple_of(5);
        let eni = format!("eni-{:08x}", (r >> 16) % 3);
        let bytes = 40 + (r % 100);
        lines.push(line(&eni, &src, &dst, start, if reject { "REJECT" } else { "ACCEPT" }, bytes));
        flows.push((eni, src, dst, start, reject, bytes));
    }
    (lines, flows)
}

/// How many flows the consumer counts (blocked outbound) among `flows`.
fn counted(flows: &[Flow]) -> u64 {
    expected(flows).iter().map(|r| r.blocked_count).sum()
}

async fn wait_active(k: &aws_sdk_kinesis::Client, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = k.describe_stream_summary().stream_name(stream).send().await.expect("describe");
        let s = d.stream_description_summary().expect("summary");
        if s.stream_status().as_str() == "ACTIVE" {
            return;
        }
        assert!(Instant::now() < deadline, "stream {stream} not active in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_stream(k: &aws_sdk_kinesis::Client, stream: &str) {
    k.create_stream().stream_name(stream).shard_count(1).send().await.expect("create stream");
    wait_active(k, stream).await;
}

/// A listed shard: id, parents, hash key range, open (no ending sequence number).
struct Shard {
    id: String,
    parents: Vec<String>,
    start: u128,
    end: u128,
    open: bool,
}

async fn list(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Shard> {
    let resp = k.list_shards().stream_name(stream).send().await.expect("list shards");
    assert!(resp.next_token().is_none(), "one page of shards");
    resp.shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().expect("hash key range");
            Shard {
                id: s.shard_id().to_string(),
                parents: [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect(),
                start: r.starting_hash_key().parse().expect("hash key"),
                end: r.ending_hash_key().parse().expect("hash key"),
                open: s
                    .sequence_number_range()
                    .is_none_or(|q| q.ending_sequence_number().is_none()),
            }
        })
        .collect()
}

/// Splits the (only) open shard in the middle of its hash key range, as ListShards reports it.
async fn split(k: &aws_sdk_kinesis::Client, stream: &str) -> String {
    let shards = list(k, stream).await;
    let open: Vec<&Shard> = shards.iter().filter(|s| s.open).collect();
    assert_eq!(open.len(), 1, "one open shard before the split");
    let s = open[0];
    let mid = s.start + (s.end - s.start) / 2 + 1;
    k.split_shard()
        .stream_name(stream)
        .shard_to_split(&s.id)
        .new_starting_hash_key(mid.to_string())
        .send()
        .await
        .expect("split shard");
    wait_active(k, stream).await;
    s.id.clone()
}

/// Merges the two open shards (adjacent hash key ranges, as ListShards reports them).
async fn merge(k: &aws_sdk_kinesis::Client, stream: &str) {
    let shards = list(k, stream).await;
    let mut open: Vec<&Shard> = shards.iter().filter(|s| s.open).collect();
    assert_eq!(open.len(), 2, "two open shards before the merge");
    open.sort_by_key(|s| s.start);
    assert_eq!(open[0].end + 1, open[1].start, "adjacent hash key ranges");
    k.merge_shards()
        .stream_name(stream)
        .shard_to_merge(&open[0].id)
        .adjacent_shard_to_merge(&open[1].id)
        .send()
        .await
        .expect("merge shards");
    wait_active(k, stream).await;
}

/// Records in each shard, read from its beginning to its end or tip with the test's own client.
async fn records_per_shard(k: &aws_sdk_kinesis::Client, stream: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in list(k, stream).await {
        let it = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&s.id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator");
        let mut it = it.shard_iterator().map(str::to_owned);
        let mut n = 0;
        while let Some(i) = it {
            let r = k.get_records().shard_iterator(i).send().await.expect("get records");
            n += r.records().len();
            if r.records().is_empty() {
                break;
            }
            it = r.next_shard_iterator().map(str::to_owned);
        }
        out.insert(s.id, n);
    }
    out
}

fn consume_cmd(kl: &KinesisLocal, stream: &str, state: &Path) -> Command {
    let mut cmd = crate::consume::consume_command(stream, state, 100);
    kl.env(&mut cmd);
    cmd.args(["--relist-shards-secs", "1"]);
    cmd
}

/// The JSON log lines of a run (tracing's JSON format: `fields.message`, `fields.shard_id`, ...).
fn events(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

fn message(e: &Value) -> &str {
    e["fields"]["message"].as_str().unwrap_or_default()
}

fn shard_of(e: &Value) -> &str {
    e["fields"]["shard_id"].as_str().unwrap_or_default()
}

/// Positions in the log of the events with message `msg`, by shard.
fn positions(events: &[Value], msg: &str) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate().filter(|(_, e)| message(e) == msg) {
        out.entry(shard_of(e).to_string()).or_default().push(i);
    }
    out
}

/// Every shard of `topology` was read once, and each child's reader started only after each of
/// its parents was logged as finished and checkpointed.
fn assert_parents_finished_first(log: &str, topology: &[Shard]) {
    let ev = events(log);
    let started = positions(&ev, "starting shard reader");
    let finished = positions(&ev, "shard finished and checkpointed");
    for s in topology {
        let st =
            started.get(&s.id).unwrap_or_else(|| panic!("{} never started; log:\n{log}", s.id));
        assert_eq!(st.len(), 1, "{} started once; log:\n{log}", s.id);
        for p in &s.parents {
            let fin =
                finished.get(p).unwrap_or_else(|| panic!("parent {p} never finished; log:\n{log}"));
            assert!(fin[0] < st[0], "{} started before its parent {p} finished; log:\n{log}", s.id);
        }
        if !s.open {
            assert!(finished.contains_key(&s.id), "closed shard {} finished; log:\n{log}", s.id);
        }
    }
}

/// The largest `counted` of the run's checkpoint log lines (flows counted so far).
fn counted_so_far(log: &str) -> u64 {
    events(log)
        .iter()
        .filter(|e| message(e) == "checkpoint")
        .filter_map(|e| e["fields"]["counted"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Polls the log file until `ok` holds (bounded: 60 s); fails with the log if the consumer exits.
fn wait_for(child: &mut KillOnDrop, log: &Path, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = read(log);
        if ok(&text) {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("consumer exited ({status}) before: {what}; log:\n{text}");
        }
        assert!(Instant::now() < deadline, "not within 60 s: {what}; log:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The run summary (the last line of stderr).
fn summary(stderr: &[u8]) -> Value {
    let line =
        stderr.split(|b| *b == b'\n').rfind(|l| l.starts_with(b"{\"stats\"")).expect("summary");
    serde_json::from_slice(line).expect("summary json")
}

fn manifest_shards(state: &Path, stream: &str) -> BTreeMap<String, Value> {
    let m: Value = serde_json::from_slice(
        &std::fs::read(state.join(format!("consumer/{stream}/manifest.json"))).expect("manifest"),
    )
    .expect("manifest json");
    m["shards"].as_object().expect("shards").clone().into_iter().collect()
}

/// Records, split, records, merge, records; then one polling run reads it all.
#[test]
fn polling_across_split_and_merge_counts_everything_once() {
    let kl = KinesisLocal::start();
    let rt = runtime();
    let k = kl.kinesis();
    let mut all = Vec::new();
    rt.block_on(async {
        create_stream(&k, "resharded").await;
        for (i, step) in ["split", "merge", "none"].into_iter().enumerate() {
            let (lines, flows) = round(i as u64 + 1, 300);
            put_lines(&k, "resharded", &lines).await;
            all.extend(flows);
            match step {
                "split" => {
                    split(&k, "resharded").await;
                }
                "merge" => merge(&k, "resharded").await,
                _ => {}
            }
        }
    });
    let topology = rt.block_on(list(&k, "resharded"));
    assert_eq!(topology.len(), 4, "parent, two split children, one merge child");
    assert!(topology.iter().any(|s| s.parents.len() == 2), "a merge child");
    let per_shard = rt.block_on(records_per_shard(&k, "resharded"));
    assert!(per_shard.values().all(|n| *n > 0), "records in every shard: {per_shard:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = run(consume_cmd(&kl, "resharded", &state).args(["--exit-when-idle-secs", "4"]));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_code(&out, 0);
    let s = summary(&out.stderr);
    assert_eq!(s["stats"]["kinesis_records"], per_shard.values().sum::<usize>(), "{s}");
    assert_eq!(s["stats"]["counted"], counted(&all), "{s}");
    assert_eq!(history_rows(&state), expected(&all));
    assert_parents_finished_first(&log, &topology);
    let m = manifest_shards(&state, "resharded");
    for sh in &topology {
        assert_eq!(m[&sh.id]["ended"], !sh.open, "manifest of {}: {:?}", sh.id, m[&sh.id]);
    }

    // A second run reads nothing again: finished shards stay finished, the open one resumes.
    let out = run(consume_cmd(&kl, "resharded", &state).args(["--exit-when-idle-secs", "3"]));
    assert_code(&out, 0);
    assert_eq!(summary(&out.stderr)["stats"]["kinesis_records"], 0);
    let ev = events(&String::from_utf8_lossy(&out.stderr));
    let started = positions(&ev, "starting shard reader");
    let open: Vec<&str> = topology.iter().filter(|s| s.open).map(|s| s.id.as_str()).collect();
    assert_eq!(started.keys().map(String::as_str).collect::<Vec<_>>(), open);
    assert_eq!(history_rows(&state), expected(&all));
}

/// Enhanced fan-out while the stream is resharded under a live consumer, with subscriptions
/// renewed every 2 s (from the last continuation sequence number) between rounds of records.
#[test]
fn efo_live_split_merge_and_resubscription_count_everything_once() {
    let kl = KinesisLocal::start();
    let rt = runtime();
    let k = kl.kinesis();
    rt.block_on(create_stream(&k, "fanout"));
    let mut all = Vec::new();
    let put = |seed: u64, all: &mut Vec<Flow>| {
        let (lines, flows) = round(seed, 200);
        rt.block_on(put_lines(&k, "fanout", &lines));
        all.extend(flows);
        counted(all)
    };
    let mut want = put(11, &mut all);

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log = dir.path().join("efo.log");
    let mut cmd = consume_cmd(&kl, "fanout", &state);
    cmd.args(["--efo", "--efo-subscription-secs", "2"]);
    let mut child = KillOnDrop(spawn_logged(cmd, &log));
    let renewed_on = |shard: String| {
        move |t: &str| {
            events(t).iter().any(|e| {
                message(e) == "subscribed to shard"
                    && shard_of(e) == shard
                    && e["fields"]["starting_position"] == "AFTER_SEQUENCE_NUMBER"
            })
        }
    };
    wait_for(&mut child, &log, "first round counted", |t| counted_so_far(t) >= want);
    wait_for(&mut child, &log, "a resubscription", renewed_on("shardId-000000000000".into()));

    let parent = rt.block_on(split(&k, "fanout"));
    assert_eq!(parent, "shardId-000000000000");
    want = put(12, &mut all);
    wait_for(&mut child, &log, "second round counted", |t| counted_so_far(t) >= want);
    rt.block_on(merge(&k, "fanout"));
    want = put(13, &mut all);
    wait_for(&mut child, &log, "third round counted", |t| counted_so_far(t) >= want);
    let topology = rt.block_on(list(&k, "fanout"));
    let last = topology.iter().find(|s| s.open).expect("an open shard").id.clone();
    // Records after a renewed subscription of the merge child are read once.
    wait_for(&mut child, &log, "a resubscription of the merge child", renewed_on(last));
    want = put(14, &mut all);
    wait_for(&mut child, &log, "fourth round counted", |t| counted_so_far(t) >= want);

    let st = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    assert!(st.is_ok_and(|s| s.success()), "kill -TERM");
    let status = wait_with_timeout(&mut child.0, Duration::from_secs(60));
    let text = read(&log);
    assert_eq!(status, Some(0), "graceful stop; log:\n{text}");
    assert_eq!(counted_so_far(&text), counted(&all), "nothing counted twice");
    assert_eq!(history_rows(&state), expected(&all));
    assert_eq!(topology.len(), 4);
    assert_parents_finished_first(&text, &topology);
    let per_shard = rt.block_on(records_per_shard(&k, "fanout"));
    assert!(per_shard.values().all(|n| *n > 0), "records in every shard: {per_shard:?}");
    // Every shard was read through subscriptions.
    let subscribed = positions(&events(&text), "subscribed to shard");
    for sh in &topology {
        assert!(subscribed.contains_key(&sh.id), "{} subscribed; log:\n{text}", sh.id);
    }

    // A restart reuses the registered consumer and reads nothing again.
    let out = run(consume_cmd(&kl, "fanout", &state).args(["--efo", "--exit-when-idle-secs", "3"]));
    assert_code(&out, 0);
    assert_eq!(summary(&out.stderr)["stats"]["kinesis_records"], 0);
    assert_eq!(history_rows(&state), expected(&all));
    let consumers = rt.block_on(async {
        let arn = k
            .describe_stream_summary()
            .stream_name("fanout")
            .send()
            .await
            .expect("describe")
            .stream_description_summary()
            .expect("summary")
            .stream_arn()
            .to_string();
        k.list_stream_consumers().stream_arn(arn).send().await.expect("list consumers")
    });
    let names: Vec<&str> = consumers.consumers().iter().map(|c| c.consumer_name()).collect();
    assert_eq!(names, ["flowspike"]);
}

/// kill -9 right after the parent's end was committed, then a restart: the parent is not read
/// again, the children are read, and every flow is counted once.
#[test]
fn restart_after_parent_finished_counts_nothing_twice() {
    let kl = KinesisLocal::start();
    let rt = runtime();
    let k = kl.kinesis();
    let mut all = Vec::new();
    let parent = rt.block_on(async {
        create_stream(&k, "restarted").await;
        let (lines, flows) = round(21, 300);
        put_lines(&k, "restarted", &lines).await;
        all.extend(flows);
        let parent = split(&k, "restarted").await;
        let (lines, flows) = round(22, 300);
        put_lines(&k, "restarted", &lines).await;
        all.extend(flows);
        parent
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log = dir.path().join("first.log");
    let mut child = KillOnDrop(spawn_logged(consume_cmd(&kl, "restarted", &state), &log));
    wait_for(&mut child, &log, "the parent finished", |t| {
        positions(&events(t), "shard finished and checkpointed").contains_key(&parent)
    });
    child.0.kill().expect("kill -9");
    child.0.wait().expect("wait");
    assert_eq!(manifest_shards(&state, "restarted")[&parent]["ended"], true);

    let out = run(consume_cmd(&kl, "restarted", &state).args(["--exit-when-idle-secs", "4"]));
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_code(&out, 0);
    let started = positions(&events(&text), "starting shard reader");
    assert!(!started.contains_key(&parent), "the finished parent is not read again; log:\n{text}");
    assert_eq!(started.len(), 2, "both children read; log:\n{text}");
    assert_eq!(history_rows(&state), expected(&all));
}
