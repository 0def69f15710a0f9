"""Report figures, tables and pages on small hand-made tables; the report of a demo run (slow)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from matplotlib.figure import Figure
from matplotlib.image import imread
from test_workflow import REPO, snakemake

from vlalert.baselines import decode_clips
from vlalert.heads.config import FSMConfig
from vlalert.metrics.config import ScoringConfig
from vlalert.report.beliefs import (
    belief_clips,
    belief_figure,
    choose_clips,
    choose_ticks,
    read_generations,
    write_belief_report,
)
from vlalert.report.data import (
    counts_figure,
    reason_kinds,
    rejected_by_reason,
    rejected_figure,
    write_data_report,
)
from vlalert.report.evaluation import (
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
from vlalert.report.facts import overview_labels, read_facts, run_facts
from vlalert.report.training import head_loss_figure, sft_loss_figure
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


# ----------------------------------------------------------------------------- a source without clips


def test_a_source_without_scored_clips_gets_a_timeline_that_says_so(data, tmp_path):
    bench, scores, summary = data
    paths = write_report(scores, bench, summary, tmp_path, tick_hz=1.0, sources=["nexar", "dota", "dad"])
    assert [p.name for p in paths[:3]] == ["timelines_dad.png", "timelines_dota.png", "timelines_nexar.png"]
    fig = timeline_figure([], 1.0, "dad: no clips of this source in the scored split")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "no clips of this source were scored" in texts and "dad" in fig.get_suptitle()


# ----------------------------------------------------------------------------- run facts and data pages

MANIFEST = {
    "run": "r1",
    "clips": {
        "train": {"nexar": {"clips": 3, "prefix_clips": 0}, "dota": {"clips": 2, "prefix_clips": 1}},
        "val": {"nexar": {"clips": 1, "prefix_clips": 0}},
        "test": {"nexar": {"clips": 2, "prefix_clips": 0}},
    },
    "ticks": {
        "train": {
            "nexar": {"SILENT": 10, "OBSERVE": 3, "ALERT": 2, "excluded": 1, "prefix": 0},
            "dota": {"SILENT": 5, "OBSERVE": 1, "ALERT": 2, "excluded": 2, "prefix": 3},
        },
        "val": {"nexar": {"SILENT": 4, "OBSERVE": 0, "ALERT": 0, "excluded": 0, "prefix": 0}},
        "test": {"nexar": {"SILENT": 6, "OBSERVE": 2, "ALERT": 1, "excluded": 1, "prefix": 0}},
    },
    "positives": {"train": {"nexar": 2, "dota": 2}, "val": {"nexar": 0}, "test": {"nexar": 1}},
    "sources": {"nexar": {"accepted": 6, "rejected": 1}, "dota": {"accepted": 2, "rejected": 2}},
}


def test_run_facts_give_every_source_every_split():
    facts = run_facts(MANIFEST, ["dota", "nexar", "dad"])
    assert facts.sources == ("dad", "dota", "nexar")  # sorted, as the report's figures are
    assert facts.by_split["test"]["dota"].clips == 0 and facts.by_split["test"]["dad"].n_ticks == 0
    assert facts.total("train") == (5, 29) and facts.total("test") == (2, 10)  # dota's 3 prefix ticks
    assert facts.sources_without("test") == ["dad", "dota"] and facts.sources_without("train") == ["dad"]
    assert (facts.accepted["dota"], facts.rejected["dota"], facts.rejected["dad"]) == (2, 2, 0)


def test_overview_labels_are_strings_that_name_sources_without_test_clips(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(MANIFEST))
    labels = overview_labels(path, model="tiny-qwen3vl", seeds=[1, 2], sources=["dota", "nexar"])
    assert all(isinstance(v, str) for v in labels.values())
    assert labels["run"] == "r1" and labels["seeds"] == "1, 2" and labels["model"] == "tiny-qwen3vl"
    assert labels["train clips / ticks"] == "5 / 29" and labels["test clips / ticks"] == "2 / 10"
    assert labels["accepted / rejected clips"] == "8 / 3"
    assert labels["sources without test clips"] == "dota"


def test_reason_kinds_group_rejections_by_field_and_problem():
    kinds = reason_kinds
    assert kinds("v/0001.mp4: clip 0001: field path: empty file (0 bytes)") == ["path: empty file"]
    assert kinds(
        "v/2.mp4: clip 2: field path: unreadable video container: [Errno 1] Invalid data: 'v/2.mp4'"
    ) == ["path: unreadable video container"]
    assert kinds(
        "a.json: clip X: field anomaly_start (t_risky_s): 9.3 s is past the clip's end (8.1 s = 81 frames)"
    ) == ["anomaly_start (t_risky_s): # s is past the clip's end"]
    assert kinds(
        "f/X: clip X: field path: frame 0 (000000.jpg): unreadable frame image: cannot identify"
    ) == ["path: frame #: unreadable frame image"]
    # two problems of one clip, and a reason in another form
    assert kinds("a: clip 1: field fps: no fps; a: clip 1: field path: empty file (0 bytes)") == [
        "fps: no fps",
        "path: empty file",
    ]
    assert kinds("something else at 12 s") == ["something else at # s"]


def _rejected(rows: list[tuple[str, str]], source: str) -> pa.Table:
    return pa.table(
        {
            "video_id": [v for v, _ in rows],
            "source": [source] * len(rows),
            "path": ["x"] * len(rows),
            "reason": [r for _, r in rows],
        }
    )


REJECTED = {
    "nexar": _rejected([("1", "f: clip 1: field path: empty file (0 bytes)")], "nexar"),
    "dota": _rejected(
        [("a", "f: clip a: field path: empty file (0 bytes)"), ("b", "f: clip b: field fps: no fps")], "dota"
    ),
}


def test_rejected_by_reason_counts_clips_per_source_and_kind():
    df = rejected_by_reason(REJECTED)
    assert df.rows() == [
        ("dota", "fps: no fps", 1),
        ("dota", "path: empty file", 1),
        ("nexar", "path: empty file", 1),
    ]
    fig = rejected_figure(df, ["dota", "nexar"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["path: empty file", "fps: no fps"]
    assert {p.get_gid() for p in ax.patches} == {"rejected-dota", "rejected-nexar"}
    empty = rejected_figure(rejected_by_reason({}), ["dota"])
    assert [t.get_gid() for t in empty.axes[0].texts] == ["none-rejected"]


def test_counts_figure_writes_no_clips_where_a_source_has_none():
    fig = counts_figure(run_facts(MANIFEST, ["dota", "nexar"]))
    assert [ax.get_title() for ax in fig.axes] == [
        "train: 5 clips, 29 ticks",
        "val: 1 clips, 4 ticks",
        "test: 2 clips, 10 ticks",
    ]
    texts = {t.get_gid(): t.get_text() for ax in fig.axes for t in ax.texts}
    assert texts["clips-test-dota"] == "no clips" and texts["clips-test-nexar"] == "2 clips\n1 pos."
    stacks = {p.get_gid() for ax in fig.axes for p in ax.patches}
    assert {"ticks-train-ALERT", "ticks-test-excluded", "ticks-train-prefix"} <= stacks


def test_overview_page_names_every_source_and_each_rejection(tmp_path):
    facts = run_facts(MANIFEST, ["dota", "nexar", "dad"])
    paths = write_data_report(
        facts,
        REJECTED,
        overview=tmp_path / "run_overview.html",
        counts=tmp_path / "counts.png",
        rejections=tmp_path / "rejected.png",
    )
    assert [p.name for p in paths] == ["run_overview.html", "counts.png", "rejected.png"]
    page = paths[0].read_text()
    assert "Sources without test clips" in page and "dad, dota</p>" in page
    assert page.count('<tr class="missing">') == 2  # dota and dad: no test clips
    assert "<td>no val / test clips</td>" in page and "<td>no train / val / test clips</td>" in page
    assert page.count('class="reason"') == 3 and "field fps: no fps" in page
    for p in paths[1:]:
        assert p.read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- training curves


def test_sft_loss_figure_draws_train_val_and_the_rate():
    log = pa.table(
        {
            "step": pa.array([0, 10, 20, 25], pa.int32()),
            "epoch": [0.0, 0.5, 1.0, 1.2],
            "lr": [0.0, 1e-3, 5e-4, 1e-4],
            "train_loss": [None, 2.0, 1.0, 0.8],
            "val_loss": [3.0, None, 1.2, 1.1],
            "seconds": [0.0, 1.0, 2.0, 3.0],
        }
    )
    fig = sft_loss_figure(log, "r1")
    ax, lr = fig.axes
    lines = {line.get_gid(): line for line in ax.lines}
    assert list(lines["sft-train"].get_xdata()) == [10, 20, 25]
    assert list(lines["sft-val"].get_xdata()) == [0, 20, 25]
    assert [line.get_gid() for line in lr.lines] == ["sft-lr"]
    assert [t.get_text() for t in ax.texts] == ["3.000", "1.100"]  # first and last val loss
    assert "this run trains no adapter" in sft_loss_figure(None).axes[0].texts[0].get_text()


def test_head_loss_figure_has_a_panel_per_seed_with_the_kept_epoch():
    def log(n: int) -> pa.Table:
        return pa.table(
            {
                "epoch": pa.array(range(n), pa.int32()),
                "train_loss": np.linspace(1, 0.2, n),
                "val_loss": np.linspace(1.1, 0.4, n),
                "lr": [1e-3] * n,
                "seconds": [1.0] * n,
                "ss_prob": [0.0] * n,
            }
        )

    fig = head_loss_figure({2: log(5), 1: log(4), 3: log(6)}, "danger", {1: 2, 2: 4, 3: None})
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["seed 1, kept epoch 2", "seed 2, kept epoch 4", "seed 3"]
    assert [len(_by_gid(ax, "kept")) for ax in panels] == [1, 1, 0]
    assert all(_by_gid(ax, "train-seed") and _by_gid(ax, "val-seed") for ax in panels)
    assert "DangerHead" in fig.get_suptitle()


# ----------------------------------------------------------------------------- belief spans


def _frame_folder(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((24, 32, 3), 10 * i, np.uint8)).save(folder / f"{i:06d}.jpg")
    return folder


def _belief_bench(tmp_path: Path) -> pl.DataFrame:
    clip = _frame_folder(tmp_path / "clip_p", 12)
    rows = []
    for vid, positive, n, parent in (
        ("p1", True, 10, None),
        ("n1", False, 6, None),
        ("n1#prefix", False, 2, "p1"),
    ):
        for k in range(n):
            rows.append(
                {
                    "video_id": vid,
                    "source": "nexar",
                    "tick": k,
                    "t_s": 1.0 + k,
                    "frame_idx": [max(0, k - 1), k + 1],
                    "action": "ALERT" if positive and 6 <= k < 8 else "SILENT",
                    "excluded": positive and k >= 8,
                    "parent_id": parent,
                    "path": str(clip),
                    "is_positive": positive,
                    "t_risky_s": 7.0 if positive else None,
                    "t_event_s": 9.0 if positive else None,
                    "belief_text": "<|BELIEF|> hazard=none <|/BELIEF|>",
                }
            )
    return pl.DataFrame(rows)


def test_belief_view_picks_clips_and_ticks_up_to_the_event(tmp_path):
    bench = _belief_bench(tmp_path)
    assert choose_clips(bench, "nexar") == ["p1", "n1"]  # the prefix negative is not a clip of its own
    assert choose_clips(bench, "dad") == []
    assert choose_clips(bench.filter(pl.col("video_id") != "n1"), "nexar") == ["p1"]  # no more positives
    two = pl.concat(
        [bench, bench.filter(pl.col("video_id") == "p1").with_columns(pl.lit("p2").alias("video_id"))]
    )
    assert choose_clips(two.filter(pl.col("video_id") != "n1"), "nexar") == ["p1", "p2"]
    ticks = choose_ticks(bench.filter(pl.col("video_id") == "p1"), 4)
    assert ticks["tick"].to_list() == [4, 5, 6, 7]  # the last scored ticks before the event
    ticks = choose_ticks(bench.filter(pl.col("video_id") == "n1"), 3)
    assert ticks["tick"].to_list() == [0, 2, 5]  # spread over a negative


def test_belief_view_shows_frames_generated_beliefs_and_actions(tmp_path):
    bench = _belief_bench(tmp_path)
    good = (
        "[Analysis] a car brakes ahead [Safety Assessment] <|BELIEF|> hazard=vehicle; where=ahead; "
        "motion=braking; ttc=1.5s; danger=0.80; ego=yes <|/BELIEF|> <|ACTION|> ALERT <|/ACTION|>"
    )
    part = tmp_path / "cache" / "part-00000.parquet"
    part.parent.mkdir()
    texts = [
        (v, k, good if v == "p1" else "garbled") for v, k in bench.select("video_id", "tick").iter_rows()
    ]
    pq.write_table(
        pa.table(
            {
                "video_id": [v for v, _, _ in texts],
                "tick": pa.array([k for _, k, _ in texts], pa.int32()),
                "generated_text": [t for _, _, t in texts],
            }
        ),
        part,
    )
    gens = read_generations(part.parent, ["p1", "n1"])
    assert set(gens["video_id"].to_list()) == {"p1", "n1"} and gens.height == 16
    scores = bench.select(
        "video_id",
        "tick",
        pl.lit("heads").alias("policy"),
        pl.lit(3, pl.Int32).alias("seed"),
        pl.lit("OBSERVE").alias("action"),
        pl.lit(0.4).alias("p_alert"),
    )
    clips = belief_clips(bench, gens, scores, "nexar", max_ticks=3)
    assert [(c.video_id, len(c.ticks)) for c in clips] == [("p1", 3), ("n1", 3)]
    tick = clips[0].ticks[-1]
    assert (tick.label, tick.vlm_action, tick.fsm_action) == ("ALERT", "ALERT", "OBSERVE")
    assert tick.belief_text.startswith("<|BELIEF|> hazard=vehicle") and tick.frame.shape == (24, 32, 3)
    assert tick.belief_problem is None
    assert clips[1].ticks[0].belief_text is None and clips[1].ticks[0].vlm_action is None

    fig = belief_figure(clips, "nexar", seed=3)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 6
    texts = [t for ax in fig.axes for t in ax.texts]
    beliefs = [t.get_text() for t in texts if t.get_gid() == "belief-text"]
    assert sum("hazard=vehicle" in b for b in beliefs) == 3
    assert sum(b == "no belief span generated; the text:" for b in beliefs) == 3
    assert {t.get_text() for t in texts if (t.get_gid() or "").startswith("clip-")} == {
        "p1 (positive: risky 7.0 s, event 9.0 s)",
        "n1 (negative)",
    }
    assert "heads s3" in [t.get_text() for t in texts]

    outs = write_belief_report(
        bench, part.parent, scores, {"nexar": tmp_path / "b_nexar.png", "dad": tmp_path / "b_dad.png"}
    )
    assert [p.name for p in outs] == ["b_nexar.png", "b_dad.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in outs)
    empty = belief_figure([], "dad")
    assert [t.get_gid() for ax in empty.axes for t in ax.texts] == ["no-clips"]


# ----------------------------------------------------------------------------- the report of a demo run

SUBCATEGORIES = {
    "1. Data": {"Run overview", "Benchmark", "Rejected clips"},
    "2. Training": {"SFT", "Heads"},
    "3. Evaluation (test split)": {
        "Clip timelines",
        "DAUS per source",
        "Calibration",
        "Key metrics",
        "Summary (text)",
    },
    "4. Belief spans (test split)": {"Generated belief per tick"},
}
# output kind -> (its caption's first words, its files' name pattern)
KINDS = {
    "overview": ("The run at a glance", r"run_overview\.html"),
    "counts": ("The benchmark's ticks per split", r"benchmark_counts\.png"),
    "rejected": ("Clips that ingest turned away", r"rejected_by_reason\.png"),
    "sft": ("LoRA supervised fine-tuning", r"sft_loss\.png"),
    "heads": ("Training of one head", r"heads_loss_(danger|policy)\.png"),
    "timelines": ("Clip timelines of one source", r"timelines_\w+\.png"),
    "bars": ("DAUS and its two parts", r"bars_daus\.png"),
    "reliability": ("Reliability diagram", r"reliability_heads\.png"),
    "tables": ("Key metrics per source", r"key_metrics\.html"),
    "summary": ("The test split's metrics as plain text", r"summary\.txt"),
    "beliefs": ("What the model", r"belief_spans_\w+\.png"),
}


def _report_data(html_text: str, name: str) -> dict:
    """A JSON object the Snakemake report embeds (`var results = {...};`, `var categories = ...`)."""
    m = re.search(rf"(?m)^\s*var {name} = (\{{.*\}});?\s*$", html_text)
    assert m, f"no `var {name}` in the report"
    return json.loads(m.group(1))


@pytest.mark.slow
def test_the_report_of_a_demo_run_has_every_section_caption_and_figure(demo_run):
    res = snakemake(demo_run, "--report", "report.html")
    assert res.returncode == 0, res.stderr[-4000:]
    # docutils prints rst problems of the front page or a caption as "<string>:N: (ERROR/3) ..."
    assert not re.findall(r"\((?:WARNING|ERROR|SEVERE)/\d\)", res.stderr), res.stderr[-4000:]
    page = (demo_run / "report.html").read_text()
    results, categories = _report_data(page, "results"), _report_data(page, "categories")

    assert {c: set(subs) for c, subs in categories.items()} == SUBCATEGORIES
    sources = sorted(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["sources"])
    names = sorted(r["name"] for r in results.values())
    by_kind = {
        k: [r for r in results.values() if re.fullmatch(pat, r["name"])] for k, (_, pat) in KINDS.items()
    }
    assert sum(len(v) for v in by_kind.values()) == len(names), names
    assert [len(by_kind[k]) for k in ("timelines", "beliefs", "heads")] == [len(sources), len(sources), 2]
    for kind, (words, _) in KINDS.items():  # one caption per kind, its own
        captions = {r["caption"] for r in by_kind[kind]}
        assert len(captions) == 1 and words in captions.pop(), kind
    for kind in ("timelines", "beliefs"):  # findable by source, split and seed
        labels = [r["labels"] for r in by_kind[kind]]
        assert sorted(lab["source"] for lab in labels) == sources
        assert {(lab["split"], lab["seed"]) for lab in labels} == {("test", "1")}
    assert sorted(r["labels"]["head"] for r in by_kind["heads"]) == ["danger", "policy"]
    assert all(isinstance(v, str) for r in results.values() for v in (r["labels"] or {}).values())

    # the front page: what the run did, and this run's counts as the manifest has them
    facts = read_facts(demo_run / "results" / "benchmark" / "manifest.json", sources)
    for text in ("VLAlert: dashcam video to driver alerts", "What the run did", "This run", "Where to look"):
        assert text in page, text
    for split in ("train", "val", "test"):
        assert "{} / {}".format(*facts.total(split)) in page, split
    missing = facts.sources_without("test")
    assert "sources without test clips" in page and (", ".join(missing) if missing else "none") in page
    overview = next(iter(by_kind["overview"]))["labels"]
    assert overview["sources"] == ", ".join(sources) and overview["seeds"] == "1, 2, 3, 4, 5"
