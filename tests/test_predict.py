"""`vlalert.predict`: a trained run on a new video, tick by tick, as the workflow would score it.

The run (the session fixture `tiny_run`, tests/predict_helpers.py) is built without the DAG: the
tiny model, a random LoRA adapter saved where the sft stage puts it, and untrained heads of the
right widths saved by the heads stage's own `save_outputs`. The video is a real H.264 mp4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from predict_helpers import RUN, SEED, raw_config
from tiny_helpers import ALERT_BELIEF

from vlalert.actions import ACTIONS
from vlalert.beliefs.text import target_text
from vlalert.config import TicksConfig, WindowConfig, load_config
from vlalert.heads import fsm
from vlalert.predict import (
    PREDICTIONS,
    PredictError,
    RunPaths,
    expand_videos,
    missing_run_file,
    output_prefixes,
    plan_ticks,
    predict_video,
    predictions_table,
    run_paths,
    vlm_action_names,
)
from vlalert.predict_outputs import csv_ready, output_paths, timeline_figure
from vlalert.ticks import tick_times, window_frames
from vlalert.video import read_frames


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """The session's tiny run (read-only), and a folder of this module's own for what it writes."""
    return {**tiny_run, "out": tmp_path_factory.mktemp("predict")}


@pytest.fixture(scope="module")
def predicted(run):
    cfg = load_config(run["config"])
    return predict_video(run["video"], run["results"], cfg, out_prefix=run["out"] / "out" / "clip")


# ----------------------------------------------------------------------------- pure parts


def test_run_paths_follow_the_workflow_layout(tmp_path):
    cfg = load_config_from(tmp_path, raw_config())
    p = run_paths(cfg, "some/results/")
    assert p.model == "some/results/models/tiny-qwen3vl"
    assert p.adapter == f"some/results/sft/{RUN}/adapter"
    assert p.danger == Path(f"some/results/heads/{RUN}/danger/seed{SEED}")  # the first configured seed
    assert p.policy == Path(f"some/results/heads/{RUN}/policy/seed{SEED}")
    assert run_paths(cfg, "r", seed=4).danger == Path(f"r/heads/{RUN}/danger/seed4")
    real = raw_config()
    real["model"]["name_or_path"] = "/models/Qwen3-VL-4B-Instruct"
    real["cache"]["adapter"] = "none"
    p = run_paths(load_config_from(tmp_path, real), "r")
    assert (p.model, p.adapter) == ("/models/Qwen3-VL-4B-Instruct", None)


def load_config_from(folder: Path, raw: dict[str, Any]):
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_missing_run_file_names_the_first_missing_piece(run, tmp_path):
    cfg = load_config(run["config"])
    ok = run_paths(cfg, run["results"])
    assert missing_run_file(ok, model_is_tiny=True) is None
    nowhere = run_paths(cfg, tmp_path / "nope")
    assert missing_run_file(nowhere, model_is_tiny=True).startswith(f"{tmp_path / 'nope'}: results directory")
    untrained = run_paths(cfg, run["results"], seed=4)
    msg = missing_run_file(untrained, model_is_tiny=True)
    assert msg.startswith(f"{untrained.danger}: directory missing")
    assert "trained first with snakemake" in msg and "--forcerun heads" in msg
    no_adapter = RunPaths(ok.results, ok.model, str(tmp_path / "adapter"), ok.danger, ok.policy, ok.seed)
    msg = missing_run_file(no_adapter, model_is_tiny=True)
    assert msg.startswith(f"{tmp_path / 'adapter'}: directory") and "--forcerun sft" in msg


def test_plan_ticks_is_the_workflows_tick_grid():
    ticks, window = TicksConfig(), WindowConfig()
    plan = plan_ticks(50, 10.0, ticks, window, "v.mp4")  # 5 s at 10 fps: last frame at 4.9 s
    assert plan.t_s.tolist() == [2.0, 3.0, 4.0]
    # tick at 2 s sees (0, 2] in 8 steps of 0.25 s: frames floor(0.25 k * 10), k = 1..8
    assert plan.frame_idx[0] == [2, 5, 7, 10, 12, 15, 17, 20]
    assert plan.frame_idx[2] == window_frames(4.0, 10.0, 50, window)


def test_plan_ticks_rejects_a_video_shorter_than_one_window():
    with pytest.raises(PredictError) as err:
        plan_ticks(10, 10.0, TicksConfig(), WindowConfig(), "short.mp4")
    msg = str(err.value)
    assert msg.startswith("short.mp4: video too short: 1.00 s (10 frames at 10 fps)")
    assert "window.span_s = 2 s" in msg and "\n" not in msg
    # 20 frames at 10 fps end at 1.9 s: still no full window
    with pytest.raises(PredictError, match="2.00 s"):
        plan_ticks(20, 10.0, TicksConfig(), WindowConfig(), "v.mp4")
    assert plan_ticks(21, 10.0, TicksConfig(), WindowConfig(), "v.mp4").t_s.tolist() == [2.0]


def _texts() -> list[str]:
    ok = target_text("A car brakes.", ALERT_BELIEF, "ALERT")
    return [ok, "garbage without spans", ok.replace("ALERT", "OBSERVE")]


def test_vlm_action_names_are_null_when_unparsable():
    assert vlm_action_names(_texts()) == ["ALERT", None, "OBSERVE"]


def _table() -> pa.Table:
    plan = plan_ticks(50, 10.0, TicksConfig(), WindowConfig(), "v.mp4")
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    return predictions_table(
        plan, _texts(), [True, False, True], np.array([0.1, 0.5, 0.9]), probs, np.array([0, 1, 2])
    )


def test_predictions_table_rows_and_columns():
    t = _table()
    assert t.schema == PREDICTIONS
    assert t.column("tick").to_pylist() == [0, 1, 2]
    assert t.column("action").to_pylist() == ["SILENT", "OBSERVE", "ALERT"]
    assert t.column("vlm_action").to_pylist() == ["ALERT", None, "OBSERVE"]
    assert t.column("p_observe").to_pylist() == [0.1, 0.5, 0.1]
    with pytest.raises(ValueError, match="3 ticks"):
        predictions_table(
            plan_ticks(50, 10.0, TicksConfig(), WindowConfig(), "v"),
            _texts()[:2],
            [True, True],
            np.zeros(2),
            np.zeros((2, 3)),
            np.zeros(2),
        )


def test_csv_ready_writes_frame_idx_as_json():
    t = csv_ready(_table())
    assert json.loads(t.column("frame_idx")[0].as_py()) == [2, 5, 7, 10, 12, 15, 17, 20]


def test_output_paths():
    assert output_paths("out/clip", "csv") == (Path("out/clip.csv"), Path("out/clip.png"))
    with pytest.raises(ValueError, match="format"):
        output_paths("x", "json")


def test_timeline_draws_probabilities_and_both_action_strips():
    fig = timeline_figure(_table(), 1.0, "v")
    ax_p, ax_a = fig.axes[:2]
    assert {line.get_gid() for line in ax_p.lines} == {"p_danger", "p_silent", "p_observe", "p_alert"}
    gids = {c.get_gid() for c in ax_a.collections}
    assert {"strip-action-SILENT", "strip-action-OBSERVE", "strip-action-ALERT"} <= gids
    assert {"strip-vlm_action-ALERT", "strip-vlm_action-none", "strip-vlm_action-OBSERVE"} <= gids


def test_expand_videos_keeps_paths_and_expands_patterns(tmp_path):
    for name in ("b.mp4", "a.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mp4").write_bytes(b"")
    assert expand_videos(tmp_path / "b.mp4") == [tmp_path / "b.mp4"]
    assert expand_videos(str(tmp_path / "*.mp4")) == [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    nested = expand_videos([str(tmp_path / "**" / "*.mp4"), tmp_path / "a.mp4"])
    assert nested == [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "sub" / "c.mp4"]  # a.mp4 once
    assert expand_videos(["missing.mp4"]) == [Path("missing.mp4")]  # opening it says what is wrong
    with pytest.raises(PredictError, match=r"\*\.avi: no file matches this pattern"):
        expand_videos([str(tmp_path / "*.avi")])
    with pytest.raises(PredictError, match="no video given"):
        expand_videos([])


def test_output_prefixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert output_prefixes(["x/a.mp4"], out="o/clip") == [Path("o/clip")]
    assert output_prefixes(["x/a.mp4", "y/b.mp4"]) == [tmp_path / "a.vlalert", tmp_path / "b.vlalert"]
    assert output_prefixes(["x/a.mp4"], out_dir="d") == [Path("d") / "a.vlalert"]
    with pytest.raises(PredictError, match="use --out-dir"):
        output_prefixes(["a.mp4", "b.mp4"], out="o")
    with pytest.raises(PredictError, match="exclude each other"):
        output_prefixes(["a.mp4"], out="o", out_dir="d")
    with pytest.raises(PredictError, match=r"^y/a\.mp4: would overwrite the outputs of x/a\.mp4"):
        output_prefixes([Path("x/a.mp4"), Path("y/a.mp4")], out_dir="d")


# ----------------------------------------------------------------------------- end to end


def test_predict_writes_one_row_per_tick(run, predicted):
    t = pq.read_table(predicted.table_path)
    assert predicted.table_path == run["out"] / "out" / "clip.parquet"
    assert t.schema.remove_metadata() == PREDICTIONS
    assert predicted.fps == 10.0 and predicted.n_frames == 50
    expected = tick_times(50, 10.0, TicksConfig(), WindowConfig())
    assert t.column("t_s").to_pylist() == expected.tolist() == [2.0, 3.0, 4.0]
    assert t.column("frame_idx").to_pylist() == [window_frames(x, 10.0, 50, WindowConfig()) for x in expected]
    meta = json.loads(t.schema.metadata[b"vlalert.predict"])
    assert meta["seed"] == SEED and meta["run"] == RUN


def test_predict_outputs_are_consistent(predicted):
    t = predicted.table
    probs = np.stack([t.column(c).to_numpy() for c in ("p_silent", "p_observe", "p_alert")], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    p_danger = t.column("p_danger").to_numpy()
    assert ((p_danger >= 0) & (p_danger <= 1)).all()
    # the rollout's actions are the FSM decoding of its own probabilities
    cfg = load_config_from_table(predicted)
    decoded = fsm.decode(probs, cfg)
    assert t.column("action").to_pylist() == [ACTIONS[a] for a in decoded]
    texts = t.column("generated_text").to_pylist()
    assert all(isinstance(x, str) for x in texts)
    assert t.column("vlm_action").to_pylist() == vlm_action_names(texts)


def load_config_from_table(predicted):
    from vlalert.heads.config import FSMConfig

    meta = json.loads(pq.read_schema(predicted.table_path).metadata[b"vlalert.predict"])
    return FSMConfig(**meta["fsm"])


def test_predict_png_is_written(predicted):
    png = predicted.png_path
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.width > 500 and im.height > 200


def test_frame_folder_gives_the_same_predictions_as_the_mp4(run, predicted):
    """The same pixels through the frame-folder reader (with --fps) give the same ticks and scores."""
    folder = run["out"] / "frames"
    folder.mkdir()
    for i, frame in enumerate(read_frames(run["video"], range(50))):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    cfg = load_config(run["config"])
    with pytest.raises(PredictError, match="pass --fps"):
        predict_video(folder, run["results"], cfg, out_prefix=run["out"] / "x")
    res = predict_video(folder, run["results"], cfg, out_prefix=run["out"] / "frames_out", fmt="csv", fps=10)
    assert res.table_path.suffix == ".csv" and res.table_path.is_file()
    for col in ("t_s", "generated_text", "action", "p_danger", "p_alert"):
        a, b = res.table.column(col).to_pylist(), predicted.table.column(col).to_pylist()
        if col.startswith("p_"):
            np.testing.assert_allclose(a, b, atol=1e-6)
        else:
            assert a == b


def test_heads_of_another_width_are_refused(run, tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(run["results"], results)
    cfg = load_config(run["config"])
    raw = raw_config()
    raw["cache"]["belief_layers"] = [1, 2]  # z becomes 2 x hidden: the saved DangerHead reads 4 x hidden
    narrow = load_config_from(tmp_path, raw)
    with pytest.raises(PredictError, match=r"danger/seed3: head reads z vectors 512 wide.*gives 256"):
        predict_video(run["video"], results, narrow, out_prefix=tmp_path / "o")
    assert cfg.cache.belief_layers == (1, 2, 3, 4)
