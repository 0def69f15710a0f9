"""Which adapter reads which source kind: the one place a new source is plugged in."""

from __future__ import annotations

from types import ModuleType

from vlalert.config import SourceConfig
from vlalert.sources import dad, dada2000, dota, nexar
from vlalert.sources.base import Annotation, Rejection

# Each adapter module provides `read_annotations(name, src, *, check_videos=True)` and `FPS`.
ADAPTERS: dict[str, ModuleType] = {
    "nexar": nexar,
    "dada2000": dada2000,
    "dota": dota,
    "dad": dad,
}


def adapter_for(kind: str) -> ModuleType:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"no adapter for source kind {kind!r}; known kinds: {sorted(ADAPTERS)}") from None


def read_source_annotations(
    name: str, src: SourceConfig, *, check_videos: bool = True
) -> tuple[list[Annotation], list[Rejection]]:
    """The source's own annotations (before consensus and video checks) and the rows it could not use."""
    return adapter_for(src.kind).read_annotations(name, src, check_videos=check_videos)
