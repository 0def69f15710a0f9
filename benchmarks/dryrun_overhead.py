"""What the workflow's own parse costs: a no-op dry run against a bare Snakefile with the same jobs.

Issue 16 asks that parse time import nothing heavy: the no-op `snakemake -n` of a finished run
within 1.3x that of a bare Snakefile with the same jobs. The bare Snakefile is generated here from
the workflow's own `snakemake -n --forceall` listing: one rule per job with the same input and output
files as literal strings, no config, no imports, no params. Both dry runs run in the finished run's
directory (the bare one compares mtimes only: it has no params to compare), interleaved, --repeat
pairs. Two ratios: best over best, and the median of the pairs' ratios (each pair back to back). On a
shared 2-core VM one lucky bare run moves the first by 0.1-0.2 (1.20-1.40 over four runs of one
revision); the pairs share the machine's state of the moment, so their median moves less.

    python benchmarks/dryrun_overhead.py --workdir /path/to/finished/demo [--repeat 9]

Prints a table and writes benchmarks/results/dryrun_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hostinfo import describe_host

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
RESULTS = Path(__file__).resolve().parent / "results"


def dry_run(workdir: Path, snakefile: Path, *extra: str) -> tuple[float, str]:
    cmd = [SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir), "-n", "--cores", "1", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(workdir))
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}{res.stderr[-3000:]}")
    return wall, res.stdout


def bare_snakefile(listing: str) -> tuple[str, int]:
    """A Snakefile with one rule per job of a `-n --forceall` listing (same inputs and outputs)."""
    rules, n = [], 0
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", listing, re.M | re.S):
        fields = {k: v.split(", ") for k, v in re.findall(r"^    (\w+): (.*)$", m.group(2), re.M)}
        outputs = fields.get("output", [])
        inputs = fields.get("input", [])
        if not outputs and m.group(1) != "all":
            continue
        n += 1
        name = "all" if m.group(1) == "all" else f"job{n}"
        body = [f"rule {name}:"]
        if inputs:
            body.append(f"    input: {', '.join(repr(i) for i in inputs)}")
        if outputs:
            body.append(f"    output: {', '.join(repr(o) for o in outputs)}")
        if name != "all":  # a target rule with a shell would always run
            body.append('    shell: "true"')
        rules.append("\n".join(body))
    rules.sort(key=lambda r: not r.startswith("rule all:"))  # the default target first
    return "\n\n".join(rules) + "\n", n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="a finished run of the demo")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--out", type=Path, default=RESULTS / "dryrun_overhead.json")
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    ours = REPO / "Snakefile"
    _, noop = dry_run(workdir, ours)
    if "Nothing to be done" not in noop:
        raise SystemExit(f"{workdir} is not a finished run: the dry run plans jobs")
    _, listing = dry_run(workdir, ours, "--forceall")
    text, jobs = bare_snakefile(listing)
    bare = workdir / ".bare.smk"
    bare.write_text(text)
    _, check = dry_run(workdir, bare, "--rerun-triggers", "mtime")
    if "Nothing to be done" not in check:
        raise SystemExit(f"the bare Snakefile plans jobs:\n{check[-2000:]}")
    times: dict[str, list[float]] = {"workflow": [], "bare": []}
    for _ in range(args.repeat):
        times["workflow"].append(dry_run(workdir, ours)[0])
        times["bare"].append(dry_run(workdir, bare, "--rerun-triggers", "mtime")[0])
    bare.unlink()
    best = {k: min(v) for k, v in times.items()}
    ratio = best["workflow"] / best["bare"]
    pairs = [w / b for w, b in zip(times["workflow"], times["bare"], strict=True)]
    print(f"{'no-op dry run':<22}{'best s':>8}{'runs':>34}")
    for k, v in times.items():
        print(f"{k:<22}{best[k]:>8.2f}    {' '.join(f'{x:.2f}' for x in v)}")
    print(f"{'pair ratios':<22}{'':>8}    {' '.join(f'{x:.2f}' for x in pairs)}")
    print(f"{'ratio, best / best':<22}{ratio:>8.2f}    target <= 1.3 ({jobs} jobs)")
    print(f"{'ratio, median pair':<22}{statistics.median(pairs):>8.2f}")
    out = {
        "benchmark": "dryrun_overhead",
        "jobs": jobs,
        "seconds": times,
        "best_s": best,
        "ratio": round(ratio, 3),
        "pair_ratios": [round(x, 3) for x in pairs],
        "median_pair_ratio": round(statistics.median(pairs), 3),
        "target_ratio": 1.3,
        "host": describe_host(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
