"""Model inputs without torchvision: pixels in Qwen3-VL's exact patch order, the prompt with one
timestamped vision block per temporal group, labels on the target only, batches the tiny model
trains and generates on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_helpers import ALERT_ANALYSIS, ALERT_BELIEF, CLEAR_BELIEF

from vlalert.beliefs.text import target_text
from vlalert.vlm.config import VLMConfig
from vlalert.vlm.inputs import (
    IGNORE_INDEX,
    build_example,
    build_prompt,
    chat_messages,
    collate,
    frames_to_pixels,
    group_timestamps,
    normalize_frames,
    patchify,
    resize_frames,
    unpatchify,
)
from vlalert.vlm.loading import load_model, load_tokenizer

CFG = VLMConfig()
ROW_A = {
    "video_id": "a",
    "tick": 3,
    "frame_idx": [30, 38, 47, 55, 64, 72, 81, 90],
    "fps": 30.0,
    "analysis": ALERT_ANALYSIS,
    "belief": ALERT_BELIEF.to_json(),
    "action": "ALERT",
}
ROW_B = {
    "video_id": "b",
    "tick": 1,
    "frame_idx": [0, 2, 4, 6, 8, 10],
    "fps": 10.0,
    "analysis": "The road ahead is clear and nothing moves near the ego lane.",
    "belief": CLEAR_BELIEF.to_json(),
    "action": "SILENT",
}


def _frames(n: int, h: int = 96, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir), tiny_model_dir


# ------------------------------------------------------------------------------------------- pixels


def test_normalisation_is_the_processors_fused_rescale():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 1, 1, 3).permute(0, 3, 1, 2)
    y = normalize_frames(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert y.dtype == torch.float32
    assert y.flatten().tolist() == [-1.0, 1.0, pytest.approx(0.5 / 127.5, abs=1e-7)]
    z = normalize_frames(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert z.flatten().tolist() == pytest.approx(
        [(0 - 123.675) / 58.395, (255 - 116.28) / 57.12, (128 - 103.53) / 57.375], rel=1e-6
    )


def test_resize_keeps_uint8_and_is_exact_where_it_must_be():
    frames = _frames(2, 64, 96)
    same = resize_frames(frames, (64, 96))
    assert torch.equal(same, torch.from_numpy(frames).permute(0, 3, 1, 2))  # right size: untouched
    flat = np.full((2, 70, 100, 3), 200, dtype=np.uint8)
    down = resize_frames(flat, (32, 64))
    assert down.dtype == torch.uint8 and down.shape == (2, 3, 32, 64)
    assert bool((down == 200).all())  # a bicubic filter's weights sum to one
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(frames.astype(np.float32), (64, 96))


def _coded(t: int, h: int, w: int) -> torch.Tensor:
    """A (t, 3, h, w) float tensor whose every value names its own (frame, channel, row, column)."""
    return torch.arange(t * 3 * h * w, dtype=torch.float32).reshape(t, 3, h, w)


def _code(x: torch.Tensor, t: int, c: int, y: int, col: int) -> float:
    _, ch, h, w = x.shape
    return float(((t * ch + c) * h + y) * w + col)


def test_patch_layout_is_qwen3_vl_order():
    x = _coded(4, 64, 96)
    patches, grid = patchify(x)
    assert grid == (2, 4, 6)
    assert patches.shape == (2 * 4 * 6, 3 * 2 * 16 * 16)

    def where(k: int, j: int) -> float:
        return float(patches[k, j])

    # inside a patch: (channel, frame of the pair, row, column)
    assert where(0, 0) == _code(x, 0, 0, 0, 0)
    assert where(0, 1 * 512 + 1 * 256 + 3 * 16 + 5) == _code(x, 1, 1, 3, 5)
    assert where(0, 2 * 512 + 0 * 256 + 15 * 16 + 15) == _code(x, 0, 2, 15, 15)
    # patches: 2x2 merge blocks in raster order, each block's four patches in raster order
    assert where(1, 0) == _code(x, 0, 0, 0, 16)  # block (0,0), right neighbour
    assert where(2, 0) == _code(x, 0, 0, 16, 0)  # block (0,0), lower left
    assert where(3, 0) == _code(x, 0, 0, 16, 16)  # block (0,0), lower right
    assert where(4, 0) == _code(x, 0, 0, 0, 32)  # block (0,1) starts two patches to the right
    assert where(12, 0) == _code(x, 0, 0, 32, 0)  # block (1,0): 3 blocks x 4 patches later
    assert where(24, 0) == _code(x, 2, 0, 0, 0)  # second temporal group: frames 2 and 3
    assert where(24 + 23, 2 * 512 + 256 + 15 * 16 + 15) == _code(x, 3, 2, 63, 95)  # the very last value


def _processor_patchify(videos: np.ndarray, patch: int, merge: int, temporal_patch: int) -> np.ndarray:
    """Qwen3VLVideoProcessor.patchify (transformers 5.23), its reshape/transpose sequence in numpy."""
    batch_size, num_frames, channel, resized_height, resized_width = videos.shape
    if pad := -num_frames % temporal_patch:
        videos = np.concatenate([videos, np.repeat(videos[:, -1:], pad, axis=1)], axis=1)
        num_frames += pad
    grid_t = num_frames // temporal_patch
    grid_h, grid_w = resized_height // patch, resized_width // patch
    patches = videos.reshape(
        batch_size,
        grid_t,
        temporal_patch,
        channel,
        grid_h // merge,
        merge,
        patch,
        grid_w // merge,
        merge,
        patch,
    )
    patches = patches.transpose(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return patches.reshape(batch_size, grid_t * grid_h * grid_w, channel * temporal_patch * patch * patch)


@pytest.mark.parametrize("shape", [(8, 64, 96), (7, 32, 32), (4, 128, 64)])
def test_patchify_equals_the_processors_reshape_sequence(shape):
    t, h, w = shape
    x = torch.from_numpy(np.random.default_rng(t).standard_normal((t, 3, h, w)).astype(np.float32))
    ours, grid = patchify(x)
    ref = _processor_patchify(x.numpy()[None], patch=16, merge=2, temporal_patch=2)[0]
    assert np.array_equal(ours.numpy(), ref)
    assert grid == ((t + 1) // 2, h // 16, w // 16)


def test_unpatchify_inverts_patchify_and_an_odd_frame_is_repeated():
    x = torch.randn(3, 3, 32, 64)
    patches, grid = patchify(x)
    back = unpatchify(patches, grid)
    assert back.shape == (4, 3, 32, 64)
    assert torch.equal(back[:3], x)
    assert torch.equal(back[3], x[2])


def test_pixels_reconstruct_to_the_resized_normalised_frames():
    frames = _frames(8, 70, 100)
    pixels, grid = frames_to_pixels(frames, (64, 96), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert pixels.dtype == torch.float32 and pixels.shape == (96, 1536)
    assert grid.tolist() == [[4, 4, 6]] and grid.dtype == torch.long
    expected = normalize_frames(resize_frames(frames, (64, 96)), (0.5,) * 3, (0.5,) * 3)
    assert torch.equal(unpatchify(pixels, grid[0].tolist()), expected)


# --------------------------------------------------------------------------------------------- text


def test_timestamps_are_group_midpoints():
    idx = [30, 38, 47, 55, 64, 72, 81, 90]
    # window: times 0, 8/30, ... ; groups average their first and last frame
    assert group_timestamps(idx, 30.0) == pytest.approx([4 / 30, 21 / 30, 38 / 30, 55.5 / 30])
    assert group_timestamps(idx, 30.0, origin="clip") == pytest.approx([34 / 30, 51 / 30, 68 / 30, 85.5 / 30])
    assert group_timestamps([0, 10, 20], 10.0) == pytest.approx([0.5, 2.0])  # odd: last index repeated
    with pytest.raises(ValueError, match="fps"):
        group_timestamps(idx, 0.0)


def test_prompt_expands_the_video_per_temporal_group(tiny):
    _, tok, _ = tiny
    cfg = VLMConfig(system_prompt="S.", instruction="Q?")
    pads = "<|video_pad|>" * 2
    expected = (
        "<|im_start|>system\nS.<|im_end|>\n<|im_start|>user\n"
        f"<0.5 seconds><|vision_start|>{pads}<|vision_end|>"
        f"<2.0 seconds><|vision_start|>{pads}<|vision_end|>"
        "Q?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert build_prompt(tok, cfg, [0.5, 2.0], 2) == expected
    wrapped = build_prompt(tok, cfg.model_copy(update={"outer_vision_wrapper": True}), [0.5, 2.0], 2)
    assert wrapped == expected.replace("user\n<0.5", "user\n<|vision_start|><0.5").replace(
        "<|vision_end|>Q?", "<|vision_end|><|vision_end|>Q?"
    )


def test_example_labels_cover_exactly_the_target(tiny):
    _, tok, _ = tiny
    ex = build_example(ROW_A, _frames(8), tok, CFG, with_target=True)
    ids, labels, n = ex["input_ids"], ex["labels"], ex["prompt_length"]
    assert ids.shape == labels.shape == ex["attention_mask"].shape == ex["mm_token_type_ids"].shape
    assert bool((labels[:n] == IGNORE_INDEX).all())
    assert torch.equal(labels[n:], ids[n:])
    target = target_text(ROW_A["analysis"], ALERT_BELIEF, "ALERT") + "<|im_end|>"
    assert tok.decode(labels[n:]) == target
    assert tok.decode(ids[:n]).endswith("<|im_start|>assistant\n")
    prompt_only = build_example(ROW_A, _frames(8), tok, CFG, with_target=False)
    assert "labels" not in prompt_only and torch.equal(prompt_only["input_ids"], ids[:n])


def test_video_tokens_are_typed_2_and_match_the_grid(tiny):
    _, tok, _ = tiny
    ex = build_example(ROW_A, _frames(8), tok, CFG, with_target=True)
    video = ex["input_ids"] == tok.convert_tokens_to_ids("<|video_pad|>")
    assert torch.equal(ex["mm_token_type_ids"] == 2, video)
    assert bool((ex["mm_token_type_ids"][~video] == 0).all())
    assert int(video.sum()) == 4 * CFG.tokens_per_group() == 24
    starts = ex["input_ids"] == tok.convert_tokens_to_ids("<|vision_start|>")
    assert int(starts.sum()) == 4  # one block per temporal group, no outer wrapper


def test_visual_tower_yields_one_embedding_per_video_token(tiny):
    model, tok, _ = tiny
    examples = [
        build_example(r, _frames(len(r["frame_idx"])), tok, CFG, with_target=True) for r in (ROW_A, ROW_B)
    ]
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        out = model.model.visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"])
    n_video = int((batch["input_ids"] == model.config.video_token_id).sum())
    assert out.pooler_output.shape == (n_video, model.config.text_config.hidden_size)
    assert n_video == (4 + 3) * CFG.tokens_per_group()


def test_rows_without_a_target_or_too_long_are_refused(tiny):
    _, tok, _ = tiny
    excluded = {**ROW_A, "belief": None, "analysis": None}
    with pytest.raises(ValueError, match="no belief"):
        build_example(excluded, _frames(8), tok, CFG, with_target=True)
    assert build_example(excluded, _frames(8), tok, CFG, with_target=False)["prompt_length"] > 0
    with pytest.raises(ValueError, match="max_length"):
        build_example(ROW_A, _frames(8), tok, CFG.model_copy(update={"max_length": 64}), with_target=True)
    with pytest.raises(ValueError, match="frames"):
        build_example(ROW_A, _frames(7), tok, CFG, with_target=True)


# ------------------------------------------------------------------------------------------ batches


def _examples(tok, with_target: bool) -> list[dict]:
    return [
        build_example(ROW_A, _frames(8, seed=1), tok, CFG, with_target=with_target),
        build_example(ROW_B, _frames(6, seed=2), tok, CFG, with_target=with_target),
    ]


def test_collate_pads_on_the_left_by_default(tiny):
    _, tok, _ = tiny
    a, b = _examples(tok, with_target=True)
    assert len(a["input_ids"]) != len(b["input_ids"])
    batch = collate([a, b], tok.pad_token_id)
    longest = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == batch["labels"].shape == (2, longest)
    short = 0 if len(a["input_ids"]) < longest else 1
    gap = longest - len((a, b)[short]["input_ids"])
    assert bool((batch["input_ids"][short, :gap] == tok.pad_token_id).all())
    assert bool((batch["attention_mask"][short, :gap] == 0).all())
    assert bool((batch["labels"][short, :gap] == IGNORE_INDEX).all())
    assert bool((batch["mm_token_type_ids"][short, :gap] == 0).all())
    assert batch["pixel_values_videos"].shape == (96 + 72, 1536)
    assert batch["video_grid_thw"].tolist() == [[4, 4, 6], [3, 4, 6]]
    right = collate([a, b], tok.pad_token_id, padding_side="right")
    assert torch.equal(right["input_ids"][short, : longest - gap], (a, b)[short]["input_ids"])
    with pytest.raises(ValueError, match="labels"):
        collate([a, _examples(tok, with_target=False)[1]], tok.pad_token_id)


def test_forward_loss_is_finite_and_only_on_the_target(tiny):
    model, tok, _ = tiny
    batch = collate(_examples(tok, with_target=True), tok.pad_token_id)
    model.train()
    try:
        out = model(**batch)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert model.model.visual.patch_embed.proj.weight.grad is not None  # gradients reach the vision tower
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    logits, labels = out.logits[:, :-1].detach(), batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss.detach(), manual)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_any_real_tokens_logits(tiny, side):
    model, tok, _ = tiny
    examples = _examples(tok, with_target=True)
    with torch.no_grad():
        both = model(**collate(examples, tok.pad_token_id, padding_side=side)).logits
        for row, ex in enumerate(examples):
            alone = model(**collate([ex], tok.pad_token_id)).logits[0]
            n = len(ex["input_ids"])
            padded = both[row, -n:] if side == "left" else both[row, :n]
            torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)


def test_batched_greedy_generation_equals_one_by_one(tiny):
    model, tok, _ = tiny
    examples = _examples(tok, with_target=False)
    kw = {"max_new_tokens": 4, "do_sample": False, "output_scores": True, "return_dict_in_generate": True}
    with torch.no_grad():
        batch = collate(examples, tok.pad_token_id)
        together = model.generate(**batch, **kw)
        width = batch["input_ids"].shape[1]
        for row, ex in enumerate(examples):
            single = collate([ex], tok.pad_token_id)
            alone = model.generate(**single, **kw)
            new = alone.sequences[0, single["input_ids"].shape[1] :]
            assert torch.equal(together.sequences[row, width : width + len(new)], new)
            for step, scores in enumerate(alone.scores):
                torch.testing.assert_close(together.scores[step][row], scores[0], atol=1e-5, rtol=1e-4)
    assert together.sequences.shape[1] > width


def test_equal_to_the_qwen3_vl_processor(tiny):
    pytest.importorskip("torchvision")
    from transformers import AutoProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    _, tok, path = tiny
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    idx = ROW_A["frame_idx"]
    for h, w in [(70, 100), (96, 160), (360, 640)]:
        size = processor.video_processor.size
        th, tw = smart_resize(8, h, w, 2, 32, size["shortest_edge"], size["longest_edge"])
        # the processor computes clip-time timestamps and keeps the template's outer vision wrapper
        cfg = VLMConfig(image_height=th, image_width=tw, timestamp_origin="clip", outer_vision_wrapper=True)
        frames = _frames(8, h, w, seed=h)
        ours = build_example(ROW_A, frames, tok, cfg, with_target=False)
        text = processor.apply_chat_template(chat_messages(cfg), tokenize=False, add_generation_prompt=True)
        ref = processor(
            text=[text],
            videos=[frames],
            video_metadata=[{"fps": ROW_A["fps"], "frames_indices": idx, "total_num_frames": 120}],
            do_sample_frames=False,
            cap_pixels_per_frame=False,
            return_tensors="pt",
        )
        assert torch.equal(ref["input_ids"][0], ours["input_ids"])
        assert torch.equal(ref["mm_token_type_ids"][0].long(), ours["mm_token_type_ids"])
        assert torch.equal(ref["video_grid_thw"], ours["video_grid_thw"])
        assert torch.equal(ref["pixel_values_videos"], ours["pixel_values_videos"])
