"""Which plugin is which source kind: the one list of source kinds, and what follows from it.

Each kind is one class in its adapter module (a `vlalert.sources.plugin.SourceKind`); everything the
pipeline looks up per kind goes through `adapter_for` or the tables derived here. The config names
the kinds it accepts before any adapter is imported (`vlalert.config.SourceKindName`, a Literal): this
module refuses to load unless the two lists agree.
"""

from __future__ import annotations

from vlalert.config import SOURCE_KINDS, SourceConfig
from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.dad import Dad
from vlalert.sources.dada2000 import Dada2000
from vlalert.sources.dota import Dota
from vlalert.sources.nexar import Nexar
from vlalert.sources.plugin import SourceKind

ADAPTERS: dict[str, type[SourceKind]] = {plugin.KIND: plugin for plugin in (Nexar, Dada2000, Dota, Dad)}
KINDS: tuple[str, ...] = tuple(ADAPTERS)
KIND_FPS: dict[str, float] = {kind: plugin.FPS for kind, plugin in ADAPTERS.items()}

if KINDS != SOURCE_KINDS:
    raise ImportError(
        f"the source kinds of vlalert.sources.registry {list(KINDS)} differ from those the config accepts "
        f"(vlalert.config.SourceKindName) {list(SOURCE_KINDS)}: a kind is added or removed in both"
    )


def adapter_for(kind: str) -> type[SourceKind]:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"no adapter for source kind {kind!r}; known kinds: {sorted(ADAPTERS)}") from None


def read_source_annotations(
    name: str, src: SourceConfig, *, check_videos: bool = True
) -> tuple[list[Annotation], list[Rejection]]:
    """The source's own annotations (before consensus and video checks) and the rows it could not use."""
    return adapter_for(src.kind).read_annotations(name, src, check_videos=check_videos)
