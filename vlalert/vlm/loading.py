"""Load the VLM and its tokenizer, the same code for the tiny demo directory and real Qwen3-VL.

Both go through `from_pretrained`, so a local directory (the tiny model the demo builds, a
downloaded Qwen3-VL, a merged SFT checkpoint) and a hub id are one code path. A real Qwen
tokenizer lacks the belief/action tokens: they are added as special tokens, and the model's
embedding matrix grows if it has no rows for them (Qwen3-VL-4B has 151,936 rows for a
151,669-token tokenizer, so the four new ids already fit). The rows of newly added tokens start as
the mean of the original vocabulary's rows, in the input embedding and in the output head, so a
new token starts out as "an average token" instead of a random direction that dominates the
logits. This is deterministic, so loading twice gives the same model.

A hub id loads at `revision` (the config's `model.revision`, a pinned commit): the model, its
config and its tokenizer all from that one commit, so a run never mixes a tokenizer of one commit
with weights of another. A hub id loaded without a revision logs the commit the hub resolved, which
is what to pin. A local directory ignores the revision.

Tests must not reach the hub: they pass local directories and run with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vlalert.beliefs.text import SPECIAL_TOKENS
from vlalert.devices import resolve_device, resolve_dtype
from vlalert.download_config import COMMIT_RE

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

log = logging.getLogger(__name__)


def require_safetensors(name_or_path: str | os.PathLike[str], what: str) -> None:
    """Refuse a local directory whose weights are not safetensors (pickle files can run code on load).

    A hub id is left to `from_pretrained(..., use_safetensors=True)`, which refuses `.bin` itself.
    """
    path = Path(name_or_path)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    only = f" (it holds only {', '.join(pickles)})" if pickles else ""
    raise ValueError(
        f"{what} {path} has no .safetensors weights{only}: vlalert loads safetensors only, since pickle "
        "weights (pytorch_model.bin, adapter_model.bin) can run code when loaded. Convert them once, in a "
        "trusted environment: load and `save_pretrained(dir, safe_serialization=True)`."
    )


def _local_only(name_or_path: str | os.PathLike[str]) -> bool:
    # A directory on disk is never looked up on the hub, whatever the environment says.
    return Path(name_or_path).is_dir()


def source_kwargs(name_or_path: str | os.PathLike[str], revision: str | None = None) -> dict[str, Any]:
    """Where `from_pretrained` reads from: a local directory only, or the hub at `revision`.

    One place for every `from_pretrained` of the model, its config and its tokenizer (loading, SFT's
    QLoRA base, the cache's config read), so that none of them falls back to the hub's default
    branch while the others read the pinned commit.
    """
    if _local_only(name_or_path):
        return {"local_files_only": True}
    return {"local_files_only": False, "revision": revision} if revision else {"local_files_only": False}


def log_resolved_commit(name_or_path: str | os.PathLike[str], revision: str | None, config: Any) -> None:
    """A hub model loaded at a branch, a tag or no revision: log the commit it resolved to (the job's
    log is the run's record of it), with the config line that pins it."""
    if _local_only(name_or_path) or (revision and COMMIT_RE.fullmatch(revision)):
        return
    commit = getattr(config, "_commit_hash", None)
    log.warning(
        "model %s loaded unpinned (revision %s) at commit %s; set model.revision: %s to pin it",
        name_or_path,
        revision or "default branch",
        commit or "unknown",
        commit or "<commit>",
    )


def _tokenizer_with_specials(
    name_or_path: str | os.PathLike[str], revision: str | None = None
) -> tuple[Any, list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path), **source_kwargs(name_or_path, revision))
    vocab = tok.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        tok.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else tok.eos_token
    return tok, [int(tok.convert_tokens_to_ids(t)) for t in missing]


def load_tokenizer(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Any:
    """The model's tokenizer with `<|BELIEF|> <|/BELIEF|> <|ACTION|> <|/ACTION|>` as single special tokens.

    Left padding (batched generation). Adding the tokens is deterministic, so this and
    `load_model` agree on their ids. `revision`: the hub commit of a hub id (model.revision).
    """
    return _tokenizer_with_specials(name_or_path, revision)[0]


def _init_new_rows(model: Any, new_ids: list[int]) -> None:
    import torch

    if not new_ids:
        return
    first_new = min(new_ids)
    with torch.no_grad():
        for emb in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
            if emb is None:
                continue
            weight = emb.weight
            mean = weight[:first_new].float().mean(dim=0).to(weight.dtype)
            weight[new_ids] = mean


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | Any | None = None,
    device: str | None = None,
    fuse_patch_embed: bool = False,
    revision: str | None = None,
) -> Any:
    """A `Qwen3VLForConditionalGeneration` (or whatever the directory holds) ready for `load_tokenizer`'s ids.

    dtype: None/"auto" -> bf16 on CUDA, fp32 on CPU. device: None -> CUDA when available.
    revision: the hub commit of a hub id (model.revision); the tokenizer is read at the same one.
    fuse_patch_embed: transformers' load-time fusion of the Conv3d patch embedding into a Linear
    (inference only; outputs change by float rounding). transformers 5.23 registers that fusion
    for the whole process: once a fused model is loaded, every later load of the same model type
    in that process comes out fused as well. Rather than hand back a silently different model,
    an unfused load after a fused one raises; load fused models only in inference processes.
    """
    from transformers import AutoModelForImageTextToText

    device = device or resolve_device()
    # device_map places the weights as they are read: a 4B model never stages through CPU memory.
    require_safetensors(name_or_path, "model")
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(dtype, device),
        "device_map": device,
        "use_safetensors": True,  # never unpickle weights
    }
    if fuse_patch_embed:
        kwargs["fusion_config"] = {"patch_embeddings": True}
    model = AutoModelForImageTextToText.from_pretrained(
        str(name_or_path), **source_kwargs(name_or_path, revision), **kwargs
    )
    log_resolved_commit(name_or_path, revision, model.config)
    tok, new_ids = _tokenizer_with_specials(name_or_path, revision)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tok) > rows:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    _init_new_rows(model, new_ids)
    if patch_embed_fused(model) != fuse_patch_embed:
        state = "fused" if not fuse_patch_embed else "not fused (the model has no Conv3d patch embedding)"
        raise RuntimeError(
            f"asked for fuse_patch_embed={fuse_patch_embed} but the loaded patch embedding is {state}: "
            "transformers' fusion is process-global, so load the unfused model in a process that never "
            "loaded a fused one"
        )
    return model.to(device).eval()


def patch_embed_fused(model: Any) -> bool:
    """Whether the vision tower's patch embedding runs as a Linear (transformers' fusion) not a Conv3d."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    return hasattr(getattr(visual, "patch_embed", None), "linear_proj")


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | Any | None = None,
    device: str | None = None,
    fuse_patch_embed: bool = False,
    revision: str | None = None,
) -> tuple[Any, Any]:
    return (
        load_model(
            name_or_path, dtype=dtype, device=device, fuse_patch_embed=fuse_patch_embed, revision=revision
        ),
        load_tokenizer(name_or_path, revision),
    )
