"""Figures and tables of the evaluation report (`snakemake --report`), from SCORES and SUMMARY tables.

Figures are drawn on `matplotlib.figure.Figure` objects and saved through the Agg canvas, never
through pyplot: no global backend state, no display needed, safe in a Snakemake job. File names are
fixed by `figure_names`, so a rule can declare its outputs before anything is drawn.

- `timelines_{source}.png`: a few clips per source (positives and negatives) with the DangerHead's
  p_danger and the policy's action probabilities over time, the labelled OBSERVE / ALERT windows
  shaded, the risky and event times as vertical lines, and below each clip the labelled and the
  decoded action as coloured strips;
- `bars_daus.png`: DAUS, U and P per source and policy, error bars = std over seeds;
- `reliability_heads.png`: reliability diagram of the heads' p_alert against the frequency of
  ALERT labels (non-excluded ticks), one curve per seed with its ECE in the legend.

Why one module of ~560 lines: the report's figures share one colour scheme, one reading of the scores
table and one layout; each figure is its own section (timelines, bars, reliability, tables).
"""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from vlalert.actions import ACTIONS, Action, action_codes
from vlalert.metrics.suite import OVERALL
from vlalert.schemas import POLICIES
from vlalert.summary import clip_info, summary_grid

ACTION_COLORS: dict[int, str] = {Action.SILENT: "#c8c8c8", Action.OBSERVE: "#f0a020", Action.ALERT: "#d62728"}
POLICY_COLORS: dict[str, str] = {
    "heads": "#1f77b4",
    "danger": "#17becf",
    "heads-shuffled": "#aec7e8",
    "time-only": "#ff7f0e",
    "gate": "#9467bd",
    "badas": "#8c564b",
    "vlm": "#2ca02c",
    "always-silent": "#7f7f7f",
    "always-alert": "#d62728",
}
BAR_METRICS: tuple[tuple[str, str], ...] = (
    ("daus", "DAUS"),
    ("daus_U", "U (timeliness, positives)"),
    ("daus_P", "P (trust, negatives)"),
)
DPI = 110


def figure_names(sources: Sequence[str], reliability_policy: str = "heads") -> list[str]:
    """The figure files `write_report` writes, relative to its out_dir, in a fixed order."""
    return [
        *(f"timelines_{s}.png" for s in sorted(sources)),
        "bars_daus.png",
        f"reliability_{reliability_policy}.png",
    ]


TABLE_NAMES: tuple[str, ...] = ("summary.csv", "key_metrics.csv", "key_metrics.html")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save `fig` as PNG at `path` (folders made), with fixed metadata: the same figure, the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    # fixed metadata: the same figure gives the same bytes on every run
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


# ----------------------------------------------------------------------------- timelines


def runs(t_s: np.ndarray, codes: np.ndarray, tick_hz: float) -> list[tuple[float, float, int]]:
    """Maximal runs of equal codes as (start, end, code); a tick at t stands for [t, t + 1/tick_hz).

    A run also ends where ticks are more than 1.5 tick periods apart (a gap in the ticks), so a
    strip never paints time that was not scored.
    """
    t = np.asarray(t_s, dtype=np.float64)
    c = np.asarray(codes)
    if t.size == 0:
        return []
    dt = 1.0 / tick_hz
    brk = np.flatnonzero((c[1:] != c[:-1]) | (np.diff(t) > 1.5 * dt)) + 1
    starts = np.r_[0, brk]
    ends = np.r_[brk, t.size]
    return [(float(t[a]), float(t[b - 1] + dt), int(c[a])) for a, b in zip(starts, ends, strict=True)]


def label_windows(t_s: np.ndarray, labels: np.ndarray, tick_hz: float) -> list[tuple[float, float, int]]:
    """The labelled OBSERVE and ALERT windows as (start, end, code) spans."""
    return [r for r in runs(t_s, action_codes(labels), tick_hz) if r[2] != Action.SILENT]


