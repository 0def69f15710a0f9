"""The trainable part of SFT: LoRA on the language model and the embedding rows that learn.

LoRA adapters go on the projections of the *language model's* decoder layers only. Qwen3-VL's
vision tower has its own attention and MLP linears (qkv, proj, linear_fc1/2, the mergers); the
target regex is anchored on `language_model.layers.N.` so none of them is ever adapted.

Beside LoRA, selected rows of the input embedding and of the output head train (peft's trainable
tokens). With tied embeddings, as in Qwen3-VL-4B, one set of rows serves both; untied, each gets
its own. On a real Qwen the rows of the four belief/action tokens train, because the tokenizer just
added them (vlalert.vlm.loading starts them at the mean row); on the tiny demo model every row
trains, because all its embeddings are random (`SFTConfig.embeddings_mode`).

Trainable parameters are kept in fp32 whatever the base model's dtype, so AdamW's updates are not
rounded to bf16.

QLoRA (`sft.qlora`): the base model is loaded 4-bit (NF4, double quantisation, bf16 compute) by
bitsandbytes and prepared with peft's `prepare_model_for_kbit_training`; LoRA and the embedding
rows train on top as above. It needs CUDA and bitsandbytes; `require_qlora` says so plainly.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from vlalert.beliefs.text import SPECIAL_TOKENS
from vlalert.vlm.config import SFTConfig
from vlalert.vlm.loading import (
    _init_new_rows,
    _tokenizer_with_specials,
    load_model,
    log_resolved_commit,
    require_safetensors,
    source_kwargs,
)


@contextlib.contextmanager
def _peft_wrapping() -> Iterator[None]:
    """peft reads transformers' deprecated `is_gradient_checkpointing` while it wraps a model: a
    FutureWarning about peft's own code, which a user can do nothing about; every other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def lora_target_regex(modules: Sequence[str]) -> str:
    """peft target regex: the named projections inside the language model's decoder layers only."""
    alts = "|".join(re.escape(m) for m in modules)
    return rf"(?:.*\.)?language_model\.layers\.\d+\.(?:.*\.)?(?:{alts})"


def embedding_token_ids(mode: str, tokenizer: Any, vocab_rows: int) -> list[int]:
    """Rows of the embedding / output head that train: mode "all", "special" or "none"."""
    if mode == "none":
        return []
    if mode == "all":
        return list(range(vocab_rows))
    if mode != "special":
        raise ValueError(f"unknown embeddings mode {mode!r}")
    ids = []
    for token in SPECIAL_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id or not 0 <= int(tid) < vocab_rows:
            raise ValueError(f"token {token!r} has no row in the model's embedding (id {tid})")
        ids.append(int(tid))
    return sorted(ids)


def apply_lora(model: Any, tokenizer: Any, cfg: SFTConfig, is_tiny: bool) -> Any:
    """Wrap `model` in a peft model: LoRA on the language model, trainable embedding rows, fp32 trainables.

    LoRA's random initialisation draws from torch's global generator: seed it before calling.
    """
    rows = int(model.get_input_embeddings().weight.shape[0])
    return wrap_lora(model, cfg, embedding_token_ids(cfg.embeddings_mode(is_tiny), tokenizer, rows))


def wrap_lora(model: Any, cfg: SFTConfig, token_ids: Sequence[int]) -> Any:
    """`apply_lora` with the trainable embedding rows given as ids (no tokenizer needed)."""
    from peft import LoraConfig, get_peft_model

    token_indices: dict[str, list[int]] | None = None
    if token_ids:
        ids = [int(i) for i in token_ids]
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        # tied: peft wraps lm_head as a follower of the embedding's rows; untied: both train their own
        token_indices = {"embed_tokens": ids} if tied else {"embed_tokens": ids, "lm_head": ids}
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_target_regex(cfg.target_modules),
        bias="none",
        trainable_token_indices=token_indices,
    )
    with _peft_wrapping():
        peft_model = get_peft_model(model, lora)
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model


def require_qlora(device: str) -> None:
    """Raise a clear error where QLoRA cannot run: off CUDA, or without bitsandbytes."""
    if not str(device).startswith("cuda"):
        raise RuntimeError(
            f"sft.qlora needs a CUDA device (bitsandbytes' 4-bit kernels), but SFT runs on {device}: "
            "set sft.qlora: false, or run on a GPU"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "sft.qlora needs the bitsandbytes package, which is not installed: pip install bitsandbytes"
        ) from None


def load_qlora_base(name_or_path: str | os.PathLike[str], device: str, revision: str | None = None) -> Any:
    """The base model in 4-bit NF4 (double quantisation, bf16 compute), ready for LoRA on top;
    `revision`: the hub commit of a hub id (model.revision)."""
    require_qlora(device)
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    require_safetensors(name_or_path, "model")
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForImageTextToText.from_pretrained(
        str(name_or_path),
        quantization_config=quant,
        dtype=torch.bfloat16,
        device_map=device,
        use_safetensors=True,
        **source_kwargs(name_or_path, revision),
    )
    log_resolved_commit(name_or_path, revision, model.config)
    tok, new_ids = _tokenizer_with_specials(name_or_path, revision)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    _init_new_rows(model, new_ids)
    # norms and embeddings to fp32; activation checkpointing is the Trainer's switch
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def load_base_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str,
    device: str,
    qlora: bool,
    revision: str | None = None,
) -> Any:
    """The model SFT adapts: as `load_model` loads it, or 4-bit for QLoRA (at `revision` on the hub)."""
    if qlora:
        return load_qlora_base(name_or_path, device, revision)
    return load_model(name_or_path, dtype=dtype, device=device, revision=revision)


def lora_module_names(model: Any) -> list[str]:
    """Names of the modules that carry a LoRA adapter."""
    return [n for n, m in model.named_modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {}))]


def trainable_parameters(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def attach_adapter(model: Any, adapter_dir: str | os.PathLike[str]) -> Any:
    """A `PeftModel` of `model` with the saved adapter; only `adapter_model.safetensors` is accepted
    (peft itself would fall back to unpickling `adapter_model.bin`)."""
    from peft import PeftModel

    require_safetensors(adapter_dir, "adapter")
    with _peft_wrapping():
        return PeftModel.from_pretrained(model, str(adapter_dir))


def load_adapted_model(
    name_or_path: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    *,
    dtype: str | Any | None = None,
    device: str | None = None,
    merge: bool = False,
    revision: str | None = None,
) -> Any:
    """The base model with a saved SFT adapter applied (merged into the weights when `merge`)."""
    base = load_model(name_or_path, dtype=dtype, device=device, revision=revision)
    model = attach_adapter(base, adapter_dir)
    if merge:
        model = model.merge_and_unload()
    return model.eval()
