"""Resumable SFT checkpoints: `transformers.Trainer` writes them, vlalert seals, finds and prunes them.

The Trainer saves a checkpoint as `checkpoint-N/` under the run's `checkpoints/` (adapter, optimiser,
scheduler, each rank's RNG state, trainer_state.json), writing straight into that directory. A
process killed during the save leaves a directory with some of those files. So once every rank has
saved, rank 0 writes `vlalert_state.json` into it, atomically (written aside, then renamed) and last:
it lists the other files and carries what the Trainer does not keep (the run's fingerprint, the
train/val log, elapsed seconds). Only a sealed directory whose listed files all exist counts; one
without a seal is ignored by `latest_checkpoint` and deleted by `remove_stale` when a run starts.

Rotation is done here too (`prune`, after the seal) rather than by the Trainer's `save_total_limit`:
the Trainer deletes the older checkpoints before the new one is complete, so a kill during a save
with `keep_checkpoints: 1` would leave nothing to resume from.

Checkpoints are not Snakemake outputs, so a failed job keeps them; that is the point, but it means
a later run with a different config or different training data must not resume from them. The seal
therefore carries a fingerprint of what determines the run (config keys that change the result,
the model, the train ticks), and only checkpoints with the run's fingerprint count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlalert.atomic import write_json_atomic

SEAL = "vlalert_state.json"
PREFIX = "checkpoint-"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-"
_STEP_RE = re.compile(r"^checkpoint-(\d+)$")

log = logging.getLogger(__name__)


def run_fingerprint(obj: Mapping[str, Any]) -> str:
    """sha256 of a JSON-serialisable description of the run (keys sorted): what a seal carries."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step}"


def seal(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write the seal last: it lists the files already in `path` and makes the checkpoint count."""
    path = Path(path)
    files = sorted(
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and p.name != SEAL and p.suffix != ".part" and not p.name.startswith(f".{SEAL}.")
    )
    write_json_atomic({**state, "files": files}, path / SEAL)


def read_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The seal of a complete checkpoint directory, or None when it is incomplete."""
    path = Path(path)
    try:
        state = json.loads((path / SEAL).read_text())
    except (OSError, ValueError):
        return None
    files = state.get("files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not files or not all((path / str(f)).is_file() for f in files):
        return None
    return state


def complete_checkpoints(
    root: str | os.PathLike[str], expected_fingerprint: str | None = None
) -> list[tuple[int, Path]]:
    """(step, dir) of every sealed checkpoint under `root` (with that fingerprint, if given)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for path in root.iterdir():
        m = _STEP_RE.match(path.name)
        if not m or not path.is_dir():
            continue
        state = read_state(path)
        if state is None:
            log.warning("ignoring incomplete checkpoint %s", path)
            continue
        if expected_fingerprint is not None and state.get("fingerprint") != expected_fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to a different config or data set", path)
            continue
        out.append((int(m.group(1)), path))
    return sorted(out)


def latest_checkpoint(root: str | os.PathLike[str], expected_fingerprint: str) -> Path | None:
    found = complete_checkpoints(root, expected_fingerprint)
    return found[-1][1] if found else None


def prune(root: str | os.PathLike[str], expected_fingerprint: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` sealed checkpoints of the run; return what was deleted."""
    old = [path for _, path in complete_checkpoints(root, expected_fingerprint)[:-keep]]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def remove_stale(root: str | os.PathLike[str], expected_fingerprint: str) -> list[Path]:
    """Delete checkpoint directories this run can never resume (unsealed, or another fingerprint).

    Called when a run starts: Snakemake reran the job because its config or data changed, so
    those checkpoints are dead weight, and left in place a stale one with a higher step would
    outrank the new run's own checkpoints when old ones are pruned.
    """
    root = Path(root)
    keep = {path for _, path in complete_checkpoints(root, expected_fingerprint)}
    removed = []
    if root.is_dir():
        for path in root.iterdir():
            if _STEP_RE.match(path.name) and path.is_dir() and path not in keep:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return sorted(removed)
