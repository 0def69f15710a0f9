import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlalert.config import ConfigError, WorkflowConfig, validate_config
from vlalert.gate import gate_scores
from vlalert.schemas import check_table, table_from_rows
from vlalert.stage_config import GateSlice


def clip(vid, n_frames=301, fps=30.0, meta=None, ego=True):
    """30 fps, 301 frames: ticks at 2..10 s."""
    return {
        "video_id": vid,
        "source": "dota",
        "path": f"/v/{vid}.mp4",
        "fps": fps,
        "n_frames": n_frames,
        "duration_s": n_frames / fps,
        "width": 64,
        "height": 48,
        "official_split": None,
        "is_positive": True,
        "t_risky_s": 5.0,
        "t_event_s": 7.0,
        "ego_involved": ego,
        "event_type": None,
        "meta": json.dumps(meta or {}),
    }


def make(tmp_path, provider, **src):
    cfg = WorkflowConfig.model_validate(
        {
            "demo": {"enabled": False},
            "sources": {"dota": {"kind": "dota", "root": str(tmp_path), "gate_provider": provider, **src}},
        }
    )
    return cfg.sources["dota"], cfg


def scores(table, vid):
    t = table.filter(pa.compute.equal(table.column("video_id"), vid))
    return dict(zip(t.column("t_s").to_pylist(), t.column("p_collision").to_pylist(), strict=True))


def write_scene(path, clips, source="dota"):
    path.write_text(
        json.dumps({"format": "vlalert-scene-truth/1", "source": source, "fps": 30.0, "clips": clips})
    )


def timeline(ttc_of_t):
    ts = [i / 10 for i in range(101)]  # 10 Hz over 10 s
    return {
        "t_s": ts,
        "ttc_s": [ttc_of_t(t) for t in ts],
        "gap_m": [10.0] * 101,
        "where": ["ahead"] * 101,
        "motion": ["approaching"] * 101,
    }


def test_scene_provider(tmp_path):
    truth = tmp_path / "scene_truth.json"
    # ego collision at 7 s: ttc = 7 - t from 1 s on, not on a course before 1 s and after the collision
    ego = {
        "ego_involved": True,
        "t_risky_s": 5.0,
        "t_event_s": 7.0,
        "timeline": timeline(lambda t: round(7.0 - t, 6) if 1.0 <= t < 7.0 else None),
    }
    other = {"ego_involved": False, "t_risky_s": 5.0, "t_event_s": 7.0, "timeline": timeline(lambda t: None)}
    write_scene(truth, {"ego": ego, "other": other, "unused": other})
    src, cfg = make(tmp_path, "scene", scene_truth=str(truth))
    out = gate_scores(table_from_rows("videos", [clip("other"), clip("ego")]), "scene", src, cfg)
    check_table("gate", out)
    assert out.column("video_id").to_pylist() == ["ego"] * 9 + ["other"] * 9
    assert set(out.column("provider").to_pylist()) == {"scene"}
    # p = 1 - ttc / 6: ttc 5, 4, 3, 2, 1 at ticks 2..6; null ttc (after the collision) -> 0
    expected = {
        2.0: 1 / 6,
        3.0: 1 / 3,
        4.0: 0.5,
        5.0: 2 / 3,
        6.0: 5 / 6,
        7.0: 0.0,
        8.0: 0.0,
        9.0: 0.0,
        10.0: 0.0,
    }
    assert scores(out, "ego") == pytest.approx(expected)
    assert scores(out, "other") == {float(t): 0.0 for t in range(2, 11)}


