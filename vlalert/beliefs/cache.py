"""On-disk cache of LLM answers, one JSON file per request, so no answer is ever paid for twice.

The key is the sha256 of everything that decides the answer: the model name, the full prompt
text (system text, instruction, output schema) and the exact bytes of every frame sent. A
rerun, or a resume after the stage was killed, finds every answered request here and sends
only the others. Entries are written to a temp file in the same folder and renamed into place
(`vlalert.atomic.write_bytes_atomic`, readable by all like every other output),
so a kill mid-write leaves either no entry or a complete one; an unreadable entry (e.g. from a
disk error) counts as a miss and is overwritten by the next answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlalert.atomic import write_bytes_atomic


def request_key(model: str, prompt_text: str, frames: Iterable[bytes]) -> str:
    """sha256 over (model, prompt text, frame bytes), each part length-prefixed.

    Length prefixes make the encoding unambiguous: moving a byte from one part to the next
    changes the key.
    """
    chunks = []
    for part in (model.encode(), prompt_text.encode(), *frames):
        chunks += (len(part).to_bytes(8, "big"), part)
    # One update of the joined parts (the same digest as one update per part): hashlib lets go of the
    # GIL for each update over 2 KiB, and every such handover costs a context switch while the other
    # request threads wait for it.
    return hashlib.sha256(b"".join(chunks)).hexdigest()


class ResponseCache:
    """A folder of `{key[:2]}/{key}.json` files (sharded so no folder holds millions of files)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a sha256 hex digest, got {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        try:
            with open(p, encoding="utf-8") as fh:
                value = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, value: dict[str, Any]) -> Path:
        """Write one entry atomically (`vlalert.atomic.write_bytes_atomic`: a temp file of its own in
        the same folder, fsync, rename), readable by all like every other output."""
        p = self.path(key)
        return write_bytes_atomic(json.dumps(value, sort_keys=True).encode("utf-8"), p, fsync=True)

    def keys(self) -> list[str]:
        """Every complete entry's key (temp files of interrupted writes are not entries)."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("??/*.json"))
