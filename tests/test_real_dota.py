"""Real DoTA val metadata and BADAS consensus labels through ingest checks, consensus gate and labels.

The videos are not part of the sample, so each clip is checked against the frame count and fps
its own metadata states (what probing the real video would give). Skipped when ../shared is absent.
"""

from __future__ import annotations

from collections import Counter

import pytest

from vlalert.config import WorkflowConfig
from vlalert.gate import gate_scores
from vlalert.ingest import check_clip
from vlalert.labels import label_source
from vlalert.schemas import table_from_rows
from vlalert.sources.base import Clip
from vlalert.sources.consensus import apply_consensus, read_consensus
from vlalert.sources.dota import FPS, Dota, read_annotations
from vlalert.video import VideoInfo


@pytest.fixture(scope="module")
def real_dota(real_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("dota")
    (root / "metadata_val.json").symlink_to(real_data / "dota_metadata_val.json")
    csv = real_data / "badas_consensus_dota_test.csv"
    cfg = WorkflowConfig.model_validate(
        {
            "demo": {"enabled": False},
            "gate": {"provider": "consensus"},
            "sources": {
                "dota": {"kind": "dota", "root": str(root), "consensus": str(csv), "prefix_negatives": True}
            },
        }
    )
    annotations, rejected = read_annotations("dota", cfg.sources["dota"], check_videos=False)
    annotations, more, _ = apply_consensus(annotations, read_consensus(csv), csv, Dota, clock_fps=10.0)
    outcomes = [
        check_clip(a, VideoInfo(n_frames=a.n_frames, fps=FPS, width=1280, height=720)) for a in annotations
    ]
    clips = [o for o in outcomes if isinstance(o, Clip)]
    rejected = [*rejected, *more, *(o for o in outcomes if not isinstance(o, Clip))]
    videos = table_from_rows("videos", [c.to_row() for c in clips])
    gate = gate_scores(videos, ["consensus"], cfg.sources["dota"], cfg)
    labels = label_source(videos, gate, "dota", cfg)
    return cfg, videos, rejected, labels


def test_every_real_clip_is_labelled_or_rejected_with_a_reason(real_dota):
    _, videos, rejected, labels = real_dota
    assert videos.num_rows + len(rejected) == 1402
    assert all(r.reason.count(":") >= 3 for r in rejected)  # file: clip: field: what
    labelled = {v.split("#")[0] for v in labels.column("video_id").to_pylist()}
    too_short = set(videos.column("video_id").to_pylist()) - labelled
    assert all(
        n < 20
        for v, n in zip(videos["video_id"].to_pylist(), videos["n_frames"].to_pylist(), strict=True)
        if v in too_short
    )  # only clips shorter than one 2 s window yield no tick


def test_real_label_distribution(real_dota):
    _, videos, _, labels = real_dota
    trainable = labels.filter(labels["excluded"].to_numpy(zero_copy_only=False) == False)  # noqa: E712
    actions = Counter(
        a
        for a, p in zip(trainable["action"].to_pylist(), trainable["parent_id"].to_pylist(), strict=True)
        if p is None
    )
    rules = Counter(labels["rule"].to_pylist())
    print("DoTA val real metadata:", dict(actions), dict(rules))
    # Every gated branch fires on real data: consensus clips keep ALERT only when ego-involved,
    # clips without a consensus row have no gate score and never ALERT.
    assert actions["ALERT"] > 0 and actions["OBSERVE"] > 0 and actions["SILENT"] > 0
    assert rules["alert->observe:non-ego"] > 0
    assert rules["alert->observe:gate-missing"] > 0
    consensus_ego = {
        v
        for v, m in zip(videos["video_id"].to_pylist(), videos["meta"].to_pylist(), strict=True)
        if '"Nexar-vehicle-involved": "yes"' in m
    }
    alert_clips = {
        v
        for v, a in zip(labels["video_id"].to_pylist(), labels["action"].to_pylist(), strict=True)
        if a == "ALERT"
    }
    assert alert_clips <= consensus_ego


def test_gate_chain_falls_back_where_consensus_has_no_row(real_dota, tmp_path):
    """[consensus, scores_file]: clips without a consensus row are scored by the stand-in file."""
    cfg, videos, _, labels = real_dota
    vids = videos.column("video_id").to_pylist()
    # A stand-in for a model's scores (Open-BADAS run elsewhere): 0.6 on every tick of every clip.
    rows = [f"{v},{t:.1f},0.6" for v in vids for t in range(0, 60)]
    scores = tmp_path / "stand_in_scores.csv"
    scores.write_text("video_id,t_s,p_collision\n" + "\n".join(rows) + "\n")
    src = cfg.sources["dota"].model_copy(update={"gate_scores": str(scores)})
    gate = gate_scores(videos, ["consensus", "scores_file"], src, cfg)
    by_clip = dict(zip(gate.column("video_id").to_pylist(), gate.column("provider").to_pylist(), strict=True))
    providers = Counter(by_clip.values())
    with_row = {
        v for v, m in zip(vids, videos.column("meta").to_pylist(), strict=True) if '"consensus_s"' in m
    }
    assert providers["consensus"] == len(with_row & set(by_clip)) > 0
    assert providers["scores_file"] == len(set(by_clip) - with_row) > 0
    chained = label_source(videos, gate, "dota", cfg)
    before, after = Counter(labels["rule"].to_pylist()), Counter(chained["rule"].to_pylist())
    print("DoTA val, consensus only:", dict(before), "\nDoTA val, consensus -> scores_file:", dict(after))
    assert after["alert->observe:gate-missing"] == 0 < before["alert->observe:gate-missing"]
    pairs = zip(chained["action"].to_pylist(), chained["excluded"].to_pylist(), strict=True)
    actions = Counter(a for a, excluded in pairs if not excluded)
    assert actions["ALERT"] > Counter(labels["action"].to_pylist())["ALERT"]
