"""One shard job end to end on the tiny model with a LoRA adapter: the part file the heads read, the
summary's counts, shards that partition a split, teacher forcing, and a job killed mid-stage that
resumes from its complete chunks to the same cache as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from tiny_helpers import ALERT_ANALYSIS, ALERT_BELIEF

from vlalert.beliefs.text import target_text
from vlalert.cache.extract import generate_batch
from vlalert.cache.stage import load_extractor, prepare_examples, read_split_rows, run_shard
from vlalert.cache.store import chunk_dir, fixed_size_list_to_numpy, gather_split, read_cache
from vlalert.config import ConfigError, validate_config
from vlalert.schemas import table_from_rows, write_table
from vlalert.stage_config import CacheSlice
from vlalert.vlm.loading import load_model
from vlalert.workflow import stage_params


def config(**cache):
    """A workflow config for these tests. In-process runs use our in-place patch: transformers'
    fusion is process-global and would leave every later load in the test session fused."""
    cache = {"patch_embed": "inplace"} | cache
    raw = {
        "sources": {"nexar": {"kind": "nexar", "root": "r", "scene_truth": "s.json"}},
        "demo": {"enabled": False},
        "labels": {"gated_sources": []},
        "model": {"max_new_tokens": 8},
        "cache": {"belief_layers": [1, 2, 3, 4], "policy_layer": 3, "batch_size": 2, "progress": False}
        | cache,
    }
    return validate_config(raw)


def _row(root, vid, tick, parent=None, excluded=False, clip="a"):
    target = parent is None and not excluded
    return {
        "video_id": vid,
        "source": "nexar",
        "tick": tick,
        "t_s": float(tick),
        "frame_idx": [tick + i for i in range(8)],
        "action": "ALERT",
        "danger": 0.5,
        "rule": "test",
        "excluded": excluded,
        "parent_id": parent,
        "split": "val",
        "path": str(root / "clips" / clip),
        "fps": 10.0,
        "n_frames": 24,
        "is_positive": True,
        "t_risky_s": 1.0,
        "t_event_s": 2.0,
        "ego_involved": True,
        "event_type": None,
        "meta": "{}",
        "analysis": ALERT_ANALYSIS if target else None,
        "belief": ALERT_BELIEF.to_json() if target else None,
        "belief_text": None,
        "belief_provider": None,
    }


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory):
    """The session's tiny model, a random LoRA adapter for it, and a benchmark split over two
    frame-folder clips."""
    root = tmp_path_factory.mktemp("cache")
    model_dir = tiny_model_dir
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(9)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_model(model_dir, device="cpu"), lora).save_pretrained(root / "adapter")
    rng = np.random.default_rng(0)
    for clip in ("a", "b"):
        (root / "clips" / clip).mkdir(parents=True)
        for i in range(24):
            frame = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
            Image.fromarray(frame).save(root / "clips" / clip / f"{i:04d}.png")
    rows = [
        _row(root, "a", 0),
        _row(root, "a", 1),
        _row(root, "a", 2),
        _row(root, "a", 3, excluded=True),
        _row(root, "a#prefix", 0, parent="a"),  # served by a#0
        _row(root, "a#prefix", 5, parent="a"),  # no parent row: cached as itself
        _row(root, "b", 0, clip="b"),
        _row(root, "b", 1, clip="b"),
    ]
    write_table("benchmark", table_from_rows("benchmark", rows), root / "val.parquet")
    return {
        "root": root,
        "model": str(model_dir),
        "adapter": str(root / "adapter"),
        "bench": root / "val.parquet",
    }


def _run(world, out, cfg, shard=0, split="val", frames=()):
    part = out / f"part-{shard:05d}.parquet"
    summary = run_shard(
        world["bench"],
        part,
        out / f"part-{shard:05d}.summary.json",
        cfg=CacheSlice.of(cfg),
        split=split,
        shard=shard,
        model_path=world["model"],
        adapter_dir=world["adapter"],
        frames=frames,
    )
    return part, summary


EXPECTED_KEYS = [("a", 0), ("a", 1), ("a", 2), ("a#prefix", 5), ("b", 0), ("b", 1)]


def _keys(table):
    return list(zip(table.column("video_id").to_pylist(), table.column("tick").to_pylist(), strict=True))


def test_a_shard_writes_the_cache_the_heads_read(world, tmp_path):
    cfg = config(patch_embed="inplace", chunk_ticks=4)
    # a leftover chunk of some other computation must not be taken for this one
    stale = chunk_dir(tmp_path / "part-00000.parquet")
    stale.mkdir(parents=True)
    (stale / "chunk-00000.parquet").write_bytes(b"junk")
    part, summary = _run(world, tmp_path, cfg)
    table = read_cache(tmp_path)
    assert _keys(table) == EXPECTED_KEYS
    z, r = fixed_size_list_to_numpy(table.column("z")), fixed_size_list_to_numpy(table.column("r"))
    assert z.shape == (6, 4 * 128) and r.shape == (6, 128) and z.dtype == np.float16
    assert np.isfinite(z).all() and np.abs(z).max() > 0
    full = pq.read_table(part)
    assert full.column("n_generated_tokens").to_pylist() == [8] * 6  # the random model never stops
    assert summary["rows"] == 6 and summary["computed_rows"] == 6 and summary["resumed_chunks"] == 0
    assert [c["rows"] for c in summary["chunks"]] == [4, 2]
    assert all(c["ticks_per_s"] > 0 for c in summary["chunks"]) and summary["ticks_per_s"] > 0
    assert summary["split_selection"]["prefix_own_rows"] == 1
    # a random model writes no belief span: every tick is kept, flagged, with fallback positions
    assert summary["belief_parsed"] == 0 and summary["belief_unparsed"] == 6
    assert summary["fallback_positions"] == 6 and summary["generated"] == 6
    assert not full.column("belief_parsed").to_pylist()[0]
    assert summary["patch_embed"] == "inplace" and summary["adapter_merged"] is True
    assert (summary["z_width"], summary["r_width"]) == (512, 128)
    assert json.loads((tmp_path / "part-00000.summary.json").read_text()) == summary
    assert not (tmp_path / ".chunks").exists()


def test_the_adapter_is_attached_and_merged_or_not_with_the_same_result(world):
    cfg = config(patch_embed="inplace")
    with_adapter, facts = load_extractor(world["model"], world["adapter"], cfg, "cpu")
    plain, _ = load_extractor(world["model"], None, cfg, "cpu")
    assert facts["adapter_merged"] and not hasattr(with_adapter.model, "peft_config")
    w = with_adapter.model.model.language_model.layers[0].self_attn.q_proj.weight
    w0 = plain.model.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(w, w0)
    unmerged, facts = load_extractor(world["model"], world["adapter"], config(merge_adapter=False), "cpu")
    assert not facts["adapter_merged"] and hasattr(unmerged.model, "peft_config")
    rows = read_split_rows(world["bench"])[0].to_pylist()[:2]
    with ThreadPoolExecutor(1) as pool:
        examples = prepare_examples(rows, with_adapter.tokenizer, cfg, False, pool)
    for a, b in zip(generate_batch(with_adapter, examples), generate_batch(unmerged, examples), strict=True):
        assert a.generated_text == b.generated_text
        assert np.abs(a.z - b.z).max() <= 1e-4 * np.abs(b.z).max()


def test_shards_partition_the_split_and_the_gather_indexes_them(world, tmp_path):
    cfg = config(patch_embed="inplace", shards=2, teacher_forced_splits=["val"])
    parts, summaries = [], []
    for shard in (0, 1):
        part, summary = _run(world, tmp_path, cfg, shard=shard)
        parts.append(part)
        summaries.append(tmp_path / f"part-{shard:05d}.summary.json")
        assert summary["rows"] == 3
        # teacher forcing where the tick has a target; the prefix tick has none and is generated
        own_prefix = int(shard == 1)
        assert summary["teacher_forced"] == 3 - own_prefix
        assert summary["teacher_forced_without_target"] == own_prefix
        assert summary["belief_parsed"] == summary["belief_span_found"] == 3 - own_prefix
    index = gather_split(parts, summaries, tmp_path / "index.json", split="val", run="demo")
    assert index["rows"] == 6 and [p["rows"] for p in index["parts"]] == [3, 3]
    assert _keys(read_cache(tmp_path)) == EXPECTED_KEYS
    forced = pq.read_table(parts[0])
    assert forced.column("generated_text")[0].as_py() == target_text(ALERT_ANALYSIS, ALERT_BELIEF, "ALERT")
    assert forced.column("n_belief_tokens")[0].as_py() > 0


def test_params_leave_out_speed_keys_and_check_the_tiny_models_depth():
    params = stage_params(config(batch_size=16, patch_embed="none", kv_cache="static"), "cache")
    assert params == stage_params(config(), "cache")
    assert not {"batch_size", "patch_embed", "kv_cache"} & set(params["cache"])
    assert params["cache"]["belief_layers"] == [1, 2, 3, 4]
    bad = validate_config(config().model_dump() | {"cache": {}})  # the 4B defaults: layers 20..33
    with pytest.raises(ConfigError, match="outside \\[0, 4\\]"):
        stage_params(bad, "cache")


def test_the_chunks_fingerprints_hold_the_cache_slices_tracked_fields(tmp_path, monkeypatch):
    """A resumed shard takes a chunk computed for the same tracked slice, whatever the speed keys and
    the run's folders; a tracked key of the model or the cache makes every chunk new."""
    from vlalert.cache import stage

    monkeypatch.setattr(stage, "read_model_spec", lambda path, revision=None: stage.ModelSpec(128, 4))
    bench = tmp_path / "val.parquet"
    write_table("benchmark", table_from_rows("benchmark", [_row(tmp_path, "a", t) for t in range(3)]), bench)

    def fingerprints(cfg):
        plan = stage.plan_shard(
            bench,
            tmp_path / "part-00000.parquet",
            cfg=CacheSlice.of(cfg),
            split="val",
            shard=0,
            model_path="Qwen/Qwen3-VL-4B-Instruct",
            adapter_dir=None,
        )
        return [c.fingerprint for c in plan.chunks]

    base = fingerprints(config())
    assert len(set(base)) == 1
    assert fingerprints(config(batch_size=5, workers=1, device="cpu", kv_cache="static")) == base
    assert fingerprints(validate_config(config().model_dump() | {"run": "r2", "results": "out"})) == base
    assert fingerprints(config(merge_adapter=False)) != base
    other_model = validate_config(config().model_dump() | {"model": {"max_new_tokens": 9}})
    assert fingerprints(other_model) != base


