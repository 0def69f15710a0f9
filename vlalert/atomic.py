"""Atomic file writes: every output is written beside its final path and renamed into place.

A killed job then leaves either the old file or the new one, never a half-written file that
Snakemake, a resumed stage or a reader would take for complete. One implementation for every
stage, so the guarantee (and the file mode) is the same everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`: it replaces `path` when the block succeeds, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are read by other users' jobs too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(obj: Any, path: str | os.PathLike[str], *, indent: int | None = 2) -> Path:
    """Sorted JSON with a trailing newline, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(path)


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()