def test_scene_provider_refuses_clips_it_does_not_know(tmp_path):
    truth = tmp_path / "scene_truth.json"
    write_scene(truth, {"ego": {"timeline": timeline(lambda t: None)}})
    src, cfg = make(tmp_path, "scene", scene_truth=str(truth))
    with pytest.raises(ValueError, match=r"no scene truth for clips 0RJPQ_real.*synthetic clips only"):
        gate_scores(table_from_rows("videos", [clip("ego"), clip("0RJPQ_real")]), "scene", src, cfg)
    truth.write_text(json.dumps({"format": "something-else", "clips": {}}))
    with pytest.raises(ValueError, match="not a scene truth file"):
        gate_scores(table_from_rows("videos", [clip("ego")]), "scene", src, cfg)
    write_scene(truth, {"ego": {"timeline": timeline(lambda t: None)}}, source="nexar")
    with pytest.raises(ValueError, match="source kind 'nexar'"):
        gate_scores(table_from_rows("videos", [clip("ego")]), "scene", src, cfg)


def consensus_row(alert, collision, involved):
    return {
        "consensus": {
            "id": "x.mp4",
            "Time-of-alert": alert,
            "Time-of-collision": collision,
            "Nexar-vehicle-involved": involved,
            "min_support": 7.0,
        },
        # seconds of the clip, as ingest writes them after moving the CSV's clock to the video's
        "consensus_s": {"Time-of-alert": alert, "Time-of-collision": collision},
    }


def test_the_gate_slice_stands_in_for_the_source_and_the_config(tmp_path):
    """The gate script hands its slice where gate_scores takes the source and the workflow config."""
    truth = tmp_path / "scene_truth.json"
    ttc = timeline(lambda t: round(7.0 - t, 6) if 1.0 <= t < 7.0 else None)
    write_scene(truth, {"other": {"ego_involved": True, "t_risky_s": 5.0, "t_event_s": 7.0, "timeline": ttc}})
    src, cfg = make(tmp_path, ["consensus", "scene"], consensus="c.csv", scene_truth=str(truth))
    videos = table_from_rows("videos", [clip("ego", meta=consensus_row(5.0, 7.0, "yes")), clip("other")])
    expected = gate_scores(videos, cfg.gate_chain("dota"), src, cfg)
    assert set(expected.column("provider").to_pylist()) == {"consensus", "scene"}
    job = GateSlice.of(cfg, "dota")
    job = GateSlice.from_params(job.tracked(), job.untracked())
    assert gate_scores(videos, job.provider, job.source, job).equals(expected)


def test_consensus_provider(tmp_path):
    src, cfg = make(tmp_path, "consensus", consensus="c.csv")  # gate.consensus_ramp_s = 4
    videos = table_from_rows(
        "videos",
        [
            clip("ego", meta=consensus_row(5.0, 7.0, "yes")),
            clip("nonego", meta=consensus_row(5.0, 7.0, "no")),
            clip("nocoll", meta=consensus_row(5.0, None, "yes")),
            clip("none", meta={"source_fields": {"a": 1}}),
        ],
    )
    out = check_table("gate", gate_scores(videos, "consensus", src, cfg))
    # 0 at 1 s, linear to 0.5 at t_alert = 5 s, linear to 1.0 at the collision (7 s), 1.0 after
    assert scores(out, "ego") == pytest.approx(
        {2.0: 0.125, 3.0: 0.25, 4.0: 0.375, 5.0: 0.5, 6.0: 0.75, 7.0: 1.0, 8.0: 1.0, 9.0: 1.0, 10.0: 1.0}
    )
    assert scores(out, "nonego") == pytest.approx(
        {2.0: 0.125, 3.0: 0.25, 4.0: 0.375, 5.0: 0.5, 6.0: 0.5, 7.0: 0.5, 8.0: 0.5, 9.0: 0.5, 10.0: 0.5}
    )
    # no collision time: 0.5 -> 1.0 over consensus_ramp_s / 2 = 2 s
    assert scores(out, "nocoll")[6.0] == pytest.approx(0.75)
    assert scores(out, "nocoll")[7.0] == pytest.approx(1.0)
    assert scores(out, "none") == {float(t): None for t in range(2, 11)}


