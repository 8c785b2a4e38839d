#!/usr/bin/env bash
# A/B timing of `flowspike replay` builds on one input, alternating the builds run after run so
# that machine noise hits each build alike. Prints, per build, the median and minimum wall time,
# the median CPU time (user + system) and the median of each phase that replay logs at debug level
# (`counted`, `rows built`, `history written, detected`; elapsed since the start of the replay).
#
#   bash bench/ab.sh [--runs N] FILE BIN_A [BIN_B ...]
#
# Each run replays FILE into a fresh temporary state directory with `--spikes /dev/null
# --threads 2`, as bench/compare/run.sh does. Needs GNU time (/usr/bin/time) and python3.
set -euo pipefail

runs=8
if [[ "${1:-}" == "--runs" ]]; then
    runs=$2
    shift 2
fi
if [[ $# -lt 2 ]]; then
    echo "usage: bash bench/ab.sh [--runs N] FILE BIN_A [BIN_B ...]" >&2
    exit 2
fi
file=$1
shift
[[ -x /usr/bin/time ]] || { echo "bench/ab.sh: needs GNU time at /usr/bin/time" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/times.tsv

for ((r = 1; r <= runs; r++)); do
    for ((b = 1; b <= $#; b++)); do
        bin=${!b}
        rm -rf "$work/state"
        FLOWSPIKE_LOG=flowspike_replay=debug /usr/bin/time -f "TIME %e %U %S" -o "$work/time" \
            "$bin" replay "$file" --state "$work/state" --spikes /dev/null --threads 2 \
            >/dev/null 2>"$work/log"
        python3 - "$b" "$work/time" "$work/log" >>"$out" <<'PY'
import json, re, sys
b, time_file, log_file = sys.argv[1:4]
wall, user, system = open(time_file).read().split()[1:4]
phases = {}
for line in open(log_file):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    m = re.fullmatch(r"([0-9.]+)(ms|s)", str(fields.get("elapsed", "")))
    if m:
        phases[fields["message"]] = float(m[1]) / (1000 if m[2] == "ms" else 1)
print(b, wall, float(user) + float(system), *(phases.get(k, "nan") for k in
      ("counted", "rows built", "history written, detected")), sep="\t")
PY
    done
done

python3 - "$out" "$@" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]) if line.strip()]
bins = sys.argv[2:]
print(f"{'build':40s} {'runs':>4s} {'wall med':>9s} {'wall min':>9s} {'CPU med':>8s} "
      f"{'counted':>8s} {'rows':>8s} {'written':>8s}")
for i, name in enumerate(bins, 1):
    mine = [[float(x) for x in r[1:]] for r in rows if r[0] == str(i)]
    med = lambda k: statistics.median(r[k] for r in mine)
    print(f"{name[-40:]:40s} {len(mine):4d} {med(0):9.3f} {min(r[0] for r in mine):9.3f} "
          f"{med(1):8.3f} {med(2):8.3f} {med(3):8.3f} {med(4):8.3f}")
PY