@dataclass(frozen=True)
class TimelineClip:
    """What one timeline panel shows: one clip of one policy and seed."""

    video_id: str
    source: str
    policy: str
    seed: int
    t_s: np.ndarray
    labels: np.ndarray  # int8 action codes
    actions: np.ndarray  # int8 decoded action codes
    p_silent: np.ndarray
    p_observe: np.ndarray
    p_alert: np.ndarray
    p_danger: np.ndarray | None
    excluded: np.ndarray
    is_positive: bool
    t_risky_s: float | None
    t_event_s: float | None
    parent_id: str | None


def timeline_clips(
    scores: pa.Table | pl.DataFrame,
    benchmark: pa.Table | pl.DataFrame,
    source: str,
    *,
    policy: str,
    seed: int,
    n_positive: int = 2,
    n_negative: int = 2,
) -> list[TimelineClip]:
    """The clips drawn for one source: the first positives by video_id, then negatives alternating
    between whole negative clips and prefix negatives (so both kinds appear where a source has both).
    """
    df = scores if isinstance(scores, pl.DataFrame) else pl.from_arrow(scores)
    df = df.filter((pl.col("policy") == policy) & (pl.col("seed") == seed) & (pl.col("source") == source))
    info = clip_info(benchmark).filter(pl.col("video_id").is_in(df["video_id"].unique().implode()))
    pos = sorted(info.filter(pl.col("is_positive"))["video_id"].to_list())
    neg = sorted(info.filter(~pl.col("is_positive"))["video_id"].to_list())
    parents = dict(df.select("video_id", "parent_id").unique(subset="video_id").iter_rows())
    whole = [v for v in neg if parents.get(v) is None]
    prefix = [v for v in neg if parents.get(v) is not None]
    mixed = [v for pair in zip(whole, prefix, strict=False) for v in pair]
    mixed += whole[len(prefix) :] + prefix[len(whole) :]
    chosen = pos[:n_positive] + mixed[:n_negative]
    meta = {r["video_id"]: r for r in info.iter_rows(named=True)}
    out = []
    for vid in chosen:
        c = df.filter(pl.col("video_id") == vid).sort("t_s")
        m = meta[vid]
        p_danger = c["p_danger"]
        out.append(
            TimelineClip(
                video_id=vid,
                source=source,
                policy=policy,
                seed=seed,
                t_s=c["t_s"].to_numpy(),
                labels=action_codes(c["label"].to_numpy()),
                actions=action_codes(c["action"].to_numpy()),
                p_silent=c["p_silent"].fill_null(np.nan).to_numpy(),
                p_observe=c["p_observe"].fill_null(np.nan).to_numpy(),
                p_alert=c["p_alert"].fill_null(np.nan).to_numpy(),
                p_danger=None if p_danger.null_count() == c.height else p_danger.fill_null(np.nan).to_numpy(),
                excluded=c["excluded"].to_numpy().astype(bool),
                is_positive=bool(m["is_positive"]),
                t_risky_s=m["t_risky_s"],
                t_event_s=m["t_event_s"],
                parent_id=parents.get(vid),
            )
        )
    return out


def _clip_title(clip: TimelineClip) -> str:
    if clip.is_positive:
        return f"{clip.video_id}: positive, risky {clip.t_risky_s:.1f} s, event {clip.t_event_s:.1f} s"
    if clip.parent_id is not None:
        return f"{clip.video_id}: negative (prefix of {clip.parent_id})"
    return f"{clip.video_id}: negative"


