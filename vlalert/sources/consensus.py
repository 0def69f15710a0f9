"""BADAS consensus labels: human alert/collision times and ego involvement that override a source's own.

CSV columns `id,batch,Event-type,Nexar-vehicle-involved,min_support,Time-of-alert,Time-of-collision,
Diff,article_category` (+ an optional `ego_discrepancy`). `id` is the clip's file name: `{video_id}.mp4`
for DoTA and DADA-2000, and for DAD the test-positive file `NNNNNN.mp4`. A matching row sets
t_risky_s = Time-of-alert, t_event_s = Time-of-collision and ego_involved = (Nexar-vehicle-involved ==
"yes"); an empty cell leaves the source's own value. A row naming no known clip is rejected, never ignored.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

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


def video_id_for(kind: str, key: str) -> str:
    """The source's video_id a consensus id names (DAD's bare number means its test positive)."""
    if kind == "dad" and key.isdigit():
        return f"testing-positive-{int(key):06d}"
    if kind == "nexar" and key.isdigit():
        return f"{int(key):05d}"
    return key


def _ego(value: Any) -> bool | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("yes", "no"):
        return text == "yes"
    raise FieldError(EGO, f"{value!r} is not 'yes' or 'no'")


def _time(value: Any, field: str) -> float | None:
    return parse_float(value, field)


def override(ann: Annotation, row: Mapping[str, Any], csv_path: str | os.PathLike[str]) -> Annotation:
    """`ann` with the row's times and ego flag; raises FieldError for an unusable cell."""
    t_alert = _time(row.get(ALERT), ALERT)
    t_collision = _time(row.get(COLLISION), COLLISION)
    ego = _ego(row.get(EGO))
    meta = dict(ann.meta)
    prov = dict(meta.get("provenance", {}))
    changes: dict[str, Any] = {}
    if t_alert is not None:
        changes["t_risky_s"] = t_alert
        prov["t_risky_s"] = provenance(csv_path, ALERT, "consensus")
    if t_collision is not None:
        changes["t_event_s"] = t_collision
        prov["t_event_s"] = provenance(csv_path, COLLISION, "consensus")
    if ego is not None:
        changes["ego_involved"] = ego
        prov["ego_involved"] = provenance(csv_path, EGO, "consensus")
        meta["ego_from"] = "consensus"
    meta["provenance"] = prov
    meta["consensus"] = dict(row)
    meta["consensus_file"] = str(csv_path)
    t_risky = changes.get("t_risky_s", ann.t_risky_s)
    t_event = changes.get("t_event_s", ann.t_event_s)
    meta["times_from"] = times_from(prov, t_risky, t_event)
    return dataclasses.replace(ann, meta=meta, **changes)


def apply_consensus(
    annotations: list[Annotation],
    consensus: Mapping[str, Mapping[str, Any]],
    csv_path: str | os.PathLike[str],
    kind: str,
    *,
    source: str | None = None,
    rejected_ids: Collection[str] = (),
) -> tuple[list[Annotation], list[Rejection]]:
    """Override matching annotations; reject rows naming no clip and clips whose row is unusable.

    rejected_ids: clips the adapter already rejected; their rows are known, not "unknown clips".
    source: the source name for rejections (default: the annotations' source, else the kind).
    """
    source = source or (annotations[0].source if annotations else kind)
    by_id = {video_id_for(kind, key): row for key, row in consensus.items()}
    known = {a.video_id for a in annotations} | set(rejected_ids)
    out: list[Annotation] = []
    rejections: list[Rejection] = []
    for ann in annotations:
        row = by_id.get(ann.video_id)
        if row is None:
            out.append(ann)
            continue
        try:
            out.append(override(ann, row, csv_path))
        except FieldError as err:
            rejections.append(
                Rejection(ann.video_id, source, ann.path, reason(csv_path, ann.video_id, err.field, err.what))
            )
    for video_id, row in by_id.items():
        if video_id not in known:
            clip_id = str(row.get(ID, video_id))
            what = f"no clip {video_id} in source {source}"
            rejections.append(Rejection(clip_id, source, str(csv_path), reason(csv_path, clip_id, ID, what)))
    return out, rejections
