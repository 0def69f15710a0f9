"""Open-BADAS: a V-JEPA2 video encoder, their temporal-attention probe and MLP head -> p_collision.

The network is Open-BADAS's `EnhancedVideoClassifier` (getnexar/BADAS-Open,
`badas/utils/video.py`), with the same module and key names, so that their checkpoint's state
dict loads strictly once its Lightning prefix and V-JEPA2 predictor are removed:

- `backbone.encoder`: transformers' V-JEPA2 encoder (`VJEPA2Encoder`: 3-D patch embedding of
  tubelets of `tubelet_size` frames x `patch_size`^2 pixels, ViT layers with 3-D RoPE, final
  LayerNorm); ViT-L/16 at 256 px (hidden 1024, 24 layers, 16 heads) in the real model. Their
  `backbone` is a whole `VJEPA2Model`, whose forward also runs V-JEPA2's predictor, but only the
  encoder's `last_hidden_state` feeds their probe, so the predictor is neither built nor loaded.
- `temporal_processor`: `nn.MultiheadAttention(hidden, 8 heads, batch_first=True)` self-attention
  over all patch tokens, LayerNorm, mean over the tokens (their `_TemporalAttentionProcessor`).
  (Their README speaks of an attentive probe with 12 learned queries; the code and the checkpoint
  have this module.)
- `classifier.classifier`: (Linear -> GELU -> LayerNorm -> Dropout) x (head_layers - 1), then
  Linear -> 2 logits (no-collision, collision); 1024 -> 768 -> 768 -> 2 in the real model.
- p_collision = softmax(logits / temperature)[1], temperature 2.0 as in their inference code.
  Temperature only recalibrates (p = sigmoid((l1 - l0) / T) is monotone in l1 - l0).

Weights: one safetensors file + config.json (`BadasModelConfig`), written by `save_pretrained` or
by `vlalert convert-badas` (`vlalert.badas.convert`) from their torch pickle. Only safetensors are
ever loaded here; `map_state_dict` strips "model." (Lightning) / "module." (DDP) prefixes and drops
the predictor, then every key must match exactly.

Input: (batch, frames, 3, crop, crop) float pixels from `preprocess_frames`, by default exactly
their steps (`preprocess="badas"`): each frame squashed to 224 x 224 (cv2.resize, bilinear without
antialiasing, uint8), then V-JEPA2's video processor (bilinear antialiased resize of the short side
to int(crop * 256 / 224) = 292, uint8, centre crop 256, x / 255, ImageNet mean/std), in torch,
without cv2 or torchvision.

Why one module of ~500 lines: it is the authors' network and preprocessing transcribed side by side with
their code (encoder, probe, head, the input steps), so a reader checks it against theirs in one place.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import VJEPA2Config
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Encoder

from vlalert.atomic import atomic_path, write_json_atomic
from vlalert.strict import StrictModel

MODEL_FORMAT = "vlalert-badas/2"
OLD_FORMATS = ("vlalert-badas/1",)  # the attentive-pooler probe, which no released weights use
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")

# V-JEPA2's video processor defaults (transformers VJEPA2VideoProcessor): ImageNet statistics,
# bilinear resize of the short side to crop * 256 / 224, then a centre crop of crop x crop.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
BADAS_SQUASH = 224  # Open-BADAS resizes every frame to 224 x 224 before the processor


class EncoderConfig(StrictModel):
    """The V-JEPA2 encoder's shape (the defaults: ViT-L/16 at 256 px, as in vjepa2-vitl-fpc16-256)."""

    hidden_size: int = Field(1024, ge=1)
    num_hidden_layers: int = Field(24, ge=1)
    num_attention_heads: int = Field(16, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    crop_size: int = Field(256, ge=1)
    patch_size: int = Field(16, ge=1)
    tubelet_size: int = Field(2, ge=1)
    layer_norm_eps: float = Field(1e-6, gt=0)
    qkv_bias: bool = True
    hidden_act: str = "gelu"

    @model_validator(mode="after")
    def _shapes(self) -> EncoderConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"encoder.hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.crop_size % self.patch_size:
            raise ValueError(f"encoder.crop_size {self.crop_size} is not a multiple of patch_size")
        if self.hidden_size // self.num_attention_heads < 6:
            raise ValueError("encoder head size must be at least 6 (3-D RoPE splits it into 3 even parts)")
        return self

    def to_vjepa2(self) -> VJEPA2Config:
        cfg = VJEPA2Config(**self.model_dump())
        # The encoder is built as a bare module, outside from_pretrained's dispatch; sdpa picks the
        # fused kernels on GPU and matches eager attention up to float rounding.
        cfg._attn_implementation = "sdpa"
        return cfg


class BadasModelConfig(StrictModel):
    """Everything needed to rebuild the network and feed it; saved as config.json with the weights.

    Defaults are Open-BADAS's (`load_vjepa_model`'s config: temporal_num_heads 8, head_hidden_dim
    768, head_num_layers 3, head_dropout 0.1; temperature 2.0; facebook/vjepa2-vitl-fpc16-256).
    """

    format: Literal["vlalert-badas/2"] = MODEL_FORMAT
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    temporal_heads: int = Field(8, ge=1)  # their temporal_num_heads
    head_hidden: int = Field(768, ge=1)  # their head_hidden_dim
    head_layers: int = Field(3, ge=1)  # their head_num_layers: Linear layers, the output layer included
    head_dropout: float = Field(0.1, ge=0, lt=1)  # training only; inference runs in eval mode
    temperature: float = Field(2.0, gt=0)
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    # badas: their preprocessing, frames squashed to squash_size^2 (cv2-style bilinear, no
    # antialiasing) then the V-JEPA2 processor (short side -> resize_size, centre crop).
    # vjepa2: the V-JEPA2 processor alone on the decoded frame (a 16:9 frame loses ~45% of its width).
    # squash: one antialiased resize straight to resize_size^2, then the centre crop.
    preprocess: Literal["badas", "vjepa2", "squash"] = "badas"
    squash_size: int = Field(BADAS_SQUASH, ge=1)  # preprocess "badas" only
    resize_size: int | None = Field(None, ge=1)  # None: int(crop * 256 / 224), the processor's rule

    @model_validator(mode="after")
    def _shapes(self) -> BadasModelConfig:
        if self.encoder.hidden_size % self.temporal_heads:
            raise ValueError(
                f"encoder.hidden_size {self.encoder.hidden_size} is not a multiple of temporal_heads "
                f"{self.temporal_heads}"
            )
        if self.resize_size is not None and self.resize_size < self.encoder.crop_size:
            raise ValueError(
                f"resize_size {self.resize_size} is below the crop size {self.encoder.crop_size}"
            )
        if any(s <= 0 for s in self.image_std):
            raise ValueError("image_std must be positive")
        return self

    @property
    def short_side(self) -> int:
        return self.resize_size or int(self.encoder.crop_size * 256 / 224)


# ---------------------------------------------------------------- the network


class Backbone(nn.Module):
    """Holds the V-JEPA2 encoder as `encoder`, so that keys read `backbone.encoder.*` as in their
    checkpoint (their `backbone` is a whole VJEPA2Model; its predictor is never used for scoring)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.encoder = VJEPA2Encoder(config.to_vjepa2())

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixel_values_videos).last_hidden_state


class TemporalProcessor(nn.Module):
    """Open-BADAS's `temporal_processor`: self-attention over all patch tokens (nn.MultiheadAttention,
    batch_first), LayerNorm (eps 1e-5, the nn default they use), mean over the tokens."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # need_weights=False: the same output without materialising (batch, N, N) attention weights
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.norm(out).mean(dim=1)


