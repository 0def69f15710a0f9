"""Configuration of the frames stage: how the decode-once store encodes the tick windows' frames.

Pydantic only, no torch: the Snakefile reads this module at parse time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlalert.strict import StrictModel

# Keys that change how fast the store is written, not its bytes (one record batch per clip, in clip
# order, whatever the chunking): left out of the stage's params and of the chunk fingerprints.
SPEED_KEYS: tuple[str, ...] = ("workers", "chunk_clips", "progress")


class FramesConfig(StrictModel):
    """The `frames:` section of the workflow config (vlalert.frames.store)."""

    # "jpeg": ~25-45 KB per 448 x 448 frame at quality 95, a few ms to decode (the full-scale choice:
    # ~132 k ticks share ~4 frames each); "raw": the resized uint8 pixels themselves, exactly what
    # decoding the clip gives (the demo: its frames are tiny), ~600 KB per 448 x 448 frame.
    codec: Literal["jpeg", "raw"] = "jpeg"
    quality: int = Field(95, ge=1, le=100)  # JPEG quality (codec jpeg)
    # speed-only keys (SPEED_KEYS) from here on
    workers: int = Field(4, ge=1, le=64)  # processes decoding clips (the rule's threads)
    chunk_clips: int = Field(64, ge=1)  # clips per resumable chunk: a killed job keeps its done chunks
    progress: bool = True
