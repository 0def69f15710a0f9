"""The score stage: every policy through the same decoder, prefix and excluded ticks, and the summary.

Two kinds of data: a tiny hand-made benchmark (4 clips and a prefix, baselines only) whose DAUS is
computed by hand below, and a synthetic cache in the real cache format with heads trained for a
couple of epochs at toy widths (`trained`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from vlalert.baselines import (
    danger_probs,
    decode_clips,
    fit_time_only,
    one_hot_probs,
    shuffle_within_clips,
    single_score_probs,
    time_features,
    vlm_actions,
)
from vlalert.cache.store import CacheError, write_cache
from vlalert.heads.config import DangerHeadConfig, FSMConfig, HeadsTrainConfig, PolicyHeadConfig
from vlalert.heads.synthetic import synthetic_split
from vlalert.metrics.config import ScoringConfig
from vlalert.schemas import POLICIES, check_table
from vlalert.score import BASELINE_SEED, SEEDED_POLICIES, score_counts, score_split
from vlalert.summary import format_summary, summarize_scores

FSM = FSMConfig()
SCORING = ScoringConfig()

# ----------------------------------------------------------------------------- hand-made benchmark

# (video_id, source, first t_s, n ticks, t_risky_s or None, t_event_s or None, parent_id)
HAND_CLIPS = [
    ("pos_a", "dad", 2.0, 6, 3.0, 4.0, None),
    ("pos_b", "dad", 2.0, 8, 7.0, 8.0, None),
    ("neg_c", "dota", 2.0, 4, None, None, None),
    ("pos_d", "dota", 2.0, 10, 9.0, 10.0, None),
    ("pos_d#prefix", "dota", 2.0, 3, None, None, "pos_d"),
]
BADAS_SCORED = ("pos_b", "pos_d")  # clips whose gate scores the badas provider gave
ALERT_TEXT = "[Analysis] a car brakes [Safety Assessment] <|ACTION|> ALERT <|/ACTION|>"


def _label(t: float, t_r: float | None) -> tuple[str, bool]:
    """The risky-time + 2 s rule (observe 4 s, alert 2 s), at 1 Hz."""
    if t_r is None:
        return "SILENT", False
    if t >= t_r + 2:
        return "SILENT", True
    if t >= t_r:
        return "ALERT", False
    if t >= t_r - 4:
        return "OBSERVE", False
    return "SILENT", False


def hand_benchmark() -> pa.Table:
    rows = []
    for vid, source, t0, n, t_r, t_e, parent in HAND_CLIPS:
        for k in range(n):
            action, excluded = _label(t0 + k, t_r)
            rows.append(
                {
                    "video_id": vid,
                    "source": source,
                    "tick": k,
                    "t_s": t0 + k,
                    "action": action,
                    "excluded": excluded,
                    "parent_id": parent,
                    "is_positive": t_r is not None,
                    "t_risky_s": t_r,
                    "t_event_s": t_e,
                }
            )
    schema = pa.schema(
        [
            ("video_id", pa.string()),
            ("source", pa.string()),
            ("tick", pa.int32()),
            ("t_s", pa.float64()),
            ("action", pa.string()),
            ("excluded", pa.bool_()),
            ("parent_id", pa.string()),
            ("is_positive", pa.bool_()),
            ("t_risky_s", pa.float64()),
            ("t_event_s", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _vectors(n: int, width: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * width, np.float16)), width)


def write_hand_cache(cache_dir: Path) -> None:
    """Cache rows for every non-prefix tick except pos_a's last (excluded) tick; none for the prefix.

    Texts: neg_c generates ALERT, junk, OBSERVE, empty; every other tick a parsable SILENT.
    """
    keys, texts = [], []
    for vid, _, _, n, _, _, parent in HAND_CLIPS:
        if parent is not None:
            continue
        for k in range(n):
            if vid == "pos_a" and k == n - 1:
                continue
            keys.append((vid, k))
            if vid == "neg_c":
                texts.append([ALERT_TEXT, "garbage", ALERT_TEXT.replace("ALERT", "OBSERVE"), ""][k])
            else:
                texts.append(ALERT_TEXT.replace("ALERT", "SILENT"))
    n = len(keys)
    table = pa.table(
        {
            "video_id": [v for v, _ in keys],
            "tick": pa.array([k for _, k in keys], pa.int32()),
            "z": _vectors(n, 8),
            "r": _vectors(n, 4),
            "generated_text": texts,
        }
    )
    write_cache(table, cache_dir, part_rows=10)  # several parts: the reader must concatenate them


def hand_gate() -> pa.Table:
    """Gate scores for the whole clips (none for the prefix: it reads its parent's); pos_d at 3 s is
    null, neg_c at 5 s has no row, and one time is off in the last bits."""
    rows = []
    for vid, _, t0, n, _, _, parent in HAND_CLIPS:
        if parent is not None:
            continue
        for k in range(n):
            t = t0 + k
            if vid == "neg_c" and t == 5.0:
                continue
            p = None if (vid == "pos_d" and t == 3.0) else round(0.1 * k, 3)
            by = "badas" if vid in BADAS_SCORED else "consensus"  # a [consensus, badas] chain
            rows.append(
                {
                    "video_id": vid,
                    "t_s": t + (1e-9 if vid == "pos_b" else 0.0),
                    "p_collision": p,
                    "provider": by,
                }
            )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("video_id", pa.string()),
                ("t_s", pa.float64()),
                ("p_collision", pa.float64()),
                ("provider", pa.string()),
            ]
        ),
    )


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, pa.Table]:
    cache_dir = tmp_path_factory.mktemp("hand") / "cache"
    write_hand_cache(cache_dir)
    bm = hand_benchmark()
    return bm, score_split(bm, cache_dir, {}, hand_gate(), FSM)


def _rows(scores: pa.Table, policy: str, vid: str | None = None) -> pl.DataFrame:
    df = pl.from_arrow(scores).filter(pl.col("policy") == policy)
    if vid is not None:
        df = df.filter(pl.col("video_id") == vid)
    return df.sort(["seed", "video_id", "tick"])


def _metric(summary: pa.Table, policy: str, source: str, metric: str) -> dict:
    df = pl.from_arrow(summary).filter(
        (pl.col("policy") == policy) & (pl.col("source") == source) & (pl.col("metric") == metric)
    )
    assert df.height == 1
    return df.row(0, named=True)


# ----------------------------------------------------------------------------- pure parts


def test_single_score_puts_the_score_in_both_decoder_signals():
    probs = single_score_probs(np.array([0.0, 0.3, 1.2]))
    np.testing.assert_allclose(probs, [[1, 0, 0], [0.7, 0, 0.3], [0, 0, 1]])
    np.testing.assert_allclose(one_hot_probs(np.array([2, 0])), [[0, 0, 1], [1, 0, 0]])


def test_decode_clips_runs_the_fsm_per_clip_from_silent():
    # default FSM, p = .6 .6 .6 .2 .2 .2: OBSERVE after k=2 ticks, ALERT once alert_run >= 2 from
    # OBSERVE, held for min_dwell=2, then down to OBSERVE (never straight to SILENT).
    p = np.array([0.6, 0.6, 0.6, 0.2, 0.2, 0.2])
    probs = single_score_probs(np.r_[p, p[:3]])
    actions = decode_clips(probs, np.array([0, 6, 9]), FSM)
    assert actions.tolist() == [0, 1, 2, 2, 1, 1] + [0, 1, 2]  # the second clip starts at SILENT again


def test_danger_probs_apply_the_calibration_per_signal():
    p = np.array([0.05, 0.2, 0.4, 0.6, 0.9])
    np.testing.assert_allclose(danger_probs(p, None), single_score_probs(p))  # no calibration: p itself
    logit = np.log(p / (1 - p))
    cal = {"alert": [2.0, -1.0], "observe": [1.0, 1.5]}
    probs = danger_probs(p, cal)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[:, 2], 1 / (1 + np.exp(-(2 * logit - 1))))
    np.testing.assert_allclose(
        probs[:, 1] + probs[:, 2], np.maximum(1 / (1 + np.exp(-(logit + 1.5))), probs[:, 2])
    )
    # a map that could not be fitted leaves that signal on the raw danger
    half = danger_probs(p, {"alert": None, "observe": [1.0, 1.5]})
    np.testing.assert_allclose(half[:, 2], p)


class _LogitIsFirstFeature(torch.nn.Module):
    """A stand-in DangerHead whose tick logit is sign * z[..., 0]."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, z, mask):
        return self.sign * z[..., 0].float(), z.new_zeros(z.shape[0])


def test_danger_calibration_is_fitted_on_val_or_says_why_not():
    from vlalert.heads.data import build_clips
    from vlalert.heads.train import danger_calibration

    cache, labels = synthetic_split(16, HIDDEN, 4, split="val", min_ticks=8, max_ticks=14)
    codes = {"SILENT": 0, "OBSERVE": 1, "ALERT": 2}
    keys = pl.from_arrow(cache.select(["video_id", "tick"])).with_columns(pl.col("tick").cast(pl.Int32))
    lab = pl.from_arrow(labels.select(["video_id", "tick", "action"])).with_columns(
        pl.col("tick").cast(pl.Int32)
    )
    code = keys.join(lab, on=["video_id", "tick"], how="left")["action"].replace_strict(codes).to_numpy()
    z = np.zeros((code.size, HIDDEN), np.float32)
    z[:, 0] = 2.0 * code - 2.0 + np.random.default_rng(0).normal(0, 0.3, code.size)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1).astype(np.float16)), HIDDEN)
    val = build_clips(cache.set_column(cache.column_names.index("z"), "z", vectors), labels)

    cal = danger_calibration(_LogitIsFirstFeature(), val, HEADS_CFG)
    assert cal["fitted_on"] == "val" and cal["n_ticks"] == val.n_ticks and cal["notes"] == {}
    action = val.action
    logit = z[val.rows, 0].astype(np.float64)
    probs = danger_probs(1 / (1 + np.exp(-logit)), cal)
    # each signal crosses the decoder's 0.5 where its action is the likelier one
    assert (probs[action == 2, 2] >= 0.5).mean() > 0.9 and (probs[action < 2, 2] < 0.5).mean() > 0.9
    up = probs[:, 1] + probs[:, 2]
    assert (up[action >= 1] >= 0.5).mean() > 0.9 and (up[action == 0] < 0.5).mean() > 0.9

    inverted = danger_calibration(_LogitIsFirstFeature(-1.0), val, HEADS_CFG)
    assert inverted["alert"] is None and "does not rise" in inverted["notes"]["alert"]


