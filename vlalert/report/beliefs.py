"""The belief-span view: what the model "believed" at each tick of a few test clips.

For each chosen clip, one row per tick: the last frame of the tick's window (what the model saw
last, read through vlalert.video like every other reader), the time, the labelled action, the
action the VLM wrote itself, the action the heads' FSM decoded, and the text the VLM generated for
that tick (the cache's `generated_text`, DESIGN.md "Patched cache extraction"), its belief span in
bold beside the target belief the model was trained towards. A generation whose belief span does not
parse is shown raw and marked, so a reviewer sees that too.

Clips per source: the first positive and the first whole negative by video id (two of one kind where
the source's test split has none of the other); of a positive, the
ticks leading up to the event (the excluded post-event ticks are not scored and left out), of a
negative, ticks spread over the clip. A source with no test clip gets a figure that says so.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from matplotlib.figure import Figure

from vlalert.actions import ACTIONS, action_codes
from vlalert.beliefs.text import ParsedGeneration, parse_generation
from vlalert.cache.store import cache_parts
from vlalert.report.evaluation import ACTION_COLORS, save_figure
from vlalert.video import VideoError, read_frames

TEXT_WIDTH = 95  # characters per line of generated text
MAX_TEXT = 420  # characters of a generation shown (the tiny demo model can ramble)


@dataclass(frozen=True)
class BeliefTick:
    """One row of the view."""

    t_s: float
    label: str
    excluded: bool
    vlm_action: str | None
    fsm_action: str | None
    p_alert: float | None
    generated_text: str
    belief_text: str | None  # the generated belief span, tags included; None when there is none
    belief_problem: str | None  # why the span does not read back into a valid belief; None when it does
    target_belief: str | None  # the benchmark's belief_text (the SFT target)
    frame: np.ndarray | None  # last frame of the window, (H, W, 3) uint8; None when unreadable


@dataclass(frozen=True)
class BeliefClip:
    video_id: str
    source: str
    is_positive: bool
    t_risky_s: float | None
    t_event_s: float | None
    ticks: tuple[BeliefTick, ...]
    note: str = ""  # e.g. a frame read error


def choose_clips(benchmark: pl.DataFrame, source: str, n_positive: int = 1, n_negative: int = 1) -> list[str]:
    """The first positives and the first whole negatives (not prefix negatives) of `source` by id;
    where one kind runs short, more of the other make up the number."""
    clips = (
        benchmark.filter(pl.col("source") == source)
        .group_by("video_id")
        .agg(pl.col("is_positive").first(), pl.col("parent_id").first())
        .sort("video_id")
    )
    pos = clips.filter(pl.col("is_positive"))["video_id"].to_list()
    neg = clips.filter(~pl.col("is_positive") & pl.col("parent_id").is_null())["video_id"].to_list()
    n_pos = min(len(pos), n_positive + max(0, n_negative - len(neg)))
    n_neg = min(len(neg), n_negative + max(0, n_positive - len(pos)))
    return pos[:n_pos] + neg[:n_neg]


def choose_ticks(clip: pl.DataFrame, max_ticks: int) -> pl.DataFrame:
    """Of a positive, its last `max_ticks` non-excluded ticks (up to the event); of a negative,
    `max_ticks` ticks spread evenly over the clip."""
    clip = clip.sort("tick")
    scored = clip.filter(~pl.col("excluded"))
    if scored.height <= max_ticks:
        return scored
    if bool(clip["is_positive"][0]):
        return scored.tail(max_ticks)
    idx = np.unique(np.linspace(0, scored.height - 1, max_ticks).round().astype(int))
    return scored[idx.tolist()]


def read_generations(cache_dir: str | Path, video_ids: Sequence[str]) -> pl.DataFrame:
    """video_id, tick, generated_text of `video_ids` from a split's cache parts (no vectors read)."""
    if not video_ids:
        return pl.DataFrame(schema={"video_id": pl.Utf8, "tick": pl.Int32, "generated_text": pl.Utf8})
    dataset = pads.dataset([str(p) for p in cache_parts(cache_dir)], format="parquet")
    table = dataset.to_table(
        columns=["video_id", "tick", "generated_text"],
        filter=pads.field("video_id").isin(list(video_ids)),
    )
    return pl.from_arrow(table)


