"""The score stage: every policy's per-tick probabilities and decoded actions, and their metrics.

Policies (the `policy` column of SCORES), all decoded by the *same* FSM (`vlalert.heads.fsm`) with
the same thresholds, so that a difference between two rows of the summary comes from the signal
and not from the decoder:

- `heads`: the PolicyHead run autoregressively (`fsm.rollout`: the decoded a_{t-1} is fed back);
  p_danger is the DangerHead's per-tick score of the same seed.
- `danger`: the DangerHead alone: its p_danger through the calibration the heads stage fitted on
  val (`danger_probs`), or as a single score (below) where no calibration could be fitted.
- `heads-shuffled`: the heads of each seed on z/r shuffled across the scored ticks of each clip
  (`shuffle_within_clips`): times, labels and clips kept, which tick's hidden states they read lost.
  The margin of `heads` over this row is what the heads take from the tick's own hidden states.
- `time-only`: the clock (`TimeOnly`): an action distribution fitted on the train split from the
  tick's time since the clip's start and since its first tick, nothing else.
- `gate`: the gate stage's p_collision as a single score, whichever provider of the gate chain
  gave it. A null score, or a tick the gate file has no row for, counts as 0: a gate that says
  nothing raises nothing.
- `badas`: the Open-BADAS baseline: the same, on the clips whose gate scores the `badas` provider
  gave (every clip when the gate is `badas` alone; under `[consensus, badas]` the clips without a
  consensus row). Absent when no clip was scored by badas; `score_counts` says how many clips it has.
- `vlm`: the action the VLM generated itself (parsed from `generated_text`), as one-hot
  probabilities; an unparsable generation is SILENT, and counted.
- `always-silent`, `always-alert`: one-hot constants (the FSM passes them unchanged: 1.0 is above
  every enter threshold and never below an exit threshold).

A single score p in [0, 1] becomes the distribution (1 - p, 0, p). The decoder reads two signals,
p_observe + p_alert (to climb to and stay at OBSERVE) and p_alert (to climb to and stay at ALERT):
with this mapping both equal p, so one score is thresholded by observe_enter / alert_enter /
alert_direct with the decoder's hysteresis, exactly like the heads' probabilities.

Seeds: `heads`, `danger` and `heads-shuffled` have one block of rows per heads seed. The others do
not depend on a seed; they are scored once with `seed = BASELINE_SEED` (0) rather than repeated, so
that their summary says n_seeds = 1 and std undefined instead of a misleading "± 0 over 5 seeds".

Which ticks are scored: every benchmark tick that has a cache row, one clip per video_id, in tick
order. A prefix clip (`parent_id` set, the negatives of DoTA/DADA-2000) is scored as a clip of its
own that starts fresh (new GRU state, FSM back at SILENT) on its parent's cache rows, because its
ticks are the parent's ticks: the cache row of (parent_id, tick) is used, and (video_id, tick) only
when the cache has no parent row. Every non-excluded tick must have a cache row (else the cache is
incomplete: an error). Excluded (post-event) ticks may be absent from the cache: absent ones are
left out of the output; present ones are scored and marked `excluded`, because DAUS and the clip
metrics look at decoded actions up to t_event, which can lie after t_r + alert_s. They are the tail
of a clip and both heads are causal (the DangerHead scores each tick from its own z_t, the
PolicyHead is a GRU), so running them never changes a score of a non-excluded tick.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads

from vlalert.actions import Action, action_names
from vlalert.baselines import (
    TimeOnly,
    danger_probs,
    decode_clips,
    one_hot_probs,
    shuffle_within_clips,
    single_score_probs,
    time_features,
    vlm_actions,
)
from vlalert.cache.store import CacheError, cache_parts, fixed_size_list_to_numpy, read_cache
from vlalert.heads import fsm
from vlalert.heads.config import FSMConfig
from vlalert.schemas import POLICIES, SCORES, check_table

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BASELINE_SEED = 0
SEEDED_POLICIES: tuple[str, ...] = ("heads", "danger", "heads-shuffled")
COUNTS_KEY = b"vlalert.score_counts"  # schema metadata of score_split's table (see `score_counts`)

# The benchmark columns the score stage reads.
TICK_COLUMNS: tuple[str, ...] = ("video_id", "source", "tick", "t_s", "action", "excluded", "parent_id")


# ----------------------------------------------------------------------------- ticks and cache


@dataclass(frozen=True)
class ScoreTicks:
    """The ticks to score, sorted by (video_id, tick); clip c owns rows offsets[c]:offsets[c+1].

    `frame` holds video_id, source, tick, t_s, label, excluded, parent_id and `row`, the index of the
    tick's cache row (the parent's row for a prefix clip).
    """

    frame: pl.DataFrame
    offsets: np.ndarray
    n_excluded_missing: int

    @property
    def rows(self) -> np.ndarray:
        return self.frame["row"].to_numpy()


def _keys(table: pa.Table, what: str) -> pl.DataFrame:
    df = pl.from_arrow(table.select(["video_id", "tick"])).with_columns(pl.col("tick").cast(pl.Int32))
    if df.select(pl.struct("video_id", "tick").is_duplicated().any()).item():
        raise CacheError(f"{what} holds duplicate (video_id, tick) rows")
    return df


def select_ticks(benchmark: pa.Table, cache_keys: pa.Table) -> ScoreTicks:
    """Map every benchmark tick to its cache row (rules in the module docstring)."""
    missing = [c for c in TICK_COLUMNS if c not in benchmark.column_names]
    if missing:
        raise ValueError(f"benchmark lacks columns {missing}")
    _keys(benchmark, "benchmark")
    keys = _keys(cache_keys, "cache").with_row_index("row")
    bm = (
        pl.from_arrow(benchmark.select(list(TICK_COLUMNS)))
        .with_columns(pl.col("tick").cast(pl.Int32), pl.col("t_s").cast(pl.Float64))
        .rename({"action": "label"})
        .with_columns(pl.coalesce("parent_id", "video_id").alias("_key"))
    )
    bm = bm.join(
        keys.rename({"video_id": "_key", "row": "_row_parent"}), on=["_key", "tick"], how="left"
    ).join(keys.rename({"row": "_row_own"}), on=["video_id", "tick"], how="left")
    bm = bm.with_columns(pl.coalesce("_row_parent", "_row_own").cast(pl.Int64).alias("row"))
    absent = bm.filter(pl.col("row").is_null())
    lost = absent.filter(~pl.col("excluded"))
    if lost.height:
        some = lost.select(pl.format("{}@{}", "video_id", "tick")).to_series().head(5).to_list()
        raise CacheError(f"{lost.height} scored (non-excluded) ticks have no cache row, e.g. {some}")
    frame = (
        bm.filter(pl.col("row").is_not_null())
        .sort(["video_id", "tick"])
        .select("video_id", "source", "tick", "t_s", "label", "excluded", "parent_id", "row")
    )
    vid = frame["video_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, vid[1:] != vid[:-1]]) if vid.size else np.zeros(0, np.int64)
    offsets = np.append(starts, frame.height).astype(np.int64)
    return ScoreTicks(frame=frame, offsets=offsets, n_excluded_missing=absent.height)


def read_generated_text(cache_dir: str | Path) -> pa.Table:
    """video_id, tick, generated_text of every cache part, in the same row order as `read_cache`."""
    dataset = pads.dataset([str(p) for p in cache_parts(cache_dir)], format="parquet")
    if "generated_text" not in dataset.schema.names:
        raise CacheError(f"{cache_dir}: cache lacks column 'generated_text'")
    return dataset.to_table(columns=["video_id", "tick", "generated_text"])


@dataclass(frozen=True)
class GateTicks:
    """The gate's score of each scored tick (nulls and missing rows as 0) and which provider gave it."""

    p: np.ndarray  # [N] float64
    provider: np.ndarray  # [N] object: the gate row's provider, None where the gate has no row
    n_null: int  # ticks whose score was null
    n_missing: int  # ticks the gate table has no row for