KILLED_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, sys.argv[1])
    from test_cache_stage import config
    from vlalert.cache.stage import run_shard
    from vlalert.stage_config import CacheSlice

    bench, out, model, adapter = sys.argv[2:6]
    run_shard(bench, f"{out}/part-00000.parquet", f"{out}/part-00000.summary.json",
              cfg=CacheSlice.of(config(patch_embed="library", chunk_ticks=1)), split="val", shard=0,
              model_path=model, adapter_dir=adapter)
    """
)


@pytest.mark.slow  # a second process killed mid-run, then the resumed and the clean run
def test_a_killed_job_resumes_to_the_same_cache(world, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    first_chunk = chunk_dir(killed / "part-00000.parquet") / "chunk-00000.parquet"
    args = [str(world["bench"]), str(killed), world["model"], world["adapter"]]
    here = os.path.dirname(__file__)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, here, *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not first_chunk.exists():
        if proc.poll() is not None:
            pytest.fail(f"the shard job ended before writing a chunk: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "no chunk written in time"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in first_chunk.parent.glob("chunk-*.parquet"))
    assert not (killed / "part-00000.parquet").exists(), "the job finished before it could be killed"
    assert 1 <= len(done_before) < 6
    # resume here (our in-place patch instead of the library's, a static key/value cache: speed keys,
    # so the chunks still count)
    _, resumed = _run(world, killed, config(patch_embed="inplace", chunk_ticks=1, kv_cache="static"))
    assert resumed["kv_cache"] == "static"
    assert resumed["resumed_chunks"] == len(done_before)
    assert resumed["computed_rows"] == 6 - len(done_before)
    _, uninterrupted = _run(world, clean, config(patch_embed="inplace", chunk_ticks=1))
    assert uninterrupted["resumed_chunks"] == 0
    a, b = pq.read_table(killed / "part-00000.parquet"), pq.read_table(clean / "part-00000.parquet")
    assert _keys(a) == _keys(b) == EXPECTED_KEYS
    assert a.column("generated_text").equals(b.column("generated_text"))
    for col in ("z", "r"):
        x = fixed_size_list_to_numpy(a.column(col)).astype(np.float32)
        y = fixed_size_list_to_numpy(b.column(col)).astype(np.float32)
        np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-3)  # float16 of values equal to ~1e-6


def test_the_rules_inputs_follow_the_model_and_adapter_settings(tmp_path):
    from vlalert.cache.paths import part_files, shard_inputs, summary_files

    cfg = config(shards=2)
    # no `results` in the config: the run writes under results/<run> (here the default run, demo)
    assert shard_inputs(cfg, "val") == {
        "benchmark": "results/demo/benchmark/val.parquet",
        "model": "results/demo/models/tiny-qwen3vl/config.json",
        "adapter": "results/demo/sft/demo/adapter/adapter_config.json",
    }
    assert part_files(cfg, "test") == [
        "results/demo/cache/demo/test/part-00000.parquet",
        "results/demo/cache/demo/test/part-00001.parquet",
    ]
    assert summary_files(cfg, "test") == [
        "results/demo/cache/demo/test/part-00000.summary.json",
        "results/demo/cache/demo/test/part-00001.summary.json",
    ]
    hub = validate_config(
        cfg.model_dump()
        | {"model": {"name_or_path": "Qwen/Qwen3-VL-4B-Instruct"}, "cache": {"adapter": "none"}}
    )
    assert shard_inputs(hub, "val") == {"benchmark": "results/demo/benchmark/val.parquet"}
    local = validate_config(
        cfg.model_dump()
        | {"model": {"name_or_path": str(tmp_path)}, "cache": {"adapter": str(tmp_path / "a")}}
    )
    assert shard_inputs(local, "val")["model"] == f"{tmp_path}/config.json"
    assert shard_inputs(local, "val")["adapter"] == f"{tmp_path}/a/adapter_config.json"


def test_frames_resized_in_worker_processes_give_the_same_inputs(world, tmp_path):
    """The stage decodes and resizes frames in spawned processes (off the model's interpreter);
    the examples are the bytes `build_example` makes from the frames at their own size."""
    from vlalert.video import frame_worker_pool
    from vlalert.vlm.inputs import build_example
    from vlalert.vlm.loading import load_tokenizer

    rng = np.random.default_rng(3)
    clip = tmp_path / "big"
    clip.mkdir()
    raw = rng.integers(0, 256, (12, 90, 150, 3), dtype=np.uint8)  # not the model's 64 x 96
    for i, frame in enumerate(raw):
        Image.fromarray(frame).save(clip / f"{i:04d}.png")
    rows = []
    for t in (0, 2):
        window = [t + i for i in range(4)] * 2
        rows.append(_row(tmp_path, "big", t) | {"path": str(clip), "frame_idx": window})
    cfg = config()
    tok = load_tokenizer(world["model"])
    with frame_worker_pool(2) as pool:
        examples = prepare_examples(rows, tok, cfg, False, pool)
    for row, ex in zip(rows, examples, strict=True):
        ref = build_example(row, raw[row["frame_idx"]], tok, cfg.model, with_target=False)
        assert torch.equal(ex["pixel_values_videos"], ref["pixel_values_videos"])
        assert torch.equal(ex["input_ids"], ref["input_ids"])


def test_a_shard_reading_the_frames_store_writes_the_same_cache_as_one_decoding_the_clips(world, tmp_path):
    """The workflow's path (windows from the frames stage's raw store) equals decoding the clips."""
    from vlalert.frames.store import StoreSpec, clip_frames, write_store

    bench = pq.read_table(world["bench"])
    videos = pa.table(
        {"video_id": ["a", "b"], "path": [str(world["root"] / "clips" / c) for c in ("a", "b")]}
    )
    cfg = config(patch_embed="inplace")
    store = tmp_path / "frames" / "nexar.arrow"
    spec = StoreSpec("raw", 95, cfg.model.image_height, cfg.model.image_width)
    write_store(clip_frames(bench, videos), spec, store)
    direct, _ = _run(world, tmp_path / "direct", cfg)
    stored, summary = _run(world, tmp_path / "stored", cfg, frames=[str(store)])
    a, b = pq.read_table(direct), pq.read_table(stored)
    cols = ["video_id", "tick", "z", "r", "generated_text"]
    assert a.select(cols).equals(b.select(cols))
    assert summary["rows"] == 6
