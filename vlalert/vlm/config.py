"""Configuration of the VLM stage's model side: which model, its input geometry, its prompt.

The same `VLMConfig` drives the demo (`name_or_path: tiny-qwen3vl`, a Qwen3-VL architecture at toy
width built locally from `tiny`) and real runs (`name_or_path: Qwen/Qwen3-VL-4B-Instruct` or a
local directory, where `tiny` is ignored). The workflow config nests it under `model:`.

Frames are resized to a fixed `image_height` x `image_width` rather than to the size the Qwen
processor would pick per clip (its `smart_resize`): every tick then costs the same number of vision
tokens, so batches pack evenly and the cache stage's throughput does not depend on the source's
resolution. Both sides must be multiples of patch_size x spatial_merge_size (32 for Qwen3-VL), the
grid the 2x2 merger needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vlalert.download_config import COMMIT_RE
from vlalert.strict import StrictModel

TINY_NAME = "tiny-qwen3vl"

DEFAULT_SYSTEM_PROMPT = (
    "You are a driving-safety assistant watching the forward dashcam of the ego vehicle. "
    "You warn the driver only when a collision is likely."
)
DEFAULT_INSTRUCTION = (
    "Describe what happens in the last two seconds of this dashcam video, then give your safety "
    "assessment as a belief span and choose one action: SILENT, OBSERVE or ALERT."
)


class PretrainConfig(StrictModel):
    """`model.tiny.pretrain`: the tiny model's perception pretraining (vlalert.vlm.pretrain).

    Off by default (steps 0: random weights, as the unit tests want them); the demo config turns it
    on, since a VLM that was never shown a road cannot learn to see one from the demo's few ticks.
    """

    scenes: int = Field(400, ge=1)  # synthetic clips rendered for the corpus
    windows_per_scene: int = Field(4, ge=1)
    steps: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    width: int = Field(160, ge=32)  # rendered frame size (the demo's clips are 160 x 96)
    height: int = Field(96, ge=32)
    max_duration_s: float = Field(12.0, ge=4.0)
    seed: int = Field(12345, ge=0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    log_every: int = Field(50, ge=1)
    # Share of a positive scene's windows that end between its risky time and its event: most of a
    # clip is uneventful, and captions of nothing but "keeping its distance" teach the majority text.
    hazard_share: float = Field(0.5, ge=0.0, le=1.0)
    # First phase: the vision tower alone, regressing what the renderer knows (proximity and danger
    # of the salient road user, where it is, how it moves) from its pooled output: a dense signal the
    # caption's few tokens do not give a tower that starts from random weights.
    vision_steps: int = Field(0, ge=0)
    vision_batch_size: int = Field(32, ge=1)
    vision_lr: float = Field(1e-3, gt=0)

    @property
    def enabled(self) -> bool:
        """Either phase runs (the corpus is rendered and the model trained)."""
        return bool(self.steps or self.vision_steps)

    @model_validator(mode="after")
    def _warmup(self) -> PretrainConfig:
        if self.steps and self.warmup_steps >= self.steps:
            raise ValueError("tiny.pretrain.warmup_steps must be below tiny.pretrain.steps")
        return self


class TinyModelConfig(StrictModel):
    """Widths of the locally built demo model (a real Qwen3-VL architecture, toy sizes).

    The defaults keep a forward + backward pass of 4 ticks (8 frames each at 64 x 96) well under a
    second on one CPU core while still exercising every part of the real architecture: GQA,
    interleaved M-RoPE, the 2x2 patch merger and DeepStack injection into the first text layers.
    """

    vocab_size: int = Field(2048, ge=512, le=65536)  # BPE vocabulary trained on the belief corpus
    min_frequency: int = Field(2, ge=1)  # BPE: a merge needs this many occurrences
    hidden_size: int = Field(128, ge=16)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    head_dim: int = Field(32, ge=8)
    intermediate_size: int = Field(256, ge=16)
    mrope_section: tuple[int, int, int] = (6, 5, 5)  # (t, h, w) frequency split, sums to head_dim // 2
    rope_theta: float = Field(5_000_000.0, gt=0)
    max_position_embeddings: int = Field(4096, ge=256)
    vision_depth: int = Field(2, ge=1)
    vision_hidden_size: int = Field(64, ge=16)
    vision_num_heads: int = Field(4, ge=1)
    vision_intermediate_size: int = Field(256, ge=16)
    vision_num_position_embeddings: int = Field(64, ge=4)  # a square: the learned position grid is n x n
    deepstack_visual_indexes: tuple[int, ...] = (
        0,
        1,
    )  # vision blocks whose output feeds text layers 0, 1, ...
    tie_word_embeddings: bool = True  # as Qwen3-VL-4B
    seed: int = Field(0, ge=0)  # random initialisation: the directory is a function of (corpus, config, seed)
    pretrain: PretrainConfig = PretrainConfig()  # perception pretraining (vlalert.vlm.pretrain)

    @model_validator(mode="after")
    def _consistent(self) -> TinyModelConfig:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("tiny.num_attention_heads must be a multiple of tiny.num_key_value_heads")
        if sum(self.mrope_section) != self.head_dim // 2:
            raise ValueError(
                f"tiny.mrope_section must sum to head_dim // 2 = {self.head_dim // 2}, "
                f"got {sum(self.mrope_section)}"
            )
        if self.vision_hidden_size % self.vision_num_heads:
            raise ValueError("tiny.vision_hidden_size must be divisible by tiny.vision_num_heads")
        if (self.vision_hidden_size // self.vision_num_heads) % 4:
            raise ValueError("the vision head dim must be a multiple of 4 (2-D axial rotary embedding)")
        side = round(self.vision_num_position_embeddings**0.5)
        if side * side != self.vision_num_position_embeddings:
            raise ValueError("tiny.vision_num_position_embeddings must be a perfect square")
        bad = [i for i in self.deepstack_visual_indexes if not 0 <= i < self.vision_depth]
        if bad:
            raise ValueError(
                f"tiny.deepstack_visual_indexes {bad} outside [0, vision_depth={self.vision_depth})"
            )
        if len(self.deepstack_visual_indexes) > self.num_hidden_layers:
            raise ValueError("tiny.deepstack_visual_indexes: more DeepStack levels than text layers")
        return self


class VLMConfig(StrictModel):
    """Model identity, frame geometry and prompt of the VLM stage (nested as `model:`)."""

    name_or_path: str = TINY_NAME  # "tiny-qwen3vl": build locally; else a hub id or a local model directory
    # The hub revision of a hub id: a 40-character commit sha, so that a run months later loads the
    # same weights and tokenizer (a branch or tag moves; allow_unpinned: true accepts one). None: the
    # hub's default branch at load time (the commit it resolved to is logged). Ignored for the tiny
    # model and a local directory. Part of the sft and cache stages' params: changing it reruns them.
    revision: str | None = None
    allow_unpinned: bool = False  # True: `revision` may be a branch or tag, resolved when loaded
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    image_height: int = Field(64, ge=32)
    image_width: int = Field(96, ge=32)
    # Qwen3-VL's vision tower: 16 x 16 patches, 2 frames per temporal patch, 2 x 2 spatial merge.
    patch_size: int = Field(16, ge=1)
    temporal_patch_size: int = Field(2, ge=1)
    spatial_merge_size: int = Field(2, ge=1)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # Timestamps written before each temporal group ("<0.1 seconds>"). "window": seconds since the
    # window's first frame, so the model cannot read the clip position (and with it the label) off
    # the clock; "clip": seconds since the clip's start, as the Qwen processor computes them.
    timestamp_origin: Literal["window", "clip"] = "window"
    # transformers >= 5 keeps the chat template's own <|vision_start|> ... <|vision_end|> around the
    # per-group blocks; Qwen's reference processor (transformers 4.57) replaced it. False: reference.
    outer_vision_wrapper: bool = False
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    instruction: str = DEFAULT_INSTRUCTION
    max_length: int = Field(2048, ge=64)  # prompt + target tokens of one example; longer is an error
    max_new_tokens: int = Field(192, ge=8)  # generation budget for analysis + belief + action
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU

    @model_validator(mode="after")
    def _pinned(self) -> VLMConfig:
        if self.revision is not None and not self.allow_unpinned and not COMMIT_RE.fullmatch(self.revision):
            raise ValueError(
                f"model.revision {self.revision!r} is not a commit: pin the 40-character commit sha of "
                f"{self.name_or_path} (its hub page, 'Files and versions' -> 'History'), or set "
                "model.allow_unpinned: true to load whatever the branch or tag points at when the job runs"
            )
        return self

    @model_validator(mode="after")
    def _grid(self) -> VLMConfig:
        unit = self.patch_size * self.spatial_merge_size
        for key in ("image_height", "image_width"):
            if getattr(self, key) % unit:
                raise ValueError(f"{key} ({getattr(self, key)}) must be a multiple of {unit} (patch x merge)")
        if any(s <= 0 for s in self.image_std):
            raise ValueError("image_std must be positive")
        return self

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == TINY_NAME

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image_height, self.image_width)

    def tokens_per_group(self) -> int:
        """Vision tokens one temporal group (2 frames) adds to the text after the 2 x 2 merge."""
        grid_h = self.image_height // self.patch_size
        grid_w = self.image_width // self.patch_size
        return grid_h * grid_w // self.spatial_merge_size**2


def model_location(cfg: VLMConfig, results: str = "results") -> str:
    """Where the stages load the model from: the locally built tiny directory, or `name_or_path`."""
    return f"{results}/models/{TINY_NAME}" if cfg.is_tiny else cfg.name_or_path


def model_inputs(cfg: VLMConfig, results: str = "results") -> dict[str, str]:
    """Snakemake inputs of a rule that loads the model: the directory's config.json, none for a hub id.

    The tiny model's config.json is the output of the rule that builds it; a real model in a local
    directory is a plain input (editing it reruns what loaded it); a hub id has no file to track.
    """
    location = model_location(cfg, results)
    if cfg.is_tiny or Path(location).is_dir():
        return {"model": f"{location}/config.json"}
    return {}


# Qwen3's projections inside each decoder layer of the *language* model. The vision tower names its
# own qkv/proj/linear_fc1/linear_fc2, and vlalert.vlm.sft anchors the match on `language_model`, so
# the adapter never touches the vision tower.
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Keys that change how fast or where SFT runs but not what it learns (up to float rounding): they
# are left out of the stage's params and of the checkpoint fingerprint, so changing them neither
# reruns the stage nor invalidates a checkpoint to resume from.
SFT_RUNTIME_KEYS: frozenset[str] = frozenset(
    {
        "micro_batch",
        "nproc",
        "num_workers",
        "threads",
        "cache_examples",
        "eval_batch",
        "gen_batch",
        "save_every",
        "keep_checkpoints",
        "clean_checkpoints",
        "gradient_checkpointing",
        "prefetch_factor",
        "fsdp",
    }
)


class SFTConfig(StrictModel):
    """LoRA SFT of the VLM on the benchmark's train ticks (nested as `sft:` in the workflow config).

    `batch_size` is the global batch (examples per optimiser step over all processes and
    accumulation steps); `micro_batch` x `nproc` x grad_accum must equal it, so adding GPUs or
    shrinking the micro-batch to fit memory leaves the optimisation unchanged. The loss of a step
    is the mean over all target tokens of the global batch, whichever way it is split.

    train_embeddings: which rows of the (tied) input embedding / output head train beside LoRA.
    "special": the four belief/action tokens (new to a real Qwen tokenizer, so their rows carry
    nothing yet); "all": every row (the tiny model's embeddings are random, so all of them must
    learn); "none"; "auto": "all" for the tiny model, "special" otherwise.

    Switches of the `transformers.Trainer` underneath (vlalert.vlm.sft): `bf16` mixed precision
    (None: on CUDA, off on CPU), `gradient_checkpointing`, `fsdp` (fully sharded data parallel over
    the `nproc` ranks instead of DDP; CUDA only), `qlora` (the base model loaded 4-bit NF4 with
    double quantisation and bf16 compute through bitsandbytes, LoRA on top: the QLoRA recipe
    HazardNet uses for edge backbones; CUDA and bitsandbytes only).
    """

    lora_r: int = Field(32, ge=1)
    lora_alpha: float = Field(64.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = LORA_TARGETS  # module names inside the language model's layers
    train_embeddings: Literal["auto", "special", "all", "none"] = "auto"
    seed: int = Field(0, ge=0)  # LoRA init, data order, dropout
    max_steps: int = Field(2000, ge=1)  # optimiser steps
    batch_size: int = Field(32, ge=1)  # global: examples per optimiser step
    micro_batch: int = Field(4, ge=1)  # examples per forward pass of one process
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)  # linear warmup, then cosine decay to 0 at max_steps
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # bf16 autocast; None: on CUDA, off on CPU
    fsdp: bool = False  # FSDP (full shard, one unit per decoder / vision block) instead of DDP; CUDA
    qlora: bool = False  # 4-bit NF4 base model (bitsandbytes), LoRA and trainable rows in fp32; CUDA
    eval_every: int = Field(200, ge=1)  # val loss every this many steps, and after the last one
    val_max_ticks: int = Field(512, ge=1)  # val loss on at most this many val ticks (evenly spread)
    eval_batch: int = Field(8, ge=1)
    gen_max_ticks: int = Field(64, ge=0)  # greedy generations for val_parse_rate; 0 skips it
    gen_batch: int = Field(8, ge=1)
    save_every: int = Field(200, ge=1)  # checkpoint (resumable after a kill) every this many steps
    keep_checkpoints: int = Field(2, ge=1)
    # delete checkpoints once the outputs are written: they exist to survive a kill, and a forced
    # rerun (after a code change, say) must start afresh rather than resume a finished run
    clean_checkpoints: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available
    nproc: int = Field(1, ge=1)  # processes; > 1: data-parallel (DDP) launched with torchrun
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes per training process
    prefetch_factor: int = Field(2, ge=1)  # micro-batches each worker prepares ahead (num_workers > 0)
    threads: int | None = Field(None, ge=1)  # torch CPU threads per process; None: torch's default
    cache_examples: bool = False  # keep built examples in memory (small data sets: the demo)

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("sft.target_modules must name at least one module")
        bad = [m for m in v if not m.isidentifier()]
        if bad:
            raise ValueError(f"sft.target_modules must be plain module names, got {bad}")
        return v

    @model_validator(mode="after")
    def _batches(self) -> SFTConfig:
        per_step = self.micro_batch * self.nproc
        if self.batch_size % per_step:
            raise ValueError(
                f"sft.batch_size ({self.batch_size}) must be a multiple of sft.micro_batch x sft.nproc "
                f"({self.micro_batch} x {self.nproc})"
            )
        if self.fsdp and self.qlora:
            raise ValueError("sft.fsdp and sft.qlora together are not supported: choose one")
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"sft.warmup_steps ({self.warmup_steps}) exceeds sft.max_steps ({self.max_steps})"
            )
        return self

    @property
    def grad_accum(self) -> int:
        return self.batch_size // (self.micro_batch * self.nproc)

    def gpus(self, is_tiny: bool) -> int:
        """GPUs the job asks the scheduler for: one per rank, none for the tiny model unless asked."""
        on_gpu = self.device == "cuda" or (self.device == "auto" and not is_tiny)
        return self.nproc if on_gpu else 0

    def embeddings_mode(self, is_tiny: bool) -> str:
        if self.train_embeddings == "auto":
            return "all" if is_tiny else "special"
        return self.train_embeddings

    def result_keys(self) -> dict[str, Any]:
        """The keys that change what SFT learns (the stage's params and the checkpoint fingerprint)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in SFT_RUNTIME_KEYS}
