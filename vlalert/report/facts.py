"""The run's counts, read from the benchmark manifest: what the report's main page and overview state.

Standard library only: the Snakefile calls `overview_labels` when `snakemake --report` collects the
run overview (a labels callable), and a Snakefile imports nothing heavy (DESIGN.md: a no-op dry run
in 3 s). The same `RunFacts` feed the overview table (vlalert.report.data), so the main page and the
table cannot disagree.

A source is listed whether or not it has clips: a source with no test clip (or no clip at all) is a
row with zeros and is named in `sources_without(split)`, never dropped (issue 17: the demo's dada2000
once vanished from every table).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SPLITS: tuple[str, ...] = ("train", "val", "test")
ACTIONS: tuple[str, ...] = ("SILENT", "OBSERVE", "ALERT")
# The manifest's tick counts per split x source: the labelled actions of the trained and scored
# ticks, the excluded post-event ticks, and the ticks of prefix negatives (a positive clip's early
# ticks, scored again as a negative clip of their own; DESIGN.md "Prefix negatives").
TICK_KINDS: tuple[str, ...] = (*ACTIONS, "excluded", "prefix")


@dataclass(frozen=True)
class SourceSplit:
    """One source in one split: clips (prefix negatives apart), positives, ticks per action."""

    clips: int
    prefix_clips: int
    positives: int
    ticks: Mapping[str, int]  # TICK_KINDS

    @property
    def n_ticks(self) -> int:
        """Every row of the split's table: the three actions, the excluded and the prefix ticks."""
        return sum(self.ticks.get(k, 0) for k in TICK_KINDS)


@dataclass(frozen=True)
class RunFacts:
    """What the benchmark manifest says of a run, for every configured source."""

    run: str
    sources: tuple[str, ...]
    by_split: Mapping[str, Mapping[str, SourceSplit]]  # split -> source -> counts
    accepted: Mapping[str, int]  # source -> clips accepted by ingest
    rejected: Mapping[str, int]  # source -> clips rejected by ingest

    def total(self, split: str) -> tuple[int, int]:
        """(clips, ticks) of a split: prefix negatives not counted as clips, their ticks counted."""
        rows = self.by_split[split].values()
        return sum(r.clips for r in rows), sum(r.n_ticks for r in rows)

    def sources_without(self, split: str) -> list[str]:
        """The sources with no clip in `split`."""
        return [s for s in self.sources if self.by_split[split][s].clips == 0]


def run_facts(manifest: Mapping[str, Any], sources: Sequence[str] | None = None) -> RunFacts:
    """The facts of a manifest (vlalert.benchmark), for `sources` (default: every source it names).

    The manifest leaves out a source that has no clip in a split; here it gets zeros.
    """
    named = set(manifest.get("sources", {}))
    for split in SPLITS:
        named |= set(manifest.get("clips", {}).get(split, {}))
    all_sources = tuple(sorted(named if sources is None else sources))
    by_split: dict[str, dict[str, SourceSplit]] = {}
    for split in SPLITS:
        clips = manifest.get("clips", {}).get(split, {})
        ticks = manifest.get("ticks", {}).get(split, {})
        positives = manifest.get("positives", {}).get(split, {})
        by_split[split] = {
            s: SourceSplit(
                clips=int(clips.get(s, {}).get("clips", 0)),
                prefix_clips=int(clips.get(s, {}).get("prefix_clips", 0)),
                positives=int(positives.get(s, 0)),
                ticks={k: int(ticks.get(s, {}).get(k, 0)) for k in TICK_KINDS},
            )
            for s in all_sources
        }
    per_source = manifest.get("sources", {})
    return RunFacts(
        run=str(manifest.get("run", "")),
        sources=all_sources,
        by_split=by_split,
        accepted={s: int(per_source.get(s, {}).get("accepted", 0)) for s in all_sources},
        rejected={s: int(per_source.get(s, {}).get("rejected", 0)) for s in all_sources},
    )


def read_facts(manifest_path: str | os.PathLike[str], sources: Sequence[str] | None = None) -> RunFacts:
    """`run_facts` of the manifest file at `manifest_path`."""
    with open(manifest_path, encoding="utf-8") as fh:
        return run_facts(json.load(fh), sources)


def overview_labels(
    manifest_path: str | os.PathLike[str],
    *,
    model: str,
    seeds: Sequence[int],
    sources: Sequence[str],
) -> dict[str, str]:
    """The run overview's report labels: run, model, seeds, sources and the counts per split.

    Strings only: the report's tables sort label values as text. The main page
    (report/workflow.rst) prints these labels, so the counts it states are this run's.
    """
    facts = read_facts(manifest_path, sources)
    missing = facts.sources_without("test")
    return {
        "run": facts.run,
        "model": model,
        "seeds": ", ".join(str(s) for s in seeds),
        "sources": ", ".join(facts.sources),
        **{f"{split} clips / ticks": "{} / {}".format(*facts.total(split)) for split in SPLITS},
        "accepted / rejected clips": f"{sum(facts.accepted.values())} / {sum(facts.rejected.values())}",
        "sources without test clips": ", ".join(missing) if missing else "none",
    }


__all__ = [
    "ACTIONS",
    "SPLITS",
    "TICK_KINDS",
    "RunFacts",
    "SourceSplit",
    "overview_labels",
    "read_facts",
    "run_facts",
]
