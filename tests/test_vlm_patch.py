"""The Conv3d -> Linear patch of the vision patch embedding: exact up to rounding, on the layer and on
the whole tiny model, by transformers' load-time fusion (in a subprocess: it is process-global) and
by our in-place swap (also through peft); idempotent, reversible, and refused on convs that are
not a product of non-overlapping patches."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from vlalert.vlm.config import VLMConfig
from vlalert.vlm.inputs import build_example, collate
from vlalert.vlm.loading import load_model, load_tokenizer
from vlalert.vlm.patch import (
    LinearPatchProjection,
    PatchEmbedError,
    check_fusable,
    conv3d_to_linear,
    fuse_patch_embed,
    fusion_state,
    max_relative_error,
    unfuse_patch_embed,
    verify,
)

TOL = 1e-5
CFG = VLMConfig()
ROW = {"video_id": "v", "tick": 3, "frame_idx": list(range(8)), "fps": 10.0}


def _conv(d: int = 64, **kw) -> nn.Conv3d:
    torch.manual_seed(0)
    kernel = kw.pop("kernel_size", (2, 16, 16))
    return nn.Conv3d(3, d, kernel_size=kernel, stride=kw.pop("stride", kernel), **kw)


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    rng = np.random.default_rng(1)
    examples = [
        build_example(ROW, rng.integers(0, 256, (8, 64, 96, 3), dtype=np.uint8), tok, CFG, with_target=False),
        build_example(
            {**ROW, "frame_idx": list(range(6))},
            rng.integers(0, 256, (6, 64, 96, 3), dtype=np.uint8),
            tok,
            CFG,
            with_target=False,
        ),
    ]
    return collate(examples, tok.pad_token_id)


# ---------------------------------------------------------------------------------------------- layer


def test_linear_equals_the_conv_on_random_patches_and_shares_its_weights():
    conv = _conv(d=96)
    lin = conv3d_to_linear(conv)
    x = torch.randn(300, 3, 2, 16, 16)
    assert verify(conv, lin, x) <= TOL
    assert lin(x).shape == conv(x).shape == (300, 96, 1, 1, 1)
    assert (lin.in_features, lin.out_features) == (1536, 96)
    # the very same storage: W.view(D, -1), no copy; the bias is the same Parameter
    assert lin.weight.data_ptr() == conv.weight.data_ptr()
    assert lin.bias is conv.bias
    # a flattened patch row is (C, T, H, W) order, as the conv reads it
    w = conv.weight.detach()
    x0 = x[0]
    manual = (w * x0).sum(dim=(1, 2, 3, 4)) + conv.bias.detach()
    torch.testing.assert_close(lin(x[:1]).view(-1), manual, rtol=1e-5, atol=1e-5)


def test_linear_accepts_flat_patches_and_refuses_wider_inputs():
    conv = _conv(d=32)
    lin = conv3d_to_linear(conv)
    x = torch.randn(5, 3, 2, 16, 16)
    torch.testing.assert_close(lin(x.reshape(5, -1)), lin(x))
    with pytest.raises(PatchEmbedError, match="single patches"):
        lin(torch.randn(2, 3, 2, 32, 32))  # a real convolution over 4 patches: not a product


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"stride": (1, 16, 16)}, "stride"),
        ({"padding": 1}, "padding"),
        ({"padding": "same", "stride": 1}, "padding"),
        ({"dilation": 2}, "dilation"),
        ({"groups": 3, "d": 63}, "groups"),
    ],
)
def test_convs_that_are_not_a_patch_product_are_refused(kwargs, why):
    conv = _conv(**kwargs)
    with pytest.raises(PatchEmbedError, match=why):
        check_fusable(conv)


def test_not_a_conv_is_refused_with_a_hint_for_adapter_layers():
    class Wrapped(nn.Module):
        base_layer = None

    with pytest.raises(PatchEmbedError, match="merge the adapter"):
        check_fusable(Wrapped())


def test_max_relative_error_is_normwise():
    a = torch.tensor([0.0, 2.0, -4.0])
    assert max_relative_error(a, a.clone()) == 0.0
    assert max_relative_error(a, torch.tensor([1e-3, 2.0, -4.0])) == pytest.approx(1e-3 / 4)
    assert max_relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="shape"):
        max_relative_error(a, a[:2])


# ---------------------------------------------------------------------------------------------- model


def test_inplace_swap_keeps_the_models_logits_and_is_idempotent(tiny_model_dir, batch):
    ref = load_model(tiny_model_dir, device="cpu")
    model = copy.deepcopy(ref)
    n_params = sum(p.numel() for p in model.parameters())
    assert fusion_state(model) == "conv3d"
    assert fuse_patch_embed(model) == 1
    assert fusion_state(model) == "inplace"
    assert isinstance(model.model.visual.patch_embed.proj, LinearPatchProjection)
    assert sum(p.numel() for p in model.parameters()) == n_params  # shared, not duplicated
    assert verify(ref, model, batch) <= TOL
    with torch.no_grad():
        once = model(**batch).logits
    assert fuse_patch_embed(model) == 0  # idempotent: nothing left to swap
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, once)
    # the layer itself, on the model's own pixel patches
    pixels = batch["pixel_values_videos"]
    assert verify(ref.model.visual.patch_embed, model.model.visual.patch_embed, pixels) <= TOL
    # and back
    assert unfuse_patch_embed(model) == 1
    assert fusion_state(model) == "conv3d"
    assert isinstance(model.model.visual.patch_embed.proj, nn.Conv3d)
    ref_state, state = ref.state_dict(), model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)


def test_inplace_swap_works_through_a_peft_wrapper(tiny_model_dir, batch):
    from peft import LoraConfig, get_peft_model

    base = load_model(tiny_model_dir, device="cpu")
    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ref = get_peft_model(base, lora).eval()
    model = copy.deepcopy(ref)
    assert fuse_patch_embed(model) == 1
    assert fusion_state(model) == "inplace"
    assert verify(ref, model, batch) <= TOL
    with torch.no_grad(), ref.disable_adapter():  # the adapter is live: it changes the logits
        without = ref(**batch).logits
    with torch.no_grad():
        assert max_relative_error(without, ref(**batch).logits) > 1e-3


def test_a_bad_module_leaves_the_whole_model_untouched(tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu")
    pe = model.model.visual.patch_embed
    pe.proj = nn.Conv3d(3, pe.proj.out_channels, (2, 16, 16), stride=(2, 8, 8))
    with pytest.raises(PatchEmbedError, match=r"model\.visual\.patch_embed\.proj: .*stride"):
        fuse_patch_embed(model)
    assert isinstance(pe.proj, nn.Conv3d)


LIBRARY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np, torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from vlalert.vlm.config import VLMConfig
    from vlalert.vlm.inputs import build_example, collate
    from vlalert.vlm.loading import load_model, load_tokenizer
    from vlalert.vlm.patch import fuse_patch_embed, fusion_state, verify

    tiny, adapter_dir = sys.argv[1], sys.argv[2]
    cfg = VLMConfig()
    tok = load_tokenizer(tiny)
    row = {"video_id": "v", "tick": 3, "frame_idx": list(range(8)), "fps": 10.0}
    frames = np.random.default_rng(1).integers(0, 256, (8, 64, 96, 3), dtype=np.uint8)
    batch = collate([build_example(row, frames, tok, cfg, with_target=False)], tok.pad_token_id)
    # unfused first: after a fused load this process can load no unfused Qwen3-VL any more
    plain = load_model(tiny, device="cpu")
    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_model(tiny, device="cpu"), lora).save_pretrained(adapter_dir)
    plain_lora = PeftModel.from_pretrained(load_model(tiny, device="cpu"), adapter_dir).eval()
    fused = load_model(tiny, device="cpu", fuse_patch_embed=True)
    fused_lora = PeftModel.from_pretrained(load_model(tiny, device="cpu", fuse_patch_embed=True), adapter_dir)
    fused_lora.eval()
    try:
        load_model(tiny, device="cpu")
        refused = False
    except RuntimeError:
        refused = True
    pe = fused.model.visual.patch_embed
    out = {
        "class": type(pe).__name__,
        "state": fusion_state(fused),
        "swapped": fuse_patch_embed(fused),
        "shares_layout": list(pe.linear_proj.weight.shape),
        "layer": verify(plain.model.visual.patch_embed, pe, batch["pixel_values_videos"]),
        "model": verify(plain, fused, batch),
        "model_lora": verify(plain_lora, fused_lora, batch),
        "lora_state": fusion_state(fused_lora),
        "merged_state": fusion_state(fused_lora.merge_and_unload()),
        "unfused_after_fused_refused": refused,
    }
    print(json.dumps(out))
    """
)


def test_library_fusion_in_a_fresh_process(tiny_model_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", LIBRARY_SCRIPT, str(tiny_model_dir), str(tmp_path / "adapter")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["class"] == "FusedQwen3VLVisionPatchEmbed"
    assert out["state"] == out["lora_state"] == out["merged_state"] == "library"
    assert out["swapped"] == 0  # our swap recognises the library's fusion and leaves it alone
    assert out["shares_layout"] == [CFG.tiny.vision_hidden_size, 3 * 2 * 16 * 16]
    assert out["layer"] <= TOL
    assert out["model"] <= TOL
    assert out["model_lora"] <= TOL
    assert out["unfused_after_fused_refused"] is True
