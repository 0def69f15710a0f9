"""Per-feature standardisation of a head's input, with the train split's statistics.

Why the heads need it: hidden states of a language model carry a few "massive activation" features
far larger than the rest (on the demo's z the largest mean |value| is ~14x the median), and a
LayerNorm, which normalises each tick *across* features, keeps those features dominant. Scaling
each feature by its train mean and standard deviation (what a linear probe's StandardScaler does)
puts them on one footing; measured on the demo, a probe on z needs it to find the signal. The
statistics are buffers, saved in the head's model.safetensors, so scoring and `predict` apply the
same scale as training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Standardize(nn.Module):
    """x -> (x - mean) / std per feature; the identity until `fit_` sets mean and std."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit_(self, mat: np.ndarray, rows: np.ndarray, chunk: int = 8192) -> Standardize:
        """Set mean and std from the rows `rows` of `mat` [N, dim] (e.g. a float16 cache view).

        Summed in float64 over chunks, so memory stays at one chunk whatever the split's size.
        """
        dim = self.mean.numel()
        if mat.ndim != 2 or mat.shape[1] != dim:
            raise ValueError(f"expected a [N, {dim}] matrix, got {tuple(mat.shape)}")
        if rows.size == 0:
            raise ValueError("no rows to fit the input scale on")
        total = np.zeros(dim, dtype=np.float64)
        total_sq = np.zeros(dim, dtype=np.float64)
        for a in range(0, rows.size, chunk):
            x = np.asarray(mat[rows[a : a + chunk]], dtype=np.float64)
            total += x.sum(axis=0)
            total_sq += np.square(x).sum(axis=0)
        mean = total / rows.size
        var = np.maximum(total_sq / rows.size - np.square(mean), 0.0)
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(np.sqrt(var) + self.eps))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
