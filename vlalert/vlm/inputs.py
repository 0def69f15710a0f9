"""Model inputs of one tick: frames -> Qwen3-VL video tensors, prompt -> token ids and loss labels.

Built here, without torchvision (which Qwen's own processor needs), and kept bit-for-bit equal to
what `Qwen3VLProcessor` (transformers 5.23) produces for the same frames, size and text:

Pixels (`Qwen3VLVideoProcessor._preprocess`): frames as uint8 (T, 3, H, W) are resized bicubic with
antialias (torchvision's `resize` on a uint8 tensor: the native uint8 kernel on CPU; float, clamp and
round elsewhere), then normalised in float32 as (x - 255 * mean) / (255 * std) (the processor fuses
rescale into normalise), then cut into patches. A patch is one temporal pair of frames x one 16 x 16
square, flattened in (channel, time, row, column) order: the order in which the vision tower's
Conv3d patch embedding views it. Patches are listed group by group (2 frames), and inside a group
by 2 x 2 merge blocks in raster order, each block's four patches in raster order, so that the
merger's `view(-1, 4 * hidden)` fuses exactly the four neighbours of one block.

Text: the model's chat template renders system, user (the video, then the instruction) and the
generation prompt; the video part `<|vision_start|><|video_pad|><|vision_end|>` is expanded per
temporal group into `<t seconds><|vision_start|>` + (h/16)(w/16)/4 x `<|video_pad|>` +
`<|vision_end|>` (see `VLMConfig.outer_vision_wrapper` for the one difference between transformers
versions). `mm_token_type_ids` marks the `<|video_pad|>` positions 2 (text 0, image 1); the model
splits `video_grid_thw` per temporal group and numbers each group's tokens by M-RoPE on its own,
which is why each group is a separate run of video tokens. Timestamps are text only: Qwen3-VL takes
no `second_per_grid_ts`.

Labels are -100 on the prompt and the target's token ids after it: the target text (analysis,
belief span, action span) and `<|im_end|>`, the token generation stops at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vlalert.beliefs.schema import Belief
from vlalert.beliefs.text import target_text
from vlalert.vlm.config import VLMConfig
from vlalert.vlm.resize import resize_frames
from vlalert.vlm.tokenizer import IM_END, VIDEO_PAD, VISION_END, VISION_START

IGNORE_INDEX = -100
TEXT_TYPE, IMAGE_TYPE, VIDEO_TYPE = 0, 1, 2
RESCALE = 1 / 255  # the processor's rescale_factor; fused into mean and std as 1 / RESCALE


# --------------------------------------------------------------------------------------------- pixels


def normalize_frames(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (T, 3, h, w) -> float32 (x - 255 mean) / (255 std), the processor's fused rescale+normalise."""
    m = torch.tensor(list(mean), device=x.device) * (1.0 / RESCALE)
    s = torch.tensor(list(std), device=x.device) * (1.0 / RESCALE)
    return x.to(torch.float32).sub(m.view(-1, 1, 1)).div_(s.view(-1, 1, 1))


