"""Training curves for the report: SFT's train/val loss, and each head's train/val loss per seed.

A reviewer asks of a run first whether training went anywhere: did SFT's validation loss fall, and
did the heads of every seed converge alike or did one diverge. The curves are read from the logs the
stages write (vlalert.schemas SFT_TRAIN_LOG, HEADS_TRAIN_LOG); the epoch each head kept (its
metrics.json `kept_epoch`: the best val epoch or the last, heads.keep) is marked on its panel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from vlalert.report.evaluation import save_figure

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"


def _frame(table: pa.Table | pl.DataFrame) -> pl.DataFrame:
    return table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)


def sft_loss_figure(log: pa.Table | pl.DataFrame | None, run: str = "") -> Figure:
    """SFT train loss per logged step and val loss where evaluated, against optimiser steps.

    The learning rate is drawn on a second axis: a loss that stalls while the rate is still warming up
    reads differently from one that stalls at the peak rate. `log` None: the run trains no adapter of
    its own (cache.adapter: none or a path), and the figure says so.
    """
    fig = Figure(figsize=(9, 4.4), layout="constrained")
    ax = fig.add_subplot()
    if log is None:
        ax.text(0.5, 0.5, "this run trains no adapter (cache.adapter is not sft)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    df = _frame(log).sort("step")
    train = df.filter(pl.col("train_loss").is_not_null())
    val = df.filter(pl.col("val_loss").is_not_null())
    ax.plot(
        train["step"], train["train_loss"], color=TRAIN_COLOR, lw=1.2, label="train loss", gid="sft-train"
    )
    ax.plot(
        val["step"],
        val["val_loss"],
        color=VAL_COLOR,
        lw=1.8,
        marker="o",
        ms=4,
        label="val loss",
        gid="sft-val",
    )
    if val.height:
        first, last = float(val["val_loss"][0]), float(val["val_loss"][-1])
        ax.annotate(
            f"{first:.3f}", (val["step"][0], first), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
        ax.annotate(
            f"{last:.3f}", (val["step"][-1], last), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("token-mean loss (target tokens)")
    if _positive(df, "train_loss", "val_loss"):
        _log_y(ax)
    ax.grid(True, alpha=0.3)
    lr = ax.twinx()
    lr.plot(df["step"], df["lr"], color="#999999", lw=1.0, ls=":", label="learning rate", gid="sft-lr")
    lr.set_ylabel("learning rate", color="#777777")
    lr.tick_params(axis="y", colors="#777777", labelsize=8)
    handles = ax.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    if df.height == 0:
        ax.text(0.5, 0.5, "the SFT log holds no rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"SFT{f' of run {run}' if run else ''}: train and val loss", loc="left")
    return fig


def _log_y(ax: Axes) -> None:
    """A log y axis labelled in plain numbers (a loss spans a decade or two, not powers of ten)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _positive(df: pl.DataFrame, *columns: str) -> bool:
    values = [v for c in columns for v in df[c].drop_nulls().to_list()]
    return bool(values) and min(values) > 0


def head_loss_figure(
    logs: Mapping[int, pa.Table | pl.DataFrame],
    head: str,
    kept_epochs: Mapping[int, int | None] | None = None,
) -> Figure:
    """One panel per seed (train and val loss per epoch, the kept epoch marked), shared y axis.

    Panels rather than overlaid curves: five seeds' train and val curves on one axis are ten lines
    that hide one another; side by side, a seed that behaves differently stands out.
    """
    seeds = sorted(logs)
    kept = dict(kept_epochs or {})
    n = max(len(seeds), 1)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols + 1.0, 2.7 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    all_positive = all(_positive(_frame(logs[s]), "train_loss", "val_loss") for s in seeds)
    for ax, seed in zip(axes, seeds, strict=False):
        df = _frame(logs[seed]).sort("epoch")
        ax.plot(
            df["epoch"], df["train_loss"], color=TRAIN_COLOR, lw=1.4, label="train", gid=f"train-seed{seed}"
        )
        ax.plot(df["epoch"], df["val_loss"], color=VAL_COLOR, lw=1.4, label="val", gid=f"val-seed{seed}")
        epoch = kept.get(seed)
        if epoch is not None and epoch >= 0:
            ax.axvline(epoch, color="#555555", ls="--", lw=1.0, gid=f"kept-seed{seed}")
        title = f"seed {seed}" + (f", kept epoch {epoch}" if epoch is not None and epoch >= 0 else "")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if all_positive:
            _log_y(ax)
    for ax in axes[len(seeds) :]:
        ax.set_axis_off()
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8)
    if not seeds:
        axes[0].text(0.5, 0.5, f"no {head} head was trained", ha="center", va="center")
    fig.suptitle(f"{head.capitalize()}Head: train and val loss per seed (dashed: the kept epoch)")
    return fig


def write_training_report(
    sft_log: pa.Table | pl.DataFrame | None,
    head_logs: Mapping[str, Mapping[int, pa.Table | pl.DataFrame]],
    kept_epochs: Mapping[str, Mapping[int, int | None]],
    *,
    sft_out: str | Path,
    head_out: Mapping[str, str | Path],
    run: str = "",
) -> list[Path]:
    """The SFT figure at `sft_out` and one head figure per head at `head_out[head]`."""
    paths = [save_figure(sft_loss_figure(sft_log, run), sft_out)]
    for head, out in head_out.items():
        paths.append(save_figure(head_loss_figure(head_logs.get(head, {}), head, kept_epochs.get(head)), out))
    return paths


__all__ = ["head_loss_figure", "sft_loss_figure", "write_training_report"]