def gate_lookup(ticks: pl.DataFrame, gate: pa.Table) -> GateTicks:
    """p_collision per tick (a prefix tick reads its parent's score), nulls and missing rows as 0.

    Times are matched at micro-second resolution: gate and labels both place ticks with the same
    float arithmetic, but a score file written elsewhere may round differently in the last bits.
    """
    g = pl.from_arrow(gate.select(["video_id", "t_s", "p_collision", "provider"])).with_columns(
        (pl.col("t_s") * 1e6).round().cast(pl.Int64).alias("_us"), pl.col("p_collision").cast(pl.Float64)
    )
    if g.select(pl.struct("video_id", "_us").is_duplicated().any()).item():
        raise ValueError("gate table holds a (video_id, t_s) more than once")
    g = g.select("video_id", "_us", "p_collision", "provider", pl.lit(True).alias("_has"))
    t = ticks.select(
        pl.coalesce("parent_id", "video_id").alias("_key"),
        "video_id",
        (pl.col("t_s") * 1e6).round().cast(pl.Int64).alias("_us"),
    ).with_row_index("_i")
    merged = (
        t.join(
            g.rename(
                {
                    "video_id": "_key",
                    "p_collision": "_p_parent",
                    "provider": "_by_parent",
                    "_has": "_has_parent",
                }
            ),
            on=["_key", "_us"],
            how="left",
        )
        .join(
            g.rename({"p_collision": "_p_own", "provider": "_by_own", "_has": "_has_own"}),
            on=["video_id", "_us"],
            how="left",
        )
        .sort("_i")
        # the parent's row first (prefix ticks are the parent's), the clip's own row otherwise
        .select(
            pl.when(pl.col("_has_parent"))
            .then(pl.col("_p_parent"))
            .otherwise(pl.col("_p_own"))
            .alias("p_collision"),
            pl.when(pl.col("_has_parent"))
            .then(pl.col("_by_parent"))
            .otherwise(pl.col("_by_own"))
            .alias("by"),
            pl.coalesce("_has_parent", "_has_own").fill_null(False).alias("_has"),
        )
    )
    has = merged["_has"].to_numpy().astype(bool)
    p = merged["p_collision"].to_numpy().astype(np.float64)
    return GateTicks(
        p=np.nan_to_num(p, nan=0.0),
        provider=np.asarray(merged["by"].to_list(), dtype=object),
        n_null=int((has & np.isnan(p)).sum()),
        n_missing=int((~has).sum()),
    )


