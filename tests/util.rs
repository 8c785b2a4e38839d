//! Helpers: the `flowspike` executable, sample paths, and a `moto_server` process per test.

use std::net::TcpStream;
use std::path::PathBuf;
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
