"""What a cache shard job reads and which part files a split gathers (no torch: the rules use it).

Every path is the run's layout (vlalert.layout): the model (`Layout.model`), the adapter
(`Layout.adapter`), and `part-{shard}.parquet`, `part-{shard}.summary.json`, `index.json` of a split.
"""

from __future__ import annotations

from typing import Protocol

from vlalert.cache.config import CacheConfig
from vlalert.layout import Layout, adapter_config_file
from vlalert.vlm.config import VLMConfig


class CacheRun(Protocol):
    """What the cache's paths read of a config: the workflow config (the rules), or the cache stage's
    slice (vlalert.stage_config.CacheSlice, the shard script)."""

    @property
    def results(self) -> str: ...

    @property
    def run(self) -> str: ...

    @property
    def model(self) -> VLMConfig: ...

    @property
    def cache(self) -> CacheConfig: ...


def model_location(cfg: CacheRun) -> str:
    """The directory or hub id the stage loads (the locally built demo model for `tiny-qwen3vl`)."""
    return Layout.of(cfg).model(cfg.model)


def adapter_location(cfg: CacheRun) -> str | None:
    """The peft adapter directory attached to the model, or None (`cache.adapter: none`)."""
    return Layout.of(cfg).adapter(cfg.cache)


def shard_ids(cfg: CacheRun) -> list[str]:
    """The `{shard}` wildcard values of a split: 00000, 00001, ..."""
    return [f"{i:05d}" for i in range(cfg.cache.shards)]


def part_files(cfg: CacheRun, split: str) -> list[str]:
    """Every shard's `part-{shard}.parquet` of a split."""
    layout = Layout.of(cfg)
    return [layout.cache_part(split, shard) for shard in shard_ids(cfg)]


def summary_files(cfg: CacheRun, split: str) -> list[str]:
    """Every shard's `part-{shard}.summary.json` of a split."""
    layout = Layout.of(cfg)
    return [layout.cache_part_summary(split, shard) for shard in shard_ids(cfg)]


def shard_inputs(cfg: CacheRun, split: str) -> dict[str, str]:
    """What a shard job reads: the split's benchmark file, the model's config.json when the model
    is a local directory (the tiny demo model is built by a rule; a hub id has no file to track),
    and the adapter's config when an adapter is attached."""
    layout = Layout.of(cfg)
    inputs = {"benchmark": layout.benchmark(split), **layout.model_inputs(cfg.model)}
    adapter = layout.adapter(cfg.cache)
    if adapter is not None:
        inputs["adapter"] = adapter_config_file(adapter)
    return inputs
