#!/usr/bin/env bash
# Reproducible comparison of `flowspike replay` with DuckDB, chDB, Polars and DataFusion (PyPI) on
# the same VPC flow log files, with `wc -l`, libdeflate-gunzip, ISA-L's igzip and gzip -dc as physical
# floors.
#
#   bench/compare/run.sh [--records N] [--runs R] [--data DIR] [--seed S] [--threads T] [--no-warm]
#
# --records  dataset size (default 10000000); the dataset is generated once into
#            DIR/flows-N-seedS (default DIR: /work/bench-data, outside the repository)
# --runs     timed runs per case (default 5), alternating between engines; median and min reported
# --threads  flowspike replay --threads (default 2)
# --no-warm  do not read a case's input files (untimed) before each timed run
# FLOWSPIKE_BIN  the flowspike binary; default: cargo build --release --bin flowspike
#
# Creates bench/compare/.venv (requirements.txt), installs libdeflate-tools and isal (igzip) with
# apt-get when they are missing and possible, checks that every engine's result equals flowspike's (exit 1 if not),
# and prints a Markdown table; report.md, runs.jsonl and the canonical results go to
# DIR/results-N-<time>/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RECORDS=10000000
RUNS=5
DATA=/work/bench-data
SEED=42
THREADS=2
WARM=()
COMMAND="bench/compare/run.sh $*"
[ -n "${FLOWSPIKE_BIN:-}" ] && COMMAND="FLOWSPIKE_BIN=$FLOWSPIKE_BIN $COMMAND"
while [ $# -gt 0 ]; do
  case "$1" in
    --records) RECORDS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --no-warm) WARM=(--no-warm); shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "== $*" >&2; }

# 1. The Python environment, rebuilt when requirements.txt changes.
VENV=$HERE/.venv
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$HERE/requirements.txt" "$VENV/.requirements.txt"; then
  say "creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$VENV/.requirements.txt"
fi
PY=$VENV/bin/python

# 2. libdeflate-gunzip and ISA-L's igzip, physical floors for inflating gzip.
install_floor() { # command, Debian package
  if ! command -v "$1" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing $2"
      apt-get install -y -qq "$2" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$2" >/dev/null 2>&1; } \
        || true
    fi
    command -v "$1" >/dev/null \
      || echo "note: $1 (Debian $2) is not available: its floor rows are skipped" >&2
  fi
}
install_floor libdeflate-gunzip libdeflate-tools
install_floor igzip isal

# 3. The dataset (generated once, atomically: a directory without manifest.json is incomplete).
DATASET=$DATA/flows-$RECORDS-seed$SEED
if [ ! -f "$DATASET/manifest.json" ]; then
  say "generating $DATASET"
  mkdir -p "$DATA"
  "$PY" "$HERE/gen_dataset.py" --records "$RECORDS" --seed "$SEED" --out "$DATASET"
fi

# 4. The flowspike binary.
if [ -z "${FLOWSPIKE_BIN:-}" ]; then
  # With ISA-L as the streamed gzip inflater (the `isal` feature, as the container image), when its
  # build tools are there or can be installed; else the default build (zlib-rs), said so.
  . "$REPO/tests/isal_tools.sh"
  read -r -a features <<<"$(isal_features)"
  say "building flowspike (release ${features[*]})"
  (cd "$REPO" && cargo build --release --bin flowspike "${features[@]}")
  FLOWSPIKE_BIN=$REPO/target/release/flowspike
fi
[ -x "$FLOWSPIKE_BIN" ] || { echo "FLOWSPIKE_BIN=$FLOWSPIKE_BIN is not executable" >&2; exit 1; }

# 5. Correctness, then timing.
RESULTS=$DATA/results-$RECORDS-$(date -u +%Y%m%dT%H%M%SZ)
say "results in $RESULTS"
exec "$PY" "$HERE/bench.py" --dataset "$DATASET" --flowspike "$FLOWSPIKE_BIN" --runs "$RUNS" \
  --threads "$THREADS" --results "$RESULTS" --command "$COMMAND" "${WARM[@]}"
