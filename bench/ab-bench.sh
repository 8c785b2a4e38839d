#!/usr/bin/env bash
# A/B timing of `flowspike bench` builds: the stage-by-stage benchmark run by each build in turn,
# round after round, so that machine noise hits each build alike. Prints, per build and stage, the
# fastest run's MB/s per core in each round (min-max over the rounds) and the median over the
# rounds of those fastest runs.
#
#   bash bench/ab-bench.sh [--rounds N] [--framing lines|gzip|...] [--records N] [--runs N] BIN_A [BIN_B ...]
#
# Defaults: 4 rounds, lines framing, 6,000,000 records, 7 runs per stage (the figures of
# docs/benchmarks.md). Each BIN is a flowspike binary (or a wrapper script taking its arguments).
# Needs python3.
set -euo pipefail

rounds=4 framing=lines records=6000000 runs=7
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --framing) framing=$2; shift 2 ;;
        --records) records=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --) shift; break ;;
        -*) echo "bench/ab-bench.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [[ $# -lt 1 ]]; then
    echo "usage: bash bench/ab-bench.sh [--rounds N] [--framing F] [--records N] [--runs N] BIN_A [BIN_B ...]" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for ((r = 1; r <= rounds; r++)); do
    for ((b = 1; b <= $#; b++)); do
        bin=${!b}
        "$bin" bench --records "$records" --runs "$runs" --framing "$framing" --json \
            >"$work/$r-$b.json"
        echo "round $r/$rounds, build $b: $bin done ($(cut -d' ' -f1 /proc/loadavg) load)" >&2
    done
done

python3 - "$work" "$rounds" "$@" <<'PY'
import json, statistics, sys
work, rounds, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for b, name in enumerate(bins, 1):
    per_stage = {}
    for r in range(1, rounds + 1):
        report = json.load(open(f"{work}/{r}-{b}.json"))
        for st in report["stages"]:
            # MB/s per core of the round's fastest run; rows per second per core for a stage
            # that reads no text (parquet write).
            amount, unit = (st["bytes"], "MB/s") if st["bytes"] else (st["records"], "M rows/s")
            best = amount / st["min_seconds"] / 1e6 / report["threads"]
            per_stage.setdefault((st["stage"], unit), []).append(best)
    print(f"{name}")
    for (stage, unit), v in per_stage.items():
        digits = 0 if unit == "MB/s" else 3
        print(f"  {stage:<28} {min(v):>9.{digits}f}-{max(v):<9.{digits}f} median {statistics.median(v):>9.{digits}f} {unit} per core")
PY
