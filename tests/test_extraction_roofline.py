"""benchmarks/extraction_roofline.py: its FLOPs are torch's count, its ceiling is the roofline's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import extraction_roofline as er  # noqa: E402


@pytest.fixture(scope="module")
def full_config():
    return er.qwen3_vl_4b_config()


@pytest.mark.parametrize("kind", ["tiny", "wide"])
def test_tick_flops_are_what_the_flop_counter_counts(kind):
    """Every matrix product of a real extraction (generation + the cached hidden pass), counted by
    torch's FlopCounterMode, equals the analytic sum: the tiny model, and one with the real vision width."""
    import cache_throughput as ct
    import torch

    from vlalert.cache.extract import Extractor
    from vlalert.vlm.config import TinyModelConfig, VLMConfig

    preset, vlm = (
        (TinyModelConfig(), VLMConfig())
        if kind == "tiny"
        else (ct.WIDE, VLMConfig(image_height=224, image_width=224))
    )
    model, tok = ct.build_model(preset, vlm, None, "cpu", torch.float32)
    depth = model.config.text_config.num_hidden_layers
    examples = ct.make_examples(tok, vlm, 2)
    new_tokens = 12  # random weights never stop early: every row generates all of them
    counted = ct.count_flops(Extractor(model, tok, (depth,), depth, new_tokens, "cached"), examples, 2) / 2
    grid = examples[0]["video_grid_thw"][0]
    tick = er.Tick(
        prompt_tokens=int(examples[0]["input_ids"].shape[0]),
        patches=int(grid.prod()),
        groups=int(grid[0]),
        new_tokens=new_tokens,
    )
    assert sum(er.tick_flops(model.config, tick).values()) == pytest.approx(counted, rel=1e-9)


def test_tick_flops_match_the_h200_runs_count_at_full_width(full_config):
    """The suite's FlopCounterMode count of one full-width Qwen3-VL-4B tick on the H200 (committed)."""
    suite = json.loads((REPO / "benchmarks" / "results" / "gpu_suite.json").read_text())
    extract = suite["sections"]["extract"]
    row = extract["by_batch"][str(extract["pipeline_batch"])]
    tick = er.Tick(
        prompt_tokens=row["prompt_tokens"],
        patches=row["patches_per_tick"],
        groups=4,  # 8 frames, temporal patches of 2
        new_tokens=extract["max_new_tokens"],
    )
    assert sum(er.tick_flops(full_config, tick).values()) == pytest.approx(
        extract["flops_per_tick"], rel=1e-6
    )


TICK = er.Tick(prompt_tokens=888, patches=3136, groups=4, new_tokens=3)


def test_with_unbounded_bandwidth_the_ceiling_is_peak_over_flops(full_config):
    device = er.Device("compute only", 500.0, 1e9, "test")
    got = er.roofline(full_config, TICK, 64, device)
    assert got["decode_steps_memory_bound"] == 0
    total = sum(er.tick_flops(full_config, TICK).values())
    assert got["ticks_per_s_ceiling"] == pytest.approx(500e12 / total, rel=1e-3)


def test_with_free_compute_decoding_streams_the_weights_and_the_cache(full_config):
    """Two decoding steps (3 new tokens, the first from the prefill) over 888 + 1 and 888 + 2 keys."""
    device = er.Device("memory only", 1e12, 2.0, "test")
    got = er.roofline(full_config, TICK, 64, device)
    weights, kv = er.text_weight_bytes(full_config), er.kv_bytes_per_token(full_config)
    assert got["decode_steps_memory_bound"] == 2
    expect = (2 * weights + 64 * kv * (889 + 890)) / 2e12
    assert got["seconds_per_batch"]["decode_s"] == pytest.approx(expect, rel=1e-3)
    # Qwen3-VL-4B: 36 layers x 8 key/value heads x 128 x 2 (K and V) x 2 bytes; ~8.1 GB of text weights
    assert kv == 147_456
    assert 7.5e9 < weights < 8.5e9


@pytest.mark.parametrize("layout", ["one run", "runs"])
def test_measured_devices_read_the_suites_peak(tmp_path, layout):
    run = {"dtype": "bfloat16", "tflops": 780.0}
    peak = (
        run if layout == "one run" else {"run1": run, "run2": {**run, "tflops": 790.0, "bandwidth_tbs": 4.1}}
    )
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"device": "NVIDIA H200", "sections": {"peak": peak}}))
    (dev,) = er.measured_devices(path)
    if layout == "one run":
        assert (dev.peak_tflops, dev.bandwidth_tbs) == (780.0, 4.8)  # the vendor's bandwidth
        assert "vendor bandwidth" in dev.source
    else:
        assert (dev.peak_tflops, dev.bandwidth_tbs) == (790.0, 4.1)
    assert er.measured_devices(tmp_path / "absent.json") == []


def test_the_script_writes_its_table(tmp_path):
    out = tmp_path / "roofline.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "extraction_roofline.py"), "--out", str(out)]
    res = subprocess.run(
        [*cmd, "--batch", "128", "--new-tokens", "192", "96"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["device"]["name"], r["tick"]["new_tokens"]): r for r in report["rows"]}
    h100 = rows[("H100 SXM", 192)]
    assert 0 < h100["ticks_per_s_ceiling"] < rows[("H200", 192)]["ticks_per_s_ceiling"]  # more bandwidth
    assert h100["ticks_per_s_ceiling"] < rows[("H100 SXM", 96)]["ticks_per_s_ceiling"]  # fewer steps
    assert h100["share_of_ceiling_goal_needs"] == pytest.approx(
        er.GOAL_TICKS / 3600 / h100["ticks_per_s_ceiling"], rel=1e-2
    )
