"""Wall time of the demo DAG end to end, of a no-op dry run, and of each job (DESIGN.md targets:
demo DAG <= 10 min on 2 cores, no-op `snakemake -n` <= 3 s).

    python benchmarks/dag_timing.py [--cores 2] [--target all] [--keep DIR]

Runs in a fresh temporary working directory, prints a table and writes benchmarks/dag_timing.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostinfo import describe_host

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def run(workdir: Path, *args: str) -> float:
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(REPO / "config" / "config.yaml"), *args]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{res.stderr[-4000:]}")
    return elapsed


def job_times(workdir: Path) -> dict[str, float]:
    """Seconds per rule, summed over that rule's jobs, from the rules' `benchmark:` files."""
    totals: dict[str, float] = {}
    root = workdir / "results" / "benchmarks"
    for tsv in root.rglob("*.tsv"):
        with open(tsv) as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        stage = tsv.relative_to(root).parts[0]
        totals[stage] = totals.get(stage, 0.0) + float(row["s"])
    return dict(sorted(totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", default="2")
    parser.add_argument("--target", default="all")
    parser.add_argument("--keep", type=Path, help="run here and keep the results")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="vlalert-dag-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        full = run(workdir, "--cores", args.cores, args.target)
        noop = min(run(workdir, "-n", args.target) for _ in range(3))
        per_rule = job_times(workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "host": describe_host(),
        "cores_requested": args.cores,
        "target": args.target,
        "demo_dag_s": round(full, 2),
        "noop_dry_run_s": round(noop, 3),
        "per_rule_s": {k: round(v, 2) for k, v in per_rule.items()},
        "targets": {"demo_dag_s": 600, "noop_dry_run_s": 3},
    }
    print(f"{'measure':<28}{'seconds':>10}{'target':>10}")
    print(f"{'demo DAG end to end':<28}{full:>10.1f}{600:>10}")
    print(f"{'no-op snakemake -n':<28}{noop:>10.2f}{3:>10}")
    for rule, secs in per_rule.items():
        print(f"{'  rule ' + rule:<28}{secs:>10.1f}")
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
