//! `flowspike bench`: glue to `flowspike_bench::pipeline`.

use crate::args::BenchArgs;
use flowspike_bench::pipeline::{self, BenchConfig};

/// Runs the command.
pub fn run(a: BenchArgs) -> anyhow::Result<u8> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let cfg = BenchConfig {
        records: a.records,
        records_per_object: a.records_per_object,
        threads,
        input: a.input,
        framing: a.framing.parse()?,
        runs: a.runs,
        seed: a.seed,
    };
    let report = pipeline::run(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", pipeline::render(&report));
    }
    Ok(0)
}
