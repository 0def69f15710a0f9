"""Configuration of the cache stage: which hidden states become z_t and r_t, and how the work is cut.

Layer indices follow transformers' `output_hidden_states` tuple of the text model, which has
num_hidden_layers + 1 entries: index 0 is the token embeddings, index i (1 <= i < L) the residual
stream after decoder layer i, and index L the last layer's output *after* the final RMSNorm (the
tensor the LM head reads). The defaults are the reference choice for Qwen3-VL-4B (L = 36): z_t from
layers 20, 24, 28, 32 (4 x 2,560 = 10,240 values), r_t from layer 33. A model of another depth
(the tiny demo model has 4 layers) needs its own lists; `layer_problem` checks them against the
depth, at parse time for the tiny model (its depth is in the config) and when a job loads a model.

Pydantic only, no torch: the Snakefile reads this module at parse time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vlalert.strict import StrictModel

# Keys that change how fast the cache is computed, or where, but not what it holds beyond float
# rounding (the patch fusion and the second pass's mode included): left out of the stage's params
# and of the chunk fingerprints, so changing them reruns nothing and a resume may mix them.
SPEED_KEYS: tuple[str, ...] = (
    "batch_size",
    "chunk_ticks",
    "workers",
    "device",
    "progress",
    "patch_embed",
    "hidden_pass",
    "kv_cache",
)


class CacheConfig(StrictModel):
    """The `cache:` section of the workflow config."""

    belief_layers: tuple[int, ...] = (20, 24, 28, 32)  # z_t: mean over the belief span at each, concatenated
    policy_layer: int = 33  # r_t: the hidden state at the <|/BELIEF|> close tag at this index
    # Splits whose z/r are read from the benchmark's target text (teacher forcing) instead of the
    # model's own generation; the others are generated (greedy). Targets exist on trainable ticks.
    teacher_forced_splits: tuple[Literal["train", "val", "test"], ...] = ()
    # "sft": this run's LoRA adapter from the sft stage (results/sft/{run}/adapter); "none": the
    # base model as loaded; anything else: the path of a peft adapter directory.
    adapter: str = "sft"
    merge_adapter: bool = True  # fold the LoRA weights into the base weights before extracting
    shards: int = Field(1, ge=1, le=4096)  # scatter jobs per split (one GPU each on a cluster)
    # speed-only keys (SPEED_KEYS) from here on
    # "library": transformers' load-time Conv3d -> Linear fusion (process-global); "inplace": our
    # swap after loading (vlalert.vlm.patch); "none": keep the Conv3d.
    patch_embed: Literal["library", "inplace", "none"] = "library"
    # "cached": after generating, run the generated tokens once more over the prompt's key/value
    # cache (the prompt and the video are not recomputed); "full": one forward pass over prompt +
    # generated tokens from scratch. Equal up to float rounding (tested); "cached" costs ~1/10.
    hidden_pass: Literal["cached", "full"] = "cached"
    # Generation's key/value cache (vlalert.cache.extract): "dynamic" (transformers' default) or
    # "static", preallocated at a bucketed length so that on CUDA transformers compiles the decoding
    # step once per batch size. Same tokens and states; which is faster is the GPU suite's to say.
    kv_cache: Literal["dynamic", "static"] = "dynamic"
    batch_size: int = Field(8, ge=1)  # ticks per generate/forward call, after sorting by length
    chunk_ticks: int = Field(256, ge=1)  # ticks per resumable chunk inside a shard job
    workers: int = Field(2, ge=1, le=64)  # processes that decode and resize frames ahead of the model
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available
    progress: bool = True  # tqdm bar (ticks/s) in the job log

    @field_validator("belief_layers")
    @classmethod
    def _layers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("cache.belief_layers must name at least one layer")
        if len(set(v)) != len(v):
            raise ValueError(f"cache.belief_layers holds duplicates: {list(v)}")
        return v

    def layer_problem(self, num_hidden_layers: int) -> str | None:
        """Why the layer lists do not fit a text model of this depth, or None when they do."""
        valid = range(0, num_hidden_layers + 1)
        bad = [i for i in self.belief_layers if i not in valid]
        msgs = []
        if bad:
            msgs.append(f"cache.belief_layers {bad}")
        if self.policy_layer not in valid:
            msgs.append(f"cache.policy_layer {self.policy_layer}")
        if not msgs:
            return None
        return (
            f"{' and '.join(msgs)} outside [0, {num_hidden_layers}] for a model with {num_hidden_layers} "
            "text layers (index 0: embeddings, i: after layer i, the last: after the final norm)"
        )

    def adapter_mode(self) -> str:
        """ "sft", "none" or "path"."""
        return self.adapter if self.adapter in ("sft", "none") else "path"

    def z_width(self, hidden_size: int) -> int:
        return len(self.belief_layers) * hidden_size
