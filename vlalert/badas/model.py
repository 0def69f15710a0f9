"""Open-BADAS: a V-JEPA2 video encoder, an attentive probe and an MLP head -> p_collision.

Architecture (the shapes come from `BadasModelConfig`, saved as config.json beside the weights):

- encoder: transformers' V-JEPA2 encoder (`VJEPA2Encoder`: 3-D patch embedding of tubelets of
  `tubelet_size` frames x `patch_size`^2 pixels, ViT layers with 3-D RoPE, final LayerNorm); ViT-L
  (hidden 1024, 24 layers, 16 heads, crop 256) in the real model. Only the encoder: V-JEPA2's
  predictor is a pre-training device and plays no part in scoring, so it is neither built nor loaded.
- probe: V-JEPA's attentive pooler (`AttentivePooler`, depth 1, complete block): `probe_queries`
  learned query tokens cross-attend over all patch tokens (LayerNorm on the tokens, multi-head
  cross-attention, residual, LayerNorm + MLP, residual); the queries are then averaged into one
  vector, so that several queries (the Open-BADAS README mentions 12) feed one head.
- head: Open-BADAS's MLP head: (Linear -> GELU -> LayerNorm -> Dropout) x (head_layers - 1), then
  Linear -> 2 logits (no-collision, collision).
- p_collision = softmax(logits / temperature)[1]. Open-BADAS divides its logits by 2.0 before the
  softmax; temperature only recalibrates (p = sigmoid((l1 - l0) / T) is monotone in l1 - l0), it
  never reorders windows.

Weights live in one safetensors file whose keys are this module's own state-dict keys
(`encoder.*`, `probe.*`, `head.layers.*`). `map_state_dict` maps the layouts this model is built
to mirror (the mapping is listed there), so converted Open-BADAS / V-JEPA checkpoints load with a
strict key check: a missing or unexpected key is an error, never a silently random layer.

Input: `pixel_values_videos` (batch, frames, 3, crop, crop) float, built by `preprocess_frames`
exactly as V-JEPA2's video processor defines it (resize so the short side is crop * 256 / 224,
bilinear with antialiasing, centre crop, scale to [0, 1], ImageNet mean/std), in torch, without
torchvision.
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
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import VJEPA2Config
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Encoder

MODEL_FORMAT = "vlalert-badas/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# V-JEPA2's video processor defaults (transformers VJEPA2VideoProcessor): ImageNet statistics,
# bilinear resize of the short side to crop * 256 / 224, then a centre crop of crop x crop.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Strict):
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


class BadasModelConfig(_Strict):
    """Everything needed to rebuild the network and feed it; saved as config.json with the weights."""

    format: Literal["vlalert-badas/1"] = MODEL_FORMAT
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    probe_queries: int = Field(1, ge=1)
    probe_heads: int = Field(16, ge=1)
    probe_mlp_ratio: float = Field(4.0, gt=0)
    head_hidden: int = Field(768, ge=1)
    head_layers: int = Field(3, ge=1)  # Linear layers in the head, the output layer included
    head_dropout: float = Field(0.1, ge=0, lt=1)  # training only; inference runs in eval mode
    temperature: float = Field(2.0, gt=0)
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    # shortest_edge: V-JEPA2's processor (keep the aspect ratio, centre crop: a 16:9 dashcam frame
    # loses its sides). squash: resize to a square first, as Open-BADAS's own inference code does
    # (frames squashed to 224 x 224 before the processor), keeping the whole field of view.
    resize_mode: Literal["shortest_edge", "squash"] = "shortest_edge"
    resize_size: int | None = Field(None, ge=1)  # None: int(crop * 256 / 224), the processor's rule

    @model_validator(mode="after")
    def _shapes(self) -> BadasModelConfig:
        if self.encoder.hidden_size % self.probe_heads:
            raise ValueError(
                f"encoder.hidden_size {self.encoder.hidden_size} is not a multiple of probe_heads "
                f"{self.probe_heads}"
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


class _Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, int(dim * ratio))
        self.act = nn.GELU()
        self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _CrossAttention(nn.Module):
    """V-JEPA's CrossAttention: queries from q, keys and values from x (one fused kv projection)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        m = x.shape[1]
        h = self.heads
        q = self.q(q).view(b, n, h, c // h).transpose(1, 2)
        kv = self.kv(x).view(b, m, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.xattn = _CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, mlp_ratio)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentiveProbe(nn.Module):
    """Learned queries cross-attending over the encoder's patch tokens, averaged to one vector."""

    def __init__(self, dim: int, queries: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.query_tokens = nn.Parameter(torch.zeros(1, queries, dim))
        self.cross_attention_block = _CrossAttentionBlock(dim, heads, mlp_ratio, eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.query_tokens.expand(tokens.shape[0], -1, -1)
        return self.cross_attention_block(q, tokens).mean(dim=1)


class MlpHead(nn.Module):
    """Open-BADAS's head; its nn.Sequential indices match that checkpoint's `classifier.classifier.N`."""

    def __init__(self, dim: int, hidden: int, n_layers: int, dropout: float, n_classes: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def p_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """p_collision per row of (batch, 2) logits: softmax(logits / T)[:, 1], in float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.softmax(logits.float() / temperature, dim=-1)[:, 1]


class BadasModel(nn.Module):
    def __init__(self, config: BadasModelConfig) -> None:
        super().__init__()
        self.config = config
        enc = config.encoder
        self.encoder = VJEPA2Encoder(enc.to_vjepa2())
        self.probe = AttentiveProbe(
            enc.hidden_size,
            config.probe_queries,
            config.probe_heads,
            config.probe_mlp_ratio,
            enc.layer_norm_eps,
        )
        self.head = MlpHead(enc.hidden_size, config.head_hidden, config.head_layers, config.head_dropout)

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
        tokens = self.encoder(pixel_values_videos).last_hidden_state
        return self.head(self.probe(tokens)).float()

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

        V-JEPA's init: truncated-normal weights, zero biases, unit LayerNorms.
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
            nn.init.trunc_normal_(model.probe.query_tokens, std=init_std)
        return model.eval()

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config.json + model.safetensors (float32, this module's keys) into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        tmp = out / f".{WEIGHTS_NAME}.tmp"
        save_file(state, str(tmp), metadata={"format": MODEL_FORMAT})
        os.replace(tmp, out / WEIGHTS_NAME)
        (out / CONFIG_NAME).write_text(json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n")
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
        `map_state_dict` and must then match the architecture exactly.
        """
        weights, cfg_file = weight_files(path, config_path)
        config = read_model_config(cfg_file)
        with torch.device("meta"):  # no time spent initialising ~300 M parameters that are overwritten
            model = cls(config)
        state = map_state_dict(load_file(str(weights), device="cpu"))
        missing, unexpected = _key_diff(model, state)
        if missing or unexpected:
            raise ValueError(
                f"{weights}: weights do not fit the architecture in {cfg_file}: "
                f"{len(missing)} missing keys {missing[:8]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:8]}"
            )
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(device=device, dtype=dtype).eval()


def _key_diff(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def weight_files(
    path: str | os.PathLike[str], config_path: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """(weights file, config file) for a model directory or a .safetensors file."""
    path = Path(path)
    if path.is_dir():
        weights, cfg = path / WEIGHTS_NAME, Path(config_path) if config_path else path / CONFIG_NAME
    elif path.suffix == ".safetensors":
        weights, cfg = path, Path(config_path) if config_path else path.with_name(CONFIG_NAME)
    elif not path.exists():
        raise FileNotFoundError(f"{path}: BADAS weights not found (a directory or a .safetensors file)")
    else:
        raise ValueError(f"{path}: BADAS weights must be a directory or a .safetensors file")
    for f, what in ((weights, "weights"), (cfg, "config")):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: BADAS {what} file not found")
    return weights, cfg


def read_model_config(path: str | os.PathLike[str]) -> BadasModelConfig:
    raw = json.loads(Path(path).read_text())
    if raw.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path}: not a BADAS model config (format {raw.get('format')!r}, expected {MODEL_FORMAT!r})"
        )
    return BadasModelConfig.model_validate(raw)


# Checkpoint key mapping, applied in order to every key:
#  1. leading "model." (PyTorch Lightning) and "module." (DistributedDataParallel) are stripped;
#  2. keys of V-JEPA2's predictor ("backbone.predictor.", "vjepa2.predictor.", "predictor.") are
#     dropped: the predictor is not part of scoring;
#  3. prefixes are renamed:
#       "backbone.encoder."       -> "encoder."     (Open-BADAS: VJEPA2Model held as `backbone`)
#       "vjepa2.encoder."         -> "encoder."     (transformers' VJEPA2ForVideoClassification)
#       "encoder."                   kept           (transformers' VJEPA2Model, facebook/vjepa2-*)
#       "pooler."                 -> "probe."       (V-JEPA's AttentiveClassifier.pooler)
#       "classifier.classifier."  -> "head.layers." (Open-BADAS's MLP head)
#     everything else is kept as is (a file saved by `save_pretrained` maps onto itself).
_DROP = ("backbone.predictor.", "vjepa2.predictor.", "predictor.")
_RENAME = (
    ("backbone.encoder.", "encoder."),
    ("vjepa2.encoder.", "encoder."),
    ("pooler.", "probe."),
    ("classifier.classifier.", "head.layers."),
)


def map_key(key: str) -> str | None:
    """This model's name for a checkpoint key, None for a key that is dropped (see the table above)."""
    changed = True
    while changed:
        changed = False
        for prefix in ("model.", "module."):
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    if key.startswith(_DROP):
        return None
    for old, new in _RENAME:
        if key.startswith(old):
            return new + key[len(old) :]
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


def resized_shape(height: int, width: int, config: BadasModelConfig) -> tuple[int, int]:
    """(height, width) after the resize step, before the centre crop."""
    side = config.short_side
    if config.resize_mode == "squash":
        return side, side
    # transformers' shortest-edge rule: short side = side, long side = int(side * long / short).
    if height <= width:
        return side, int(side * width / height)
    return int(side * height / width), side


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    config: BadasModelConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    chunk: int = 32,
) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB frames -> (N, 3, crop, crop) normalised pixels on `device`.

    Resize (bilinear, antialiased, as the processor's torchvision backend), centre crop (offset
    round((size - crop) / 2), torchvision's rule), x / 255, (x - mean) / std. Runs on `device` in
    chunks of `chunk` frames, so full-HD frames never pile up in float32.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB frames, got shape {tuple(frames.shape)}")
    n, h, w, _ = frames.shape
    crop = config.encoder.crop_size
    rh, rw = resized_shape(h, w, config)
    top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
    mean = torch.tensor(config.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std, device=device).view(1, 3, 1, 1)
    src = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    out = torch.empty((n, 3, crop, crop), device=device, dtype=dtype)
    for i in range(0, n, chunk):
        x = src[i : i + chunk].to(device).permute(0, 3, 1, 2).float()
        if (rh, rw) != (h, w):
            x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        x = x[:, :, top : top + crop, left : left + crop]
        out[i : i + chunk] = ((x / 255.0 - mean) / std).to(dtype)
    return out


def tiny_config(
    crop_size: int = 64,
    hidden_size: int = 48,
    layers: int = 2,
    heads: int = 4,
    probe_queries: int = 2,
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
        probe_queries=probe_queries,
        probe_heads=heads,
        probe_mlp_ratio=2.0,
        head_hidden=max(hidden_size // 2, 2),
        head_layers=3,
        temperature=temperature,
    )


def count_parameters(model: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in model.parameters()))
