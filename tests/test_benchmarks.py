"""The benchmark scripts run: the GPU suite's toy-width CPU path and the full-scale CPU case at a
small scale (their numbers are measured elsewhere; here only that each section runs and reports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # each test runs a benchmark script end to end


def test_gpu_suite_runs_every_section_at_toy_width(tmp_path):
    clips = tmp_path / "clips"
    make = [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--make-clips", str(clips)]
    subprocess.run([*make, "--clips-n", "1", "--clips-seconds", "4"], check=True, capture_output=True)
    out = tmp_path / "suite.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--toy", "--clips", str(clips)]
    cmd += ["--out", str(out), "--stage-ticks", "4", "--batches", "2", "--budget-s", "900"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sections = json.loads(out.read_text())["sections"]
    assert set(sections) == {"peak", "extract", "decode", "badas", "sft", "cache_stage"}
    failed = {
        k: v.get("error", v.get("skipped")) for k, v in sections.items() if "error" in v or "skipped" in v
    }
    assert not failed, failed
    assert sections["extract"]["flops_per_tick"] > 0
    assert sections["peak"]["bandwidth_tbs"] > 0
    roof = sections["extract"]["roofline"]  # the analytic FLOPs are the counted ones, at toy width too
    assert roof["flops_per_tick_analytic_over_counted"] == pytest.approx(1.0, rel=1e-3)
    assert 0 < roof["share_of_ceiling_reached"] and roof["ticks_per_s_ceiling"] > 0
    pipe = sections["extract"]["by_batch"][str(sections["extract"]["pipeline_batch"])]
    assert set(pipe["ticks_per_s"]) == {"unpatched", "patched", "patched_static"}
    assert pipe["z_max_relative_error_vs_dynamic"]["patched_static"] < 1e-4  # same states, static cache
    assert sections["cache_stage"]["ticks"] == 4
    assert sections["cache_stage"]["frames_stage"]["frames"] > 0  # the shard read the frames store
    decode = sections["decode"]
    assert decode["frames_stage_4_workers"]["clips"] == 1
    assert decode["gpu_busy_store_4_processes"]["ticks"] > 0
    assert sections["badas"]["clip"]["scored"] == sections["badas"]["clip"]["ticks"] > 0


def test_full_scale_cpu_case_runs_at_a_small_scale(tmp_path):
    out = tmp_path / "full.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "full_scale_cpu.py"), "--scales", "0.005,0.01"]
    res = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    small, large = report["scales"]
    assert 0 < small["ticks"] < large["ticks"]
    assert set(large["stages"]) == {"relabel", "beliefs", "benchmark", "score", "summary"}
    assert large["benchmark_rows"]["test"] > 0 and large["summary_rows"] > 0
    dry = report["dry_run_full_graph"]
    assert dry["returncode"] == 0 and dry["jobs"] > 50, dry
    assert report["host"]["cpu_model"] and report["host"]["cpus"] >= 1  # the result names its CPU
