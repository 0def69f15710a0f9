"""The SLURM profile drives the demo DAG through a cluster executor to the same results as a local run.

No SLURM here: the same profile runs with `--executor cluster-generic` against a stand-in scheduler
(tests/cluster/submit.sh, status.sh) that runs each job script in the background and, like a real
scheduler, kills a job that asks for less memory than it needs. That exercises what the profile and
the rules promise a cluster: every job submitted with its declared mem_mb, runtime and cpus_per_task,
a failed job retried with memory and runtime scaled by the attempt, and the results unchanged.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yte

from vlalert.schemas import read_table

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = REPO / "profiles" / "slurm"
CLUSTER = REPO / "tests" / "cluster"
SOURCES = ("nexar", "dada2000", "dota", "dad")


def load_profile(environ: dict[str, str]) -> dict:
    """The profile as snakemake reads it (YTE template evaluated against `environ`)."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(environ)
        with open(PROFILE / "config.yaml") as fh:
            return yte.process_yaml(fh, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_profile_takes_site_settings_from_the_environment_only():
    bare = load_profile({})
    assert bare["executor"] == "slurm" and bare["retries"] >= 1
    assert {"mem_mb", "runtime", "cpus_per_task"} <= set(bare["default-resources"])
    assert not {"slurm_account", "slurm_partition"} & set(bare["default-resources"])
    site = load_profile({"VLALERT_SLURM_ACCOUNT": "proj42", "VLALERT_SLURM_PARTITION": "cpu"})
    assert site["default-resources"]["slurm_account"] == "proj42"
    assert site["default-resources"]["slurm_partition"] == "cpu"


def test_gpu_rules_go_to_the_gpu_partition_and_sft_stays_on_one_node():
    bare = load_profile({})["set-resources"]
    assert bare == {"sft": {"nodes": 1}}  # torchrun --standalone: every rank on one node
    gpu = load_profile({"VLALERT_SLURM_PARTITION": "cpu", "VLALERT_SLURM_GPU_PARTITION": "gpu-a100"})
    for rule in ("sft", "cache_shard", "gate"):
        assert gpu["set-resources"][rule]["slurm_partition"] == "gpu-a100"
    assert gpu["set-resources"]["sft"]["nodes"] == 1
    assert gpu["default-resources"]["slurm_partition"] == "cpu"  # every other rule


def run(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(REPO / "config" / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def submissions(state: Path) -> list[dict[str, str]]:
    fields = ["id", "rule", "mem_mb", "runtime", "cpus"]
    text = (state / "submissions.tsv").read_text()
    return list(csv.DictReader(io.StringIO(text), fieldnames=fields, delimiter="\t"))


def kill_leftovers(state: Path) -> None:
    for pid_file in state.glob("*.pid"):
        if not (state / pid_file.name.replace(".pid", ".exit")).exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@pytest.mark.slow
def test_demo_dag_through_a_cluster_executor_matches_a_local_run(tmp_path):
    local, cluster, state = tmp_path / "local", tmp_path / "cluster", tmp_path / "scheduler"
    for d in (local, cluster, state):
        d.mkdir()
    # The data half of the DAG (to the benchmark): the model half adds minutes, not scheduler paths.
    res = run(local, "--cores", "2", "benchmark")
    assert res.returncode == 0, res.stderr[-4000:]

    # benchmark declares mem_mb = 8000 * attempt: the scheduler kills attempt 1, attempt 2 fits.
    (state / "limits.tsv").write_text("benchmark\t9000\n")
    submit = f"{CLUSTER / 'submit.sh'} {state} {{rule}} {{resources.mem_mb}} {{resources.runtime}} "
    submit += "{resources.cpus_per_task}"
    try:
        res = run(
            cluster,
            "--profile",
            str(PROFILE),
            "--executor",
            "cluster-generic",
            "--cluster-generic-submit-cmd",
            submit,
            "--cluster-generic-status-cmd",
            f"{CLUSTER / 'status.sh'} {state}",
            "--jobs",
            "2",
            "--seconds-between-status-checks",
            "1",
            "--latency-wait",
            "5",
            "benchmark",
        )
    finally:
        kill_leftovers(state)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]

    jobs = submissions(state)
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    assert {rule: len(js) for rule, js in by_rule.items()} == {
        "demo_source": 4,
        "ingest": 4,
        "gate": 4,
        "relabel": 4,
        "beliefs": 4,
        "benchmark": 2,
    }
    assert {(j["mem_mb"], j["runtime"], j["cpus"]) for j in by_rule["ingest"]} == {("4000", "240", "1")}
    assert [(j["mem_mb"], j["runtime"]) for j in by_rule["benchmark"]] == [("8000", "30"), ("16000", "60")]
    assert (state / f"{by_rule['benchmark'][0]['id']}.exit").read_text().strip() == "137"

    for source in SOURCES:
        a = read_table("labels", local / "results" / "labels" / f"{source}.parquet")
        b = read_table("labels", cluster / "results" / "labels" / f"{source}.parquet")
        assert a.num_rows > 0 and a.equals(b), source
    for split in ("train", "val", "test"):
        a = read_table("benchmark", local / "results" / "benchmark" / f"{split}.parquet")
        b = read_table("benchmark", cluster / "results" / "benchmark" / f"{split}.parquet")
        assert a.equals(b), split
