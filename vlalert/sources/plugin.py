"""A source kind as one plugin: what the pipeline knows about one published dataset, in one class.

Each adapter module (`vlalert/sources/<kind>.py`) defines one subclass of `SourceKind` next to the
code that reads the format; `vlalert.sources.registry` lists the subclasses and derives everything
else per kind from them (the kind names, their fps, the layout checks, the default file names). The
demo writer of a kind (`vlalert.sources.synthetic.DEMOS`) names its plugin in turn. Adding a source
kind is: a module with its subclass, a line in the registry, its name in the config's `SourceKindName`
literal (the config validates `kind:` before any adapter is imported) and its demo writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.checks import FolderSpec, Problem, SourceLike
from vlalert.sources.common import annotation_candidates


class SourceKind:
    """One source kind; used as the class itself (class attributes and class methods), never instantiated."""

    KIND: ClassVar[str]  # the config's `sources.<name>.kind`
    FPS: ClassVar[float]  # the frame rate the source documents for its clips
    # The clock the BADAS consensus CSV's times were written on (None: seconds of the video itself);
    # `sources.<name>.consensus_clock_fps` overrides it (README "Clocks").
    CONSENSUS_CLOCK_FPS: ClassVar[float | None]
    PEER_TEST_SPLITS: ClassVar[tuple[str, ...]]  # official splits that peers evaluate on
    DEFAULT_FILES: ClassVar[tuple[str, ...]]  # annotation files under root when `annotations` is unset
    OBTAIN: ClassVar[str]  # where to get the source, named in every problem of its layout check

    @staticmethod
    def read_annotations(
        name: str, src: Any, *, check_videos: bool = True
    ) -> tuple[list[Annotation], list[Rejection]]:
        """The source's own annotations (before consensus and video checks) and the rows it cannot use."""
        raise NotImplementedError

    @staticmethod
    def check_layout(src: SourceLike, problems: list[Problem], warnings: list[Problem]) -> dict[str, Any]:
        """Append what `src` lacks (each naming OBTAIN) to problems/warnings; return what was found."""
        raise NotImplementedError

    @staticmethod
    def media_folders(src: SourceLike) -> Iterator[FolderSpec]:
        """The folders (relative to root) where the adapter may read clip files, for the source listing."""
        raise NotImplementedError

    @classmethod
    def annotation_candidates(cls, src: SourceLike) -> list[Path]:
        """The annotation files the adapter looks for: `src.annotations`, else DEFAULT_FILES under root."""
        return annotation_candidates(src, cls.DEFAULT_FILES)

    @classmethod
    def consensus_video_id(cls, key: str) -> str:
        """The video_id a BADAS consensus `id` (without `.mp4`) names; the id itself unless the kind says."""
        return key
