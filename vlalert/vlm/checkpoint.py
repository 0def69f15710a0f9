"""Resumable SFT checkpoints: written atomically, found again after a kill, never trusted blindly.

A checkpoint is a directory `step-XXXXXXXX/` under the run's `checkpoints/`. It is written under a
staging name (`.tmp-step-XXXXXXXX`) and renamed into place only when every file is on disk, with
`state.json` written last and listing the other files. A rename within one directory is atomic, so
a process killed at any moment leaves either a complete checkpoint or a staging directory that
`latest_checkpoint` ignores (and `clean_staging` removes). A `step-*` directory that still lacks a
file (copied by hand, a full disk) is ignored as well.

Checkpoints are not Snakemake outputs, so a failed job keeps them; that is the point, but it means
a later run with a different config or different training data must not resume from them. Each
`state.json` therefore carries a fingerprint of what determines the run (config keys that change
the result, the model, the train ticks), and only checkpoints with the run's fingerprint count.
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

STATE = "state.json"
STAGING_PREFIX = ".tmp-"
_STEP_RE = re.compile(r"^step-(\d{8})$")

log = logging.getLogger(__name__)


def fingerprint(obj: Mapping[str, Any]) -> str:
    """sha256 of a JSON-serialisable description of the run (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def staging_dir(root: str | os.PathLike[str], step: int) -> Path:
    """Where the checkpoint of `step` is assembled before it is committed (emptied if it exists)."""
    path = Path(root) / f"{STAGING_PREFIX}{checkpoint_name(step)}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_state(staging: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write state.json last: it lists the files already in `staging` and seals the checkpoint."""
    staging = Path(staging)
    files = sorted(p.name for p in staging.iterdir() if p.is_file() and p.name != STATE)
    body = {**state, "files": files}
    tmp = staging / f"{STATE}.part"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, staging / STATE)


def commit(staging: str | os.PathLike[str], keep: int) -> Path:
    """Rename a sealed staging directory into place; keep the newest `keep` checkpoints of its run."""
    staging = Path(staging)
    state = read_state(staging)
    if state is None:
        raise RuntimeError(f"{staging}: not sealed (no complete {STATE}); refusing to commit")
    name = staging.name.removeprefix(STAGING_PREFIX)
    final = staging.parent / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    steps = complete_checkpoints(final.parent, state.get("fingerprint"))
    for _, path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def read_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """state.json of a complete checkpoint directory, or None when it is incomplete."""
    path = Path(path)
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, ValueError):
        return None
    files = state.get("files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not all((path / str(f)).is_file() for f in files):
        return None
    return state


def complete_checkpoints(
    root: str | os.PathLike[str], expected_fingerprint: str | None = None
) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint under `root` (with that fingerprint, if given)."""
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


def remove_stale(root: str | os.PathLike[str], expected_fingerprint: str) -> list[Path]:
    """Delete checkpoint directories this run can never resume (incomplete, or another fingerprint).

    Called when a run starts: Snakemake reran the job because its config or data changed, so
    those checkpoints are dead weight, and left in place a stale one with a higher step would
    outrank the new run's own checkpoints when old ones are dropped.
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


def clean_staging(root: str | os.PathLike[str]) -> None:
    """Remove staging directories a killed run left behind."""
    root = Path(root)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(STAGING_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
