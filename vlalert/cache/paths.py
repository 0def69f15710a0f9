"""Where the cache stage reads its model and adapter and writes its files (no torch: the rules use it).

- `{results}/models/tiny-qwen3vl/`: the demo model (built by the sft rules);
- `{results}/sft/{run}/adapter/`: this run's LoRA adapter (peft `save_pretrained`);
- `{results}/cache/{run}/{split}/`: `part-{shard}.parquet`, `part-{shard}.summary.json`, `index.json`.
"""

from __future__ import annotations

from vlalert.config import WorkflowConfig
from vlalert.vlm.config import model_inputs
from vlalert.vlm.config import model_location as vlm_model_location


def model_location(cfg: WorkflowConfig) -> str:
    """The directory or hub id the stage loads (the locally built demo model for `tiny-qwen3vl`)."""
    return vlm_model_location(cfg.model, cfg.results)


def adapter_location(cfg: WorkflowConfig) -> str | None:
    """The peft adapter directory attached to the model, or None (`cache.adapter: none`)."""
    mode = cfg.cache.adapter_mode()
    if mode == "none":
        return None
    if mode == "sft":
        return f"{cfg.results}/sft/{cfg.run}/adapter"
    return cfg.cache.adapter


def shard_ids(cfg: WorkflowConfig) -> list[str]:
    """The `{shard}` wildcard values of a split: 00000, 00001, ..."""
    return [f"{i:05d}" for i in range(cfg.cache.shards)]


def split_dir(cfg: WorkflowConfig, split: str) -> str:
    return f"{cfg.results}/cache/{cfg.run}/{split}"


def part_files(cfg: WorkflowConfig, split: str, suffix: str) -> list[str]:
    """Every shard's `part-{shard}{suffix}` of a split (".parquet" or ".summary.json")."""
    return [f"{split_dir(cfg, split)}/part-{shard}{suffix}" for shard in shard_ids(cfg)]


def shard_inputs(cfg: WorkflowConfig, split: str) -> dict[str, str]:
    """What a shard job reads: the split's benchmark file, the model's config.json when the model
    is a local directory (the tiny demo model is built by a rule; a hub id has no file to track),
    and the run's adapter config when an adapter is attached."""
    inputs = {"benchmark": f"{cfg.results}/benchmark/{split}.parquet", **model_inputs(cfg.model, cfg.results)}
    adapter = adapter_location(cfg)
    if adapter is not None:
        inputs["adapter"] = f"{adapter}/adapter_config.json"
    return inputs
