#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 30). Stable toolchain:
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only sanitizer flags.
# Needs cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
SECONDS_EACH="${1:-30}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in $(cargo fuzz list); do
    echo "== fuzz target $target for ${SECONDS_EACH}s"
    mkdir -p "corpus/$target"
    cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536
done
