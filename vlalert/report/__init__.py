"""The run's report (`snakemake --report`): figures, tables and the facts its main page states.

- `evaluation`: the test split's clip timelines, per-source DAUS bars, reliability diagram, key metrics;
- `data`: the benchmark's clips and ticks per split x source x action, rejected clips by reason, and
  the run overview table (`facts` gives its numbers);
- `training`: SFT train/val loss, each head's train/val loss per seed;
- `beliefs`: the belief-span view (each tick's frame, generated belief text and actions);
- `facts`: the run's counts read from the benchmark manifest, standard library only, so that the
  Snakefile can label the report's items with them at report time without importing matplotlib.

The names of `evaluation` are re-exported here lazily (PEP 562): `from vlalert.report import runs`
keeps working for predict's figure, while `vlalert.report.facts` stays light for the Snakefile.
"""

from __future__ import annotations

import importlib
from typing import Any

_EVALUATION = (
    "ACTION_COLORS",
    "BAR_METRICS",
    "DPI",
    "POLICY_COLORS",
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
)


def __getattr__(name: str) -> Any:
    if name in _EVALUATION:
        return getattr(importlib.import_module("vlalert.report.evaluation"), name)
    raise AttributeError(f"module 'vlalert.report' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EVALUATION])


__all__ = list(_EVALUATION)
