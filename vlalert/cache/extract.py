"""Generation and hidden states of a batch of ticks: the z_t and r_t of the cache.

For every tick the model writes (greedy, at most `max_new_tokens`) its analysis, belief span and
action; then the hidden states of those tokens are read in one more forward pass, with
`output_hidden_states`, over the prompt and the generated tokens:

- `z_t` = for each layer of `belief_layers`, the mean over the tokens *strictly between*
  `<|BELIEF|>` and `<|/BELIEF|>` (the content; the tags are the same two tokens in every tick and
  add nothing that varies), concatenated in the configured order;
- `r_t` = the hidden state at the `<|/BELIEF|>` token at `policy_layer`: the position where the
  model has read the whole belief and is about to choose the action.

The span is located on token ids (both tags are single special tokens), not on decoded text: a
tag the model spelled out of ordinary byte pieces does not count. The first `<|BELIEF|>` and the
first `<|/BELIEF|>` after it are used, as `parse_generation` does. A generation without such a
span (or with an empty one) is kept with `belief_span_found = False` and a fallback rule:
z = mean over all generated tokens (the stop token excluded), r = the last of them; when the model
stopped at once, both come from the last prompt token (the `\\n` after `assistant`).
`belief_parsed` reports separately whether the span's text reads back into a valid Belief.

The second pass ("hidden_pass"): "full" runs prompt + generated tokens from scratch; "cached"
re-uses the key/value cache that generation built for the prompt and runs only the last prompt
token and the generated tokens over it, with the very M-RoPE positions generation used. Both give
the hidden states of one causal forward pass over the same tokens (equal up to float rounding,
tested), but "cached" does not recompute the video and the prompt, which are ~90 % of the tokens.

The key/value cache of generation ("kv_cache"): "dynamic" grows each layer's tensors a step at a
time (transformers' default); "static" preallocates them at the prompt width + `max_new_tokens`,
rounded up to `STATIC_BUCKET` tokens, so every decoding step has the same shapes. On CUDA
transformers then compiles the decoding step (its generate auto-compile, CUDA graphs) instead of
launching each layer's kernels from Python, which is what bounds generation on a GPU: 32 ms a step
at batch 8 and 42 ms at 128 on an H200 (benchmarks/results/gpu_suite.json), against ~6 ms of memory
traffic. Rounding the length keeps one compiled graph per batch size, not one per prompt width. The
cache holds one slot more than generation fills, for the cached hidden pass's last token. Same
tokens and hidden states (tested on CPU, where nothing is compiled).

Teacher forcing (splits in `cache.teacher_forced_splits`): the benchmark's target text stands in
for the generation, and a single forward pass over prompt + target gives the hidden states.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlalert.beliefs.text import BELIEF_CLOSE, BELIEF_OPEN, parse_generation
from vlalert.devices import to_device
from vlalert.vlm.inputs import collate


@dataclass(frozen=True)
class SpanPositions:
    """Positions in a row's window: index 0 is the last prompt token, j + 1 the j-th new token."""

    z: tuple[int, ...]  # tokens averaged into z_t
    r: int  # token whose state is r_t
    found: bool  # a non-empty belief span was found (else: the fallback rule)


def span_positions(new_ids: Sequence[int], open_id: int, close_id: int) -> SpanPositions:
    """Where z_t and r_t are read among a row's new tokens (stop token excluded); see module doc."""
    ids = list(new_ids)
    if open_id in ids:
        o = ids.index(open_id)
        c = next((j for j in range(o + 1, len(ids)) if ids[j] == close_id), None)
        if c is not None and c > o + 1:
            return SpanPositions(z=tuple(range(o + 2, c + 1)), r=c + 1, found=True)
    if ids:
        return SpanPositions(z=tuple(range(1, len(ids) + 1)), r=len(ids), found=False)
    return SpanPositions(z=(0,), r=0, found=False)


def strip_stop(ids: Sequence[int], stop_ids: frozenset[int]) -> list[int]:
    """New tokens up to (excluding) the first stop token; what follows it is padding."""
    out = []
    for t in ids:
        if int(t) in stop_ids:
            break
        out.append(int(t))
    return out


STATIC_BUCKET = 128  # a static cache's length is a multiple of this (one compiled graph per bucket)


