//! Generates the default archive (or `hours`/`scale` from the arguments) and prints its manifest
//! summary and the elapsed time: `cargo run --release -p flowspike-synth --example gen -- DIR [hours] [scale] [cases]`.
//! With DIR `-`, objects are compressed but not written.

use std::time::Instant;

use flowspike_synth::{generate, generate_to_dir, SynthConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| "-".into());
    let mut cfg = SynthConfig::default();
    if let Some(h) = args.get(2) {
        cfg.hours = h.parse()?;
    }
    if let Some(s) = args.get(3) {
        cfg.scale = s.parse()?;
    }
    if let Some(c) = args.get(4) {
        cfg.cases = c.parse()?;
    }
    let t = Instant::now();
    let g = if dir == "-" {
        generate(&cfg, |_: &str, _: Vec<u8>| Ok::<(), std::io::Error>(()))?
    } else {
        generate_to_dir(&cfg, std::path::Path::new(&dir))?
    };
    let m = &g.manifest;
    println!(
        "{} records ({} blocked outbound, {} late) in {} objects, {} bytes gzip, {} raw, {} (hour, src) counts, {} case labels, {:.2?}",
        m.records,
        m.blocked_outbound_records,
        m.late_records,
        m.files,
        m.bytes,
        m.raw_bytes,
        g.expected.len(),
        m.cases.len(),
        t.elapsed()
    );
    Ok(())
}
