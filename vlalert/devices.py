"""Devices and dtypes: the one place that turns the configs' `device` / `dtype` settings into torch's.

Every stage that runs a model (the badas gate, SFT, the cache, predict) resolves its settings here,
so "auto" means the same everywhere: CUDA when a GPU is visible, else the CPU; bfloat16 on CUDA,
float32 elsewhere. torch is imported inside the functions: the Snakefile imports the config models
while it parses, and they must stay free of torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

DTYPES = ("float32", "bfloat16", "float16")

B = TypeVar("B")


def resolve_device(name: str = "auto", setting: str = "device") -> str:
    """The device a `device` setting names: "auto" gives "cuda" when a GPU is visible, else "cpu";
    any other torch device string ("cpu", "cuda", "cuda:1") comes back as given, after checking that
    a CUDA one has a GPU to run on (`setting` names the config key in that error)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{setting} is {name!r} but no CUDA device is available")
    return name


def resolve_dtype(dtype: str | Any | None, device: Any) -> Any:
    """The torch dtype a `dtype` setting names: None or "auto" gives bfloat16 on a CUDA `device`
    (ViT-L and the VLM at full speed, no overflow risk) and float32 elsewhere; a torch.dtype comes
    back as given; else one of DTYPES. `device` is a device string or a torch.device."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} or 'auto', got {dtype!r}")
    return getattr(torch, dtype)


def to_device(batch: B, device: Any, *, non_blocking: bool = False) -> B:
    """A batch with its tensors on `device`: a mapping comes back as a dict, a dataclass as a copy
    of the same class; values that are not tensors (None, numpy indices) are kept as they are."""
    import torch

    def move(value: Any) -> Any:
        return value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value

    if isinstance(batch, Mapping):
        return {k: move(v) for k, v in batch.items()}  # type: ignore[return-value]
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        moved = {f.name: move(getattr(batch, f.name)) for f in dataclasses.fields(batch) if f.init}
        return dataclasses.replace(batch, **moved)
    raise TypeError(f"cannot move a {type(batch).__name__} to a device: expected a mapping or a dataclass")