def draw_clip_timeline(ax_p: Axes, ax_a: Axes, clip: TimelineClip, tick_hz: float) -> None:
    """Draw one clip: probabilities and windows on `ax_p`, label and decoded-action strips on `ax_a`.

    Every artist carries a gid ("window-OBSERVE", "window-ALERT", "excluded", "risky", "event",
    "p_danger", ...) so that a test can count what was drawn.
    """
    dt = 1.0 / tick_hz
    # Labelled windows end at the event at the latest: nothing is asked of an alerter after the collision.
    stop = clip.t_event_s if clip.t_event_s is not None else np.inf
    for start, end, code in label_windows(
        clip.t_s, np.where(clip.excluded, Action.SILENT, clip.labels), tick_hz
    ):
        if start < stop:
            ax_p.axvspan(
                start,
                min(end, stop),
                color=ACTION_COLORS[code],
                alpha=0.22,
                lw=0,
                gid=f"window-{ACTIONS[code]}",
            )
    for start, end, code in runs(clip.t_s, clip.excluded.astype(np.int8), tick_hz):
        if code:
            ax_p.axvspan(start, end, facecolor="none", edgecolor="#999999", hatch="//", lw=0, gid="excluded")
    if clip.p_danger is not None:
        ax_p.plot(clip.t_s, clip.p_danger, color="black", lw=2.0, gid="p_danger")
    ax_p.plot(clip.t_s, clip.p_silent, color="#888888", lw=1.0, ls=":", gid="p_silent")
    ax_p.plot(
        clip.t_s, clip.p_observe, color=ACTION_COLORS[Action.OBSERVE], lw=1.5, marker=".", gid="p_observe"
    )
    ax_p.plot(clip.t_s, clip.p_alert, color=ACTION_COLORS[Action.ALERT], lw=1.5, marker=".", gid="p_alert")
    if clip.is_positive:
        ax_p.axvline(clip.t_risky_s, color="#555555", ls="--", lw=1.2, gid="risky")
        ax_p.axvline(clip.t_event_s, color="black", ls="-", lw=1.8, gid="event")
    ax_p.set_ylim(-0.03, 1.03)
    ax_p.set_ylabel("probability")
    ax_p.set_title(_clip_title(clip), fontsize=9, loc="left")
    ax_p.grid(True, alpha=0.3)
    ax_p.tick_params(labelbottom=False)

    # label strip: excluded ticks have no label to be held to, so they are hatched, not SILENT
    label_codes = np.where(clip.excluded, -1, clip.labels)
    for y, codes in ((1, label_codes), (0, clip.actions)):
        for code in (*Action, -1):
            spans = [(a, b - a) for a, b, c in runs(clip.t_s, codes, tick_hz) if c == code]
            if not spans:
                continue
            if code == -1:
                ax_a.broken_barh(
                    spans,
                    (y - 0.4, 0.8),
                    facecolors="none",
                    edgecolors="#999999",
                    hatch="//",
                    gid="strip-excluded",
                )
            else:
                ax_a.broken_barh(spans, (y - 0.4, 0.8), facecolors=ACTION_COLORS[code], gid=f"strip-{y}")
    ax_a.set_yticks([0, 1], [f"{clip.policy}\ns{clip.seed}", "label"], fontsize=8)
    ax_a.set_ylim(-0.6, 1.6)
    ax_a.set_xlabel("time in clip (s)")
    lo, hi = float(clip.t_s[0]), float(clip.t_s[-1]) + dt
    if clip.is_positive:
        hi = max(hi, clip.t_event_s + 0.5 * dt)
    ax_p.set_xlim(lo - 0.25 * dt, hi + 0.25 * dt)
    ax_a.set_xlim(ax_p.get_xlim())


def _timeline_legend() -> list:
    return [
        Line2D([], [], color="black", lw=2.0, label="p_danger (DangerHead)"),
        Line2D([], [], color=ACTION_COLORS[Action.OBSERVE], lw=1.5, marker=".", label="p_observe"),
        Line2D([], [], color=ACTION_COLORS[Action.ALERT], lw=1.5, marker=".", label="p_alert"),
        Line2D([], [], color="#888888", lw=1.0, ls=":", label="p_silent"),
        Patch(color=ACTION_COLORS[Action.OBSERVE], alpha=0.3, label="labelled OBSERVE window"),
        Patch(color=ACTION_COLORS[Action.ALERT], alpha=0.3, label="labelled ALERT window"),
        Patch(facecolor="none", edgecolor="#999999", hatch="//", label="excluded (post-event)"),
        Line2D([], [], color="#555555", ls="--", label="risky time"),
        Line2D([], [], color="black", lw=1.8, label="event time"),
        *(
            Patch(color=ACTION_COLORS[c], label=f"strip: {ACTIONS[c]}")
            for c in (Action.SILENT, Action.OBSERVE, Action.ALERT)
        ),
    ]