def belief_clips(
    benchmark: pa.Table | pl.DataFrame,
    generations: pl.DataFrame,
    scores: pa.Table | pl.DataFrame | None,
    source: str,
    *,
    policy: str = "heads",
    seed: int | None = None,
    n_positive: int = 1,
    n_negative: int = 1,
    max_ticks: int = 8,
) -> list[BeliefClip]:
    """The clips of `source` the view shows, with their ticks' frames, texts and actions."""
    bench = benchmark if isinstance(benchmark, pl.DataFrame) else pl.from_arrow(benchmark)
    sc = None
    if scores is not None:
        sc = scores if isinstance(scores, pl.DataFrame) else pl.from_arrow(scores)
        sc = sc.filter(pl.col("policy") == policy)
        if seed is None and sc.height:
            seed = int(sc["seed"].min())
        sc = sc.filter(pl.col("seed") == seed).select("video_id", "tick", "action", "p_alert")
    texts = {
        (v, int(t)): g for v, t, g in generations.select("video_id", "tick", "generated_text").iter_rows()
    }
    out = []
    for vid in choose_clips(bench, source, n_positive, n_negative):
        ticks = choose_ticks(bench.filter(pl.col("video_id") == vid), max_ticks)
        fsm = {}
        if sc is not None:
            fsm = {int(t): (a, p) for _, t, a, p in sc.filter(pl.col("video_id") == vid).iter_rows()}
        frames, note = _last_frames(ticks)
        rows = []
        for i, r in enumerate(ticks.iter_rows(named=True)):
            text = texts.get((vid, int(r["tick"])), "")
            parsed = parse_generation(text) if text else None
            action, p_alert = fsm.get(int(r["tick"]), (None, None))
            rows.append(
                BeliefTick(
                    t_s=float(r["t_s"]),
                    label=r["action"],
                    excluded=bool(r["excluded"]),
                    vlm_action=parsed.action if parsed else None,
                    fsm_action=action,
                    p_alert=p_alert,
                    generated_text=text,
                    belief_text=parsed.belief_text if parsed else None,
                    belief_problem=_belief_problem(parsed),
                    target_belief=r["belief_text"],
                    frame=None if frames is None else frames[i],
                )
            )
        first = ticks.row(0, named=True) if ticks.height else {}
        out.append(
            BeliefClip(
                video_id=vid,
                source=source,
                is_positive=bool(first.get("is_positive", False)),
                t_risky_s=first.get("t_risky_s"),
                t_event_s=first.get("t_event_s"),
                ticks=tuple(rows),
                note=note,
            )
        )
    return out


def _belief_problem(parsed: ParsedGeneration | None) -> str | None:
    if parsed is None or parsed.belief_text is None or parsed.belief is not None:
        return None
    belief_errors = [e for e in parsed.errors if "action" not in e and "analysis" not in e.lower()]
    return "; ".join(belief_errors) or "does not parse"


def _last_frames(ticks: pl.DataFrame) -> tuple[np.ndarray | None, str]:
    """The last frame of each tick's window, the clip read once; (None, why) when it cannot be read."""
    if ticks.height == 0:
        return None, ""
    last = [int(f[-1]) for f in ticks["frame_idx"].to_list()]
    try:
        return read_frames(ticks["path"][0], last), ""
    except (VideoError, OSError) as err:
        return None, f"frames not shown: {err}"


# ----------------------------------------------------------------------------- drawing


def _action_box(ax, x: float, y: float, action: str | None, gid: str) -> None:
    color = ACTION_COLORS[int(action_codes(np.array([action]))[0])] if action in ACTIONS else "#ffffff"
    ax.text(
        x,
        y,
        action or "—",
        fontsize=8,
        ha="left",
        va="center",
        family="monospace",
        bbox={"boxstyle": "round,pad=0.25", "facecolor": color, "edgecolor": "#888888", "lw": 0.5},
        gid=gid,
    )


def _generation_lines(tick: BeliefTick) -> tuple[str, str, str]:
    """(the generated belief span, or what stands in for it; the rest of the generation; the target).

    A span that is there but does not read back into a valid belief is shown with the reason."""
    target = f"target: {tick.target_belief}" if tick.target_belief else "target: (none)"
    if not tick.generated_text:
        return "no generated text in the cache for this tick", "", target
    if tick.belief_text is None:
        raw = tick.generated_text[:MAX_TEXT] + ("…" if len(tick.generated_text) > MAX_TEXT else "")
        return "no belief span generated; the text:", textwrap.fill(raw, TEXT_WIDTH), target
    rest = tick.generated_text.replace(tick.belief_text, " ").strip()
    rest = rest[:MAX_TEXT] + ("…" if len(rest) > MAX_TEXT else "")
    if tick.belief_problem:
        rest = f"[invalid belief: {tick.belief_problem}] {rest}"
    return textwrap.fill(tick.belief_text, TEXT_WIDTH), textwrap.fill(rest, TEXT_WIDTH), target


