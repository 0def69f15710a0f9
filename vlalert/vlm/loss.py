"""The SFT objective: summed cross-entropy over a batch's target tokens (SFT, the tiny model's pretraining).

Only the last positions whose logits predict a target token are computed (`logits_to_keep`): the
prompt (system text, the video's hundreds of vision tokens, the instruction) carries no loss, and
its logits over the vocabulary would be most of the memory of a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from vlalert.vlm.inputs import IGNORE_INDEX


def count_targets(labels: torch.Tensor) -> int:
    """Target tokens that contribute to the loss (the first column predicts nothing)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def target_window(labels: torch.Tensor) -> int:
    """Number of last positions whose logits cover every target token of the batch."""
    valid = labels != IGNORE_INDEX
    rows = valid.any(dim=1)
    if not bool(rows.any()):
        raise ValueError("a batch without any target token")
    first = int(valid.int().argmax(dim=1)[rows].min())
    return min(labels.shape[1], labels.shape[1] - first + 1)


def loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed target-token cross-entropy of a batch (fp32) and its number of target tokens."""
    labels = batch["labels"]
    keep = target_window(labels)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float()
    targets = labels[:, labels.shape[1] - keep + 1 :]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, int((targets != IGNORE_INDEX).sum())
