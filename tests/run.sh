#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need, then runs every check.
#   bash tests/run.sh
# Installs: a Python venv in .venv with moto_server (S3/Kinesis/DynamoDB/CloudWatch Logs emulator),
# pyarrow and duckdb (independent Parquet readers); as root, Debian's chromium (headless browser of
# the report's tests). Integration tests start and stop moto_server on
# 127.0.0.1 themselves. Needs: cargo (stable), python3 with venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "python tools (.venv: moto_server, pyarrow, duckdb)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
export PATH="$root/.venv/bin:$PATH"
export FLOWSPIKE_PYTHON="$root/.venv/bin/python"
command -v moto_server >/dev/null || { echo "moto_server missing after install" >&2; exit 1; }

step "node tools (tests/node: kinesis-local, the Kinesis emulator for resharding and enhanced fan-out)"
command -v npm >/dev/null || { echo "npm (Node.js) is needed for kinesis-local" >&2; exit 1; }
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
test -f tests/node/node_modules/kinesis-local/main.js || { echo "kinesis-local missing after install" >&2; exit 1; }

step "build tools for the isal feature (ISA-L from source: nasm, autoconf, automake, libtool, make)"
. tests/isal_tools.sh
install_isal_tools
if isal_tools; then
  isal=yes; echo "ok"
elif [ "${CI:-}" = true ]; then
  echo "nasm/autoconf/automake/libtool/make missing and not installable: the isal feature cannot be tested" >&2; exit 1
else
  isal=no; echo "WARNING: nasm/autoconf/automake/libtool/make missing: the isal feature's tests are SKIPPED" >&2
fi

step "headless Chromium for the report's browser tests (Debian's chromium package)"
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
    || true
fi
if command -v chromium >/dev/null \
  && chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1; then
  echo "ok: $(chromium --version 2>/dev/null)"
elif [ "${CI:-}" = true ]; then
  echo "chromium missing and not installable: the HTML report cannot be tested in a browser" >&2; exit 1
else
  echo "WARNING: chromium missing: the report's browser tests (tests/report.rs) are SKIPPED" >&2
fi

step "formatting"
cargo fmt --all -- --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "dependency direction: the parser and the counter know nothing of tokio or the AWS SDK; history, detection and report not of the parser; Firehose not of the consumer"
for crate in flowlog flowspike-model flowspike-counter flowspike-history flowspike-detect flowspike-synth flowspike-replay flowspike-findings flowspike-report flowspike-scan flowspike-threat flowspike-detections; do
  if cargo tree --locked -p "$crate" -e normal --prefix none | grep -E "^(tokio|aws-config|aws-sdk-[a-z]+) " ; then
    echo "invariant broken: $crate depends on the line(s) above" >&2; exit 1
  fi
done
# The history, the detection and the scan and threat aggregates speak plain values: they know neither the
# parser nor which records count; nor does the report, which reads only them.
for crate in flowspike-history flowspike-detect flowspike-report flowspike-scan flowspike-threat; do
  if cargo tree --locked -p "$crate" -e normal --prefix none | grep -E "^(flowlog|flowspike-counter) " ; then
    echo "invariant broken: $crate depends on the line(s) above" >&2; exit 1
  fi
done
# The Firehose endpoint is a source of the engine beside the Kinesis consumer, not on top of it:
# it links neither the consumer nor the lease table's DynamoDB SDK.
if cargo tree --locked -p flowspike-firehose -e normal --prefix none | grep -E "^(flowspike-consumer|flowspike-lease|aws-sdk-dynamodb) " ; then
  echo "invariant broken: flowspike-firehose depends on the line(s) above" >&2; exit 1
fi
echo "ok"

step "one dependency build: the binary's own build (the image check in tests/infra.rs) turns on no dependency feature other than the tests' build does, so it reuses the dependencies the tests built"
# A difference rebuilds every dependency above it (once: every AWS SDK crate, some 8 minutes here);
# the root Cargo.toml's feature-only dependencies align the two.
features() {
  cargo tree --locked "$@" -f '{p}|{f}' --prefix none | sed 's/ (\*)$//' | grep -v ' (/' \
    | LC_ALL=C sort -u -t'|' -k1,1
}
tests_features=$(features --workspace -e normal,build,dev)
binary_features=$(features -p flowspike --features isal -e normal,build)
[ -n "$tests_features" ] && [ -n "$binary_features" ] || { echo "cargo tree listed no dependency" >&2; exit 1; }
differ=$(LC_ALL=C join -t'|' <(echo "$tests_features") <(echo "$binary_features") | awk -F'|' '$2 != $3')
if [ -n "$differ" ]; then
  printf '%s\n' "package|features in the tests' build|in the binary's build" "$differ" >&2
  echo "the binary's build would rebuild these and everything above them: align the features in Cargo.toml" >&2
  exit 1
fi
echo "ok"

step "tests (unit, property, doc, integration with moto_server)"
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$test_log"

if [ "$isal" = yes ]; then
  step "the isal feature: clippy, and the parser's and replay's tests with ISA-L as the streamed inflater"
  cargo clippy --locked -p flowlog -p flowspike-replay --features flowlog/isal --all-targets -- -D warnings
  cargo test --locked -p flowlog -p flowspike-replay --features flowlog/isal 2>&1 | tee -a "$test_log"
fi

step "fuzz (bounded: ${FLOWSPIKE_FUZZ_SECONDS:-10} s per target; libFuzzer via cargo-fuzz on stable)"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz@0.13.2
fi
fuzz_log=$(mktemp)
if ! bash crates/flowlog/fuzz/run-bounded.sh "${FLOWSPIKE_FUZZ_SECONDS:-10}" >"$fuzz_log" 2>&1; then
  tail -n 60 "$fuzz_log" >&2
  echo "fuzzing found a failure (artifacts in crates/flowlog/fuzz/artifacts/)" >&2
  exit 1
fi
grep -E "^== fuzz target|^Done [0-9]+ runs" "$fuzz_log"
rm -f "$fuzz_log"

# One closing line over every cargo test binary (unit, property, doc and integration tests).
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i }
} END { print p + 0, f + 0 }' "$test_log")
echo
echo "tests: $passed passed, $failed failed"
