#!/usr/bin/env bash
# The floor of the other detections' cost (#32): what a replay with every detection on costs when the
# taps only classify each record, read the fields the scan and volume detections need and append them
# to a buffer that stays in cache (emptied when full: its consumer costs nothing), nothing aggregated;
# the threat lookup runs as in the product. The tables are written (the scans' and volume's empty). Any
# exact design reads those fields of those records, so this bounds the per-record work from below; it
# is set beside the blocked spike alone and every detection, both of the same commit.
#
#   bash bench/floor/run.sh PLAIN_FLOW_LOG [--runs N]
#
# PLAIN_FLOW_LOG: a plain-text input, e.g. bench/compare's 10 M records
# (`<data>/flows-10000000-seed42/plain/flows.log`). Builds HEAD and HEAD + taps-floor.patch (release,
# the patched copy in the worktree target/floor/tree with its own target directory target/floor), then:
#   1. cachegrind (one thread, --branch-sim=yes) of the first 1 M and 2 M records of the input: the
#      difference is the per-record cost with the fixed costs (list parsing, files) cancelled;
#   2. bench/ab.sh on the whole input, the three runs alternated (wall and CPU medians).
# The threat list is 100,000 random public IPv4 addresses, one in ten a /24 (seeded, the same every run).
# Needs valgrind, python3, GNU time.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: bash bench/floor/run.sh PLAIN_FLOW_LOG [--runs N]" >&2; exit 2; }
input=$(realpath "$1")
shift
runs=5
if [[ "${1:-}" == "--runs" ]]; then runs=$2; fi
command -v valgrind >/dev/null || { echo "bench/floor/run.sh: needs valgrind" >&2; exit 2; }
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
work=$(mktemp -d)
# At a fixed path, so that cargo rebuilds only what changed since the last run.
tree=$root/target/floor/tree
cleanup() {
    git worktree remove --force "$tree" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building HEAD ($(git rev-parse --short HEAD)) and HEAD + bench/floor/taps-floor.patch" >&2
cargo build --release --locked -p flowspike >&2
cp target/release/flowspike "$work/head"
git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"
git worktree prune
git worktree add --detach "$tree" HEAD >/dev/null
git -C "$tree" apply "$root/bench/floor/taps-floor.patch"
(cd "$tree" && CARGO_TARGET_DIR="$root/target/floor" cargo build --release --locked -p flowspike >&2)
cp "$root/target/floor/release/flowspike" "$work/floor"

python3 - "$work/list.txt" <<'PY'
import random, sys
rng = random.Random(42)
with open(sys.argv[1], "w") as f:
    n = 0
    while n < 100_000:
        a = rng.getrandbits(32)
        o1, o2 = a >> 24, (a >> 16) & 0xFF
        if o1 in (0, 10, 127) or o1 >= 224 or (o1 == 172 and 16 <= o2 < 32) or (o1 == 192 and o2 == 168):
            continue
        ip = f"{o1}.{o2}.{(a >> 8) & 0xFF}.{a & 0xFF}"
        f.write(f"{ip.rsplit('.', 1)[0]}.0/24\n" if n % 10 == 0 else f"{ip}\n")
        n += 1
PY

for set in blocked-spike all; do
    printf '#!/bin/sh\nexec %s "$@" --detections %s --threat-list %s\n' "$work/head" "$set" "$work/list.txt" >"$work/head-$set"
done
printf '#!/bin/sh\nexec %s "$@" --detections all --threat-list %s\n' "$work/floor" "$work/list.txt" >"$work/floor-all"
chmod +x "$work/head-blocked-spike" "$work/head-all" "$work/floor-all"

# A header line and the first N records.
head -n 1000001 "$input" >"$work/1m.log"
head -n 2000001 "$input" >"$work/2m.log"
cg() { # binary, detections, input: "instructions mispredicted-conditional-branches"
    valgrind --tool=cachegrind --cache-sim=no --branch-sim=yes --cachegrind-out-file="$work/cg.out" \
        "$1" replay "$3" --state "$work/cg-state" --spikes /dev/null --threads 1 \
        --detections "$2" --threat-list "$work/list.txt" >/dev/null 2>&1
    rm -rf "$work/cg-state"
    awk '/^summary:/ { print $2, $4 }' "$work/cg.out"
}
echo "== cachegrind, per record (2 M minus 1 M records, one thread)"
printf '%-28s %14s %14s\n' run instructions mispredicts
for run in head:blocked-spike head:all floor:all; do
    bin=$work/${run%%:*}
    set=${run#*:}
    read -r i1 m1 < <(cg "$bin" "$set" "$work/1m.log")
    read -r i2 m2 < <(cg "$bin" "$set" "$work/2m.log")
    awk -v w="$run" -v i1="$i1" -v i2="$i2" -v m1="$m1" -v m2="$m2" \
        'BEGIN { printf "%-28s %14.0f %14.2f\n", w, (i2 - i1) / 1e6, (m2 - m1) / 1e6 }'
done

echo "== wall and CPU, whole input (bench/ab.sh --runs $runs; order: head-blocked-spike head-all floor-all)"
bash bench/ab.sh --runs "$runs" "$input" "$work/head-blocked-spike" "$work/head-all" "$work/floor-all"