def static_cache_length(width: int, max_new_tokens: int) -> int:
    """Slots of a static cache for prompts of `width` tokens: generation's + the hidden pass's last."""
    need = width + max_new_tokens
    return -(-need // STATIC_BUCKET) * STATIC_BUCKET


@dataclass(frozen=True)
class Extractor:
    """A loaded model and everything extraction needs to know about it."""

    model: Any  # Qwen3VLForConditionalGeneration (or a peft wrapper of it), eval mode
    tokenizer: Any
    belief_layers: tuple[int, ...]
    policy_layer: int
    max_new_tokens: int
    hidden_pass: str = "cached"  # "cached" | "full"
    kv_cache: str = "dynamic"  # "dynamic" | "static" (see the module doc)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def open_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(BELIEF_OPEN))

    @property
    def close_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(BELIEF_CLOSE))

    def generation_config(self, width: int = 0) -> Any:
        """Greedy, bounded; for prompts of `width` tokens, with the configured key/value cache."""
        gen = copy.deepcopy(self.model.generation_config)
        gen.do_sample = False
        gen.num_beams = 1
        gen.temperature = gen.top_p = gen.top_k = None  # a checkpoint's sampling defaults do not apply
        gen.max_new_tokens = self.max_new_tokens
        gen.pad_token_id = self.tokenizer.pad_token_id
        if gen.eos_token_id is None:
            gen.eos_token_id = self.tokenizer.eos_token_id
        gen.return_dict_in_generate = True
        if self.kv_cache == "static":  # transformers allocates it at max(max_cache_len, its own need)
            gen.cache_implementation = "static"
            gen.max_cache_len = static_cache_length(width, self.max_new_tokens)
        elif self.kv_cache != "dynamic":
            raise ValueError(f"kv_cache must be 'dynamic' or 'static', got {self.kv_cache!r}")
        return gen

    def stop_ids(self) -> frozenset[int]:
        eos = self.generation_config().eos_token_id
        return frozenset(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))


@dataclass(frozen=True)
class TickVectors:
    """What the cache keeps of one tick (vectors in float32; the store casts them to float16)."""

    z: np.ndarray  # [len(belief_layers) * hidden]
    r: np.ndarray  # [hidden]
    generated_text: str
    belief_parsed: bool
    belief_span_found: bool
    teacher_forced: bool
    n_generated_tokens: int
    n_belief_tokens: int


