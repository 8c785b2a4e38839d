#!/usr/bin/env python3
"""Times flowspike replay against DuckDB, chDB, Polars and DataFusion on one dataset; run by run.sh.

Phases:
1. Warm the page cache (every input file read once).
2. Correctness (untimed): flowspike replay on every input and every peer on plain, gzip and gzip2,
   each once; every result's canonical form (canon.py) must equal that of flowspike on the S3-style
   archive, whose counted total must equal the generator's. A mismatch stops the benchmark with exit 1.
   A flowspike input that fails (for instance a single object past the decompression cap) is recorded
   as "failed: <message>" and not timed; the S3-style archive must work.
3. Timing: R rounds; each round runs every case once (floors, flowspike, peers), the order rotated
   by one each round, so engines alternate run by run. Before every run (untimed) the case's input
   files are read once, so every engine starts from a cached input: the development VM reclaims
   page-cache pages idle for about a minute (DAMON `pageout`), and without this the first engine to
   touch a file after a pause paid for rereading part of it (`--no-warm` keeps the old behaviour).
   Wall time of the whole process (interpreter start and imports included for the peers; their own
   in-query time is reported beside it), peak RSS (GNU time; the largest of the case's processes),
   /proc/loadavg before and after every run, and the file pages refaulted during the run
   (`workingset_refault_file` of /proc/vmstat: input pages that had been reclaimed, read again).

Writes report.md (the Markdown report), runs.jsonl (every run) and canon/ into --results, and prints
the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import canon  # noqa: E402

PEERS = ["duckdb", "chdb", "polars", "datafusion"]
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # GNU time, for peak RSS


@dataclass
class Case:
    input: str  # plain, gzip, gzip2, s3
    engine: str
    kind: str  # floor, flowspike, peer
    argvs: list[list[str]]  # run concurrently (one for most cases)
    inputs: list[str] = field(default_factory=list)  # the files the case reads (warmed before a run)
    state: str | None = None  # flowspike: state directory made fresh for each run
    out: str | None = None  # peer: result Parquet file
    failed: str | None = None
    times: list[float] = field(default_factory=list)
    query_times: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    refault_mb: list[float] = field(default_factory=list)
    correct: str = "-"


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as f:
        a, b, c = f.read().split()[:3]
    return float(a), float(b), float(c)


def refaulted_pages() -> int:
    """File pages read again after being reclaimed, since boot (0 where /proc/vmstat lacks it)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("workingset_refault_file "):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def warm(paths: list[str]) -> None:
    """Reads every file once (through the page cache), untimed."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_once(case: Case) -> tuple[float, float, str, str]:
    """Runs the case's commands concurrently; returns (seconds, peak RSS MB, stdout, error).

    stdout and stderr go to temporary files (no pipe can block a child). The peak RSS comes from GNU
    time's %M (the rusage of a child forked by this Python process would count the parent's pages).
    """
    if case.state:
        shutil.rmtree(case.state, ignore_errors=True)
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        t0 = time.perf_counter()
        for i, argv in enumerate(case.argvs):
            out = open(os.path.join(tmp, f"{i}.out"), "w+b") if case.kind == "peer" else subprocess.DEVNULL
            err = open(os.path.join(tmp, f"{i}.err"), "w+b")
            files.append((out, err))
            if TIME:
                argv = [TIME, "-f", "%M", "-o", os.path.join(tmp, f"{i}.rss"), *argv]
            procs.append(subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL))
        rcs = [p.wait() for p in procs]
        seconds = time.perf_counter() - t0
        rss = 0
        for i in range(len(procs)):
            try:
                with open(os.path.join(tmp, f"{i}.rss")) as f:
                    rss = max(rss, int(f.read().split()[-1]))
            except (OSError, ValueError, IndexError):
                pass
        stdout, error = "", ""
        for rc, (out, err) in zip(rcs, files):
            if out is not subprocess.DEVNULL:
                out.seek(0)
                stdout += out.read().decode(errors="replace")
                out.close()
            err.seek(0)
            text = err.read().decode(errors="replace")
            err.close()
            if rc != 0:
                lines = [x.strip() for x in text.strip().splitlines()
                         if x.strip() and "exited with non-zero" not in x]
                # flowspike names each input it skipped on an "unreadable: <path>: <why>" line.
                lines = [x for x in lines if x.startswith("unreadable:")] or lines[-3:]
                error = (f"exit {rc}: " + " / ".join(lines))[:400]
    return seconds, rss / 1024.0, stdout, error


def versions(flowspike: str) -> dict[str, str]:
    v = {"python": platform.python_version()}
    for pkg in ("duckdb", "chdb", "chdb-core", "polars", "polars-runtime-32", "datafusion", "numpy"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    def first_line(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not available"
    v["flowspike"] = first_line([flowspike, "--version"]) + f" ({flowspike})"
    v["libdeflate-gunzip"] = first_line(["libdeflate-gunzip", "-V"]) if shutil.which("libdeflate-gunzip") else "not installed"
    v["igzip"] = first_line(["igzip", "--version"]) if shutil.which("igzip") else "not installed"
    v["gzip"] = first_line(["gzip", "--version"])
    v["wc"] = first_line(["wc", "--version"])
    return v


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
    }


def build_cases(ds: str, flowspike: str, py: str, work: str, threads: int) -> list[Case]:
    plain = os.path.join(ds, "plain", "flows.log")
    gz = os.path.join(ds, "gzip", "flows.log.gz")
    gz2 = os.path.join(ds, "gzip2")
    gz2_files = sorted(os.path.join(gz2, f) for f in os.listdir(gz2))
    s3 = os.path.join(ds, "s3")
    s3_files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(s3) for f in fs if f.endswith(".gz")
    )
    ncpu = os.cpu_count() or 1
    files = {"plain": [plain], "gzip": [gz], "gzip2": gz2_files, "s3": s3_files}
    cases = [Case("plain", "wc -l", "floor", [["wc", "-l", plain]])]

    def inflater(name: str, argv: list[str], s3_too: bool) -> list[Case]:
        """Floor rows of one inflater CLI: the gzip file, one process per gzip2 file and, when
        `s3_too`, the S3 objects split into one process per core, each inflating its share in turn."""
        rows = [
            Case("gzip", name, "floor", [[*argv, gz]]),
            Case("gzip2", f"{name} ×{len(gz2_files)}", "floor", [[*argv, f] for f in gz2_files]),
        ]
        if s3_too:
            rows.append(Case("s3", f"{name} ×{ncpu}", "floor",
                             [[*argv, *s3_files[i::ncpu]] for i in range(ncpu)]))
        return rows

    if shutil.which("libdeflate-gunzip"):
        cases += inflater("libdeflate-gunzip", ["libdeflate-gunzip", "-c"], True)
    if shutil.which("igzip"):
        # ISA-L's inflater (the reference for the fastest gzip decoding), streaming.
        cases += inflater("igzip -dc", ["igzip", "-dc"], True)
    cases += inflater("gzip -dc", ["gzip", "-dc"], False)
    for name, path in (("plain", plain), ("gzip", gz), ("gzip2", gz2), ("s3", s3)):
        state = os.path.join(work, f"state-{name}")
        # The peers compute the blocked-outbound aggregation only: flowspike does the same work
        # (its other detections' cost is measured in docs/detections.md).
        argv = [flowspike, "replay", path, "--state", state, "--spikes", "/dev/null",
                "--threads", str(threads), "--detections", "blocked-spike"]
        cases.append(Case(name, "flowspike", "flowspike", [argv], state=state))
    for name, path in (("plain", plain), ("gzip", gz), ("gzip2", gz2)):
        for peer in PEERS:
            out = os.path.join(work, f"{peer}-{name}.parquet")
            argv = [py, os.path.join(HERE, "queries", f"q_{peer}.py"), "--input", path, "--out", out]
            cases.append(Case(name, peer, "peer", [argv], out=out))
    for c in cases:
        c.inputs = files[c.input]
    return cases


def fmt_s(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def report(args, manifest, mach, vers, cases, started, uptimes, check_lines) -> str:
    n = manifest["records"]
    mb = manifest["plain_bytes"] / 1e6
    fs = {c.input: c for c in cases if c.kind == "flowspike"}
    ref_fs = fs["s3"]
    lines = [
        f"# flowspike vs. peers: {n:,} records ({mb:,.0f} MB of text)",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Command: `{args.command}`",
        f"- Machine: {mach['nproc']} cores, {mach['cpu']}, {mach['ram']} RAM, Linux {mach['kernel']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"- Dataset: `{args.dataset}` (seed {manifest['seed']}, {manifest['s3_objects']} S3-style objects, "
        f"gzip level {manifest['gzip_level']}; gzip2 split at record {manifest['gzip2_split_record']:,})",
        f"- Runs: {args.runs} per case, alternating (every round runs every case once, order rotated); "
        "wall time of the whole process, so the peers' times include starting Python and importing the "
        "engine (\"in-query\" is the engine's own time for the query and its Parquet write). flowspike: "
        f"`replay <input> --state <fresh tmp> --spikes /dev/null --threads {args.threads} --detections blocked-spike` (the peers' work); its time "
        "includes writing the Parquet history and running the detection. Peers use all cores.",
        "- MB/s is of decompressed text; ratio = median / flowspike's median on the same input "
        "(† = vs. flowspike on the S3-style archive, where flowspike failed on this input).",
        ("- Cache: the case's input files are read once (untimed) before every timed run, so every "
         "engine starts from a cached input (the development VM pages out page-cache pages idle for "
         "about a minute); \"refault MB\" is the median of file pages read again during a run."
         if not args.no_warm else
         "- Cache: inputs are NOT read before each run (`--no-warm`): an engine may find part of its "
         "input reclaimed since its last use; \"refault MB\" is the median of file pages read again "
         "during a run."),
        f"- Load: this machine is shared (other engineers compile on it), so timings are noisy. "
        f"`uptime` before timing: `{uptimes[0]}`; after: `{uptimes[1]}`. The load columns give the "
        "range of the 1-minute load average read before and after each run of that case.",
        "",
        "| input | engine | median s | min s | records/s | MB/s | ratio vs flowspike | in-query median s | peak RSS MB | refault MB | load before | load after | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    order = {"plain": 0, "gzip": 1, "gzip2": 2, "s3": 3}
    kind_order = {"floor": 0, "flowspike": 1, "peer": 2}
    for c in sorted(cases, key=lambda c: (order[c.input], kind_order[c.kind])):
        if c.failed or not c.times:
            lines.append(f"| {c.input} | {c.engine} | failed: {c.failed or 'not run'} | | | | | | | | | | {c.correct} |")
            continue
        med, lo = statistics.median(c.times), min(c.times)
        base = fs.get(c.input)
        if base and base.times and not base.failed:
            ratio = f"{med / statistics.median(base.times):.2f}"
        elif ref_fs.times:
            ratio = f"{med / statistics.median(ref_fs.times):.2f} †"
        else:
            ratio = "n/a"
        q = fmt_s(statistics.median(c.query_times)) if c.query_times else ""
        rss = f"{max(c.rss_mb):,.0f}" if c.rss_mb and max(c.rss_mb) else ""
        refault = f"{statistics.median(c.refault_mb):,.0f}" if c.refault_mb else ""
        lines.append(
            f"| {c.input} | {c.engine} | {fmt_s(med)} | {fmt_s(lo)} | {fmt_rate(n / med)} | "
            f"{mb / med:,.0f} | {ratio} | {q} | {rss} | {refault} | "
            f"{min(c.load_before):.2f}–{max(c.load_before):.2f} | "
            f"{min(c.load_after):.2f}–{max(c.load_after):.2f} | {c.correct} |"
        )
    lines += ["", "Correctness (canonical results compared with flowspike on the S3-style archive):", ""]
    lines += [f"    {x}" for x in check_lines]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--flowspike", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="flowspike replay --threads")
    ap.add_argument("--results", required=True)
    ap.add_argument("--command", default=" ".join(map(shlex.quote, sys.argv)))
    ap.add_argument("--no-warm", action="store_true",
                    help="do not read a case's inputs before each timed run")
    args = ap.parse_args()
    started = datetime.now(timezone.utc)
    with open(os.path.join(args.dataset, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(os.path.join(args.results, "canon"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="flowspike-compare-")
    runs_log = open(os.path.join(args.results, "runs.jsonl"), "w")
    try:
        mach, vers = machine(), versions(args.flowspike)
        cases = build_cases(args.dataset, args.flowspike, sys.executable, work, args.threads)

        print("== warming the page cache", file=sys.stderr)
        warm([os.path.join(d, f) for d, _, fs in os.walk(args.dataset) for f in fs])

        print("== correctness (untimed)", file=sys.stderr)
        check_lines: list[str] = []
        results: dict[str, list[str]] = {}
        for c in cases:
            if c.kind == "floor":
                continue
            seconds, _, out, err = run_once(c)
            label = f"{c.engine} {c.input}"
            if err:
                c.failed = err
                c.correct = "n/a (failed)"
                check_lines.append(f"{label}: failed: {err}")
                print(f"   {label}: FAILED {err}", file=sys.stderr)
                continue
            path = c.state if c.kind == "flowspike" else c.out
            results[label] = canon.load(path)
            with open(os.path.join(args.results, "canon", f"{c.engine}-{c.input}.tsv"), "w") as f:
                f.write("\n".join(results[label]) + "\n")
            print(f"   {label}: {seconds:.2f} s, {len(results[label])} rows", file=sys.stderr)
        ref_label = "flowspike s3"
        if ref_label not in results:
            print("flowspike failed on the S3-style archive: no reference", file=sys.stderr)
            return 1
        ref = results[ref_label]
        counted = canon.total_counted(ref)
        bad = counted != manifest["counted_records"]
        check_lines.append(
            f"reference (flowspike s3): {len(ref)} rows, {counted} counted records; generator: "
            f"{manifest['counted_records']} -> {'equal' if not bad else 'MISMATCH'}"
        )
        for c in cases:
            label = f"{c.engine} {c.input}"
            if label in results:
                ok = results[label] == ref
                c.correct = "equal" if ok else "MISMATCH"
                check_lines.append(f"{label}: {c.correct}")
                if not ok:
                    bad = True
                    check_lines.append(canon.diff(ref, results[label]))
        if bad:
            print("\n".join(check_lines), file=sys.stderr)
            print("RESULTS DIFFER: stopping before timing", file=sys.stderr)
            return 1
        for x in check_lines:
            print("   " + x, file=sys.stderr)

        print(f"== timing: {args.runs} rounds", file=sys.stderr)
        timed = [c for c in cases if not c.failed]
        uptimes = [uptime()]
        for r in range(args.runs):
            k = r % len(timed)
            for c in timed[k:] + timed[:k]:
                if c.failed:
                    continue
                if not args.no_warm:
                    warm(c.inputs)
                before = loadavg()
                refaults = refaulted_pages()
                seconds, rss, out, err = run_once(c)
                refault_mb = (refaulted_pages() - refaults) * os.sysconf("SC_PAGE_SIZE") / 1e6
                after = loadavg()
                rec = {"round": r, "input": c.input, "engine": c.engine, "seconds": round(seconds, 4),
                       "rss_mb": round(rss, 1), "load_before": before, "load_after": after,
                       "refault_mb": round(refault_mb, 1), "error": err or None}
                if err:
                    c.failed = err
                else:
                    c.times.append(seconds)
                    c.rss_mb.append(rss)
                    c.load_before.append(before[0])
                    c.load_after.append(after[0])
                    c.refault_mb.append(refault_mb)
                    if c.kind == "peer":
                        try:
                            q = json.loads(out.strip().splitlines()[-1])["seconds"]
                            c.query_times.append(q)
                            rec["query_seconds"] = q
                        except (ValueError, KeyError, IndexError):
                            pass
                runs_log.write(json.dumps(rec) + "\n")
                runs_log.flush()
                print(f"   round {r + 1}/{args.runs} {c.input:6} {c.engine:22} {seconds:7.3f} s  "
                      f"load {before[0]:.2f} -> {after[0]:.2f}  refaulted {refault_mb:.0f} MB"
                      + (f"  FAILED {err}" if err else ""),
                      file=sys.stderr)
        uptimes.append(uptime())
        text = report(args, manifest, mach, vers, cases, started, uptimes, check_lines)
        with open(os.path.join(args.results, "report.md"), "w") as f:
            f.write(text)
        print(text)
        return 0
    finally:
        runs_log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