def timeline_figure(clips: Sequence[TimelineClip], tick_hz: float, title: str) -> Figure:
    """One figure with a (probabilities, strips) pair of axes per clip, and one shared legend."""
    n = max(len(clips), 1)
    fig = Figure(figsize=(11, 0.9 + 2.9 * n), layout="constrained")
    outer = fig.add_gridspec(n, 1)
    for i, clip in enumerate(clips):
        inner = outer[i].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        ax_p = fig.add_subplot(inner[0])
        ax_a = fig.add_subplot(inner[1], sharex=ax_p)
        draw_clip_timeline(ax_p, ax_a, clip, tick_hz)
    if not clips:
        ax = fig.add_subplot(outer[0])
        ax.text(0.5, 0.5, "no clips of this source were scored", ha="center", va="center", gid="no-clips")
        ax.set_axis_off()
    fig.suptitle(title, fontsize=12)
    fig.legend(handles=_timeline_legend(), loc="outside lower center", ncol=6, fontsize=8, frameon=False)
    return fig


def _default_seed(df: pl.DataFrame, policy: str) -> int:
    seeds = df.filter(pl.col("policy") == policy)["seed"].unique().sort().to_list()
    if not seeds:
        raise ValueError(f"scores hold no rows of policy {policy!r}")
    return int(seeds[0])


def plot_timelines(
    scores: pa.Table | pl.DataFrame,
    benchmark: pa.Table | pl.DataFrame,
    out_dir: str | Path,
    *,
    tick_hz: float,
    policy: str = "heads",
    seed: int | None = None,
    n_positive: int = 2,
    n_negative: int = 2,
    sources: Sequence[str] | None = None,
) -> list[Path]:
    """`timelines_{source}.png` for every source of `scores`, for `policy` at `seed` (default: its lowest).

    `sources`: the run's sources; one without a scored clip still gets its figure, which says so, so
    that the report names it instead of leaving it out.
    """
    df = scores if isinstance(scores, pl.DataFrame) else pl.from_arrow(scores)
    seed = _default_seed(df, policy) if seed is None else seed
    scored = set(df["source"].unique().to_list())
    paths = []
    for source in sorted(scored if sources is None else set(sources)):
        clips = timeline_clips(
            df, benchmark, source, policy=policy, seed=seed, n_positive=n_positive, n_negative=n_negative
        )
        title = f"{source}: {policy} policy, seed {seed} (probabilities, labelled windows, decoded actions)"
        if source not in scored:
            title = f"{source}: no clips of this source in the scored split"
        fig = timeline_figure(clips, tick_hz, title)
        paths.append(save_figure(fig, Path(out_dir) / f"timelines_{source}.png"))
    return paths


# ----------------------------------------------------------------------------- bars


