"""The tiny demo model: built from (corpus, config, seed), saved as a normal model directory,
loaded offline by the same `from_pretrained` code as a real checkpoint, with the same logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from tiny_helpers import TINY_CORPUS, TINY_SEED

from vlalert.beliefs.text import SPECIAL_TOKENS
from vlalert.devices import resolve_dtype
from vlalert.vlm.config import TinyModelConfig, VLMConfig
from vlalert.vlm.loading import load_model, load_tokenizer
from vlalert.vlm.tiny import (
    BUILD_INFO,
    build_tiny_model,
    init_tiny_model,
    tiny_config,
)
from vlalert.vlm.tokenizer import QWEN_SPECIAL_TOKENS, train_bpe, wrap_tokenizer

CFG = VLMConfig()  # the session's tiny_model_dir is built with it, from TINY_CORPUS and TINY_SEED


def _text_batch(tok, vocab: int) -> dict[str, torch.Tensor]:
    ids = tok("hazard=vehicle; where=ahead", add_special_tokens=False)["input_ids"]
    return {"input_ids": torch.tensor([ids]) % vocab}


def test_directory_holds_a_loadable_model(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert {"tokenizer_config.json", "video_preprocessor_config.json", BUILD_INFO} <= names
    model = load_model(tiny_model_dir, device="cpu")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert next(model.parameters()).dtype == torch.float32  # fp32 on CPU by default


def test_config_token_ids_come_from_the_tokenizer(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["video_token_id"] == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg["vision_start_token_id"] == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg["vision_end_token_id"] == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg["text_config"]["vocab_size"] == len(tok)
    assert cfg["text_config"]["pad_token_id"] == tok.pad_token_id
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen["eos_token_id"]


def test_widths_follow_the_config(tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu")
    t, v = model.config.text_config, model.config.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (
        128,
        4,
        4,
        2,
    )
    assert (v.depth, v.hidden_size, v.patch_size, v.temporal_patch_size, v.spatial_merge_size) == (
        2,
        64,
        16,
        2,
        2,
    )
    assert v.out_hidden_size == t.hidden_size
    assert list(v.deepstack_visual_indexes) == [0, 1]
    assert t.rope_parameters["mrope_section"] == [6, 5, 5]
    # the Conv3d patch embedding sees one flattened (3 x 2 x 16 x 16) patch
    assert model.model.visual.patch_embed.proj.weight.shape == (64, 3, 2, 16, 16)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 2_000_000


def test_reloaded_model_gives_the_same_logits_as_the_built_one(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    fresh = init_tiny_model(tiny_config(CFG, tok), seed=TINY_SEED)
    loaded = load_model(tiny_model_dir, device="cpu")
    batch = _text_batch(tok, len(tok))
    with torch.no_grad():
        a, b = fresh(**batch).logits, loaded(**batch).logits
    assert torch.equal(a, b)


def test_build_is_a_function_of_the_seed(tiny_model_dir, tmp_path):
    a = tiny_model_dir  # built from TINY_CORPUS with TINY_SEED
    b = build_tiny_model(tmp_path / "b", TINY_CORPUS, CFG, seed=TINY_SEED)
    c = build_tiny_model(tmp_path / "c", TINY_CORPUS, CFG, seed=TINY_SEED + 1)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    ma, mb, mc = (load_model(d, device="cpu") for d in (a, b, c))
    sa, sb, sc = (m.state_dict() for m in (ma, mb, mc))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(
        sa["model.visual.patch_embed.proj.weight"], sc["model.visual.patch_embed.proj.weight"]
    )
    info = json.loads((a / BUILD_INFO).read_text())
    assert info["seed"] == TINY_SEED
    assert info["n_parameters"] == sum(p.numel() for p in ma.parameters())  # tied head counted once


def _base_dir(tmp_path, extra_rows: int):
    """A model directory whose tokenizer lacks the belief/action tokens, as a real Qwen one does."""
    tok = wrap_tokenizer(train_bpe(TINY_CORPUS * 2, vocab_size=600, special_tokens=QWEN_SPECIAL_TOKENS))
    config = tiny_config(CFG, tok)
    config.text_config.vocab_size = len(tok) + extra_rows
    out = tmp_path / f"base{extra_rows}"
    init_tiny_model(config, seed=2).save_pretrained(out)
    tok.save_pretrained(out)
    return out, len(tok)


@pytest.mark.parametrize("extra_rows", [0, 16])
def test_real_style_tokenizer_gets_the_span_tokens_and_the_model_rows(tmp_path, extra_rows):
    base, n_base = _base_dir(tmp_path, extra_rows)
    tok = load_tokenizer(base)
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert ids == list(range(n_base, n_base + 4))
    for token in SPECIAL_TOKENS:
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1
    model = load_model(base, device="cpu")
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == max(n_base + 4, n_base + extra_rows)  # grown only when rows are missing
    mean = emb[:n_base].mean(dim=0)
    for i in ids:
        torch.testing.assert_close(emb[i], mean)
        torch.testing.assert_close(model.get_output_embeddings().weight[i], mean)
    # loading is deterministic: the same ids, the same rows
    again = load_model(base, device="cpu").get_input_embeddings().weight
    assert torch.equal(emb, again)


def test_dtype_defaults():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8", "cpu")


_FUSED_CHECK = """
import sys, torch
from vlalert.vlm.loading import load_model, patch_embed_fused
plain = load_model(sys.argv[1], device="cpu")
fused = load_model(sys.argv[1], device="cpu", fuse_patch_embed=True)
assert not patch_embed_fused(plain) and patch_embed_fused(fused)
x = torch.randn(24, 3 * 2 * 16 * 16)
with torch.no_grad():
    torch.testing.assert_close(fused.model.visual.patch_embed(x), plain.model.visual.patch_embed(x))