def clip_subset(offsets: np.ndarray, keep_clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tick rows, clip offsets) of the clips where `keep_clip` [n_clips] is true, in order."""
    lengths = np.diff(offsets)[keep_clip]
    rows = np.concatenate(
        [np.arange(a, b) for a, b, k in zip(offsets[:-1], offsets[1:], keep_clip, strict=True) if k]
        or [np.zeros(0, np.int64)]
    )
    return rows.astype(np.int64), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


# ----------------------------------------------------------------------------- heads


def _gather(mat: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.asarray(mat[rows], dtype=np.float32)


def danger_scores(model: torch.nn.Module, z: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The DangerHead's per-tick danger sigmoid(tick logit) for cache rows `rows`.

    The per-tick output depends on z_t alone (the clip-level PMA output is not used for scoring),
    so ticks are scored in flat chunks regardless of clip boundaries.
    """
    import torch

    out = np.empty(rows.size, dtype=np.float64)
    with torch.no_grad():
        for a in range(0, rows.size, chunk):
            zt = torch.from_numpy(_gather(z, rows[a : a + chunk])).unsqueeze(0)
            mask = torch.ones(zt.shape[:2], dtype=torch.bool)
            tick_logits, _ = model(zt, mask)
            out[a : a + chunk] = torch.sigmoid(tick_logits[0].double()).numpy()
    return out