def belief_figure(
    clips: Sequence[BeliefClip], source: str, *, policy: str = "heads", seed: int | None = None
) -> Figure:
    """One block per clip, one row per tick: frame | time and actions | generated text."""
    n_rows = sum(max(len(c.ticks), 1) + 1 for c in clips) or 1
    row_h = 1.15
    fig = Figure(figsize=(14, 0.8 + row_h * n_rows))
    if not clips:
        ax = fig.add_subplot()
        ax.text(
            0.5,
            0.5,
            f"{source}: no clips of this source in the test split, so no belief span to show",
            ha="center",
            va="center",
            fontsize=12,
            gid="no-clips",
        )
        ax.set_axis_off()
        fig.suptitle(f"Belief spans, {source}, test split")
        return fig
    top = 1 - 0.6 / (0.8 + row_h * n_rows)  # 0.6 in for the title
    grid = fig.add_gridspec(n_rows, 3, width_ratios=[1.3, 1.6, 8.0], hspace=0.25, wspace=0.03,
                            left=0.01, right=0.995, top=top, bottom=0.01)  # fmt: skip
    row = 0
    who = f"{policy} s{seed}" if seed is not None else policy
    for clip in clips:
        head = fig.add_subplot(grid[row, :])
        head.set_axis_off()
        what = (
            f"positive: risky {clip.t_risky_s:.1f} s, event {clip.t_event_s:.1f} s"
            if clip.is_positive and clip.t_risky_s is not None and clip.t_event_s is not None
            else "negative"
        )
        head.text(0.0, 0.35, f"{clip.video_id} ({what})", fontsize=11, weight="bold", va="center",
                  gid=f"clip-{clip.video_id}")  # fmt: skip
        if clip.note:
            head.text(0.45, 0.35, clip.note[:140], fontsize=8, color="#d62728", va="center")
        row += 1
        for k, tick in enumerate(clip.ticks):
            ax_img = fig.add_subplot(grid[row, 0])
            ax_img.set_axis_off()
            if tick.frame is not None:
                ax_img.imshow(tick.frame, aspect="equal", gid="frame")
            else:
                ax_img.text(0.5, 0.5, "no frame", ha="center", va="center", fontsize=8)
            ax_act = fig.add_subplot(grid[row, 1])
            ax_act.set_axis_off()
            ax_act.set_xlim(0, 1)
            ax_act.set_ylim(0, 1)
            ax_act.text(0.02, 0.88, f"t = {tick.t_s:.1f} s", fontsize=9, weight="bold", va="center")
            for y, name, action in (
                (0.64, "label", tick.label),
                (0.40, "VLM", tick.vlm_action),
                (0.16, who, tick.fsm_action),
            ):
                ax_act.text(0.02, y, name, fontsize=8, va="center")
                _action_box(ax_act, 0.50, y, action, gid=f"action-{name}-{k}")
            ax_txt = fig.add_subplot(grid[row, 2])
            ax_txt.set_axis_off()
            belief, rest, target = _generation_lines(tick)
            ax_txt.text(0.0, 0.98, belief, fontsize=8, family="monospace", weight="bold", va="top",
                        gid="belief-text")  # fmt: skip
            ax_txt.text(0.0, 0.98 - 0.14 * (belief.count("\n") + 1), rest, fontsize=7, family="monospace",
                        color="#555555", va="top")  # fmt: skip
            ax_txt.text(0.0, 0.02, target, fontsize=7, family="monospace", color="#1f77b4", va="bottom",
                        gid="target-belief")  # fmt: skip
            row += 1
        if not clip.ticks:
            row += 1
    fig.suptitle(
        f"Belief spans, {source}, test split: last frame of each tick's window, labelled / VLM / FSM action, "
        "generated text (bold: the belief span; blue: the target)",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    return fig


def write_belief_report(
    benchmark: pa.Table | pl.DataFrame,
    cache_dir: str | Path,
    scores: pa.Table | pl.DataFrame | None,
    outputs: dict[str, str | Path],
    *,
    policy: str = "heads",
    seed: int | None = None,
    max_ticks: int = 8,
) -> list[Path]:
    """`outputs[source]`: the belief-span figure of each source (one saying so where it has no clip)."""
    bench = benchmark if isinstance(benchmark, pl.DataFrame) else pl.from_arrow(benchmark)
    chosen = {s: choose_clips(bench, s) for s in outputs}
    generations = read_generations(cache_dir, [v for vids in chosen.values() for v in vids])
    if seed is None and scores is not None:
        sc = scores if isinstance(scores, pl.DataFrame) else pl.from_arrow(scores)
        seeds = sc.filter(pl.col("policy") == policy)["seed"]
        seed = int(seeds.min()) if len(seeds) else None
    paths = []
    for source, out in outputs.items():
        clips = belief_clips(
            bench, generations, scores, source, policy=policy, seed=seed, max_ticks=max_ticks
        )
        paths.append(save_figure(belief_figure(clips, source, policy=policy, seed=seed), out))
    return paths


__all__ = [
    "BeliefClip",
    "BeliefTick",
    "belief_clips",
    "belief_figure",
    "choose_clips",
    "choose_ticks",
    "read_generations",
    "write_belief_report",
]