def test_consensus_ramp_follows_gate_config(tmp_path):
    cfg = WorkflowConfig.model_validate(
        {
            "demo": {"enabled": False},
            "gate": {"consensus_ramp_s": 2.0},
            "sources": {
                "dota": {
                    "kind": "dota",
                    "root": str(tmp_path),
                    "gate_provider": "consensus",
                    "consensus": "c",
                }
            },
        }
    )
    out = gate_scores(
        table_from_rows("videos", [clip("e", meta=consensus_row(5.0, 7.0, "yes"))]),
        "consensus",
        cfg.sources["dota"],
        cfg,
    )
    assert scores(out, "e")[3.0] == 0.0
    assert scores(out, "e")[4.0] == pytest.approx(0.25)


SCORES = {
    "video_id": ["00012", "00012", "00012", "late"],
    "t_s": [5.2, 1.5, 3.0, 6.5],
    "p_collision": [0.4, 0.2, 0.7, 0.9],
}


def check_scores_file(tmp_path, path):
    src, cfg = make(tmp_path, "scores_file", gate_scores=str(path))
    videos = table_from_rows("videos", [clip("00012", n_frames=181), clip("late", n_frames=241), clip("12")])
    out = check_table("gate", gate_scores(videos, "scores_file", src, cfg))
    # the last score at or before each tick; rows given out of time order
    assert scores(out, "00012") == {2.0: 0.2, 3.0: 0.7, 4.0: 0.7, 5.0: 0.7, 6.0: 0.4}
    assert scores(out, "late") == {2.0: None, 3.0: None, 4.0: None, 5.0: None, 6.0: None, 7.0: 0.9, 8.0: 0.9}
    # "12" is not "00012": ids are compared as strings, never as numbers
    assert set(scores(out, "12").values()) == {None}


def test_scores_file_csv(tmp_path):
    path = tmp_path / "scores.csv"
    lines = ["video_id,t_s,p_collision"] + [f"{v},{t},{p}" for v, t, p in zip(*SCORES.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    check_scores_file(tmp_path, path)


def test_scores_file_parquet(tmp_path):
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.table(SCORES), path)
    check_scores_file(tmp_path, path)


def test_scores_file_rejects_bad_values(tmp_path):
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"video_id": ["a"], "t_s": [1.0], "p_collision": [1.5]}), path)
    src, cfg = make(tmp_path, "scores_file", gate_scores=str(path))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gate_scores(table_from_rows("videos", [clip("a")]), "scores_file", src, cfg)
    pq.write_table(pa.table({"video_id": ["a"], "p": [0.5]}), path)
    with pytest.raises(ValueError, match="lacks columns"):
        gate_scores(table_from_rows("videos", [clip("a")]), "scores_file", src, cfg)


def test_badas_provider_scores_a_real_video(tmp_path):
    """The `badas` branch runs Open-BADAS (here a tiny random V-JEPA2) on the clip's frames."""
    import av
    import numpy as np

    from vlalert.badas.model import BadasModel, tiny_config

    weights = tmp_path / "badas"
    BadasModel.from_config(tiny_config(), seed=0).save_pretrained(weights)
    video = tmp_path / "a.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(40):
            frame = np.full((64, 64, 3), (i * 6) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cfg = WorkflowConfig.model_validate(
        {
            "demo": {"enabled": False},
            "gate": {"provider": "badas", "badas": {"model_path": str(weights), "progress": False}},
            "sources": {"dota": {"kind": "dota", "root": str(tmp_path)}},
        }
    )
    row = clip("a") | {"path": str(video), "fps": 10.0, "n_frames": 40, "duration_s": 4.0}
    table = gate_scores(table_from_rows("videos", [row]), "badas", cfg.sources["dota"], cfg)
    assert table.column("t_s").to_pylist() == [2.0, 3.0]
    assert set(table.column("provider").to_pylist()) == {"badas"}
    assert all(0.0 <= p <= 1.0 for p in table.column("p_collision").to_pylist())


def test_badas_without_weights_is_a_config_error(tmp_path):
    raw = {
        "demo": {"enabled": False},
        "sources": {"dota": {"kind": "dota", "root": str(tmp_path), "gate_provider": "badas"}},
    }
    with pytest.raises(ConfigError, match="sources.dota"):
        validate_config(raw)