def patchify(
    x: torch.Tensor, patch: int = 16, temporal_patch: int = 2, merge: int = 2
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(T, C, h, w) -> (grid_t * grid_h * grid_w, C * temporal_patch * patch * patch), (t, h, w) grid.

    An odd frame count is padded by repeating the last frame, as the processor does.
    """
    t, c, h, w = x.shape
    if h % (patch * merge) or w % (patch * merge):
        raise ValueError(f"frame size {h}x{w} is not a multiple of patch x merge = {patch * merge}")
    if pad := -t % temporal_patch:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)], dim=0)
        t += pad
    gt, gh, gw = t // temporal_patch, h // patch, w // patch
    p = x.reshape(gt, temporal_patch, c, gh // merge, merge, patch, gw // merge, merge, patch)
    # (gt, tp, c, bh, mh, py, bw, mw, px) -> (gt, bh, bw, mh, mw, c, tp, py, px)
    p = p.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return p.reshape(gt * gh * gw, c * temporal_patch * patch * patch), (gt, gh, gw)


def unpatchify(
    patches: torch.Tensor,
    grid: Sequence[int],
    patch: int = 16,
    temporal_patch: int = 2,
    merge: int = 2,
    channels: int = 3,
) -> torch.Tensor:
    """The inverse of `patchify`: patches and their (t, h, w) grid -> (t * temporal_patch, C, h, w) frames."""
    gt, gh, gw = (int(g) for g in grid)
    p = patches.reshape(gt, gh // merge, gw // merge, merge, merge, channels, temporal_patch, patch, patch)
    # (gt, bh, bw, mh, mw, c, tp, py, px) -> (gt, tp, c, bh, mh, py, bw, mw, px)
    p = p.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)
    return p.reshape(gt * temporal_patch, channels, gh * patch, gw * patch)


def frames_to_pixels(
    frames: np.ndarray | torch.Tensor,
    size: tuple[int, int],
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    patch: int = 16,
    temporal_patch: int = 2,
    merge: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One video's `pixel_values_videos` [N, 3 * 2 * 16 * 16] (float32) and `video_grid_thw` [1, 3]."""
    x = normalize_frames(resize_frames(frames, size), mean, std)
    pixels, grid = patchify(x, patch, temporal_patch, merge)
    return pixels, torch.tensor([grid], dtype=torch.long)


# ----------------------------------------------------------------------------------------------- text


def group_timestamps(
    frame_idx: Sequence[int], fps: float, temporal_patch: int = 2, origin: str = "window"
) -> list[float]:
    """Seconds written before each temporal group: the mean time of the group's first and last frame.

    As `Qwen3VLProcessor._calculate_timestamps` (indices padded with the last one, time = index /
    fps), measured from the window's first frame (`origin="window"`) or the clip's start ("clip").
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    idx = [int(i) for i in frame_idx]
    if not idx:
        raise ValueError("frame_idx is empty")
    if origin not in ("window", "clip"):
        raise ValueError(f"origin must be 'window' or 'clip', got {origin!r}")
    idx += [idx[-1]] * (-len(idx) % temporal_patch)
    zero = idx[0] if origin == "window" else 0
    times = [(i - zero) / fps for i in idx]
    return [(times[g] + times[g + temporal_patch - 1]) / 2 for g in range(0, len(times), temporal_patch)]


def video_placeholder(timestamps: Sequence[float], tokens_per_group: int) -> str:
    """The expanded video: per temporal group `<t seconds><|vision_start|>` pads `<|vision_end|>`."""
    return "".join(
        f"<{t:.1f} seconds>{VISION_START}{VIDEO_PAD * tokens_per_group}{VISION_END}" for t in timestamps
    )


def chat_messages(cfg: VLMConfig) -> list[dict[str, Any]]:
    """The conversation of one tick up to the answer: system text, then user (video, instruction)."""
    return [
        {"role": "system", "content": cfg.system_prompt},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": cfg.instruction}]},
    ]


def build_prompt(tokenizer: Any, cfg: VLMConfig, timestamps: Sequence[float], tokens_per_group: int) -> str:
    """Prompt text of one tick through the model's own chat template, with the video expanded."""
    text = tokenizer.apply_chat_template(chat_messages(cfg), tokenize=False, add_generation_prompt=True)
    wrapped = f"{VISION_START}{VIDEO_PAD}{VISION_END}"
    if text.count(wrapped) != 1:
        raise ValueError(f"the chat template must render the video as exactly one {wrapped!r}")
    inner = video_placeholder(timestamps, tokens_per_group)
    if cfg.outer_vision_wrapper:
        return text.replace(VIDEO_PAD, inner, 1)
    return text.replace(wrapped, inner, 1)


def tick_target(tick_row: Mapping[str, Any]) -> str:
    """The SFT target of a benchmark row (analysis, belief span, action span), from its JSON belief."""
    belief = tick_row.get("belief")
    if belief is None or tick_row.get("analysis") is None:
        raise ValueError(
            f"tick {tick_row.get('video_id')}#{tick_row.get('tick')} has no belief/analysis "
            "(excluded or prefix tick): it has no target"
        )
    return target_text(tick_row["analysis"], Belief.from_json(belief), tick_row["action"])


def _token_id(tokenizer: Any, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no token {token!r}")
    return int(tid)


def build_example(
    tick_row: Mapping[str, Any],
    frames: np.ndarray | torch.Tensor,
    tokenizer: Any,
    cfg: VLMConfig,
    *,
    with_target: bool,
) -> dict[str, Any]:
    """Model inputs of one tick (unbatched); with `with_target`, labels on the target only.

    tick_row needs `frame_idx` and `fps` (the benchmark row), plus `analysis`, `belief` and
    `action` with a target. Returns input_ids, attention_mask, mm_token_type_ids [L] (and labels
    [L]), pixel_values_videos [N, 1536], video_grid_thw [1, 3], and `prompt_length` (int: the
    index where the target, or generation, starts).
    """
    frame_idx = list(tick_row["frame_idx"])
    if len(frames) != len(frame_idx):
        raise ValueError(f"{len(frames)} frames for {len(frame_idx)} frame indices")
    pixels, grid = frames_to_pixels(
        frames,
        cfg.image_size,
        cfg.image_mean,
        cfg.image_std,
        cfg.patch_size,
        cfg.temporal_patch_size,
        cfg.spatial_merge_size,
    )
    per_group = int(grid[0, 1] * grid[0, 2]) // cfg.spatial_merge_size**2
    stamps = group_timestamps(
        frame_idx, float(tick_row["fps"]), cfg.temporal_patch_size, cfg.timestamp_origin
    )
    prompt = build_prompt(tokenizer, cfg, stamps, per_group)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = list(prompt_ids)
    labels = None
    if with_target:
        target_ids = tokenizer(tick_target(tick_row) + IM_END, add_special_tokens=False)["input_ids"]
        ids += target_ids
        labels = [IGNORE_INDEX] * len(prompt_ids) + list(target_ids)
    if len(ids) > cfg.max_length:
        raise ValueError(
            f"tick {tick_row.get('video_id')}#{tick_row.get('tick')}: {len(ids)} tokens exceed "
            f"model.max_length = {cfg.max_length}"
        )
    input_ids = torch.tensor(ids, dtype=torch.long)
    video_id = _token_id(tokenizer, VIDEO_PAD)
    mm_types = torch.where(input_ids == video_id, VIDEO_TYPE, TEXT_TYPE)
    n_video = int((mm_types == VIDEO_TYPE).sum())
    if n_video != int(grid[0, 0]) * per_group:
        # the tokenizer merged or split <|video_pad|>, or the template rendered a second video
        raise RuntimeError(f"{n_video} <|video_pad|> tokens in the prompt for a {grid.tolist()} grid")
    example: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": mm_types,
        "pixel_values_videos": pixels,
        "video_grid_thw": grid,
        "prompt_length": len(prompt_ids),
    }
    if labels is not None:
        example["labels"] = torch.tensor(labels, dtype=torch.long)
    return example


# ------------------------------------------------------------------------------------------- batching

_SEQ_KEYS = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": TEXT_TYPE, "labels": IGNORE_INDEX}


def collate(
    examples: Sequence[Mapping[str, Any]], pad_id: int, *, padding_side: str = "left"
) -> dict[str, torch.Tensor]:
    """Pad a list of `build_example` outputs into one batch that `model(**batch)` / `generate` takes.

    Left padding by default: batched generation appends new tokens on the right, so every row's
    last prompt token must sit in the last column; training is indifferent (the attention mask and
    M-RoPE's `get_rope_index` skip padding), so one layout serves SFT, generation and the cache.
    Pixels of all videos are concatenated in batch order, as the model's `video_grid_thw` expects.
    """
    if not examples:
        raise ValueError("no examples to collate")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    with_labels = "labels" in examples[0]
    if any(("labels" in e) != with_labels for e in examples):
        raise ValueError("either all examples or none must have labels")
    longest = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, torch.Tensor] = {}
    for key, fill in _SEQ_KEYS.items():
        if key == "labels" and not with_labels:
            continue
        value = pad_id if fill is None else fill
        rows = []
        for e in examples:
            seq = e[key]
            pad = torch.full((longest - len(seq),), value, dtype=seq.dtype)
            rows.append(torch.cat([pad, seq]) if padding_side == "left" else torch.cat([seq, pad]))
        batch[key] = torch.stack(rows)
    batch["pixel_values_videos"] = torch.cat([e["pixel_values_videos"] for e in examples], dim=0)
    batch["video_grid_thw"] = torch.cat([e["video_grid_thw"] for e in examples], dim=0)
    return batch
