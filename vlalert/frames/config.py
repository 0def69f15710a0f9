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

    # "jpeg" (4:4:4): ~60-90 KB per 448 x 448 dashcam frame at quality 95, ~2.4 ms to decode, mean
    # pixel error ~1/255; 250-480 MB per 1 k ticks (benchmarks/results/frames_store.json): the
    # full-scale choice. "raw": the resized pixels themselves, exactly what decoding the clip gives,
    # 602 KB per 448 x 448 frame (~2.5-3.2 GB per 1 k ticks): the demo, whose frames are tiny.
    codec: Literal["jpeg", "raw"] = "jpeg"
    quality: int = Field(95, ge=1, le=100)  # JPEG quality (codec jpeg)
    # speed-only keys (SPEED_KEYS) from here on
    workers: int = Field(4, ge=1, le=64)  # processes decoding clips (the rule's threads)
    chunk_clips: int = Field(64, ge=1)  # clips per resumable chunk: a killed job keeps its done chunks
    progress: bool = True
