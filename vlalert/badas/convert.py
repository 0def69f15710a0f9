"""`vlalert convert-badas IN.pth OUT_DIR`: Open-BADAS's released torch pickle -> safetensors, once.

The release (`weights/badas_open.pth` on the Hugging Face repo nexar-ai/BADAS-Open, gated) is a
torch pickle: a PyTorch Lightning checkpoint (`state_dict` with "model."-prefixed keys, plus
`hyper_parameters`, optimizer state, ...) or a bare state dict. Here it is read only with
`torch.load(weights_only=True)`, which unpickles tensors and plain containers and nothing else
(no code from the file runs); a file that needs more is refused, with the reason torch gives.

Steps: unwrap the state dict (`state_dict`, else `model_state_dict` or `model` as their loader
accepts, else the object itself when it maps names to tensors); build the architecture from
`BadasModelConfig` (the defaults, or `--config FILE`) with the head settings of
`hyper_parameters["model"]` applied on top, as their `load_vjepa_model` does; map keys
(`vlalert.badas.model.map_state_dict`: prefixes stripped, V-JEPA2 predictor dropped); check that
the keys and shapes fit exactly; write model.safetensors (float32, with the source's file name and
sha256 in its metadata) and config.json atomically; load the written directory back with
`BadasModel.from_pretrained` (the pipeline's own strict loader) and check every tensor.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlalert.atomic import sha256_file
from vlalert.badas.model import (
    CONFIG_NAME,
    PREDICTOR_PREFIX,
    WEIGHTS_NAME,
    BadasModel,
    BadasModelConfig,
    count_parameters,
    map_key,
    map_state_dict,
)

# their hyper_parameters["model"] keys -> BadasModelConfig fields (their load_vjepa_model reads these)
HPARAMS = {
    "temporal_num_heads": "temporal_heads",
    "head_hidden_dim": "head_hidden",
    "head_num_layers": "head_layers",
    "head_dropout": "head_dropout",
}


class ConvertError(Exception):
    """An input that cannot be converted; the message names the file and the reason."""


@dataclass(frozen=True)
class Converted:
    out_dir: Path
    tensors: int
    parameters: int
    dropped: int  # predictor tensors left out
    source_sha256: str
    config: BadasModelConfig


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """torch.load(weights_only=True), nothing else; a file that needs arbitrary unpickling is refused."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as err:
        if isinstance(err, RuntimeError) and "mmap" in str(err):  # an old (non-zip) torch.save file
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err2:  # noqa: BLE001 - reported below
                err = err2
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(
            f"{path}: refused: torch.load(weights_only=True) cannot read it ({first}). Only tensors and "
            "plain containers are unpickled here. If you trust the file, extract its state dict "
            "yourself (torch.save(torch.load(IN, weights_only=False)['state_dict'], OUT)) and convert that."
        ) from None


def unwrap_state_dict(obj: Any, path: str | os.PathLike[str] = "checkpoint") -> tuple[dict, dict]:
    """(state dict, their hyper_parameters["model"] or {}) of a loaded checkpoint."""
    if not isinstance(obj, Mapping):
        raise ConvertError(f"{path}: not a checkpoint (a {type(obj).__name__}, expected a dict)")
    hparams: dict = {}
    hp = obj.get("hyper_parameters")
    if isinstance(hp, Mapping) and isinstance(hp.get("model"), Mapping):
        hparams = dict(hp["model"])
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    else:
        state = obj
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(state) or not all(isinstance(k, str) for k in state):
        raise ConvertError(
            f"{path}: no state dict found (expected 'state_dict', 'model_state_dict' or 'model' "
            f"mapping names to tensors, or such a mapping itself; top-level keys: "
            f"{sorted(map(str, obj))[:8]})"
        )
    return tensors, hparams


def model_config(
    base: BadasModelConfig, hparams: Mapping[str, Any], path: str | os.PathLike[str]
) -> BadasModelConfig:
    """`base` with their checkpoint's head hyper-parameters applied (as their loader does)."""
    classes = hparams.get("num_classes", 2)
    if classes != 2:
        raise ConvertError(f"{path}: num_classes {classes} in hyper_parameters; Open-BADAS has 2 classes")
    update = {ours: hparams[theirs] for theirs, ours in HPARAMS.items() if theirs in hparams}
    if not update:
        return base
    return BadasModelConfig.model_validate(base.model_dump() | update)


def convert_checkpoint(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: BadasModelConfig | None = None,
) -> Converted:
    """Convert `src` into `out_dir` (config.json + model.safetensors); see the module doc."""
    src, out_dir = Path(src), Path(out_dir)
    obj = read_checkpoint(src)
    raw, hparams = unwrap_state_dict(obj, src)
    cfg = model_config(config or BadasModelConfig(), hparams, src)
    dropped = sum(1 for k in raw if map_key(k) is None)
    try:
        state = map_state_dict(raw)
        model = BadasModel.from_state_dict(cfg, state, what=str(src))
    except ValueError as err:
        raise ConvertError(str(err)) from None
    digest = sha256_file(src)
    model.save_pretrained(out_dir, metadata={"source": src.name, "source_sha256": digest})
    # the pipeline's own loader, strict, from the files just written; then every tensor compared
    loaded = BadasModel.from_pretrained(out_dir)
    written = loaded.state_dict()
    for key, value in state.items():
        if not torch.equal(written[key], value.float()):
            raise ConvertError(f"{out_dir / WEIGHTS_NAME}: tensor {key} differs from {src} after writing")
    return Converted(
        out_dir=out_dir,
        tensors=len(state),
        parameters=count_parameters(loaded),
        dropped=dropped,
        source_sha256=digest,
        config=cfg,
    )


def read_config_file(path: str | os.PathLike[str]) -> BadasModelConfig:
    """A BadasModelConfig from JSON (for architectures other than the released ViT-L)."""
    try:
        return BadasModelConfig.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as err:
        raise ConvertError(f"{path}: not a usable BADAS model config: {err}".splitlines()[0]) from None


def summary(result: Converted) -> str:
    return (
        f"wrote {result.out_dir / WEIGHTS_NAME} ({result.tensors} tensors, {result.parameters:,} parameters; "
        f"{result.dropped} {PREDICTOR_PREFIX}* tensors left out) and {result.out_dir / CONFIG_NAME}; "
        f"strict load verified; source sha256 {result.source_sha256}"
    )
