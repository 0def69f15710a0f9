"""The benchmark stage: labels joined with their clips, cut into train / val / test, and a manifest.

The manifest is the audit trail of the whole front half of the pipeline: how many clips each
source offered, how many were rejected and why, which clips yielded no tick, how many ticks of
each action every split holds (excluded post-event ticks and prefix-negative ticks counted
apart), which label rules fired, the configuration the labels were made with, and (after
`finalize_manifest`) the sha256 of every written split file. Nothing leaves the benchmark
without showing up in it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlalert.actions import Action
from vlalert.atomic import sha256_file, write_json_atomic
from vlalert.config import SPLITS, WorkflowConfig
from vlalert.labels import effective_t_event, prefix_cut
from vlalert.schemas import BENCHMARK, LABELS, check_table
from vlalert.sources.registry import adapter_for
from vlalert.splits import assign_split, parent_id

MANIFEST_FORMAT = "vlalert-benchmark-manifest/1"

# Columns the benchmark takes from the beliefs stage (BELIEFS name -> BENCHMARK name).
_BELIEF_COLUMNS = {
    "analysis": "analysis",
    "belief": "belief",
    "belief_text": "belief_text",
    "provider": "belief_provider",
}
# Per-clip columns the benchmark adds to the label columns.
_CLIP_FIELDS = [f for f in BENCHMARK if f.name not in LABELS.names and f.name not in _BELIEF_COLUMNS.values()]
_CLIP_SCHEMA = pa.schema([pa.field("_clip", pa.string())] + _CLIP_FIELDS)


class SplitLeakError(ValueError):
    """A clip (or a prefix and its parent) was put in more than one split."""


class PeerTestLeakError(ValueError):
    """strict: a clip that peers evaluate on would land in train or val."""


class MissingClassError(ValueError):
    """strict: a source gives positive clips to train but not one ALERT tick."""


def peer_test_clips(videos: pa.Table, kind: str, consensus: pa.Table | None) -> dict[str, str]:
    """video_id -> why peers evaluate on it: the source's official test split, or a consensus row.

    Consensus rows count unless the CSV excludes them as "not in test split" (see
    `vlalert.sources.consensus.is_peer_test`, which set the table's peer_test column).
    """
    test_splits = set(adapter_for(kind).PEER_TEST_SPLITS)
    out = {
        vid: f"official split {split!r}"
        for vid, split in zip(
            videos.column("video_id").to_pylist(), videos.column("official_split").to_pylist(), strict=True
        )
        if split in test_splits
    }
    if consensus is not None:
        for row in consensus.to_pylist():
            if row["peer_test"]:
                out.setdefault(row["video_id"], f"BADAS consensus row in {row['csv_file']}")
    return out


def _clip_record(
    vid: str, video: dict[str, Any], source: str, cfg: WorkflowConfig, peer_test: dict[str, str]
) -> dict[str, Any]:
    """The benchmark's per-clip columns for label clip `vid` (a clip, or a prefix of `video`).

    A prefix clip is a negative: no risky or event time, no event; its meta records where it was
    cut. A positive clip without event time gets the effective one (t_r + alert_s) so that every
    scorer uses the same rule, and its meta says so.
    """
    src = cfg.sources[source]
    meta = json.loads(video["meta"]) if video["meta"] else {}
    rec = {
        "_clip": vid,
        "split": assign_split(
            vid, video["official_split"], src.split_map, cfg.splits.fractions, cfg.splits.salt
        ),
        "path": video["path"],
        "fps": video["fps"],
        "n_frames": video["n_frames"],
        "is_positive": video["is_positive"],
        "t_risky_s": video["t_risky_s"],
        "t_event_s": video["t_event_s"],
        "ego_involved": video["ego_involved"],
        "event_type": video["event_type"],
    }
    why = peer_test.get(video["video_id"])
    if why is not None and rec["split"] != "test":
        rec["_moved_from"] = rec["split"]
        rec["split"] = "test"
        meta = {**meta, "moved_to_test": f"peers evaluate on it ({why}); assigned {rec['_moved_from']}"}
    if vid != video["video_id"]:
        if not video["is_positive"] or video["t_risky_s"] is None:
            raise ValueError(f"{source}: prefix clip {vid} of a clip without risky time")
        meta = {
            "prefix_of": video["video_id"],
            "prefix_cut_s": prefix_cut(video["t_risky_s"], cfg.labels),
            "parent_meta": meta,
        }
        rec.update(is_positive=False, t_risky_s=None, t_event_s=None, ego_involved=None, event_type=None)
    elif video["is_positive"] and video["t_event_s"] is None:
        rec["t_event_s"] = effective_t_event(video["t_risky_s"], None, cfg.labels)
        meta = {**meta, "t_event_s_rule": "t_risky_s + labels.alert_s (the source gives no event time)"}
    rec["meta"] = json.dumps(meta, sort_keys=True, default=str)
    return rec


def _join_source(
    labels: pa.Table,
    videos: pa.Table,
    beliefs: pa.Table | None,
    source: str,
    cfg: WorkflowConfig,
    peer_test: dict[str, str],
    moved: dict[str, list[dict[str, str]]],
) -> pa.Table:
    labels = check_table("labels", labels, f"labels[{source}]")
    by_id = {v["video_id"]: v for v in videos.to_pylist()}
    label_ids = labels.column("video_id").to_pylist()
    parents = labels.column("parent_id").to_pylist()
    position: dict[str, int] = {}
    records = []
    for vid, par in zip(label_ids, parents, strict=True):
        if vid in position:
            continue
        base = parent_id(vid)
        if (par is not None or base != vid) and par != base:
            raise ValueError(f"labels[{source}]: clip {vid} has parent_id {par!r}, expected {base!r}")
        if base not in by_id:
            raise ValueError(f"labels[{source}]: clip {vid} is not in the videos table of source {source}")
        position[vid] = len(records)
        rec = _clip_record(vid, by_id[base], source, cfg, peer_test)
        if "_moved_from" in rec and vid == base:
            entry = {"video_id": vid, "assigned": rec["_moved_from"], "why": peer_test[base]}
            moved.setdefault(source, []).append(entry)
        records.append(rec)
    _check_peer_test_moves(moved.get(source, []), source, cfg)
    clip_cols = pa.Table.from_pylist(records, schema=_CLIP_SCHEMA)
    joined = clip_cols.take(pa.array([position[v] for v in label_ids], pa.int64()))
    for field in _CLIP_FIELDS:
        labels = labels.append_column(field, joined.column(field.name))
    return _join_beliefs(labels, beliefs, source)


def _check_peer_test_moves(moved: list[dict[str, str]], source: str, cfg: WorkflowConfig) -> None:
    if moved and cfg.strict:
        shown = ", ".join(f"{m['video_id']} ({m['why']}; assigned {m['assigned']})" for m in moved[:10])
        more = f" ... ({len(moved)} in all)" if len(moved) > 10 else ""
        raise PeerTestLeakError(
            f"source {source}: clips that peers evaluate on would land in train/val: {shown}{more}. "
            f"Fix sources.{source}.split_map / split_files, or set strict: false to move them to test."
        )


def _join_beliefs(table: pa.Table, beliefs: pa.Table | None, source: str) -> pa.Table:
    """Attach each tick's belief; every trainable tick must have one, and no belief may be orphaned.

    `beliefs` None means the run has no beliefs stage: the belief columns stay null.
    """
    if beliefs is None:
        for name in _BELIEF_COLUMNS.values():
            table = table.append_column(BENCHMARK.field(name), pa.nulls(table.num_rows, pa.string()))
        return table.select(BENCHMARK.names)
    beliefs = check_table("beliefs", beliefs, f"beliefs[{source}]")
    renamed = beliefs.select(["video_id", "tick", *_BELIEF_COLUMNS]).rename_columns(
        ["video_id", "tick", *_BELIEF_COLUMNS.values()]
    )
    # Arrow's join cannot carry list columns (frame_idx): join the keys with a row number, then attach.
    keys = table.select(["video_id", "tick"]).append_column(
        "_row", pa.array(range(table.num_rows), pa.int64())
    )
    matched = keys.join(renamed, keys=["video_id", "tick"], join_type="left outer").sort_by("_row")
    if matched.num_rows != table.num_rows:
        raise ValueError(f"beliefs[{source}]: a (video_id, tick) appears twice in the beliefs table")
    joined = table
    for name in _BELIEF_COLUMNS.values():
        joined = joined.append_column(BENCHMARK.field(name), matched.column(name))
    trainable = pc.and_(pc.invert(joined.column("excluded")), pc.is_null(joined.column("parent_id")))
    lacking = joined.filter(pc.and_(trainable, pc.is_null(joined.column("belief"))))
    if lacking.num_rows:
        first = lacking.slice(0, 1).to_pylist()[0]
        raise ValueError(
            f"beliefs[{source}]: {lacking.num_rows} trainable tick(s) have no belief, "
            f"e.g. clip {first['video_id']} tick {first['tick']}"
        )
    trainable_keys = table.filter(
        pc.and_(pc.invert(table.column("excluded")), pc.is_null(table.column("parent_id")))
    )
    if beliefs.num_rows != trainable_keys.num_rows:
        raise ValueError(
            f"beliefs[{source}]: {beliefs.num_rows} beliefs for {trainable_keys.num_rows} trainable ticks "
            "(beliefs for unknown, excluded or prefix ticks)"
        )
    # Prefix and excluded ticks keep null beliefs even where the parent's tick has one.
    untrainable = pc.invert(trainable)
    for name in _BELIEF_COLUMNS.values():
        col = pc.if_else(untrainable, pa.scalar(None, pa.string()), joined.column(name))
        joined = joined.set_column(joined.schema.get_field_index(name), name, col)
    return joined.select(BENCHMARK.names)


def _belief_counts(table: pa.Table) -> dict[str, Any]:
    """source -> provider counts and hazard x action counts of the beliefs in the benchmark."""
    out: dict[str, Any] = {}
    for source in sorted(set(table.column("source").to_pylist())):
        part = table.filter(
            pc.and_(pc.equal(table.column("source"), source), pc.is_valid(table.column("belief")))
        )
        hazards = [json.loads(b)["hazard"] for b in part.column("belief").to_pylist()]
        pairs = Counter(zip(hazards, part.column("action").to_pylist(), strict=True))
        out[source] = {
            "providers": dict(Counter(part.column("belief_provider").to_pylist())),
            "hazard_x_action": {f"{h}|{a}": n for (h, a), n in sorted(pairs.items())},
        }
    return out


def _check_no_leak(table: pa.Table) -> None:
    seen: dict[str, set[str]] = {}
    for vid, split in zip(
        table.column("video_id").to_pylist(), table.column("split").to_pylist(), strict=True
    ):
        seen.setdefault(parent_id(vid), set()).add(split)
    leaks = {vid: sorted(s) for vid, s in seen.items() if len(s) > 1}
    if leaks:
        shown = dict(list(sorted(leaks.items()))[:10])
        raise SplitLeakError(f"{len(leaks)} clip(s) appear in more than one split: {shown}")


def _tick_counts(table: pa.Table) -> dict[str, dict[str, dict[str, int]]]:
    """split -> source -> {SILENT, OBSERVE, ALERT, excluded, prefix}: a partition of the ticks.

    Action counts are the ticks a model is trained and scored on; excluded (post-event) ticks and
    prefix-negative ticks (the parent's ticks again, clip-level scoring only) are counted apart.
    """
    cols = [table.column(c).to_pylist() for c in ("split", "source", "action", "excluded", "parent_id")]
    counter = Counter()
    for split, source, action, excluded, par in zip(*cols, strict=True):
        kind = "excluded" if excluded else "prefix" if par is not None else action
        counter[(split, source, kind)] += 1
    sources = sorted(set(cols[1]))
    return {
        split: {
            s: {
                k: counter[(split, s, k)]
                for k in (Action.SILENT.name, Action.OBSERVE.name, Action.ALERT.name, "excluded", "prefix")
            }
            for s in sources
            if any(
                counter[(split, s, k)]
                for k in (Action.SILENT.name, Action.OBSERVE.name, Action.ALERT.name, "excluded", "prefix")
            )
        }
        for split in SPLITS
    }


def _clip_counts(table: pa.Table) -> dict[str, dict[str, dict[str, int]]]:
    pairs = set(
        zip(*(table.column(c).to_pylist() for c in ("split", "source", "video_id", "parent_id")), strict=True)
    )
    out: dict[str, dict[str, dict[str, int]]] = {split: {} for split in SPLITS}
    for split, source, _vid, par in pairs:
        entry = out[split].setdefault(source, {"clips": 0, "prefix_clips": 0})
        entry["prefix_clips" if par is not None else "clips"] += 1
    return {split: dict(sorted(v.items())) for split, v in out.items()}


def _rule_counts(split_rules: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """source -> rule -> ticks over all splits (the sum of `_split_source_rules`)."""
    counter: Counter = Counter()
    for by_source in split_rules.values():
        for source, rules in by_source.items():
            counter.update({(source, rule): n for rule, n in rules.items()})
    out: dict[str, dict[str, int]] = {}
    for (source, rule), n in sorted(counter.items()):
        out.setdefault(source, {})[rule] = n
    return out


def _split_source_rules(table: pa.Table) -> dict[str, dict[str, dict[str, int]]]:
    """split -> source -> rule -> ticks: every rule, the ones that changed a label ("a->b:why") included."""
    cols = (table.column(c).to_pylist() for c in ("split", "source", "rule"))
    counter = Counter(zip(*cols, strict=True))
    out: dict[str, dict[str, dict[str, int]]] = {split: {} for split in SPLITS}
    for (split, source, rule), n in sorted(counter.items()):
        out[split].setdefault(source, {})[rule] = n
    return out


def _positives(table: pa.Table) -> dict[str, dict[str, int]]:
    """split -> source -> positive clips (prefix clips are negatives and not counted)."""
    cols = (table.column(c).to_pylist() for c in ("split", "source", "video_id", "is_positive", "parent_id"))
    clips = {(sp, so, v) for sp, so, v, pos, par in zip(*cols, strict=True) if pos and par is None}
    counter = Counter((sp, so) for sp, so, _ in clips)
    return {split: {so: n for (sp, so), n in sorted(counter.items()) if sp == split} for split in SPLITS}


def missing_alert_problems(
    positives: dict[str, dict[str, int]],
    ticks: dict[str, dict[str, dict[str, int]]],
    rules: dict[str, dict[str, dict[str, int]]],
) -> list[str]:
    """One message per source that gives positive clips to train but not a single ALERT tick.

    Gating can erase a class silently (a consensus-only gate has no evidence on training clips); the
    message names the rule that took the ALERT ticks (the most frequent ALERT downgrade in train).
    """
    problems = []
    for source, n_pos in sorted(positives["train"].items()):
        if n_pos == 0 or ticks["train"].get(source, {}).get(Action.ALERT.name, 0) > 0:
            continue
        fired = {r: n for r, n in rules["train"].get(source, {}).items() if r.startswith("alert->")}
        if fired:
            rule, n = max(fired.items(), key=lambda kv: (kv[1], kv[0]))
            why = f"rule {rule!r} turned {n} ALERT tick(s) into OBSERVE"
        else:
            post = rules["train"].get(source, {}).get("post-event", 0)
            why = f"no tick fell in an ALERT window ({post} post-event tick(s): collisions at the risky time)"
        problems.append(
            f"source {source}: {n_pos} positive clip(s) in train but 0 ALERT ticks: {why}. "
            f"Check sources.{source}.gate_provider (a chain such as [consensus, badas] scores the clips "
            "that consensus rows do not cover)."
        )
    return problems


def _source_summary(
    source: str, videos: pa.Table | None, rejected: pa.Table | None, labels: pa.Table | None
) -> dict[str, Any]:
    accepted = videos.column("video_id").to_pylist() if videos is not None else []
    rej = rejected.to_pylist() if rejected is not None else []
    labelled = set(labels.column("video_id").to_pylist()) if labels is not None else set()
    # Reasons name their clip; masking the id lets identical failures be counted together.
    reasons = Counter(
        r["reason"].replace(r["video_id"], "<id>") if r["video_id"] else r["reason"] for r in rej
    )
    return {
        "accepted": len(accepted),
        "rejected": len(rej),
        "rejection_reasons": dict(sorted(reasons.items())),
        "rejected_clips": sorted(
            ({"video_id": r["video_id"], "reason": r["reason"]} for r in rej),
            key=lambda r: (r["video_id"], r["reason"]),
        ),
        "clips_without_ticks": sorted(v for v in accepted if v not in labelled),
    }


def _config_used(cfg: WorkflowConfig) -> dict[str, Any]:
    return {
        "ticks": cfg.ticks.model_dump(),
        "window": cfg.window.model_dump(),
        "labels": cfg.labels.model_dump(),
        "gate": cfg.gate.model_dump(),
        "splits": cfg.splits.model_dump(),
        "sources": {
            name: {
                "kind": src.kind,
                "gate_provider": cfg.gate_chain(name),
                "prefix_negatives": src.prefix_negatives,
                "split_map": dict(src.split_map),
                "consensus": src.consensus,
            }
            for name, src in sorted(cfg.sources.items())
        },
    }


def build_benchmark(
    labels: dict[str, pa.Table],
    videos: dict[str, pa.Table],
    rejected: dict[str, pa.Table],
    cfg: WorkflowConfig,
    beliefs: dict[str, pa.Table] | None = None,
    consensus: dict[str, pa.Table] | None = None,
) -> tuple[dict[str, pa.Table], dict]:
    """Split -> BENCHMARK table (every split present, maybe empty), and the manifest (without file hashes).

    Rows are sorted by source, video_id, tick. Raises SplitLeakError when a clip id (a prefix
    counted as its parent) would land in two splits, e.g. the same id in two sources.
    A clip that peers evaluate on (`peer_test_clips`) never lands in train or val: with strict it
    is an error naming the clips, else it moves to test and the manifest lists it. A source that
    gives train positive clips but zero ALERT ticks is an error with strict, else a manifest warning.
    """
    missing = sorted(set(labels) - set(videos))
    if missing:
        raise ValueError(f"labels given for sources {missing} without their videos table")
    unknown = sorted((set(labels) | set(videos) | set(rejected)) - set(cfg.sources))
    if unknown:
        raise ValueError(f"sources {unknown} are not in the config")
    if beliefs is not None and set(beliefs) != set(labels):
        raise ValueError(f"beliefs given for sources {sorted(beliefs)}, labels for {sorted(labels)}")
    moved: dict[str, list[dict[str, str]]] = {}
    parts = [
        _join_source(
            labels[s],
            videos[s],
            beliefs[s] if beliefs is not None else None,
            s,
            cfg,
            peer_test_clips(videos[s], cfg.sources[s].kind, (consensus or {}).get(s)),
            moved,
        )
        for s in sorted(labels)
    ]
    table = pa.concat_tables(parts) if parts else BENCHMARK.empty_table()
    table = table.sort_by([("source", "ascending"), ("video_id", "ascending"), ("tick", "ascending")])
    table = check_table("benchmark", table)
    _check_no_leak(table)
    splits = {s: table.filter(pc.equal(table.column("split"), s)) for s in SPLITS}
    clips = _clip_counts(table)
    ticks = _tick_counts(table)
    positives = _positives(table)
    split_rules = _split_source_rules(table)
    warnings = missing_alert_problems(positives, ticks, split_rules)
    if warnings and cfg.strict:
        raise MissingClassError("; ".join(warnings))
    manifest = {
        "format": MANIFEST_FORMAT,
        "run": cfg.run,
        "totals": {
            s: {
                "ticks": splits[s].num_rows,
                "clips": sum(v["clips"] for v in clips[s].values()),
                "prefix_clips": sum(v["prefix_clips"] for v in clips[s].values()),
            }
            for s in SPLITS
        },
        "ticks": ticks,
        "clips": clips,
        "positives": positives,
        "rules": _rule_counts(split_rules),
        "rules_by_split": split_rules,
        "moved_to_test": {s: sorted(m, key=lambda e: e["video_id"]) for s, m in sorted(moved.items())},
        "consensus": {
            s: dict(Counter(t.column("decision").to_pylist())) for s, t in sorted((consensus or {}).items())
        },
        "warnings": warnings,
        "beliefs": _belief_counts(table) if beliefs is not None else None,
        "sources": {
            s: _source_summary(s, videos.get(s), rejected.get(s), labels.get(s))
            for s in sorted(set(videos) | set(rejected) | set(labels))
        },
        "config": _config_used(cfg),
    }
    return splits, manifest


def finalize_manifest(manifest: dict, paths: dict[str, str | os.PathLike[str]]) -> dict:
    """A copy of `manifest` with "files": path, bytes, rows and sha256 of each written split file.

    Checks each file's row count against the manifest, so a manifest never vouches for a file
    it was not computed from.
    """
    out = json.loads(json.dumps(manifest))
    missing = sorted(set(out["totals"]) - set(paths))
    if missing:
        raise ValueError(f"no written file given for splits {missing}")
    files = {}
    for split, path in sorted(paths.items()):
        if split not in out["totals"]:
            raise ValueError(f"split {split!r} is not in the manifest")
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != out["totals"][split]["ticks"]:
            raise ValueError(
                f"{path}: {rows} rows, but the manifest counts {out['totals'][split]['ticks']} "
                f"ticks for split {split}"
            )
        files[split] = {
            "path": str(path),
            "bytes": os.path.getsize(path),
            "rows": rows,
            "sha256": sha256_file(path),
        }
    out["files"] = files
    return out


def write_manifest(manifest: dict, path: str | os.PathLike[str]) -> Path:
    """Write the manifest as sorted, indented JSON, atomically (temp file + rename)."""
    return write_json_atomic(manifest, path)