def policy_scores(
    model: torch.nn.Module,
    r: np.ndarray,
    rows: np.ndarray,
    offsets: np.ndarray,
    cfg: FSMConfig,
    batch_clips: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """PolicyHead probabilities [N, 3] and decoded actions [N] from `fsm.rollout`, clips padded per batch."""
    import torch

    n = rows.size
    probs = np.empty((n, 3), dtype=np.float64)
    actions = np.empty(n, dtype=np.int64)
    n_clips = offsets.size - 1
    for c0 in range(0, n_clips, batch_clips):
        c1 = min(c0 + batch_clips, n_clips)
        starts = offsets[c0:c1]
        lengths = offsets[c0 + 1 : c1 + 1] - starts
        pos = np.arange(int(lengths.max()))
        valid = pos[None, :] < lengths[:, None]
        entry = starts[:, None] + np.minimum(pos[None, :], lengths[:, None] - 1)
        r_batch = torch.from_numpy(_gather(r, rows[entry.reshape(-1)])).view(*entry.shape, r.shape[1])
        p, a = fsm.rollout(model, r_batch, cfg)
        probs[entry[valid]] = p[valid]
        actions[entry[valid]] = a[valid]
    return probs, actions


def _load(head_dir: str | Path, kind: str, width: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    from vlalert.heads.train import load_head

    model, config = load_head(head_dir)
    if config["head"] != kind:
        raise ValueError(f"{head_dir}: expected a {kind} head, found {config['head']!r}")
    dim = config["dims"]["z_dim" if kind == "danger" else "r_dim"]
    if dim != width:
        raise ValueError(f"{head_dir}: {kind} head was trained at width {dim}, the cache has {width}")
    return model, config


# ----------------------------------------------------------------------------- the split


def _block(
    ticks: pl.DataFrame,
    policy: str,
    seed: int,
    probs: np.ndarray,
    actions: np.ndarray,
    p_danger: np.ndarray | None = None,
) -> pa.Table:
    n = ticks.height
    base = ticks.select("video_id", "source", "tick", "t_s").to_arrow()
    cols = {
        "video_id": base.column("video_id"),
        "source": base.column("source"),
        "tick": base.column("tick"),
        "t_s": base.column("t_s"),
        "seed": pa.array(np.full(n, seed, dtype=np.int32)),
        "policy": pa.array([policy] * n, pa.string()),
        "p_danger": pa.nulls(n, pa.float64()) if p_danger is None else pa.array(p_danger, pa.float64()),
        "p_silent": pa.array(probs[:, 0], pa.float64()),
        "p_observe": pa.array(probs[:, 1], pa.float64()),
        "p_alert": pa.array(probs[:, 2], pa.float64()),
        "action": pa.array(action_names(actions).tolist(), pa.string()),
        "label": ticks["label"].to_arrow(),
        "excluded": ticks["excluded"].to_arrow(),
        "parent_id": ticks["parent_id"].to_arrow(),
    }
    return pa.table(cols).cast(SCORES)


@dataclass(frozen=True)
class _Scored:
    """The ticks every policy of a split is scored on, and how a policy's rows are built from them."""

    ticks: pl.DataFrame  # ScoreTicks.frame
    rows: np.ndarray  # cache row of each tick
    offsets: np.ndarray  # clip boundaries in `ticks`
    fsm: FSMConfig

    def block(
        self,
        policy: str,
        seed: int,
        probs: np.ndarray,
        actions: np.ndarray | None = None,
        p_danger: np.ndarray | None = None,
    ) -> pa.Table:
        """SCORES rows of one policy and seed; `actions` None: decode `probs` with the FSM."""
        if actions is None:
            actions = decode_clips(probs, self.offsets, self.fsm)
        return _block(self.ticks, policy, seed, probs, actions, p_danger)


def _heads_blocks(
    sc: _Scored, cache: pa.Table, heads_dirs: Mapping[int, Mapping[str, str | Path]], batch_clips: int
) -> dict[str, list[pa.Table]]:
    """`heads`, `danger` and `heads-shuffled`, one block per seed."""
    blocks: dict[str, list[pa.Table]] = {"heads": [], "danger": [], "heads-shuffled": []}
    z = fixed_size_list_to_numpy(cache.column("z"))
    r = fixed_size_list_to_numpy(cache.column("r"))
    scored = ~sc.ticks["excluded"].to_numpy()
    for seed in sorted(heads_dirs):
        danger_model, danger_cfg = _load(heads_dirs[seed]["danger"], "danger", z.shape[1])
        policy_model, policy_cfg = _load(heads_dirs[seed]["policy"], "policy", r.shape[1])
        if policy_cfg["fsm_config"] != sc.fsm:
            log.warning(
                "seed %s: the PolicyHead was trained with another FSM config than it is scored with", seed
            )
        p_danger = danger_scores(danger_model, z, sc.rows)
        probs, actions = policy_scores(policy_model, r, sc.rows, sc.offsets, sc.fsm, batch_clips)
        blocks["heads"].append(sc.block("heads", seed, probs, actions, p_danger))
        d_probs = danger_probs(p_danger, danger_cfg.get("calibration"))
        blocks["danger"].append(sc.block("danger", seed, d_probs, p_danger=p_danger))
        shuffled = shuffle_within_clips(sc.rows, sc.offsets, scored, seed)
        s_danger = danger_scores(danger_model, z, shuffled)
        s_probs, s_actions = policy_scores(policy_model, r, shuffled, sc.offsets, sc.fsm, batch_clips)
        blocks["heads-shuffled"].append(sc.block("heads-shuffled", seed, s_probs, s_actions, s_danger))
    return blocks


def _gate_blocks(sc: _Scored, gate: pa.Table, counts: dict[str, int]) -> dict[str, list[pa.Table]]:
    """`gate` on every clip, and `badas` on the clips whose gate scores the badas provider gave."""
    gt = gate_lookup(sc.ticks, gate)
    counts["gate_null"], counts["gate_missing"] = gt.n_null, gt.n_missing
    g_probs = single_score_probs(gt.p)
    blocks = {"gate": [sc.block("gate", BASELINE_SEED, g_probs)], "badas": []}
    # Open-BADAS alone: its own scores through the same FSM, on the clips it scored (all of
    # them when the gate is `badas`; the clips without a consensus row under [consensus, badas]).
    by_badas = gt.provider == "badas"
    offsets = sc.offsets
    keep_clip = np.array([bool(by_badas[a:b].any()) for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
    counts["badas_clips"] = int(keep_clip.sum())
    if keep_clip.any():
        sub_rows, sub_offsets = clip_subset(offsets, keep_clip)
        b_probs = g_probs[sub_rows]
        b_actions = decode_clips(b_probs, sub_offsets, sc.fsm)
        blocks["badas"].append(_block(sc.ticks[sub_rows], "badas", BASELINE_SEED, b_probs, b_actions))
    return blocks


def _vlm_and_constant_blocks(
    sc: _Scored, texts: pa.Table, counts: dict[str, int]
) -> dict[str, list[pa.Table]]:
    """`vlm` (the VLM's own generated action) and the two constants."""
    text_col = texts.column("generated_text").to_pylist()
    vlm_codes, counts["vlm_unparsable"] = vlm_actions([text_col[i] for i in sc.rows])
    if counts["vlm_unparsable"]:
        log.warning(
            "%d of %d VLM generations had no parsable action (scored SILENT)",
            counts["vlm_unparsable"],
            len(sc.rows),
        )
    blocks = {"vlm": [sc.block("vlm", BASELINE_SEED, one_hot_probs(vlm_codes))]}
    for policy, code in (("always-silent", Action.SILENT), ("always-alert", Action.ALERT)):
        blocks[policy] = [sc.block(policy, BASELINE_SEED, one_hot_probs(np.full(sc.ticks.height, code)))]
    return blocks


def score_split(
    benchmark: pa.Table,
    cache_dir: str | Path,
    heads_dirs: Mapping[int, Mapping[str, str | Path]],
    gate: pa.Table | None,
    fsm_cfg: FSMConfig,
    *,
    time_only: TimeOnly | None = None,
    batch_clips: int = 64,
) -> pa.Table:
    """SCORES rows of one split: every policy (module docstring) on every scored tick.

    `heads_dirs` maps a seed to {"danger": dir, "policy": dir} (the heads stage's outputs); an empty
    mapping scores the baselines only. `gate` is the concatenated gate table of the split's sources,
    or None to leave the gate policy out; `time_only` the clock fitted on the train split
    (`fit_time_only`), or None to leave that policy out. Rows are ordered by policy (POLICIES order), seed,
    video_id, tick. The table's schema metadata (`score_counts`) says how many ticks were scored,
    how many excluded ticks had no cache row, how many VLM generations could not be parsed, and how
    many gate scores were null or missing.
    """
    for seed, dirs in heads_dirs.items():
        if set(dirs) != {"danger", "policy"}:
            raise ValueError(
                f"seed {seed}: heads_dirs needs exactly 'danger' and 'policy', got {sorted(dirs)}"
            )
    cache = read_cache(cache_dir, ("z", "r") if heads_dirs else ())
    texts = read_generated_text(cache_dir)
    if not (
        texts.column("video_id").equals(cache.column("video_id"))
        and texts.column("tick").equals(cache.column("tick"))
    ):
        raise CacheError(f"{cache_dir}: the cache parts read back in two different orders")
    st = select_ticks(benchmark, cache)
    sc = _Scored(st.frame, st.rows, st.offsets, fsm_cfg)
    counts: dict[str, int] = {"ticks": sc.ticks.height, "clips": sc.offsets.size - 1}
    counts["excluded_without_cache_row"] = st.n_excluded_missing

    blocks: dict[str, list[pa.Table]] = {p: [] for p in POLICIES}
    if heads_dirs:
        blocks.update(_heads_blocks(sc, cache, heads_dirs, batch_clips))
    if time_only is not None:
        t_probs = time_only.probs(time_features(sc.ticks["t_s"].to_numpy(), sc.offsets))
        blocks["time-only"] = [sc.block("time-only", BASELINE_SEED, t_probs)]
    if gate is not None:
        blocks.update(_gate_blocks(sc, gate, counts))
    blocks.update(_vlm_and_constant_blocks(sc, texts, counts))

    out = pa.concat_tables([b for p in POLICIES for b in blocks[p]])
    out = check_table("scores", out)
    return out.replace_schema_metadata({COUNTS_KEY: json.dumps(counts, sort_keys=True).encode()})


def score_counts(scores: pa.Table) -> dict[str, int]:
    """The counts that `score_split` stored in its table's schema metadata ({} when there are none)."""
    meta = scores.schema.metadata or {}
    return json.loads(meta[COUNTS_KEY]) if COUNTS_KEY in meta else {}