class MlpHead(nn.Module):
    """Open-BADAS's head; `classifier.N` are the indices of their checkpoint's `classifier.classifier.N`:
    (Linear, GELU, LayerNorm, Dropout) x (n_layers - 1), then Linear -> n_classes logits."""

    def __init__(self, dim: int, hidden: int, n_layers: int, dropout: float, n_classes: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


def p_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """p_collision per row of (batch, 2) logits: softmax(logits / T)[:, 1], in float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.softmax(logits.float() / temperature, dim=-1)[:, 1]


class BadasModel(nn.Module):
    """backbone.encoder (V-JEPA2) -> temporal_processor -> classifier: (batch, 2) logits."""

    def __init__(self, config: BadasModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.encoder.hidden_size
        self.backbone = Backbone(config.encoder)
        self.temporal_processor = TemporalProcessor(dim, config.temporal_heads)
        self.classifier = MlpHead(dim, config.head_hidden, config.head_layers, config.head_dropout)

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 3, crop, crop) -> (batch, 2) float32 logits."""
        if pixel_values_videos.ndim != 5:
            raise ValueError(
                f"expected (batch, frames, 3, H, W), got shape {tuple(pixel_values_videos.shape)}"
            )
        frames = pixel_values_videos.shape[1]
        if frames % self.config.encoder.tubelet_size:
            # Conv3d would silently drop the trailing frames.
            raise ValueError(
                f"{frames} frames is not a multiple of tubelet_size {self.config.encoder.tubelet_size}"
            )
        tokens = self.backbone(pixel_values_videos)
        return self.classifier(self.temporal_processor(tokens)).float()

    @torch.inference_mode()
    def collision_probability(
        self, pixel_values_videos: torch.Tensor, temperature: float | None = None
    ) -> torch.Tensor:
        """(batch,) p_collision in float32; `temperature` None uses the config's."""
        logits = self(pixel_values_videos)
        return p_from_logits(logits, self.config.temperature if temperature is None else temperature)

    # -------------------------------------------------------------- building and loading

    @classmethod
    def from_config(cls, config: BadasModelConfig, seed: int = 0, init_std: float = 0.02) -> BadasModel:
        """A randomly initialised model, reproducible from `seed`.

        Truncated-normal weights (the attention's fused in-projection included), zero biases,
        unit LayerNorms.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Conv3d)):
                    nn.init.trunc_normal_(module.weight, std=init_std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.MultiheadAttention):
                    nn.init.trunc_normal_(module.in_proj_weight, std=init_std)
                    nn.init.zeros_(module.in_proj_bias)
        return model.eval()

    def save_pretrained(
        self, directory: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
    ) -> Path:
        """Write config.json + model.safetensors (float32, this module's keys) into `directory`,
        each atomically; `metadata` goes into the safetensors header beside the format."""
        out = Path(directory)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        with atomic_path(out / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={**(metadata or {}), "format": MODEL_FORMAT})
        write_json_atomic(self.config.model_dump(mode="json"), out / CONFIG_NAME)
        return out

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        config_path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> BadasModel:
        """Load a directory (config.json + model.safetensors) or a .safetensors file.

        A file's config is `config_path`, else the config.json beside it. Keys go through
        `map_state_dict` and must then match the architecture exactly (names and shapes).
        Pickled checkpoints (.pth, .bin, ...) are refused: convert them once with
        `vlalert convert-badas`.
        """
        weights, cfg_file = weight_files(path, config_path)
        config = read_model_config(cfg_file)
        state = map_state_dict(load_file(str(weights), device="cpu"))
        return cls.from_state_dict(config, state, what=f"{weights} (config {cfg_file})").to(
            device=device, dtype=dtype
        )

    @classmethod
    def from_state_dict(
        cls, config: BadasModelConfig, state: Mapping[str, torch.Tensor], what: str = "state dict"
    ) -> BadasModel:
        """The model with exactly these weights (keys already mapped), in eval mode, on the CPU."""
        with torch.device("meta"):  # no time spent initialising ~300 M parameters that are overwritten
            model = cls(config)
        missing, unexpected = _key_diff(model, state)
        if missing or unexpected:
            raise ValueError(
                f"{what}: weights do not fit the architecture: "
                f"{len(missing)} missing keys {missing[:8]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:8]}"
            )
        expected = model.state_dict()
        wrong = [
            f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
            for k, v in state.items()
            if tuple(v.shape) != tuple(expected[k].shape)
        ]
        if wrong:
            raise ValueError(f"{what}: {len(wrong)} tensors have the wrong shape: {wrong[:4]}")
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()


def _key_diff(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def _pickle_refused(path: Path) -> ValueError:
    return ValueError(
        f"{path}: a pickled checkpoint; the pipeline loads only safetensors. Convert it once with "
        f"`vlalert convert-badas {path} OUT_DIR` and point gate.badas.model_path at OUT_DIR"
    )


def weight_files(
    path: str | os.PathLike[str], config_path: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """(weights file, config file) for a model directory or a .safetensors file."""
    path = Path(path)
    if path.is_dir():
        weights, cfg = path / WEIGHTS_NAME, Path(config_path) if config_path else path / CONFIG_NAME
        if not weights.is_file():
            pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise _pickle_refused(pickles[0])
    elif path.suffix == ".safetensors":
        weights, cfg = path, Path(config_path) if config_path else path.with_name(CONFIG_NAME)
    elif not path.exists():
        raise FileNotFoundError(f"{path}: BADAS weights not found (a directory or a .safetensors file)")
    elif path.suffix in PICKLE_SUFFIXES:
        raise _pickle_refused(path)
    else:
        raise ValueError(f"{path}: BADAS weights must be a directory or a .safetensors file")
    for f, what in ((weights, "weights"), (cfg, "config")):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: BADAS {what} file not found")
    return weights, cfg


def read_model_config(path: str | os.PathLike[str]) -> BadasModelConfig:
    raw = json.loads(Path(path).read_text())
    fmt = raw.get("format")
    if fmt in OLD_FORMATS:
        raise ValueError(
            f"{path}: BADAS weights in the old {fmt!r} layout (an attentive-pooler probe that Open-BADAS "
            f"does not use); convert the original checkpoint again with `vlalert convert-badas`"
        )
    if fmt != MODEL_FORMAT:
        raise ValueError(f"{path}: not a BADAS model config (format {fmt!r}, expected {MODEL_FORMAT!r})")
    return BadasModelConfig.model_validate(raw)


# Checkpoint key mapping, applied to every key:
#  1. leading "model." (PyTorch Lightning's LightningModule attribute) and "module."
#     (DistributedDataParallel) are stripped, repeatedly;
#  2. keys of V-JEPA2's predictor ("backbone.predictor.*", inside their VJEPA2Model) are dropped:
#     their forward computes it but never uses its output;
#  3. everything else is kept as is: this model's keys are theirs
#     (backbone.encoder.*, temporal_processor.*, classifier.classifier.*).
PREDICTOR_PREFIX = "backbone.predictor."


def map_key(key: str) -> str | None:
    """This model's name for a checkpoint key, None for a key that is dropped (see the list above)."""
    changed = True
    while changed:
        changed = False
        for prefix in ("model.", "module."):
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    if key.startswith(PREDICTOR_PREFIX):
        return None
    return key


def map_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for key, value in state.items():
        new = map_key(key)
        if new is None:
            continue
        if new in out:
            raise ValueError(f"checkpoint keys {sources[new]!r} and {key!r} both map to {new!r}")
        out[new], sources[new] = value, key
    return out


# ---------------------------------------------------------------- input


def shortest_edge_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """transformers' shortest-edge rule: short side = side, long side = int(side * long / short)."""
    if width <= height:
        return int(side * height / width), side
    return side, int(side * width / height)


def resized_shape(height: int, width: int, config: BadasModelConfig) -> tuple[int, int]:
    """(height, width) after the processor's resize step, before the centre crop."""
    side = config.short_side
    if config.preprocess == "squash":
        return side, side
    if config.preprocess == "badas":
        height = width = config.squash_size
    return shortest_edge_shape(height, width, side)


def cv2_linear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2.resize(frame, (w, h)) with its default INTER_LINEAR on uint8 frames, on float values
    0..255 in (N, 3, H, W): bilinear with half-pixel centres and edge clamping, no antialiasing,
    rounded half up to integers. cv2 computes in 11-bit fixed point, so a pixel may differ from it by
    one grey level."""
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    return torch.floor(y + 0.5).clamp_(0, 255)


def processor_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The V-JEPA2 processor's resize (torchvision `resize(uint8, bilinear, antialias=True)`): an
    antialiased bilinear resize of the float values, rounded half to even, back to the uint8 range.
    (torchvision's native uint8 kernel, used on CPUs with AVX2, may differ by one grey level.)"""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return torch.round(y).clamp_(0, 255)


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    config: BadasModelConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    chunk: int = 32,
) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB frames -> (N, 3, crop, crop) normalised pixels on `device`.

    `preprocess="badas"`: squash to squash_size^2 (`cv2_linear_resize`), then the V-JEPA2
    processor: `processor_resize` of the short side to `short_side`, centre crop at offset
    int((size - crop) / 2) (transformers' rule), then (x - 255 mean) / (255 std) (the processor's
    fused rescale + normalise). Runs on `device` in chunks of `chunk` frames, so full-HD frames never
    pile up in float32.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB frames, got shape {tuple(frames.shape)}")
    n, h, w, _ = frames.shape
    crop = config.encoder.crop_size
    rh, rw = resized_shape(h, w, config)
    top, left = int((rh - crop) / 2.0), int((rw - crop) / 2.0)
    mean = torch.tensor(config.image_mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config.image_std, device=device).view(1, 3, 1, 1) * 255.0
    src = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    out = torch.empty((n, 3, crop, crop), device=device, dtype=dtype)
    for i in range(0, n, chunk):
        x = src[i : i + chunk].to(device).permute(0, 3, 1, 2).float()
        if config.preprocess == "badas":
            x = cv2_linear_resize(x, (config.squash_size, config.squash_size))
        x = processor_resize(x, (rh, rw))
        x = x[:, :, top : top + crop, left : left + crop]
        out[i : i + chunk] = ((x - mean) / std).to(dtype)
    return out


def tiny_config(
    crop_size: int = 64,
    hidden_size: int = 48,
    layers: int = 2,
    heads: int = 4,
    temporal_heads: int = 8,
    temperature: float = 2.0,
) -> BadasModelConfig:
    """A toy-width architecture for tests and the CPU demo (same code paths as ViT-L)."""
    return BadasModelConfig(
        encoder=EncoderConfig(
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            crop_size=crop_size,
            patch_size=16,
            tubelet_size=2,
            mlp_ratio=2.0,
        ),
        temporal_heads=temporal_heads,
        head_hidden=max(hidden_size // 2, 2),
        head_layers=3,
        temperature=temperature,
    )


def count_parameters(model: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in model.parameters()))