def source_bars_figure(
    summary: pa.Table | pl.DataFrame, metrics: Sequence[tuple[str, str]] = BAR_METRICS
) -> Figure:
    """Grouped bars: one panel per metric, sources on x ("all" last), one bar per policy, std error bars."""
    df = summary if isinstance(summary, pl.DataFrame) else pl.from_arrow(summary)
    sources = sorted(s for s in df["source"].unique().to_list() if s != OVERALL) + [OVERALL]
    present = set(df["policy"].to_list())
    policies = [p for p in POLICIES if p in present]
    cells = {(r["policy"], r["source"], r["metric"]): r for r in df.iter_rows(named=True)}
    fig = Figure(figsize=(max(7.0, 1.3 * len(sources) * len(metrics) / 1.5 + 3), 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    width = 0.8 / max(len(policies), 1)
    x = np.arange(len(sources))
    for ax, (metric, name) in zip(axes, metrics, strict=True):
        for j, policy in enumerate(policies):
            xs = x - 0.4 + width * (j + 0.5)
            rows = [cells.get((policy, s, metric)) for s in sources]
            mean = np.array([np.nan if r is None or r["mean"] is None else r["mean"] for r in rows])
            std = np.array([np.nan if r is None or r["std"] is None else r["std"] for r in rows])
            ax.bar(
                xs, np.nan_to_num(mean), width, color=POLICY_COLORS[policy], label=policy, gid=f"bar-{policy}"
            )
            has_std = np.isfinite(std) & np.isfinite(mean)
            if has_std.any():
                ax.errorbar(
                    xs[has_std], mean[has_std], yerr=std[has_std], fmt="none", ecolor="black", capsize=3, lw=1
                )
            # the value on every bar: a 0 (always-silent's DAUS) must read differently from n/a
            top = np.nan_to_num(mean) + np.where(has_std, std, 0.0)
            for xi, m, t in zip(xs, mean, top, strict=True):
                text = "n/a" if not np.isfinite(m) else f"{m:.2f}"
                ax.text(xi, min(t, 1.0) + 0.015, text, rotation=90, ha="center", va="bottom", fontsize=6.5)
        ax.set_xticks(x, sources, rotation=20)
        ax.set_title(name)
        ax.set_ylim(0, 1.15)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("score (mean ± std over seeds)")
    fig.suptitle("DAUS and its parts per source and policy")
    fig.legend(
        handles=[Patch(color=POLICY_COLORS[p], label=p) for p in policies],
        loc="outside right center",
        fontsize=8,
        frameon=False,
    )
    return fig


def plot_source_bars(summary: pa.Table | pl.DataFrame, out_path: str | Path) -> Path:
    """Write the DAUS / U / P bars (`source_bars_figure`) to `out_path`."""
    return save_figure(source_bars_figure(summary), out_path)


# ----------------------------------------------------------------------------- reliability


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of a score over [0, 1]: mean score, ALERT frequency and count per bin.

    Empty bins have count 0 and NaN mean/frequency. ECE = sum_b (n_b / N) |freq_b - conf_b|.
    """

    edges: np.ndarray  # [n_bins + 1]
    confidence: np.ndarray  # [n_bins]
    frequency: np.ndarray  # [n_bins]
    count: np.ndarray  # [n_bins] int64
    ece: float


def reliability_bins(p: np.ndarray, is_alert: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Bin scores p (in [0, 1]; p = 1 falls in the last bin) against binary outcomes."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(is_alert, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} scores vs {y.size} outcomes")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise ValueError("scores must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=n_bins) / count
        freq = np.bincount(idx, weights=y, minlength=n_bins) / count
    full = count > 0
    ece = float(np.sum(count[full] * np.abs(freq[full] - conf[full])) / p.size) if p.size else float("nan")
    return ReliabilityBins(edges=edges, confidence=conf, frequency=freq, count=count, ece=ece)


def reliability_figure(scores: pa.Table | pl.DataFrame, policy: str = "heads", n_bins: int = 10) -> Figure:
    """Reliability of `policy`'s p_alert against ALERT labels, on non-excluded ticks, one curve per seed."""
    df = scores if isinstance(scores, pl.DataFrame) else pl.from_arrow(scores)
    df = df.filter((pl.col("policy") == policy) & ~pl.col("excluded"))
    if df.height == 0:
        raise ValueError(f"scores hold no non-excluded rows of policy {policy!r}")
    fig = Figure(figsize=(6.2, 6.6), layout="constrained")
    ax, ax_h = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], color="#888888", ls="--", lw=1, label="perfect calibration")
    seeds = df["seed"].unique().sort().to_list()
    pooled = None
    for i, seed in enumerate(seeds):
        d = df.filter(pl.col("seed") == seed)
        bins = reliability_bins(d["p_alert"].to_numpy(), d["label"].to_numpy() == "ALERT", n_bins)
        full = bins.count > 0
        ax.plot(
            bins.confidence[full],
            bins.frequency[full],
            marker="o",
            lw=1.5,
            color=f"C{i % 10}",
            label=f"seed {seed}: ECE {bins.ece:.3f}",
            gid=f"seed-{seed}",
        )
        pooled = bins.count if pooled is None else pooled + bins.count
    centers = 0.5 * (bins.edges[1:] + bins.edges[:-1])
    ax_h.bar(centers, pooled, width=1.0 / n_bins * 0.9, color=POLICY_COLORS.get(policy, "C0"))
    ax_h.set_yscale("log")
    ax_h.set_ylabel("ticks (all seeds)")
    ax_h.set_xlabel("predicted p_alert (bin mean)")
    ax.set_ylabel("fraction of ticks labelled ALERT")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Reliability of p_alert ({policy}), {n_bins} bins, non-excluded ticks")
    return fig


