"""The Conv3d -> Linear patch of the vision tower's patch embedding, for models already in memory.

Qwen2/2.5/3-VL embed video with `Conv3d(3, D, kernel=stride=(2, 16, 16))` applied to inputs that
the processor has already cut into patches: every call sees (N, 3, 2, 16, 16) and yields
(N, D, 1, 1, 1). With kernel == stride, no padding, no dilation and one group, that convolution
is exactly a matrix product of the flattened patch (1,536 values, in the conv's (C, T, H, W)
order) with the weight viewed as (D, 1,536). CPU conv3d takes a slow generic path for it (about
7x slower than the GEMM at D = 1,024 over 3,136 patches), so the cache stage runs the product as
a Linear.

transformers 5.23 does this itself at load time (`from_pretrained(...,
fusion_config={"patch_embeddings": True})`, `vlalert.vlm.loading.load_model(fuse_patch_embed=True)`),
and that is the cache stage's first choice. The library registers the fusion for the whole
process, though: after one fused load every later Qwen3-VL load in that process is fused too. This
module covers what the library does not:

- a model that is already in memory (a peft-wrapped model included), e.g. in a process that
  must also hold unfused models (tests, the benchmark that compares both);
- transformers versions without load-time fusion.

`fuse_patch_embed` swaps the `proj` Conv3d of every `*patch_embed` module for a
`LinearPatchProjection`: an `nn.Linear` whose weight is a *view* of the conv's weight (no copy,
no second set of parameters) and which takes and returns the conv's shapes, so the parent's
unchanged forward (`view(-1, C, T, P, P)` -> proj -> `view(-1, D)`) keeps working. It is
idempotent (already fused modules, ours or the library's, are left alone), reversible
(`unfuse_patch_embed`), and refuses any conv that is not a pure patch product (kernel != stride,
padding, dilation, groups, padding mode) instead of silently changing the model's output.

`verify` measures what the swap changes: the max-norm relative error max|a - b| / max|a| between
the outputs of a reference and a patched layer or model on the same inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

PATCH_EMBED_PATTERN = re.compile(r"(^|\.)patch_embed$")  # transformers' own fusion target pattern


class PatchEmbedError(ValueError):
    """A patch embedding that cannot be rewritten as a Linear; the message says why."""


class LinearPatchProjection(nn.Linear):
    """Drop-in for a non-overlapping patch Conv3d: (N, C, kt, kh, kw) -> (N, D, 1, 1, 1) as one GEMM.

    `weight` is (D, C * kt * kh * kw) and shares storage with the conv weight it came from.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int],
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(in_channels * math.prod(kernel_size), out_channels, bias, device, dtype)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch_shape = (self.in_channels, *self.kernel_size)
        if tuple(x.shape[1:]) != patch_shape and tuple(x.shape[1:]) != (self.in_features,):
            # A wider input would be a real convolution over several patches: not a product.
            shape = ", ".join(map(str, patch_shape))
            raise PatchEmbedError(
                f"LinearPatchProjection takes single patches of shape (N, {shape}) "
                f"or (N, {self.in_features}), got {tuple(x.shape)}"
            )
        y = nn.functional.linear(x.reshape(x.shape[0], self.in_features), self.weight, self.bias)
        return y.view(x.shape[0], self.out_features, 1, 1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, patches={(self.in_channels, *self.kernel_size)}"


def check_fusable(conv: nn.Module) -> None:
    """Raise PatchEmbedError unless `conv` is a Conv3d that only multiplies non-overlapping patches."""
    if not isinstance(conv, nn.Conv3d):
        hint = " (an adapter layer? merge the adapter before fusing)" if hasattr(conv, "base_layer") else ""
        raise PatchEmbedError(f"expected an nn.Conv3d patch projection, got {type(conv).__name__}{hint}")
    problems = []
    if tuple(conv.stride) != tuple(conv.kernel_size):
        problems.append(f"stride {tuple(conv.stride)} != kernel {tuple(conv.kernel_size)}")
    if isinstance(conv.padding, str) or any(p != 0 for p in conv.padding):
        problems.append(f"padding {conv.padding!r}")
    if any(d != 1 for d in conv.dilation):
        problems.append(f"dilation {tuple(conv.dilation)}")
    if conv.groups != 1:
        problems.append(f"groups {conv.groups}")
    if any(p != 0 for p in conv.output_padding):
        problems.append(f"output_padding {tuple(conv.output_padding)}")
    if problems:
        raise PatchEmbedError(
            "patch embedding is not a product of non-overlapping patches: " + ", ".join(problems)
        )


def conv3d_to_linear(conv: nn.Conv3d) -> LinearPatchProjection:
    """A LinearPatchProjection over the same weight storage as `conv` (W.view(D, -1)), no copy."""
    check_fusable(conv)
    weight = conv.weight
    if not weight.is_contiguous():
        raise PatchEmbedError("the Conv3d weight is not contiguous: it cannot be viewed as (D, -1)")
    out = LinearPatchProjection(
        conv.in_channels,
        conv.out_channels,
        tuple(conv.kernel_size),
        bias=conv.bias is not None,
        device="meta",  # parameters are replaced below: allocate nothing
    )
    out.weight = nn.Parameter(weight.view(conv.out_channels, -1), requires_grad=weight.requires_grad)
    out.bias = conv.bias  # the very same Parameter (or None)
    out.train(conv.training)
    return out


def linear_to_conv3d(linear: LinearPatchProjection) -> nn.Conv3d:
    """The inverse of `conv3d_to_linear`: a Conv3d over the same weight storage."""
    conv = nn.Conv3d(
        linear.in_channels,
        linear.out_channels,
        linear.kernel_size,
        stride=linear.kernel_size,
        bias=linear.bias is not None,
        device="meta",
    )
    w = linear.weight
    conv.weight = nn.Parameter(
        w.view(linear.out_channels, linear.in_channels, *linear.kernel_size), w.requires_grad
    )
    conv.bias = linear.bias
    conv.train(linear.training)
    return conv


def patch_embed_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every vision patch embedding in `model` (through any peft wrapping)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if PATCH_EMBED_PATTERN.search(name) and (hasattr(m, "proj") or hasattr(m, "linear_proj"))
    ]


