#!/usr/bin/env bash
# Profile-guided (PGO) release build of flowspike.
#
#   bash bench/pgo.sh [--out PATH] [--work DIR]
#
# 1. builds flowspike instrumented (`-Cprofile-generate`, release profile, `--features isal` when
#    ISA-L's build tools are there, as bench/compare/run.sh);
# 2. trains it on synthetic data only (`flowspike gen`, seed 7; never the benchmark's dataset): a
#    replay of the generated S3-style archive (many small gzip objects, read whole), of one large
#    plain file and of one large gzip file made from the same records (read in blocks, inflated
#    streaming), and `flowspike bench` on CloudWatch Logs envelopes (the consumer's decoding);
# 3. merges the profiles with rustup's `llvm-profdata` (the `llvm-tools` component, added when
#    missing: it must match rustc's LLVM) and builds again with `-Cprofile-use`.
#
# --out   where the optimized binary goes (default: target/pgo/flowspike)
# --work  scratch directory for the builds, profiles and training data (default: target/pgo-work;
#         the two builds use their own target directories there, so target/release is untouched)
#
# Takes two full release builds (about 20 minutes on 2 cores from scratch). Not part of the test
# command; docs/benchmarks.md, *Plain replay, A/B of builds*, says what it gains.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$REPO/target/pgo/flowspike
WORK=$REPO/target/pgo-work
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "== $*" >&2; }

# llvm-profdata of rustc's own LLVM (a raw profile is read only by the LLVM that wrote it).
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  say "adding rustup's llvm-tools component (llvm-profdata)"
  rustup component add llvm-tools
fi
[ -x "$profdata" ] || { echo "bench/pgo.sh: no llvm-profdata at $profdata" >&2; exit 1; }

. "$REPO/tests/isal_tools.sh"
read -r -a features <<<"$(isal_features)"

profiles=$WORK/profiles
rm -rf "$profiles" "$WORK/train"
mkdir -p "$profiles" "$WORK/train"

say "1/3 instrumented build"
(cd "$REPO" && CARGO_TARGET_DIR=$WORK/gen RUSTFLAGS="-Cprofile-generate=$profiles" \
  cargo build --release --locked --bin flowspike "${features[@]}")
gen=$WORK/gen/release/flowspike

say "2/3 training on synthetic data"
train=$WORK/train
"$gen" gen --out "$train/archive" --seed 7 >&2
# One large file of the same records: the first header, then every record (no header mid-file,
# which would send the file down the rare recount path).
find "$train/archive" -name '*.log.gz' -print0 | sort -z | xargs -0 gzip -dc \
  | awk 'NR == 1 || !/^version /' >"$train/flows.log"
gzip -1 -c "$train/flows.log" >"$train/flows.log.gz"
for input in "$train/archive" "$train/flows.log" "$train/flows.log.gz"; do
  rm -rf "$train/state"
  "$gen" replay "$input" --state "$train/state" --spikes /dev/null --threads 2 >&2
done
# CloudWatch Logs envelopes (what the Kinesis consumer and the Firehose endpoint decode).
"$gen" bench --records 500000 --framing cwlogs --runs 1 --seed 7 >&2

say "3/3 optimized build"
"$profdata" merge -o "$WORK/merged.profdata" "$profiles"
(cd "$REPO" && CARGO_TARGET_DIR=$WORK/use RUSTFLAGS="-Cprofile-use=$WORK/merged.profdata" \
  cargo build --release --locked --bin flowspike "${features[@]}")
mkdir -p "$(dirname "$OUT")"
install -m 0755 "$WORK/use/release/flowspike" "$OUT"
"$OUT" --version >&2
say "PGO build: $OUT"