def plot_reliability(
    scores: pa.Table | pl.DataFrame, out_path: str | Path, *, policy: str = "heads", n_bins: int = 10
) -> Path:
    """Write the reliability diagram (`reliability_figure`) to `out_path`."""
    return save_figure(reliability_figure(scores, policy, n_bins), out_path)


# ----------------------------------------------------------------------------- tables


def write_report_tables(summary: pa.Table | pl.DataFrame, out_dir: str | Path) -> list[Path]:
    """The report's tables, in TABLE_NAMES order: summary.csv (every metric, long form: policy,
    source, metric, mean, std, n_seeds; undefined values empty), key_metrics.csv (one row per
    source x policy, "mean ± std" cells) and key_metrics.html (the same as an HTML fragment, one
    table per source, "all" first).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = summary if isinstance(summary, pl.DataFrame) else pl.from_arrow(summary)
    long_path = out / TABLE_NAMES[0]
    df.write_csv(long_path, float_precision=6)

    sources = [OVERALL] + sorted(s for s in df["source"].unique().to_list() if s != OVERALL)
    grids = {s: summary_grid(df, s) for s in sources}
    key_path = out / TABLE_NAMES[1]
    with open(key_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        header = grids[OVERALL][0] if OVERALL in grids else ["policy"]
        w.writerow(["source", *header])
        for s in sources:
            for row in grids[s][1]:
                w.writerow([s, *row])

    parts = ['<div class="vlalert-summary">']
    for s in sources:
        header, rows = grids[s]
        parts.append(f"<h3>{html.escape(s)}</h3>")
        parts.append('<table border="1" style="border-collapse: collapse">')
        parts.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>")
        parts.append("<tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("<p>mean ± std over seeds; seeds = seeds with a defined value; n/a = undefined</p>")
    parts.append("</div>")
    html_path = out / TABLE_NAMES[2]
    html_path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return [long_path, key_path, html_path]


# ----------------------------------------------------------------------------- all of it


def write_report(
    scores: pa.Table | pl.DataFrame,
    benchmark: pa.Table | pl.DataFrame,
    summary: pa.Table | pl.DataFrame,
    out_dir: str | Path,
    *,
    tick_hz: float,
    timeline_policy: str = "heads",
    reliability_policy: str = "heads",
    n_positive: int = 2,
    n_negative: int = 2,
    sources: Sequence[str] | None = None,
) -> list[Path]:
    """Every figure (names: `figure_names`) and table (TABLE_NAMES) of the report, under out_dir.

    `sources`: the run's sources (default: those of `scores`), each with its timelines figure."""
    out = Path(out_dir)
    paths = plot_timelines(
        scores,
        benchmark,
        out,
        tick_hz=tick_hz,
        policy=timeline_policy,
        n_positive=n_positive,
        n_negative=n_negative,
        sources=sources,
    )
    paths.append(plot_source_bars(summary, out / "bars_daus.png"))
    paths.append(
        plot_reliability(scores, out / f"reliability_{reliability_policy}.png", policy=reliability_policy)
    )
    return paths + write_report_tables(summary, out)


__all__ = [
    "TABLE_NAMES",
    "ReliabilityBins",
    "TimelineClip",
    "draw_clip_timeline",
    "figure_names",
    "label_windows",
    "plot_reliability",
    "plot_source_bars",
    "plot_timelines",
    "reliability_bins",
    "reliability_figure",
    "runs",
    "save_figure",
    "source_bars_figure",
    "timeline_clips",
    "timeline_figure",
    "write_report",
    "write_report_tables",
]
