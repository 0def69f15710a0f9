"""BADAS consensus labels: human alert/collision times and ego involvement that override a source's own.

CSV columns `id,batch,Event-type,Nexar-vehicle-involved,min_support,Time-of-alert,Time-of-collision,
Diff,article_category` (+ an optional `ego_discrepancy`). `id` is the clip's file name: `{video_id}.mp4`
for DoTA and DADA-2000, and for DAD the test-positive file `NNNNNN.mp4` (each kind's plugin maps an id
to its video_id: `consensus_video_id`). A matching row sets
t_risky_s = Time-of-alert, t_event_s = Time-of-collision and ego_involved = (Nexar-vehicle-involved ==
"yes"); an empty cell leaves the source's own value. A row naming no known clip is rejected, never ignored.

Clock: the CSV's times were written on a clock of its own (`sources.<name>.consensus_clock_fps`, default
per kind from the evidence in the README): a time T is frame T * clock of the clip, and ingest converts it
to seconds of the probed video (`Annotation.clock_fps`). For DAD that clock is 30 fps although the clips
play at 20 fps (the BADAS annotators saw the frames re-rendered at 30 fps): in real clip 000478 the
consensus collision 2.76 s is frame 83, where the contact is visible, not frame 55.

`article_category`: rows reading `excluded (...)` are not applied (recorded as decisions with the CSV's
reason); `less2s` rows are applied and flagged. Every row leaves one decision row (CONSENSUS schema).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.common import FieldError, is_blank, parse_float, provenance, reason, times_from

ID = "id"
EGO = "Nexar-vehicle-involved"
ALERT = "Time-of-alert"
COLLISION = "Time-of-collision"
COLUMNS: tuple[str, ...] = (
    ID,
    "batch",
    "Event-type",
    EGO,
    "min_support",
    ALERT,
    COLLISION,
    "Diff",
    "article_category",
)
REQUIRED: tuple[str, ...] = (ID, EGO, ALERT, COLLISION)
CATEGORY = "article_category"
EXCLUDED_PREFIX = "excluded"
NOT_IN_TEST = "not in test split"  # the one exclusion that says peers do not evaluate on the clip
LESS2S = "less2s"
OBTAIN = (  # where to get the CSV, named by the layout check; {name}: the source
    f"the BADAS consensus labels CSV (columns {', '.join(COLUMNS)}) published with Nexar's BADAS work; "
    "or remove sources.{name}.consensus"
)


class ConsensusIds(Protocol):
    """What apply_consensus needs of a source kind (its plugin, vlalert.sources.plugin.SourceKind)."""

    KIND: str

    def consensus_video_id(self, key: str) -> str: ...


@dataclasses.dataclass(frozen=True)
class Decision:
    """What ingest did with one consensus row (a row of the CONSENSUS table)."""

    video_id: str
    csv_id: str
    csv_file: str
    decision: str
    article_category: str | None
    peer_test: bool
    reason: str


def strip_ext(clip_id: str) -> str:
    clip_id = clip_id.strip()
    return clip_id[:-4] if clip_id.lower().endswith(".mp4") else clip_id


def _cell(value: str | None) -> float | str | None:
    # Numbers as floats (the CSV is a pandas export: "7", "3.4000000000000004"), text kept as text.
    if value is None or is_blank(value):
        return None
    try:
        return float(value)
    except ValueError:
        return value.strip()


def read_consensus(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Rows keyed by the id without its `.mp4`; values as floats where numeric, None where empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: BADAS consensus CSV not found; expected a CSV with columns {','.join(COLUMNS)}"
        )
    rows: dict[str, dict[str, Any]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise ValueError(
                    f"{path}: not a BADAS consensus CSV: missing columns {missing}; "
                    f"expected {','.join(COLUMNS)}, found {','.join(header) or '(empty file)'}"
                )
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): v for k, v in raw.items() if k is not None}
                clip_id = (row.get(ID) or "").strip()
                if not clip_id:
                    raise ValueError(f"{path}: line {line}: field {ID}: empty clip id")
                key = strip_ext(clip_id)
                if key in rows:
                    raise ValueError(f"{path}: line {line}: field {ID}: clip {clip_id} appears twice")
                rows[key] = {ID: clip_id, **{k: _cell(v) for k, v in row.items() if k != ID}}
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text CSV file ({err})") from None
    return rows


def _ego(value: Any) -> bool | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("yes", "no"):
        return text == "yes"
    raise FieldError(EGO, f"{value!r} is not 'yes' or 'no'")


def _time(value: Any, field: str) -> float | None:
    return parse_float(value, field)


def category_of(row: Mapping[str, Any]) -> str | None:
    value = row.get(CATEGORY)
    return None if value is None or str(value).strip() == "" else str(value).strip()


def is_excluded(category: str | None) -> bool:
    return category is not None and category.lower().startswith(EXCLUDED_PREFIX)


def is_peer_test(category: str | None) -> bool:
    """Peers evaluate on every consensus clip except those the CSV excludes as not in the test split."""
    return not (is_excluded(category) and NOT_IN_TEST in (category or "").lower())


def override(
    ann: Annotation, row: Mapping[str, Any], csv_path: str | os.PathLike[str], clock_fps: float | None = None
) -> Annotation:
    """`ann` with the row's times and ego flag; raises FieldError for an unusable cell.

    clock_fps: the clock the CSV's times are written on (None: seconds of the video itself).
    """
    t_alert = _time(row.get(ALERT), ALERT)
    t_collision = _time(row.get(COLLISION), COLLISION)
    ego = _ego(row.get(EGO))
    meta = dict(ann.meta)
    prov = dict(meta.get("provenance", {}))
    clocks = dict(ann.clock_fps)
    changes: dict[str, Any] = {}
    for attr, value, field in (("t_risky_s", t_alert, ALERT), ("t_event_s", t_collision, COLLISION)):
        if value is None:
            continue
        changes[attr] = value
        prov[attr] = provenance(csv_path, field, "consensus")
        clocks.pop(attr, None)
        if clock_fps is not None:
            clocks[attr] = clock_fps
    if ego is not None:
        changes["ego_involved"] = ego
        prov["ego_involved"] = provenance(csv_path, EGO, "consensus")
        meta["ego_from"] = "consensus"
    meta["provenance"] = prov
    meta["consensus"] = dict(row)
    meta["consensus_file"] = str(csv_path)
    meta["consensus_clock_fps"] = clock_fps
    if (category_of(row) or "").lower() == LESS2S:
        meta["consensus_flag"] = LESS2S  # alert less than 2 s before the collision: kept, flagged
    t_risky = changes.get("t_risky_s", ann.t_risky_s)
    t_event = changes.get("t_event_s", ann.t_event_s)
    meta["times_from"] = times_from(prov, t_risky, t_event)
    return dataclasses.replace(ann, meta=meta, clock_fps=clocks, **changes)


def _both_ids(video_id: str, row: Mapping[str, Any]) -> str:
    csv_id = str(row.get(ID, video_id))
    return video_id if strip_ext(csv_id) == video_id else f"{video_id} (CSV id {csv_id})"


def apply_consensus(
    annotations: list[Annotation],
    consensus: Mapping[str, Mapping[str, Any]],
    csv_path: str | os.PathLike[str],
    kind: type[ConsensusIds],
    *,
    source: str | None = None,
    rejected_ids: Collection[str] = (),
    clock_fps: float | None = None,
) -> tuple[list[Annotation], list[Rejection], list[Decision]]:
    """Override matching annotations; reject rows naming no clip and clips whose row is unusable.

    Returns the annotations, the rejections, and one Decision per consensus row.
    rejected_ids: clips the adapter already rejected; their rows are known, not "unknown clips".
    kind: the source kind's plugin (vlalert.sources.registry.adapter_for), which maps CSV ids to video_ids.
    source: the source name for rejections (default: the annotations' source, else the kind).
    clock_fps: the clock of the CSV's times (see the module docstring).
    """
    source = source or (annotations[0].source if annotations else kind.KIND)
    by_id = {kind.consensus_video_id(key): row for key, row in consensus.items()}
    known = {a.video_id for a in annotations}
    file = str(csv_path)
    out: list[Annotation] = []
    rejections: list[Rejection] = []
    decisions: list[Decision] = []

    def decide(video_id: str, row: Mapping[str, Any], decision: str, why: str) -> None:
        category = category_of(row)
        csv_id = str(row.get(ID, video_id))
        decisions.append(Decision(video_id, csv_id, file, decision, category, is_peer_test(category), why))

    for ann in annotations:
        row = by_id.get(ann.video_id)
        if row is None:
            out.append(ann)
            continue
        category = category_of(row)
        if is_excluded(category):
            meta = {**ann.meta, "consensus_excluded": category, "consensus_file": file}
            out.append(dataclasses.replace(ann, meta=meta))
            decide(ann.video_id, row, "excluded", f"not applied: the CSV marks the row {category!r}")
            continue
        try:
            out.append(override(ann, row, csv_path, clock_fps))
        except FieldError as err:
            clip = _both_ids(ann.video_id, row)
            rejections.append(
                Rejection(ann.video_id, source, ann.path, reason(csv_path, clip, err.field, err.what))
            )
            decide(ann.video_id, row, "rejected", f"field {err.field}: {err.what}")
            continue
        flagged = (category or "").lower() == LESS2S
        decide(
            ann.video_id,
            row,
            "applied-less2s" if flagged else "applied",
            "applied; flagged: the alert is less than 2 s before the collision" if flagged else "applied",
        )
    for video_id, row in by_id.items():
        if video_id in known:
            continue
        if video_id in rejected_ids:
            decide(video_id, row, "rejected", "the clip itself was rejected (see rejected.parquet)")
            continue
        clip = _both_ids(video_id, row)
        what = f"no clip {video_id} in source {source}"
        rejections.append(Rejection(video_id, source, file, reason(csv_path, clip, ID, what)))
        decide(video_id, row, "unmatched", what)
    return out, rejections, decisions
