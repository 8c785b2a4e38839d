//! The `flowspike` command line: argument parsing and glue only; the work lives in the library crates.
//!
//! Exit codes: 0 success; 1 error (bad configuration, unreadable input or state); 2 usage error;
//! 3 finished, but some input was skipped (malformed lines or unreadable objects; see the summary).

mod args;
mod bench;
mod consume;
mod demo;
mod parse;
mod replay;
mod report;
mod serve_firehose;
mod settings;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the counter and the history rows allocate per key and per
/// address, and glibc's allocation and freeing were a visible share of a replay's CPU time
/// (docs/benchmarks-history.md, 2026-11-23 19:38 UTC).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for a replay, unless `MIMALLOC_ALLOW_THP` is set (then
/// mimalloc's own setting applies). mimalloc asks for huge pages on its arenas, so touching a few
/// bytes of a fresh region zeroes a whole 2 MiB page: Parquet writer threads held several times the
/// memory they use, and the kernel compacting memory for those pages on fault made a replay's system
/// time vary widely from run to run (docs/benchmarks-history.md, 2026-12-02 05:00–06:40 UTC). A
/// replay is short and almost all its memory is fresh; the long-running consumer reuses its memory
/// and decoded faster with huge pages, so it keeps them.
fn disable_thp() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)] // reason: a system call; see SAFETY
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes only integer arguments and touches no memory of this
    // process; on failure (old kernel) nothing changes and huge pages stay as they were.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Exit code when a run finished but skipped some input.
pub const EXIT_SKIPPED: u8 = 3;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if matches!(cli.command, args::Command::Replay(_) | args::Command::Demo(_)) {
        disable_thp();
    }
    init_tracing(cli.log_level.as_deref());
    let result = match cli.command {
        args::Command::Parse(a) => parse::run(a),
        args::Command::Gen(a) => demo::gen(a),
        args::Command::Replay(a) => replay::run(a),
        args::Command::Demo(a) => demo::run(a),
        args::Command::Consume(a) => consume::run(a),
        args::Command::Bench(a) => bench::run(a),
        args::Command::ServeFirehose(a) => serve_firehose::run(a),
        args::Command::Explain(a) => report::explain(a),
        args::Command::Report(a) => report::report(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("flowspike: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr: human-readable on a terminal, JSON lines otherwise (ECS, CloudWatch).
fn init_tracing(level: Option<&str>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWSPIKE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level.unwrap_or("warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}
