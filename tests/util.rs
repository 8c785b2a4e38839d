//! Helpers: the `flowspike` executable, sample paths, and a `moto_server` process per test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A command running the `flowspike` binary under test, with no AWS configuration leaking in.
pub fn flowspike() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowspike"));
    for v in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "FLOWSPIKE_LOG"] {
        c.env_remove(v);
    }
    c.env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

/// Runs `flowspike demo --dir demo`, which must succeed; returns its standard output and the
/// ground truth of the archive it generated (`demo/archive/manifest.json`).
pub fn run_demo(demo: &Path) -> (String, flowspike_synth::Manifest) {
    let out = run(flowspike().arg("demo").arg("--dir").arg(demo));
    assert_code(&out, 0);
    let manifest = std::fs::read(demo.join("archive/manifest.json")).expect("the demo's manifest");
    let manifest = serde_json::from_slice(&manifest).expect("a manifest");
    (String::from_utf8_lossy(&out.stdout).into_owned(), manifest)
}

/// Runs a command, returning its output; panics with the command's stderr if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Asserts the exit code, showing stderr on failure.
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir` (recursively), sorted by path.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// A file under `../shared/samples/` (the repository's sibling, here and in CI).
pub fn sample(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples").join(rel);
    assert!(p.exists(), "sample {} is missing", p.display());
    p
}

/// A `moto_server` on 127.0.0.1 for one test; stopped when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` (from PATH; `bash tests/run.sh` installs it) on a free loopback port.
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}); run the tests with `bash tests/run.sh`")
            });
        let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited early: {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "moto_server did not listen on port {port} in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Sets the AWS environment of `cmd` to talk to this server.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
    }

    /// An S3 client on this server (the real SDK over HTTP).
    pub fn s3(&self) -> flowspike_aws::S3 {
        flowspike_aws::S3::for_endpoint(&self.endpoint, "testing", "testing").expect("s3 client")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound once and released; the caller binds it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A `kinesis-local` (npm; `bash tests/run.sh` installs it under `tests/node/`) for one test, the
/// Kinesis emulator that reshards faithfully and serves SubscribeToShard; stopped when dropped.
/// It binds every interface on its ports; the tests talk to it on 127.0.0.1 only.
pub struct KinesisLocal {
    child: Child,
    /// `http://127.0.0.1:PORT` (plain HTTP).
    pub endpoint: String,
}

impl KinesisLocal {
    /// Starts kinesis-local on free ports (plain HTTP and its TLS port), with short durations for
    /// stream creation, resharding and consumer registration, and waits until it listens.
    pub fn start() -> KinesisLocal {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/node_modules/kinesis-local");
        let main = dir.join("main.js");
        assert!(
            main.exists(),
            "{} is missing; run the tests with `bash tests/run.sh` (npm ci --prefix tests/node)",
            main.display()
        );
        let (plain, tls) = (free_port(), free_port());
        let mut cmd = Command::new("node");
        cmd.arg(&main)
            .env("KINESIS_MOCK_PLAIN_PORT", plain.to_string())
            .env("KINESIS_MOCK_TLS_PORT", tls.to_string())
            .env("KINESIS_MOCK_CERT_PATH", dir.join("server.json"))
            .env("LOG_LEVEL", "WARN")
            .env("SHOULD_PERSIST_DATA", "false");
        for v in [
            "CREATE_STREAM_DURATION",
            "SPLIT_SHARD_DURATION",
            "MERGE_SHARDS_DURATION",
            "UPDATE_SHARD_COUNT_DURATION",
            "REGISTER_STREAM_CONSUMER_DURATION",
        ] {
            cmd.env(v, "100ms");
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start node for kinesis-local ({e}); run the tests with `bash tests/run.sh`"
            )
        });
        let mut kl = KinesisLocal { child, endpoint: format!("http://127.0.0.1:{plain}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = kl.child.try_wait() {
                panic!("kinesis-local exited early: {status}");
            }
            if TcpStream::connect(("127.0.0.1", plain)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kinesis-local did not listen on port {plain} in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        kl
    }

    /// Sets the AWS environment of `cmd` to talk to this server.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
    }

    /// A Kinesis client on this server (the real SDK over HTTP).
    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
            .build();
        aws_sdk_kinesis::Client::from_conf(conf)
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that the scan, sweep and volume tables of `got` equal those of `want`, hour by hour,
/// with one file per hour in `got` (the consumer's `consumer-<stream>.parquet`: a redo after a
/// crash overwrites its own file, never adds one).
pub fn assert_detection_tables_equal(
    got: &dyn flowspike_history::Store,
    want: &dyn flowspike_history::Store,
) {
    for t in [
        flowspike_detections::PORT_SCAN_TABLE,
        flowspike_detections::PORT_SWEEP_TABLE,
        flowspike_detections::VOLUME_TABLE,
    ] {
        let hours = t.hours(want).expect("hours wanted");
        assert_eq!(t.hours(got).expect("hours got"), hours, "{}", t.name);
        assert!(!hours.is_empty(), "{}", t.name);
        for h in hours {
            let files = t.hour_files(got, h).expect("files");
            assert_eq!(files.len(), 1, "{files:?}");
            assert_eq!(
                t.read_hour(got, h).expect("table got"),
                t.read_hour(want, h).expect("table wanted"),
                "{} hour {h}",
                t.name
            );
        }
    }
}
