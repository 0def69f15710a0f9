"""The processor's resize of frames, alone: what the frames stage applies before it stores a frame.

Kept apart from `vlalert.vlm.inputs` (which builds the rest of a model input and imports the
tokenizer and the belief text) so that the frames stage depends on the resize only: a change to the
prompt or the belief text does not rebuild every source's frames store.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_frames(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (T, 3, h, w) uint8, as torchvision's resize does it for the processor.

    Bicubic with antialias. torchvision resizes a uint8 tensor natively on CPU (fixed-point kernel,
    so the result differs from a float resize in the last bit); elsewhere it resizes in float32,
    clamps to [0, 255] and rounds. Both paths are reproduced so that CPU and GPU match the processor.
    """
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {tuple(x.shape)} {x.dtype}")
    x = x.permute(0, 3, 1, 2).contiguous()
    h, w = size
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if x.device.type == "cpu":
        return F.interpolate(x, size=[h, w], mode="bicubic", align_corners=False, antialias=True)
    y = F.interpolate(x.float(), size=[h, w], mode="bicubic", align_corners=False, antialias=True)
    return y.clamp_(0, 255).round_().to(torch.uint8)
