"""The data half of the report: what the benchmark holds and what ingest turned away.

- `run_overview.html`: one row per configured source (accepted and rejected clips, clips and ticks
  per split), a source without test clips marked as such, the ticks per split x source x action, and
  every rejected clip with its reason;
- `benchmark_counts.png`: ticks per split x source x action (stacked SILENT / OBSERVE / ALERT /
  excluded / prefix-negative ticks), each bar topped by its clip count; a source with no clip in a
  split is written "no clips" at its place, so it cannot vanish from the figure;
- `rejected_by_reason.png`: rejected clips per reason, stacked by source.

The counts come from the benchmark manifest through vlalert.report.facts, the rejections from each
source's rejected.parquet (DESIGN.md "Data contracts"): the same numbers the run wrote, not recounted.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from matplotlib.figure import Figure

from vlalert.actions import Action
from vlalert.report.evaluation import ACTION_COLORS, save_figure
from vlalert.report.facts import SPLITS, TICK_KINDS, RunFacts

EXCLUDED_COLOR = "#eeeeee"
TICK_COLORS: dict[str, str] = {
    "SILENT": ACTION_COLORS[Action.SILENT],
    "OBSERVE": ACTION_COLORS[Action.OBSERVE],
    "ALERT": ACTION_COLORS[Action.ALERT],
    "excluded": EXCLUDED_COLOR,
    "prefix": "#dbe9f6",
}
TICK_LABELS: dict[str, str] = {
    "excluded": "excluded (post-event)",
    "prefix": "prefix negatives (scored only)",
}
TICK_HATCH: dict[str, str] = {"excluded": "//", "prefix": ".."}

# One problem of a rejection: "<file>: clip <id>: field <field>: <what>" (vlalert.sources.common.reason);
# a clip with several problems has them joined with "; ".
_PROBLEM = re.compile(r"clip .*?: field (?P<field>[^:]+?): (?P<what>.*)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PARENS = re.compile(r"\s*\([^)]*\)")


def reason_kinds(reason: str) -> list[str]:
    """The kinds of problem a rejection reason names, one per problem, stripped of file names,
    clip ids and numbers so that clips rejected for the same thing group together.

    "…/0001.mp4: clip 0001: field path: empty file (0 bytes)" -> ["path: empty file"];
    "…: field anomaly_start (t_risky_s): 9.3 s is past the clip's end (…)" ->
    ["anomaly_start (t_risky_s): # s is past the clip's end"]. A reason in another form is kept
    whole, numbers replaced.
    """
    kinds = []
    for problem in reason.split("; "):
        m = _PROBLEM.search(problem)
        if m is None:
            kinds.append(_NUMBER.sub("#", problem.strip()))
            continue
        parts = m.group("what").split(": ")
        what = _PARENS.sub("", parts[0]).strip()
        if len(what) <= 12 and len(parts) > 1:  # "frame 0 (000000.jpg): unreadable frame image"
            what = f"{what}: {_PARENS.sub('', parts[1]).strip()}"
        kinds.append(f"{m.group('field')}: {_NUMBER.sub('#', what)}")
    return kinds


def rejected_by_reason(rejected: Mapping[str, pa.Table | pl.DataFrame]) -> pl.DataFrame:
    """source, reason (its kind), clips: rejected clips per source and kind of problem, most first.

    A clip with two problems counts once under each."""
    rows = []
    for source, table in rejected.items():
        df = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
        for reason in df["reason"].to_list() if df.height else []:
            rows.extend((source, kind) for kind in dict.fromkeys(reason_kinds(reason)))
    out = pl.DataFrame(rows, schema={"source": pl.Utf8, "reason": pl.Utf8}, orient="row")
    return (
        out.group_by("source", "reason")
        .agg(pl.len().cast(pl.Int64).alias("clips"))
        .sort(["clips", "reason", "source"], descending=[True, False, False])
    )


# ----------------------------------------------------------------------------- figures


def counts_figure(facts: RunFacts) -> Figure:
    """Ticks per split x source x action, stacked, one panel per split; clip counts above the bars."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, len(SPLITS), sharey=True)
    sources = list(facts.sources)
    x = np.arange(len(sources))
    top = max([facts.by_split[s][src].n_ticks for s in SPLITS for src in sources] + [1])
    for ax, split in zip(axes, SPLITS, strict=True):
        bottom = np.zeros(len(sources))
        for kind in TICK_KINDS:
            values = np.array([facts.by_split[split][s].ticks.get(kind, 0) for s in sources], dtype=float)
            ax.bar(
                x,
                values,
                bottom=bottom,
                color=TICK_COLORS[kind],
                edgecolor="#777777" if kind in TICK_HATCH else "none",
                hatch=TICK_HATCH.get(kind),
                lw=0.5,
                label=TICK_LABELS.get(kind, kind),
                gid=f"ticks-{split}-{kind}",
            )
            bottom += values
        for xi, src in zip(x, sources, strict=True):
            c = facts.by_split[split][src]
            text = f"{c.clips} clips\n{c.positives} pos." if c.clips else "no clips"
            ax.text(
                xi,
                bottom[xi] + 0.02 * top,
                text,
                ha="center",
                va="bottom",
                fontsize=7.5,
                color="black" if c.clips else "#d62728",
                gid=f"clips-{split}-{src}",
            )
        clips, ticks = facts.total(split)
        ax.set_title(f"{split}: {clips} clips, {ticks} ticks")
        ax.set_xticks(x, sources, rotation=20)
        ax.set_ylim(0, top * 1.25)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("ticks")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    fig.suptitle(f"Benchmark of run {facts.run}: ticks per split, source and labelled action")
    return fig