def test_time_features_count_from_the_clip_start_and_its_first_tick():
    t = np.array([2.0, 3.0, 4.0, 6.0, 7.0, 2.0])
    feats = time_features(t, np.array([0, 3, 5, 6]))
    np.testing.assert_allclose(feats[:, 0], t)
    np.testing.assert_allclose(feats[:, 1], [0, 1, 2, 0, 1, 0])


def _clock_benchmark(n_pos: int = 6, n_neg: int = 4, n_ticks: int = 10) -> pa.Table:
    """Positives: OBSERVE at ticks 3-5, ALERT at 6-7, excluded after; negatives all SILENT."""
    rows = []
    for c in range(n_pos + n_neg):
        for k in range(n_ticks):
            pos = c < n_pos
            action = "SILENT" if not pos or k < 3 else ("OBSERVE" if k < 6 else "ALERT")
            rows.append(
                {
                    "video_id": f"c{c}",
                    "tick": k,
                    "t_s": 2.0 + k,
                    "action": action,
                    "excluded": pos and k >= 8,
                    "parent_id": None,
                }
            )
    schema = pa.schema(
        [
            ("video_id", pa.string()),
            ("tick", pa.int32()),
            ("t_s", pa.float64()),
            ("action", pa.string()),
            ("excluded", pa.bool_()),
            ("parent_id", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def test_time_only_learns_the_clock_and_nothing_else():
    train = _clock_benchmark()
    model = fit_time_only(train, HeadsTrainConfig())
    t = np.arange(2.0, 10.0)
    probs = model.probs(time_features(t, np.array([0, t.size])))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[:2].argmax(axis=1).tolist() == [0, 0]  # early ticks: SILENT
    assert probs[:, 2].argmax() >= 5  # ALERT where train put it, late in the clip
    # the same times give the same probabilities whatever the clip holds: nothing but the clock
    again = model.probs(time_features(t, np.array([0, 4, t.size])))
    np.testing.assert_allclose(again[:4], probs[:4])
    # fitted like the heads: balanced class weights raise the rare ALERT against an unweighted fit
    plain = fit_time_only(train, HeadsTrainConfig(balance="none")).probs(
        time_features(t, np.array([0, t.size]))
    )
    assert probs[6, 2] > plain[6, 2]
    # a train split without ALERT gives it probability 0
    no_alert = pa.Table.from_pylist(
        [r for r in train.to_pylist() if r["action"] != "ALERT"], schema=train.schema
    )
    assert (
        fit_time_only(no_alert, HeadsTrainConfig()).probs(time_features(t, np.array([0, t.size])))[:, 2].max()
        == 0
    )


def test_shuffle_within_clips_permutes_each_clips_scored_ticks_only():
    rows = np.arange(100, 112)
    offsets = np.array([0, 5, 6, 12])
    scored = np.ones(12, bool)
    scored[[4, 10, 11]] = False  # excluded tails keep their rows
    out = shuffle_within_clips(rows, offsets, scored, seed=1)
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        assert sorted(out[a:b]) == sorted(rows[a:b])  # a permutation inside the clip
    assert out[[4, 10, 11]].tolist() == [104, 110, 111]
    assert (out != rows).any()
    np.testing.assert_array_equal(out, shuffle_within_clips(rows, offsets, scored, seed=1))  # seeded
    assert not np.array_equal(out, shuffle_within_clips(rows, offsets, scored, seed=2))


def test_vlm_actions_parse_and_count_unparsable():
    texts = [
        ALERT_TEXT,
        "no action here",
        None,
        ALERT_TEXT.replace("ALERT", "observe"),
        "<|ACTION|> RUN <|/ACTION|>",
    ]
    codes, bad = vlm_actions(texts)
    assert codes.tolist() == [2, 0, 0, 1, 0]
    assert bad == 3


# ----------------------------------------------------------------------------- hand benchmark


def test_hand_scores_schema_rows_and_counts(hand):
    bm, scores = hand
    check_table("scores", scores)
    assert [p for p in POLICIES if p in set(scores.column("policy").to_pylist())] == [
        "gate",
        "badas",
        "vlm",
        "always-silent",
        "always-alert",
    ]
    assert set(scores.column("seed").to_pylist()) == {BASELINE_SEED}
    # pos_a's last tick is excluded and has no cache row: left out; everything else is scored
    n_ticks = bm.num_rows - 1
    n_badas = 8 + 10 + 3  # pos_b, pos_d and pos_d#prefix (its parent's scores are badas's)
    assert scores.num_rows == 4 * n_ticks + n_badas
    assert _rows(scores, "gate", "pos_a")["tick"].to_list() == [0, 1, 2, 3, 4]
    excl = _rows(scores, "gate", "pos_a")["excluded"].to_list()
    assert excl == [False, False, False, True, True]
    assert score_counts(scores) == {
        "ticks": n_ticks,
        "clips": 5,
        "excluded_without_cache_row": 1,
        "gate_null": 2,  # pos_d at 3 s, and the prefix reading it
        "gate_missing": 1,  # neg_c at 5 s
        "vlm_unparsable": 2,
        "badas_clips": 3,
    }


def test_hand_badas_baseline_is_the_gate_on_the_clips_badas_scored(hand):
    """Under a [consensus, badas] chain the `badas` policy holds Open-BADAS's own scores, through
    the same FSM, on exactly the clips it scored; `gate` holds the whole chain."""
    _, scores = hand
    badas = _rows(scores, "badas")
    assert sorted(set(badas["video_id"].to_list())) == ["pos_b", "pos_d", "pos_d#prefix"]
    for vid in ("pos_b", "pos_d", "pos_d#prefix"):
        mine, gate = _rows(scores, "badas", vid), _rows(scores, "gate", vid)
        assert mine["tick"].to_list() == gate["tick"].to_list()
        assert mine["p_alert"].to_list() == pytest.approx(gate["p_alert"].to_list())
        assert mine["action"].to_list() == gate["action"].to_list()


def test_hand_prefix_is_scored_on_its_parents_ticks(hand):
    _, scores = hand
    prefix = _rows(scores, "gate", "pos_d#prefix")
    parent = _rows(scores, "gate", "pos_d").head(3)
    assert prefix["tick"].to_list() == [0, 1, 2]
    assert prefix["parent_id"].to_list() == ["pos_d"] * 3
    assert prefix["label"].to_list() == ["SILENT"] * 3
    assert prefix["p_alert"].to_list() == parent["p_alert"].to_list() == [0.0, 0.0, 0.2]  # null -> 0


def test_hand_gate_scores_and_vlm_actions(hand):
    _, scores = hand
    assert _rows(scores, "gate", "pos_b")["p_alert"].to_list() == pytest.approx([0.1 * k for k in range(8)])
    assert _rows(scores, "gate", "neg_c")["p_alert"].to_list() == pytest.approx([0.0, 0.1, 0.2, 0.0])
    vlm = _rows(scores, "vlm", "neg_c")
    assert vlm["p_alert"].to_list() == [1.0, 0.0, 0.0, 0.0]
    # ALERT held for min_dwell, then down through OBSERVE (held for its own dwell)
    assert vlm["action"].to_list() == ["ALERT", "ALERT", "OBSERVE", "OBSERVE"]


def test_hand_constant_policies(hand):
    _, scores = hand
    assert set(_rows(scores, "always-alert")["action"].to_list()) == {"ALERT"}
    assert set(_rows(scores, "always-silent")["action"].to_list()) == {"SILENT"}
    assert _rows(scores, "always-silent")["p_danger"].null_count() == _rows(scores, "always-silent").height


def test_hand_daus_of_the_constant_policies(hand):
    bm, scores = hand
    summary = summarize_scores(scores, bm, SCORING, tick_hz=1.0)
    check_table("summary", summary)
    # always-ALERT: the ALERT onset is at each clip's first tick (t = 2 s).
    #  pos_a: W = [t_r - 1, t_e] = [2, 4] holds it: u = 0.5 + 0.5 * min((4 - 2) / 3, 1) = 5/6;
    #  pos_b (W = [6, 8]) and pos_d (W = [8, 10]): the onset is early, u = max(0, 0 - 0.25) = 0;
    #  neg_c and the prefix: p = 1 - 0.25 * 1 onset - 0.5 * 1.0 raised = 0.25.
    #  U = 5/18, P = 1/4, DAUS = 2UP / (U + P) = 5/19.
    assert _metric(summary, "always-alert", "all", "daus_U")["mean"] == pytest.approx(5 / 18)
    assert _metric(summary, "always-alert", "all", "daus_P")["mean"] == pytest.approx(0.25)
    assert _metric(summary, "always-alert", "all", "daus")["mean"] == pytest.approx(5 / 19)
    assert _metric(summary, "always-alert", "dad", "daus_U")["mean"] == pytest.approx(5 / 12)
    assert _metric(summary, "always-alert", "dad", "daus")["mean"] is None  # no negative clip in dad
    assert _metric(summary, "always-alert", "dota", "daus")["mean"] == pytest.approx(0.0)
    # the prefix is a negative: dota holds neg_c and pos_d#prefix
    assert _metric(summary, "always-alert", "dota", "n_negative")["mean"] == 2
    assert _metric(summary, "always-silent", "all", "daus")["mean"] == 0.0
    assert _metric(summary, "always-silent", "all", "daus_P")["mean"] == 1.0
    row = _metric(summary, "always-alert", "all", "daus")
    assert row["std"] is None and row["n_seeds"] == 1


def test_summary_mean_std_over_two_seeds_by_hand(hand):
    bm, scores = hand
    df = pl.from_arrow(scores)
    two_seeds = pl.concat(
        [
            df.filter(pl.col("policy") == "always-alert").with_columns(
                pl.lit("heads").alias("policy"), pl.lit(1, pl.Int32).alias("seed")
            ),
            df.filter(pl.col("policy") == "always-silent").with_columns(
                pl.lit("heads").alias("policy"), pl.lit(2, pl.Int32).alias("seed")
            ),
        ]
    ).to_arrow()
    summary = summarize_scores(check_table("scores", two_seeds), bm, SCORING, tick_hz=1.0)
    assert set(summary.column("policy").to_pylist()) == {"heads"}
    # DAUS per seed: 5/19 and 0 -> mean 5/38, sample std |5/19 - 0| / sqrt(2)
    row = _metric(summary, "heads", "all", "daus")
    assert row["mean"] == pytest.approx(5 / 38)
    assert row["std"] == pytest.approx(5 / 19 / math.sqrt(2))
    assert row["n_seeds"] == 2
    row = _metric(summary, "heads", "dad", "daus_U")  # 5/12 and 0
    assert row["mean"] == pytest.approx(5 / 24) and row["std"] == pytest.approx(5 / 12 / math.sqrt(2))
    row = _metric(summary, "heads", "dad", "daus")  # undefined on both seeds
    assert row["mean"] is None and row["std"] is None and row["n_seeds"] == 0
    text = format_summary(summary)
    heads_line = next(line for line in text.splitlines() if line.startswith("heads"))
    assert "0.132 ± 0.186" in heads_line  # DAUS
    assert "0.139 ± 0.196" in heads_line  # U: 5/18 and 0


def test_missing_cache_row_of_a_scored_tick_is_an_error(tmp_path):
    write_hand_cache(tmp_path / "cache")
    bm = hand_benchmark()
    extra = pa.Table.from_pylist(
        [{**bm.slice(0, 1).to_pylist()[0], "video_id": "ghost", "tick": 0}], schema=bm.schema
    )
    with pytest.raises(CacheError, match="no cache row.*ghost@0"):
        score_split(pa.concat_tables([bm, extra]), tmp_path / "cache", {}, None, FSM)


# ----------------------------------------------------------------------------- trained heads

HIDDEN = 8
HEADS_CFG = HeadsTrainConfig(
    epochs=2,
    batch_clips=8,
    threads=1,
    danger=DangerHeadConfig(mlp_hidden=16, embed=8, pma_queries=2, pma_heads=2, pma_ffn=8),
    policy=PolicyHeadConfig(proj=8, action_embed=4, gru_hidden=8),
)


def _benchmark_times(labels: pa.Table) -> pa.Table:
    """synthetic_split gives t_s = tick + 2 but t_risky_s in ticks: put the clip times in seconds too,
    and split the clips over two sources (a prefix goes with its parent)."""
    key = pl.coalesce("parent_id", "video_id")
    return (
        pl.from_arrow(labels)
        .with_columns(
            pl.col("t_risky_s") + 2.0,
            pl.col("t_event_s") + 2.0,
            pl.when(key.str.slice(-1).cast(pl.Int32) % 2 == 1)
            .then(pl.lit("dota"))
            .otherwise(pl.lit("nexar"))
            .alias("source"),
        )
        .to_arrow()
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from vlalert.heads.train import train_head

    root = tmp_path_factory.mktemp("trained")
    for split, seed, n in (("train", 1, 24), ("val", 2, 8), ("test", 3, 10)):
        cache, labels = synthetic_split(n, HIDDEN, seed, split=split, min_ticks=8, max_ticks=14)
        write_cache(cache, root / "cache" / split, part_rows=64)
        pq.write_table(_benchmark_times(labels), root / f"{split}.parquet")
    dirs: dict[int, dict[str, Path]] = {}
    for seed in (1, 2):
        for head in ("danger", "policy"):
            out = root / "heads" / head / f"seed{seed}"
            train_head(
                head,
                seed,
                root / "cache/train",
                root / "cache/val",
                root / "train.parquet",
                root / "val.parquet",
                HEADS_CFG,
                out,
            )
            dirs.setdefault(seed, {})[head] = out
    bm = pq.read_table(root / "test.parquet")
    whole = pl.from_arrow(bm).filter(pl.col("parent_id").is_null())
    gate = whole.select(
        "video_id",
        "t_s",
        pl.col("danger").cast(pl.Float64).alias("p_collision"),
        pl.lit("badas").alias("provider"),
    ).to_arrow()
    time_only = fit_time_only(pq.read_table(root / "train.parquet"), HEADS_CFG)
    scores = score_split(bm, root / "cache/test", dirs, gate, HEADS_CFG.fsm, time_only=time_only)
    return {
        "root": root,
        "dirs": dirs,
        "benchmark": bm,
        "gate": gate,
        "scores": scores,
        "time_only": time_only,
    }


def test_trained_scores_hold_every_policy_on_every_tick(trained):
    bm, scores = trained["benchmark"], trained["scores"]
    check_table("scores", scores)
    df = pl.from_arrow(scores)
    blocks = df.group_by("policy", "seed").len()
    assert set(blocks["policy"].to_list()) == set(POLICIES)
    seeds = {p: sorted(df.filter(pl.col("policy") == p)["seed"].unique().to_list()) for p in POLICIES}
    assert seeds == {p: ([1, 2] if p in SEEDED_POLICIES else [0]) for p in POLICIES}
    assert set(blocks["len"].to_list()) == {bm.num_rows}  # the synthetic cache holds every tick
    keys = pl.from_arrow(bm.select(["video_id", "tick", "action"])).sort(["video_id", "tick"])
    for (policy, seed), block in df.group_by("policy", "seed"):
        block = block.sort(["video_id", "tick"])
        assert block["video_id"].to_list() == keys["video_id"].to_list(), (policy, seed)
        assert block["label"].to_list() == keys["action"].to_list()
    heads = df.filter(pl.col("policy") == "heads")
    total = heads["p_silent"] + heads["p_observe"] + heads["p_alert"]
    np.testing.assert_allclose(total.to_numpy(), 1.0, atol=1e-5)
    for policy in POLICIES:
        nulls = df.filter(pl.col("policy") == policy)["p_danger"].null_count()
        assert (nulls == 0) if policy in SEEDED_POLICIES else (nulls == bm.num_rows), policy
    danger = df.filter(pl.col("policy") == "danger").sort(["seed", "video_id", "tick"])
    heads = heads.sort(["seed", "video_id", "tick"])
    # the DangerHead baseline decodes the same p_danger as the heads' rows, through its calibration
    assert danger["p_danger"].to_list() == heads["p_danger"].to_list()
    for seed, dirs in trained["dirs"].items():
        calibration = json.loads((dirs["danger"] / "config.json").read_text())["calibration"]
        block = danger.filter(pl.col("seed") == seed)
        expected = danger_probs(block["p_danger"].to_numpy(), calibration)
        got = block.select("p_silent", "p_observe", "p_alert").to_numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_trained_shuffled_heads_read_the_same_clips_ticks_in_another_order(trained):
    df = pl.from_arrow(trained["scores"]).filter(~pl.col("excluded"))
    heads = df.filter(pl.col("policy") == "heads")
    shuffled = df.filter(pl.col("policy") == "heads-shuffled")
    assert shuffled.height == heads.height
    # the DangerHead scores each tick from its own z: per clip, the same values in another order
    key = ["seed", "video_id"]
    a = heads.group_by(key).agg(pl.col("p_danger").sort()).sort(key)
    b = shuffled.group_by(key).agg(pl.col("p_danger").sort()).sort(key)
    for x, y in zip(a["p_danger"].to_list(), b["p_danger"].to_list(), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert not np.allclose(heads.sort([*key, "tick"])["p_danger"], shuffled.sort([*key, "tick"])["p_danger"])
    # times and labels stay with their ticks
    cols = ["seed", "video_id", "tick", "t_s", "label"]
    assert heads.select(cols).sort(cols).equals(shuffled.select(cols).sort(cols))


def test_trained_prefix_reads_its_parents_cache_rows(trained):
    # The synthetic cache also holds rows keyed by the prefix id, with other noise: equality with
    # the parent shows the parent's rows are used, and that the prefix starts fresh like its parent.
    df = pl.from_arrow(trained["scores"]).filter(pl.col("policy") == "heads")
    prefixes = df.filter(pl.col("parent_id").is_not_null())
    assert prefixes.height > 0
    parent = df.filter(pl.col("parent_id").is_null()).select(
        pl.col("video_id").alias("parent_id"), "seed", "tick", pl.col("p_alert").alias("parent_p"), "p_danger"
    )
    joined = prefixes.join(parent, on=["parent_id", "seed", "tick"], how="left", suffix="_parent")
    assert joined["parent_p"].null_count() == 0
    np.testing.assert_allclose(joined["p_alert"].to_numpy(), joined["parent_p"].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(joined["p_danger"].to_numpy(), joined["p_danger_parent"].to_numpy(), atol=1e-6)


def test_trained_excluded_ticks_never_change_the_scored_ones(trained, tmp_path):
    root, bm = trained["root"], trained["benchmark"]
    cache = pl.read_parquet(root / "cache/test").to_arrow()
    excluded = pl.from_arrow(bm).filter(pl.col("excluded")).select("video_id", "tick")
    assert excluded.height > 0
    keep = (
        pl.from_arrow(cache.select(["video_id", "tick"]))
        .with_row_index("i")
        .join(excluded, on=["video_id", "tick"], how="anti")
    )
    write_cache(cache.take(keep["i"].sort().to_numpy()), tmp_path / "cache")
    scores = score_split(
        bm,
        tmp_path / "cache",
        trained["dirs"],
        trained["gate"],
        HEADS_CFG.fsm,
        time_only=trained["time_only"],
    )
    assert score_counts(scores)["excluded_without_cache_row"] == excluded.height
    assert not any(scores.column("excluded").to_pylist())
    full = pl.from_arrow(trained["scores"]).filter(~pl.col("excluded"))
    kept = pl.from_arrow(scores)
    keys = ["policy", "seed", "video_id", "tick", "action"]
    assert kept.select(keys).equals(full.select(keys))
    # equal up to float rounding: the DangerHead's matmuls see other batch shapes without them
    for col in ("p_danger", "p_alert", "p_observe"):
        np.testing.assert_allclose(
            kept[col].fill_null(-1).to_numpy(), full[col].fill_null(-1).to_numpy(), rtol=0, atol=1e-6
        )


def test_trained_scoring_is_deterministic(trained):
    args = (
        trained["benchmark"],
        trained["root"] / "cache/test",
        trained["dirs"],
        trained["gate"],
        HEADS_CFG.fsm,
    )
    assert score_split(*args, time_only=trained["time_only"]).equals(trained["scores"])
    # another batching of the clips: the same actions, the same probabilities up to float rounding
    other = pl.from_arrow(score_split(*args, time_only=trained["time_only"], batch_clips=3))
    first = pl.from_arrow(trained["scores"])
    assert other["action"].to_list() == first["action"].to_list()
    np.testing.assert_allclose(other["p_alert"].to_numpy(), first["p_alert"].to_numpy(), rtol=0, atol=1e-6)


def test_trained_summary(trained):
    summary = summarize_scores(trained["scores"], trained["benchmark"], SCORING, tick_hz=1.0)
    df = pl.from_arrow(summary)
    assert set(df["policy"].to_list()) == set(POLICIES)
    assert set(df["source"].to_list()) == {"dota", "nexar", "all"}
    assert _metric(summary, "always-silent", "all", "daus")["mean"] == 0.0
    assert _metric(summary, "heads", "all", "daus")["n_seeds"] == 2
    assert _metric(summary, "vlm", "all", "daus")["n_seeds"] == 1
    # the synthetic VLM text is the label itself: it is never early, so it scores U > 0
    assert _metric(summary, "vlm", "all", "daus_U")["mean"] > 0
    text = format_summary(summary)
    assert [line.split()[0] for line in text.splitlines()[3:]] == list(POLICIES)


def test_heads_of_another_width_are_refused(trained, tmp_path):
    cache, labels = synthetic_split(3, HIDDEN * 2, 9)
    write_cache(cache, tmp_path / "cache")
    with pytest.raises(ValueError, match="width"):
        score_split(labels, tmp_path / "cache", trained["dirs"], None, HEADS_CFG.fsm)
