"""The score stage's summary: every policy's metrics per source and seed, their mean and std, the table.

`summarize_scores` reads the scores table of a split (vlalert.score) and computes the tick, clip
and DAUS metrics of `vlalert.metrics.suite` per (policy, source, seed), then mean and std over seeds;
`format_summary` prints the table a reviewer reads first (summary.txt).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from vlalert.metrics.clip import clips_from_table
from vlalert.metrics.config import ScoringConfig
from vlalert.metrics.suite import OVERALL, aggregate_seeds, summarize_by_source
from vlalert.schemas import POLICIES, SUMMARY, check_table

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# The benchmark columns that describe a clip (what the clip metrics need).
CLIP_COLUMNS: tuple[str, ...] = ("video_id", "source", "is_positive", "t_risky_s", "t_event_s")

# Columns and headers of `format_summary`; recall_at_{k}s columns are added for every k present.
KEY_METRICS: tuple[tuple[str, str], ...] = (
    ("daus", "DAUS"),
    ("daus_U", "U"),
    ("daus_P", "P"),
    ("tick_auroc", "AUROC"),
    ("tick_ap", "AP"),
    ("tick_macro_f1", "macro-F1"),
    ("clip_ap", "clip AP"),
    ("clip_mtta_s", "mTTA s"),
    ("false_alerts_per_hour", "FA/h"),
)


# ----------------------------------------------------------------------------- summary


def clip_info(benchmark: pa.Table | pl.DataFrame) -> pl.DataFrame:
    """One row per clip: video_id, source, is_positive, t_risky_s, t_event_s (constant within a clip)."""
    extra = (
        [c for c in ("n_frames", "fps") if c in benchmark.column_names]
        if not isinstance(benchmark, pl.DataFrame)
        else [c for c in ("n_frames", "fps") if c in benchmark.columns]
    )
    df = (
        benchmark
        if isinstance(benchmark, pl.DataFrame)
        else pl.from_arrow(benchmark.select([*CLIP_COLUMNS, *extra]))
    )
    # the clip's length, for the reference's mTTA convention (vlalert.metrics.clip)
    duration = (pl.col("n_frames") / pl.col("fps")) if len(extra) == 2 else pl.lit(None, pl.Float64)
    df = df.select([*CLIP_COLUMNS, duration.cast(pl.Float64).alias("duration_s")])
    varying = (
        df.group_by("video_id")
        .agg([pl.col(c).n_unique().alias(c) for c in CLIP_COLUMNS[1:]])
        .filter(pl.any_horizontal([pl.col(c) > 1 for c in CLIP_COLUMNS[1:]]))
    )
    if varying.height:
        raise ValueError(f"clip columns vary within clips {sorted(varying['video_id'].to_list())[:5]}")
    return df.unique(subset="video_id", keep="first").sort("video_id")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summarize_scores(
    scores: pa.Table, benchmark: pa.Table, scoring_cfg: ScoringConfig, tick_hz: float
) -> pa.Table:
    """SUMMARY: every metric of `metrics.suite.summarize` per policy x source (and "all"), mean ± std
    over seeds.

    Each (policy, seed) is summarised on its own clips (`metrics.suite.summarize_by_source`, clip score
    p_alert), then `metrics.suite.aggregate_seeds` takes mean and sample std over that policy's seeds; a
    metric undefined on a seed is left out of its mean and `n_seeds` says how many seeds remain.
    Undefined means and stds are null. Rows are ordered by policy (POLICIES order), source (sorted,
    "all" last), metric (summarize's order).
    """
    clips = clip_info(benchmark)
    df = pl.from_arrow(
        scores.select(["video_id", "t_s", "seed", "policy", "p_alert", "action", "label", "excluded"])
    )
    rows: list[dict[str, Any]] = []
    for policy in POLICIES:
        sub = df.filter(pl.col("policy") == policy)
        if sub.height == 0:
            continue
        per_seed = []
        for seed in sorted(sub["seed"].unique().to_list()):
            ticks = sub.filter(pl.col("seed") == seed)
            series = clips_from_table(ticks, clips, label_col="label", excluded_col="excluded")
            per_seed.append(summarize_by_source(series, scoring_cfg, tick_hz=tick_hz))
        sources = list(per_seed[0])
        if any(list(s) != sources for s in per_seed):
            raise ValueError(f"policy {policy}: seeds were scored on different sources")
        for source in sources:
            agg = aggregate_seeds([s[source] for s in per_seed])
            for metric, ms in agg.items():
                rows.append(
                    {
                        "policy": policy,
                        "source": source,
                        "metric": metric,
                        "mean": _finite_or_none(ms.mean),
                        "std": _finite_or_none(ms.std),
                        "n_seeds": ms.n,
                    }
                )
    table = pa.Table.from_pylist(rows, schema=SUMMARY) if rows else SUMMARY.empty_table()
    return check_table("summary", table)


def format_mean_std(mean: float | None, std: float | None) -> str:
    """'0.512 ± 0.031'; just the mean when std is undefined (one seed); 'n/a' when the mean is.

    Three decimals, one for values of 100 and more (false alerts per hour); the std takes the
    mean's precision so that a column reads evenly.
    """
    if mean is None:
        return "n/a"
    spec = ".1f" if abs(mean) >= 100 else ".3f"
    return f"{mean:{spec}}" if std is None else f"{mean:{spec}} ± {std:{spec}}"


def key_metrics(summary: pa.Table | pl.DataFrame) -> list[tuple[str, str]]:
    """(metric, header) pairs of the key metrics present in `summary`, R@k s included."""
    df = summary if isinstance(summary, pl.DataFrame) else pl.from_arrow(summary)
    present = df["metric"].unique(maintain_order=True).to_list()
    recall = [(m, "R@" + m.removeprefix("recall_at_")) for m in present if m.startswith("recall_at_")]
    head = [(m, h) for m, h in KEY_METRICS if m in present]
    return head[:7] + recall + head[7:]


def summary_grid(
    summary: pa.Table | pl.DataFrame, source: str = OVERALL
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per policy, "mean ± std" cells) of the key metrics of one source."""
    df = summary if isinstance(summary, pl.DataFrame) else pl.from_arrow(summary)
    metrics = key_metrics(df)
    df = df.filter(pl.col("source") == source)
    cells = {(r["policy"], r["metric"]): r for r in df.iter_rows(named=True)}
    header = ["policy", "seeds"] + [h for _, h in metrics]
    rows = []
    present = set(df["policy"].to_list())
    for policy in [p for p in POLICIES if p in present]:
        seeds = cells.get((policy, "n_clips"), {}).get("n_seeds")
        row = [policy, "" if seeds is None else str(seeds)]
        for m, _ in metrics:
            c = cells.get((policy, m))
            row.append("n/a" if c is None else format_mean_std(c["mean"], c["std"]))
        rows.append(row)
    return header, rows


def format_summary(summary: pa.Table | pl.DataFrame, source: str = OVERALL) -> str:
    """Plain-text table of the key metrics of one source: policies as rows, "mean ± std" cells."""
    header, rows = summary_grid(summary, source)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])

    title = f"source: {source} (mean ± std over seeds; seeds = seeds with a defined value)"
    return "\n".join([title, line(header), "  ".join("-" * w for w in widths), *map(line, rows)])
