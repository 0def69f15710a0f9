"""Report figures and tables, on a small hand-made SCORES table (no heads to train here)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from vlalert.baselines import decode_clips
from vlalert.heads.config import FSMConfig
from vlalert.metrics import ScoringConfig
from vlalert.report import (
    TABLE_NAMES,
    draw_clip_timeline,
    figure_names,
    label_windows,
    plot_source_bars,
    reliability_bins,
    reliability_figure,
    runs,
    source_bars_figure,
    timeline_clips,
    timeline_figure,
    write_report,
    write_report_tables,
)
from vlalert.schemas import ACTIONS, check_table
from vlalert.summary import summarize_scores

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (video_id, source, n ticks from t = 2 s, t_risky_s, t_event_s, parent_id)
CLIPS = [
    ("p1", "nexar", 10, 7.0, 8.0, None),  # OBSERVE 3..6 s, ALERT 7..8 s, excluded 9..11 s
    ("p2", "dota", 8, 5.0, 6.0, None),
    ("n1", "nexar", 8, None, None, None),
    ("p2#prefix", "dota", 2, None, None, "p2"),
]


def _label(t: float, t_r: float | None) -> tuple[int, bool]:
    if t_r is None:
        return 0, False
    if t >= t_r + 2:
        return 0, True
    if t >= t_r:
        return 2, False
    return (1, False) if t >= t_r - 4 else (0, False)


@pytest.fixture(scope="module")
def data() -> tuple[pa.Table, pa.Table, pa.Table]:
    """(benchmark, scores, summary): heads with label-driven probabilities on two seeds, plus the gate
    and the constant baselines."""
    ticks = []
    for vid, source, n, t_r, t_e, parent in CLIPS:
        for k in range(n):
            code, excluded = _label(2.0 + k, t_r)
            ticks.append((vid, source, k, 2.0 + k, code, excluded, parent, t_r is not None, t_r, t_e))
    names = [
        "video_id",
        "source",
        "tick",
        "t_s",
        "code",
        "excluded",
        "parent_id",
        "is_positive",
        "t_risky_s",
        "t_event_s",
    ]
    tk = pl.DataFrame(ticks, schema=names, orient="row").with_columns(pl.col("tick").cast(pl.Int32))
    bm = tk.with_columns(
        pl.col("code").map_elements(lambda c: ACTIONS[c], return_dtype=pl.Utf8).alias("action")
    )
    offsets = np.r_[0, np.cumsum(tk.group_by("video_id", maintain_order=True).len()["len"].to_numpy())]
    code = tk["code"].to_numpy()
    blocks = []
    fsm = FSMConfig()

    def block(
        policy: str, seed: int, p_alert: np.ndarray, p_observe: np.ndarray, p_danger=None
    ) -> pl.DataFrame:
        probs = np.stack([1 - p_alert - p_observe, p_observe, p_alert], axis=1)
        actions = decode_clips(probs, offsets, fsm)
        return tk.select(
            "video_id",
            "source",
            "tick",
            "t_s",
            pl.lit(seed, pl.Int32).alias("seed"),
            pl.lit(policy).alias("policy"),
            pl.Series("p_danger", p_danger, pl.Float64)
            if p_danger is not None
            else pl.lit(None, pl.Float64).alias("p_danger"),
            pl.Series("p_silent", probs[:, 0]),
            pl.Series("p_observe", probs[:, 1]),
            pl.Series("p_alert", probs[:, 2]),
            pl.Series("action", np.asarray(ACTIONS, dtype=object)[actions].tolist(), pl.Utf8),
            pl.col("code").map_elements(lambda c: ACTIONS[c], return_dtype=pl.Utf8).alias("label"),
            "excluded",
            "parent_id",
        )

    wiggle = np.sin(np.arange(code.size))
    for seed in (1, 2):
        p_alert = np.clip(0.05 + 0.8 * (code == 2) + 0.05 * seed * wiggle, 0, 0.95)
        p_observe = np.clip(0.6 * (code == 1), 0, 1 - p_alert)
        blocks.append(block("heads", seed, p_alert, p_observe, p_danger=np.clip(0.4 * code + 0.1, 0, 1)))
    blocks.append(block("gate", 0, np.clip(0.45 * code, 0, 1), np.zeros(code.size)))
    blocks.append(block("always-silent", 0, np.zeros(code.size), np.zeros(code.size)))
    blocks.append(block("always-alert", 0, np.ones(code.size), np.zeros(code.size)))
    scores = check_table("scores", pl.concat(blocks).to_arrow())
    bench = bm.select(
        "video_id",
        "source",
        "tick",
        "t_s",
        "action",
        "excluded",
        "parent_id",
        "is_positive",
        "t_risky_s",
        "t_event_s",
    ).to_arrow()
    summary = summarize_scores(scores, bench, ScoringConfig(), tick_hz=1.0)
    return bench, scores, summary


def test_runs_and_label_windows_by_hand():
    t = np.array([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0, 10.0])
    labels = ["OBSERVE", "ALERT", "ALERT", "SILENT", "SILENT", "OBSERVE", "OBSERVE", "SILENT"]
    assert label_windows(t, labels, tick_hz=1.0) == [
        (2.0, 3.0, 1),
        (3.0, 5.0, 2),
        (7.0, 8.0, 1),
        (9.0, 10.0, 1),
    ]
    # at 2 Hz a tick stands for half a second
    assert runs(np.array([0.0, 0.5, 1.0]), np.array([0, 0, 2]), tick_hz=2.0) == [(0.0, 1.0, 0), (1.0, 1.5, 2)]


def test_reliability_bins_by_hand():
    bins = reliability_bins(np.array([0.05, 0.15, 0.15, 0.95, 1.0]), np.array([0, 0, 1, 1, 1]), n_bins=10)
    assert bins.count.tolist() == [1, 1 + 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins.confidence[[0, 1, 9]] == pytest.approx([0.05, 0.15, 0.975])
    assert bins.frequency[[0, 1, 9]] == pytest.approx([0.0, 0.5, 1.0])
    # ECE = (1 * 0.05 + 2 * 0.35 + 2 * 0.025) / 5
    assert bins.ece == pytest.approx(0.16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_bins(np.array([1.5]), np.array([1]))


def _by_gid(ax, prefix: str) -> list:
    artists = [*ax.patches, *ax.lines, *ax.collections]
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


def test_timeline_draws_the_labelled_windows_and_event(data):
    bench, scores, _ = data
    clips = timeline_clips(scores, bench, "nexar", policy="heads", seed=1)
    assert [c.video_id for c in clips] == ["p1", "n1"]
    fig = Figure()
    ax_p, ax_a = fig.subplots(2, 1)
    draw_clip_timeline(ax_p, ax_a, clips[0], tick_hz=1.0)
    observe, alert = _by_gid(ax_p, "window-OBSERVE"), _by_gid(ax_p, "window-ALERT")
    assert len(observe) == 1 and len(alert) == 1
    # ALERT labels at 7 s and 8 s, but the window is shaded only up to the event at 8 s
    assert (alert[0].get_x(), alert[0].get_width()) == (7.0, 1.0)
    assert len(_by_gid(ax_p, "excluded")) == 1
    assert [line.get_xdata()[0] for line in _by_gid(ax_p, "event")] == [8.0]
    assert [line.get_xdata()[0] for line in _by_gid(ax_p, "risky")] == [7.0]
    assert len(_by_gid(ax_p, "p_danger")) == 1 and len(_by_gid(ax_p, "p_alert")) == 1
    assert _by_gid(ax_a, "strip-1") and _by_gid(ax_a, "strip-0") and _by_gid(ax_a, "strip-excluded")

    fig = Figure()
    ax_p, ax_a = fig.subplots(2, 1)
    draw_clip_timeline(ax_p, ax_a, clips[1], tick_hz=1.0)
    assert not _by_gid(ax_p, "window") and not _by_gid(ax_p, "event") and not _by_gid(ax_p, "excluded")


def test_timeline_figure_shows_positives_and_prefix_negatives(data):
    bench, scores, _ = data
    clips = timeline_clips(scores, bench, "dota", policy="heads", seed=2)
    assert [(c.video_id, c.is_positive, c.parent_id) for c in clips] == [
        ("p2", True, None),
        ("p2#prefix", False, "p2"),
    ]
    fig = timeline_figure(clips, 1.0, "dota")
    assert len(fig.axes) == 4  # a probability panel and an action strip per clip
    assert fig.legends and "labelled ALERT window" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_bars_have_one_bar_per_policy_and_source_with_seed_error_bars(data):
    _, _, summary = data
    fig = source_bars_figure(summary)
    assert [ax.get_title() for ax in fig.axes] == [
        "DAUS",
        "U (timeliness, positives)",
        "P (trust, negatives)",
    ]
    for ax in fig.axes:
        bars = _by_gid(ax, "bar-")
        assert len(bars) == 4 * 3  # heads, gate, always-silent, always-alert x dota, nexar, all
        assert [t.get_text() for t in ax.get_xticklabels()] == ["dota", "nexar", "all"]
    # only the heads have two seeds, so only they get error bars (three per panel, one per source)
    assert all(len(ax.containers) == 4 + 1 for ax in fig.axes)


def test_reliability_figure_has_an_ece_per_seed(data):
    _, scores, _ = data
    fig = reliability_figure(scores, "heads")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "perfect calibration"
    assert [lab.split(":")[0] for lab in labels[1:]] == ["seed 1", "seed 2"] and all(
        "ECE" in lab for lab in labels[1:]
    )


def test_write_report_writes_every_file(data, tmp_path):
    bench, scores, summary = data
    paths = write_report(scores, bench, summary, tmp_path, tick_hz=1.0)
    assert paths == [tmp_path / n for n in [*figure_names(["nexar", "dota"]), *TABLE_NAMES]]
    for p in paths[:4]:
        raw = p.read_bytes()
        assert raw[:8] == PNG_MAGIC and len(raw) > 20_000, p
        h, w = imread(p).shape[:2]
        assert h > 300 and w > 300


def test_pngs_are_byte_identical_across_runs(data, tmp_path):
    _, _, summary = data
    a = plot_source_bars(summary, tmp_path / "a.png").read_bytes()
    b = plot_source_bars(summary, tmp_path / "b.png").read_bytes()
    assert a == b


def test_report_tables(data, tmp_path):
    _, _, summary = data
    long_csv, key_csv, key_html = write_report_tables(summary, tmp_path)
    back = pl.read_csv(long_csv)
    assert back.height == summary.num_rows
    assert back.columns == ["policy", "source", "metric", "mean", "std", "n_seeds"]
    rows = list(csv.reader(open(key_csv, encoding="utf-8")))
    assert rows[0][:4] == ["source", "policy", "seeds", "DAUS"]
    # always-ALERT: pos p1 onset at 2 s, early for W = [6, 8] -> u 0; p2: W = [4, 6], early -> u 0
    silent = next(r for r in rows if r[:2] == ["all", "always-silent"])
    alert = next(r for r in rows if r[:2] == ["all", "always-alert"])
    assert silent[3] == "0.000" and alert[3] == "0.000" and alert[2] == "1"
    heads = next(r for r in rows if r[:2] == ["all", "heads"])
    assert heads[2] == "2" and "±" in heads[3]
    assert {r[0] for r in rows[1:]} == {"all", "dota", "nexar"}
    text = Path(key_html).read_text(encoding="utf-8")
    assert text.count("<table") == 3 and "<h3>all</h3>" in text and "always-alert" in text