try:
    load_model(sys.argv[1], device="cpu")
except RuntimeError as err:
    assert "process-global" in str(err)
else:
    raise AssertionError("an unfused load after a fused one must refuse")
print("ok")
"""


def test_fused_patch_embedding_matches_the_conv3d(tiny_model_dir):
    # transformers registers the fusion for the whole process: check it in a process of its own
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _FUSED_CHECK, str(tiny_model_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_config_rejects_impossible_geometry():
    with pytest.raises(ValidationError, match="multiple of 32"):
        VLMConfig(image_height=48)
    with pytest.raises(ValidationError, match="mrope_section"):
        TinyModelConfig(head_dim=16)
    with pytest.raises(ValidationError, match="deepstack"):
        TinyModelConfig(vision_depth=1)
    with pytest.raises(ValidationError, match="perfect square"):
        TinyModelConfig(vision_num_position_embeddings=50)
    with pytest.raises(ValidationError):
        VLMConfig(unknown_key=1)
    assert VLMConfig(image_height=448, image_width=448).tokens_per_group() == 196
    assert VLMConfig().tokens_per_group() == 6


def test_saved_files_are_world_readable(tiny_model_dir):
    """save_pretrained writes model.safetensors 0600; the build publishes it like every output."""
    umask = os.umask(0o022)
    os.umask(umask)
    for p in tiny_model_dir.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p.name


def test_only_safetensors_are_loaded(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from vlalert.vlm.lora import attach_adapter

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"no \.safetensors weights \(it holds only pytorch_model\.bin\)"):
        load_model(pickled, device="cpu")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"adapter .* holds only adapter_model\.bin"):
        attach_adapter(object(), adapter)

    # and from_pretrained itself is told to refuse pickles (a hub id is not checked by us)
    import transformers

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", spy)
    with pytest.raises(RuntimeError, match="stop"):
        load_model(tiny_model_dir, device="cpu")
    assert seen["use_safetensors"] is True