def rejected_figure(by_reason: pl.DataFrame, sources: Sequence[str]) -> Figure:
    """Rejected clips per kind of problem (horizontal bars), stacked by source."""
    reasons = (
        by_reason.group_by("reason")
        .agg(pl.col("clips").sum())
        .sort(["clips", "reason"], descending=[True, False])
    )
    names = reasons["reason"].to_list()
    fig = Figure(figsize=(11, 1.6 + 0.42 * max(len(names), 1)), layout="constrained")
    ax = fig.add_subplot()
    if not names:
        ax.text(0.5, 0.5, "no clip was rejected", ha="center", va="center", gid="none-rejected")
        ax.set_axis_off()
    else:
        y = np.arange(len(names))
        left = np.zeros(len(names))
        for i, source in enumerate(sources):
            d = dict(by_reason.filter(pl.col("source") == source).select("reason", "clips").iter_rows())
            values = np.array([d.get(r, 0) for r in names], dtype=float)
            if values.any():
                ax.barh(y, values, left=left, color=f"C{i % 10}", label=source, gid=f"rejected-{source}")
            left += values
        ax.set_yticks(y, [_wrap(n, 70) for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("rejected clips")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(title="source", fontsize=8, loc="lower right")
    total = int(by_reason["clips"].sum()) if by_reason.height else 0
    ax.set_title(f"Clips rejected by ingest, by reason ({total} problems)", loc="left")
    return fig


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


# ----------------------------------------------------------------------------- overview table

_STYLE = """<style>
.vlalert-overview table { border-collapse: collapse; margin: 0.5em 0 1.2em 0; font-size: 13px; }
.vlalert-overview th, .vlalert-overview td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
.vlalert-overview th:first-child, .vlalert-overview td:first-child { text-align: left; }
.vlalert-overview tr.missing td { background: #fde2e1; }
.vlalert-overview tr.total td { font-weight: bold; }
.vlalert-overview td.reason { text-align: left; font-family: monospace; font-size: 12px; }
</style>"""


def _table(header: Sequence[str], rows: Sequence[tuple[Sequence[str], str]]) -> str:
    """An HTML table; each row is (cells, css class)."""
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>"]
    out.append("<tbody>")
    for cells, css in rows:
        cls = f' class="{css}"' if css else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def overview_html(facts: RunFacts, rejected: Mapping[str, pa.Table | pl.DataFrame]) -> str:
    """The run overview as a self-contained HTML page (inline style; the report shows it in a frame)."""
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>Run overview</title>', _STYLE]
    parts.append('</head><body><div class="vlalert-overview">')
    parts.append(f"<h2>Run {html.escape(facts.run)}</h2>")
    parts.append("<p>sources: " + html.escape(", ".join(facts.sources)) + "</p>")
    missing = facts.sources_without("test")
    if missing:
        parts.append(
            '<p class="missing-sources"><b>Sources without test clips</b> (absent from the evaluation, '
            "named here so that none vanishes): " + html.escape(", ".join(missing)) + "</p>"
        )

    header = ["source", "accepted", "rejected"]
    header += [f"{s} clips (pos.)" for s in SPLITS] + [f"{s} ticks" for s in SPLITS] + ["note"]
    rows = []
    for src in facts.sources:
        cells = [src, str(facts.accepted[src]), str(facts.rejected[src])]
        for split in SPLITS:
            c = facts.by_split[split][src]
            prefix = f" +{c.prefix_clips} prefix" if c.prefix_clips else ""
            cells.append(f"{c.clips} ({c.positives}){prefix}")
        cells += [str(facts.by_split[split][src].n_ticks) for split in SPLITS]
        empty = [s for s in SPLITS if facts.by_split[s][src].clips == 0]
        cells.append(f"no {' / '.join(empty)} clips" if empty else "")
        rows.append((cells, "missing" if "test" in empty else ""))
    total = ["all", str(sum(facts.accepted.values())), str(sum(facts.rejected.values()))]
    total += [str(facts.total(s)[0]) for s in SPLITS] + [str(facts.total(s)[1]) for s in SPLITS] + [""]
    rows.append((total, "total"))
    parts.append("<h3>Clips and ticks per source and split</h3>")
    parts.append(_table(header, rows))

    parts.append("<h3>Ticks per split, source and labelled action</h3>")
    header = ["split", "source", *(TICK_LABELS.get(k, k) for k in TICK_KINDS)]
    rows = [
        ([split, src, *(str(facts.by_split[split][src].ticks[k]) for k in TICK_KINDS)], "")
        for split in SPLITS
        for src in facts.sources
    ]
    parts.append(_table(header, rows))

    parts.append("<h3>Rejected clips</h3>")
    rej = []
    for src in facts.sources:
        table = rejected.get(src)
        df = (
            pl.DataFrame()
            if table is None
            else (table if isinstance(table, pl.DataFrame) else pl.from_arrow(table))
        )
        for vid, reason in df.select("video_id", "reason").iter_rows() if df.height else []:
            rej.append(f'<tr><td>{html.escape(src)}</td><td>{html.escape(vid)}</td><td class="reason">'
                       f"{html.escape(reason)}</td></tr>")  # fmt: skip
    if rej:
        parts.append("<table><thead><tr><th>source</th><th>clip</th><th>reason</th></tr></thead><tbody>")
        parts += rej
        parts.append("</tbody></table>")
    else:
        parts.append("<p>No clip was rejected.</p>")
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"


def write_data_report(
    facts: RunFacts,
    rejected: Mapping[str, pa.Table | pl.DataFrame],
    *,
    overview: str | Path,
    counts: str | Path,
    rejections: str | Path,
) -> list[Path]:
    """Write the overview page, the counts figure and the rejections figure to the given paths."""
    overview = Path(overview)
    overview.parent.mkdir(parents=True, exist_ok=True)
    overview.write_text(overview_html(facts, rejected), encoding="utf-8")
    by_reason = rejected_by_reason(rejected)
    return [
        overview,
        save_figure(counts_figure(facts), counts),
        save_figure(rejected_figure(by_reason, facts.sources), rejections),
    ]


__all__ = [
    "counts_figure",
    "overview_html",
    "reason_kinds",
    "rejected_by_reason",
    "rejected_figure",
    "write_data_report",
]