def _core_model(model: Any) -> Any:
    """The Qwen3VLModel inside a ForConditionalGeneration, peft wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def _pool(
    hidden: Sequence[torch.Tensor],
    starts: Sequence[int],
    positions: Sequence[SpanPositions],
    ex: Extractor,
) -> tuple[np.ndarray, np.ndarray]:
    """z [B, n_layers * H] and r [B, H] in float32 from the hidden-states tuple of one forward."""
    zs, rs = [], []
    for row, (start, pos) in enumerate(zip(starts, positions, strict=True)):
        idx = torch.tensor(pos.z, device=hidden[0].device) + start
        zs.append(torch.cat([hidden[layer][row, idx].float().mean(dim=0) for layer in ex.belief_layers]))
        rs.append(hidden[ex.policy_layer][row, start + pos.r].float())
    z = torch.stack(zs).cpu().numpy()
    r = torch.stack(rs).cpu().numpy()
    if not (np.isfinite(z).all() and np.isfinite(r).all()):
        raise FloatingPointError("the model produced non-finite hidden states")
    return z, r


def _check_depth(hidden: Sequence[torch.Tensor], ex: Extractor) -> None:
    top = max((*ex.belief_layers, ex.policy_layer))
    if top >= len(hidden):
        raise ValueError(
            f"layer {top} requested but the model returns {len(hidden)} hidden states (0..{len(hidden) - 1})"
        )


def _vectors(
    ex: Extractor,
    new_ids: Sequence[list[int]],
    hidden: Sequence[torch.Tensor],
    starts: Sequence[int],
    teacher_forced: bool,
) -> list[TickVectors]:
    _check_depth(hidden, ex)
    positions = [span_positions(ids, ex.open_id, ex.close_id) for ids in new_ids]
    z, r = _pool(hidden, starts, positions, ex)
    out = []
    for i, (ids, pos) in enumerate(zip(new_ids, positions, strict=True)):
        text = ex.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(
            TickVectors(
                z=z[i],
                r=r[i],
                generated_text=text,
                belief_parsed=parse_generation(text).belief is not None,
                belief_span_found=pos.found,
                teacher_forced=teacher_forced,
                n_generated_tokens=len(ids),
                n_belief_tokens=len(pos.z) if pos.found else 0,
            )
        )
    return out


@torch.inference_mode()
def generate_batch(ex: Extractor, examples: Sequence[Mapping[str, Any]]) -> list[TickVectors]:
    """Greedy generation, then the hidden states of the generated tokens (see module doc)."""
    model, tok = ex.model, ex.tokenizer
    batch = to_device(collate(examples, tok.pad_token_id), ex.device)
    width = batch["input_ids"].shape[1]
    out = model.generate(**batch, generation_config=ex.generation_config(width))
    seqs = out.sequences
    n_new = seqs.shape[1] - width
    stop = ex.stop_ids()
    new_ids = [strip_stop(seqs[i, width:].tolist(), stop) for i in range(seqs.shape[0])]
    ones = torch.ones(seqs.shape[0], n_new, dtype=batch["attention_mask"].dtype, device=seqs.device)
    mask = torch.cat([batch["attention_mask"], ones], dim=1)
    types = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(ones)], dim=1)
    if ex.hidden_pass == "full":
        full = model(
            input_ids=seqs,
            attention_mask=mask,
            mm_token_type_ids=types,
            pixel_values_videos=batch["pixel_values_videos"],
            video_grid_thw=batch["video_grid_thw"],
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
        )
        return _vectors(ex, new_ids, full.hidden_states, [width - 1] * len(new_ids), teacher_forced=False)
    if ex.hidden_pass != "cached":
        raise ValueError(f"hidden_pass must be 'cached' or 'full', got {ex.hidden_pass!r}")
    # The positions generation used: text positions from the mask (row 0), M-RoPE rows from the
    # prompt's vision grid; the generated tokens continue the text positions.
    rope, _ = _core_model(model).get_rope_index(
        seqs, types, video_grid_thw=batch["video_grid_thw"], attention_mask=mask
    )
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    position_ids = torch.cat([text[None], rope], dim=0)[:, :, width - 1 :]
    cache = out.cache  # transformers 5: `cache` (formerly past_key_values)
    cache.crop(-(cache.get_seq_length() - (width - 1)))  # keep the prompt up to its last token
    cont = model(
        input_ids=seqs[:, width - 1 :],
        attention_mask=mask,
        position_ids=position_ids,
        cache=cache,
        output_hidden_states=True,
        use_cache=True,
        logits_to_keep=1,
    )
    return _vectors(ex, new_ids, cont.hidden_states, [0] * len(new_ids), teacher_forced=False)


@torch.inference_mode()
def teacher_forced_batch(ex: Extractor, examples: Sequence[Mapping[str, Any]]) -> list[TickVectors]:
    """One forward pass over prompt + target (examples built `with_target=True`)."""
    batch = collate(examples, ex.tokenizer.pad_token_id)
    batch.pop("labels")
    width = batch["input_ids"].shape[1]
    stop = ex.stop_ids()
    new_ids, starts = [], []
    for e in examples:
        n, p = len(e["input_ids"]), int(e["prompt_length"])
        new_ids.append(strip_stop(e["input_ids"][p:].tolist(), stop))
        starts.append(width - n + p - 1)  # left padding: the row's last prompt token
    out = ex.model(
        **to_device(batch, ex.device), output_hidden_states=True, use_cache=False, logits_to_keep=1
    )
    return _vectors(ex, new_ids, out.hidden_states, starts, teacher_forced=True)


def run_examples(
    ex: Extractor,
    examples: Sequence[Mapping[str, Any]],
    batch_size: int,
    teacher_forced: bool,
    on_batch: Callable[[int], Any] | None = None,
) -> list[TickVectors]:
    """All `examples` in batches of similar length (sorted), results back in input order.

    `on_batch(n)` is called after each batch of n ticks (a progress bar's update)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i]["input_ids"]), i))
    results: list[TickVectors | None] = [None] * len(examples)
    step = teacher_forced_batch if teacher_forced else generate_batch
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, vec in zip(idx, step(ex, [examples[i] for i in idx]), strict=True):
            results[i] = vec
        if on_batch is not None:
            on_batch(len(idx))
    return results  # type: ignore[return-value]
