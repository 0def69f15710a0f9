"""What `vlalert predict` writes for a clip: the per-tick table (Parquet or CSV) and its timeline PNG.

Kept apart from vlalert.predict (the inference path) because it is the output format alone: file
names from an output prefix, the CSV form of list columns, the run's metadata in the Parquet schema,
the figure. Every file is written atomically (vlalert.atomic).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from vlalert.actions import ACTIONS, Action

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OutputFormat = Literal["parquet", "csv"]
FORMATS: tuple[str, ...] = ("parquet", "csv")
METADATA_KEY = b"vlalert.predict"  # the Parquet schema metadata key of the run's facts


def output_paths(out_prefix: str | os.PathLike[str], fmt: OutputFormat) -> tuple[Path, Path]:
    """(table, timeline PNG) for an output prefix: `{prefix}.{parquet|csv}` and `{prefix}.png`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    prefix = str(out_prefix)
    return Path(f"{prefix}.{fmt}"), Path(f"{prefix}.png")


def default_prefix(video: str | os.PathLike[str]) -> Path:
    """`./{video name}.vlalert` in the working directory (a dataset folder may be read-only)."""
    path = Path(video)
    stem = path.name if path.is_dir() else path.stem
    return Path.cwd() / f"{stem}.vlalert"


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    from vlalert.atomic import atomic_path

    with atomic_path(path) as tmp:
        write(str(tmp))


def csv_ready(table: pa.Table) -> pa.Table:
    """The table with `frame_idx` as a JSON list string ("[3, 5, 8]"): CSV has no list type."""
    idx = table.column("frame_idx").to_pylist()
    text = pa.array([json.dumps(v) for v in idx], pa.string())
    return table.set_column(table.schema.get_field_index("frame_idx"), "frame_idx", text)


def write_predictions(
    table: pa.Table, path: str | os.PathLike[str], fmt: OutputFormat, metadata: dict[str, Any] | None = None
) -> Path:
    """Write the table as Parquet (with `metadata` as JSON in the schema metadata) or CSV."""
    path = Path(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if metadata is not None:
            table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        _atomic(path, lambda tmp: pq.write_table(table, tmp))
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        _atomic(path, lambda tmp: pacsv.write_csv(csv_ready(table), tmp))
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return path


def timeline_figure(table: pa.Table, tick_hz: float, title: str) -> Figure:
    """Probabilities over time (p_danger, p_silent, p_observe, p_alert) above two action strips:
    the FSM-decoded action and the VLM's own (hatched where it wrote none).

    Artists carry gids ("p_danger", "strip-action-ALERT", ...) so a test can check what was drawn.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from vlalert.report.evaluation import ACTION_COLORS, runs

    t = table.column("t_s").to_numpy()
    dt = 1.0 / tick_hz
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax_p, ax_a = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.2])
    ax_p.plot(t, table.column("p_danger").to_numpy(), color="black", lw=2.0, gid="p_danger")
    ax_p.plot(t, table.column("p_silent").to_numpy(), color="#888888", lw=1.0, ls=":", gid="p_silent")
    obs, alert = ACTION_COLORS[Action.OBSERVE], ACTION_COLORS[Action.ALERT]
    ax_p.plot(t, table.column("p_observe").to_numpy(), color=obs, lw=1.5, marker=".", gid="p_observe")
    ax_p.plot(t, table.column("p_alert").to_numpy(), color=alert, lw=1.5, marker=".", gid="p_alert")
    ax_p.set_ylim(-0.03, 1.03)
    ax_p.set_ylabel("probability")
    ax_p.grid(True, alpha=0.3)
    strips = (("action", 1, "FSM action"), ("vlm_action", 0, "VLM action"))
    for column, y, _ in strips:
        codes = np.array([Action[a] if a in ACTIONS else -1 for a in table.column(column).to_pylist()])
        for code in (*Action, -1):
            spans = [(a, b - a) for a, b, c in runs(t, codes, tick_hz) if c == code]
            if not spans:
                continue
            style = (
                {"facecolors": "none", "edgecolors": "#999999", "hatch": "//"}
                if code == -1
                else {"facecolors": ACTION_COLORS[code]}
            )
            gid = f"strip-{column}-{'none' if code == -1 else ACTIONS[code]}"
            ax_a.broken_barh(spans, (y - 0.4, 0.8), gid=gid, **style)
    ax_a.set_yticks([y for _, y, _ in strips], [label for *_, label in strips], fontsize=8)
    ax_a.set_ylim(-0.6, 1.6)
    ax_a.set_xlabel("time in video (s)")
    if t.size:
        ax_p.set_xlim(float(t[0]) - 0.25 * dt, float(t[-1]) + 1.25 * dt)
    fig.suptitle(title, fontsize=11)
    handles = [
        Line2D([], [], color="black", lw=2.0, label="p_danger (DangerHead)"),
        Line2D([], [], color="#888888", lw=1.0, ls=":", label="p_silent"),
        Line2D([], [], color=obs, lw=1.5, marker=".", label="p_observe"),
        Line2D([], [], color=alert, lw=1.5, marker=".", label="p_alert"),
        *(Patch(color=ACTION_COLORS[c], label=c.name) for c in Action),
        Patch(facecolor="none", edgecolor="#999999", hatch="//", label="no action parsed"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=8, fontsize=8, frameon=False)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from vlalert.report.evaluation import DPI

    path = Path(path)
    FigureCanvasAgg(fig)
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}))
    return path