def _state(module: nn.Module) -> str:
    if hasattr(module, "linear_proj"):
        return "library"  # transformers' FusedQwen3VLVisionPatchEmbed
    if isinstance(module.proj, LinearPatchProjection):
        return "inplace"
    return "conv3d"


def fusion_state(model: nn.Module) -> str:
    """How `model` embeds patches: "library" (transformers' fusion), "inplace" (ours), "conv3d",
    "none" (no patch embedding found) or "mixed"."""
    states = {_state(m) for _, m in patch_embed_modules(model)}
    if not states:
        return "none"
    return states.pop() if len(states) == 1 else "mixed"


def fuse_patch_embed(model: nn.Module) -> int:
    """Swap every patch-embedding Conv3d of `model` for a LinearPatchProjection; return how many.

    Idempotent: modules already fused (by this function or by transformers) are skipped. All
    modules are checked before any is changed, so a refusal leaves the model untouched.
    """
    todo = [(name, m) for name, m in patch_embed_modules(model) if _state(m) == "conv3d"]
    for name, m in todo:
        try:
            check_fusable(m.proj)
        except PatchEmbedError as err:
            raise PatchEmbedError(f"{name}.proj: {err}") from None
    for _, m in todo:
        m.proj = conv3d_to_linear(m.proj)
    return len(todo)


def unfuse_patch_embed(model: nn.Module) -> int:
    """Undo `fuse_patch_embed` (not transformers' fusion); return how many modules were restored."""
    done = 0
    for _, m in patch_embed_modules(model):
        if _state(m) == "inplace":
            m.proj = linear_to_conv3d(m.proj)
            done += 1
    return done


def max_relative_error(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """max|a - b| / max|a| over all elements, computed in float64.

    Normalising by the largest reference magnitude (not element by element) keeps the measure
    meaningful where outputs cross zero; 0 when both are all zeros.
    """
    a = reference.detach().to(torch.float64)
    b = candidate.detach().to(a.device, torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    scale = a.abs().max().item() if a.numel() else 0.0
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def _output_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot compare outputs of type {type(out).__name__}")


@torch.no_grad()
def verify(reference: nn.Module, candidate: nn.Module, inputs: torch.Tensor | Mapping[str, Any]) -> float:
    """Max relative error (see `max_relative_error`) of `candidate` against `reference` on `inputs`.

    Layers get `inputs` as one tensor; models get a mapping of keyword arguments (e.g. a
    `vlalert.vlm.inputs.collate` batch) and are compared on their logits.
    """

    def run(module: nn.Module) -> torch.Tensor:
        out = module(**inputs) if isinstance(inputs, Mapping) else module(inputs)
        return _output_tensor(out)

    return max_relative_error(run(reference), run(candidate))
