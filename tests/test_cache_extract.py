"""z_t / r_t of a tick: positions of the belief span, the fallback rule, and the three ways to the
hidden states (generation + cached pass, generation + full pass, teacher forcing), which must agree
with each other and with a hand computation on an unpadded forward pass."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from tiny_helpers import ALERT_ANALYSIS, ALERT_BELIEF, CLEAR_ANALYSIS, CLEAR_BELIEF
from transformers import LogitsProcessor, LogitsProcessorList

from vlalert.beliefs.text import BELIEF_CLOSE, BELIEF_OPEN
from vlalert.cache.config import CacheConfig
from vlalert.cache.extract import (
    Extractor,
    SpanPositions,
    generate_batch,
    run_examples,
    span_positions,
    static_cache_length,
    strip_stop,
    teacher_forced_batch,
)
from vlalert.vlm.config import VLMConfig
from vlalert.vlm.inputs import build_example, collate
from vlalert.vlm.loading import load_model, load_tokenizer

CFG = VLMConfig()
ROWS = [
    {
        "video_id": "a",
        "tick": 2,
        "frame_idx": list(range(8)),
        "fps": 10.0,
        "analysis": ALERT_ANALYSIS,
        "belief": ALERT_BELIEF.to_json(),
        "action": "ALERT",
    },
    {  # 6 frames: a shorter prompt, so the batch is left-padded
        "video_id": "b",
        "tick": 0,
        "frame_idx": list(range(6)),
        "fps": 10.0,
        "analysis": CLEAR_ANALYSIS,
        "belief": CLEAR_BELIEF.to_json(),
        "action": "SILENT",
    },
]
LAYERS, POLICY = (1, 2, 4), 3
TOL = 1e-5

OP, CL = 101, 102  # stand-in ids for <|BELIEF|> and <|/BELIEF|>


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        # window index 0 is the last prompt token, so new token j sits at j + 1
        ([7, OP, 8, 9, CL, 5], SpanPositions(z=(3, 4), r=5, found=True)),
        ([OP, 8, CL, OP, 9, 9, CL], SpanPositions(z=(2,), r=3, found=True)),  # the first span
        ([CL, 7, OP, 8, CL], SpanPositions(z=(4,), r=5, found=True)),  # a close before the open is ignored
        ([7, 8, 9], SpanPositions(z=(1, 2, 3), r=3, found=False)),  # no span: all new tokens
        ([7, OP, 8, 9], SpanPositions(z=(1, 2, 3, 4), r=4, found=False)),  # never closed
        ([7, OP, CL, 9], SpanPositions(z=(1, 2, 3, 4), r=4, found=False)),  # empty span
        ([], SpanPositions(z=(0,), r=0, found=False)),  # stopped at once: the last prompt token
    ],
)
def test_span_positions(ids, expected):
    assert span_positions(ids, OP, CL) == expected


def test_strip_stop_cuts_at_the_first_stop_token():
    assert strip_stop([5, 6, 2, 7, 2], frozenset({2, 3})) == [5, 6]
    assert strip_stop([5, 6], frozenset({2})) == [5, 6]
    assert strip_stop([3, 5], frozenset({2, 3})) == []


def test_layer_lists_are_checked_against_the_depth():
    cfg = CacheConfig()
    assert cfg.layer_problem(36) is None
    problem = CacheConfig(belief_layers=(1, 5, 6), policy_layer=7).layer_problem(4)
    assert "[5, 6]" in problem and "policy_layer 7" in problem and "[0, 4]" in problem
    assert CacheConfig(belief_layers=(0, 4), policy_layer=4).layer_problem(4) is None
    with pytest.raises(ValueError, match="duplicates"):
        CacheConfig(belief_layers=(2, 2))
    assert cfg.z_width(2560) == 10_240


# ---------------------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)


def _frames(row, seed):
    return np.random.default_rng(seed).integers(0, 256, (len(row["frame_idx"]), 64, 96, 3), dtype=np.uint8)


def _examples(tok, with_target):
    return [build_example(r, _frames(r, i), tok, CFG, with_target=with_target) for i, r in enumerate(ROWS)]


def _extractor(model, tok, hidden_pass="cached", max_new=64, kv_cache="dynamic"):
    return Extractor(model, tok, LAYERS, POLICY, max_new, hidden_pass, kv_cache)


class _Force(LogitsProcessor):
    """Make greedy decoding write the given token sequences (then padding)."""

    def __init__(self, seqs, width, pad):
        self.seqs, self.width, self.pad = seqs, width, pad

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.width
        out = torch.full_like(scores, -1e9)
        for i, s in enumerate(self.seqs):
            out[i, s[step] if step < len(s) else self.pad] = 0.0
        return out


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _by_hand(model, tok, example):
    """z and r of one unpadded teacher-forced example, from the model's own output_hidden_states."""
    with torch.no_grad():
        out = model(**collate([example], tok.pad_token_id, padding_side="right"), output_hidden_states=True)
    ids = example["input_ids"].tolist()
    o, c = (
        ids.index(tok.convert_tokens_to_ids(BELIEF_OPEN)),
        ids.index(tok.convert_tokens_to_ids(BELIEF_CLOSE)),
    )
    hs = out.hidden_states
    z = torch.cat([hs[layer][0, o + 1 : c].mean(dim=0) for layer in LAYERS]).numpy()
    return z, hs[POLICY][0, c].numpy(), c - o - 1


def test_teacher_forcing_reads_the_belief_span(tiny):
    model, tok = tiny
    examples = _examples(tok, with_target=True)
    vecs = teacher_forced_batch(_extractor(model, tok), examples)  # one left-padded batch
    for ex, v in zip(examples, vecs, strict=True):
        z, r, n_inner = _by_hand(model, tok, ex)
        assert v.z.shape == (len(LAYERS) * 128,) and v.r.shape == (128,)
        assert _rel(v.z, z) <= TOL and _rel(v.r, r) <= TOL
        assert v.teacher_forced and v.belief_span_found and v.belief_parsed
        assert v.n_belief_tokens == n_inner
        target = ex["input_ids"][ex["prompt_length"] :].tolist()
        assert v.n_generated_tokens == len(target) - 1  # the target's <|im_end|> is not counted
        assert BELIEF_OPEN in v.generated_text and v.generated_text.endswith("<|/ACTION|>")


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("hidden_pass", ["cached", "full"])
def test_generation_forced_to_the_target_equals_teacher_forcing(tiny, hidden_pass, kv_cache, monkeypatch):
    model, tok = tiny
    prompts = _examples(tok, with_target=False)
    targets = [e["input_ids"][e["prompt_length"] :].tolist() for e in _examples(tok, with_target=True)]
    width = max(len(e["input_ids"]) for e in prompts)
    force = LogitsProcessorList([_Force(targets, width, tok.pad_token_id)])
    monkeypatch.setattr(model, "generate", functools.partial(model.generate, logits_processor=force))
    generated = generate_batch(_extractor(model, tok, hidden_pass, kv_cache=kv_cache), prompts)
    monkeypatch.undo()
    forced = teacher_forced_batch(_extractor(model, tok), _examples(tok, with_target=True))
    for g, f in zip(generated, forced, strict=True):
        assert g.generated_text == f.generated_text
        assert g.belief_parsed and g.belief_span_found and not g.teacher_forced
        assert g.n_belief_tokens == f.n_belief_tokens
        assert _rel(g.z, f.z) <= TOL and _rel(g.r, f.r) <= TOL


def test_static_cache_length_is_a_bucket_that_holds_generation_and_the_hidden_pass():
    assert static_cache_length(100, 28) == 128  # exactly full: width + max_new slots
    assert static_cache_length(101, 28) == 256
    assert static_cache_length(888, 192) == 1152
    assert {static_cache_length(w, 192) for w in range(886, 893)} == {1152}  # widths share one graph


@pytest.mark.parametrize("hidden_pass", ["cached", "full"])
def test_a_static_kv_cache_gives_the_tokens_and_states_of_the_dynamic_one(tiny, hidden_pass, monkeypatch):
    model, tok = tiny
    prompts = _examples(tok, with_target=False)
    dynamic = generate_batch(_extractor(model, tok, hidden_pass, max_new=40), prompts)
    caches = []

    def generate(**kwargs):
        out = type(model).generate(model, **kwargs)
        caches.append(out.cache)
        return out

    monkeypatch.setattr(model, "generate", generate)
    static = generate_batch(_extractor(model, tok, hidden_pass, max_new=40, kv_cache="static"), prompts)
    monkeypatch.undo()
    width = max(len(e["input_ids"]) for e in prompts)
    assert type(caches[0]).__name__ == "StaticCache"  # the library allocated it, at the bucketed length
    assert caches[0].layers[0].max_cache_len == static_cache_length(width, 40)
    for d, s in zip(dynamic, static, strict=True):
        assert s.n_generated_tokens == d.n_generated_tokens == 40  # a random model never stops
        assert s.generated_text == d.generated_text
        assert _rel(s.z, d.z) <= TOL and _rel(s.r, d.r) <= TOL


def test_a_generation_without_a_span_falls_back_to_all_generated_tokens(tiny):
    model, tok = tiny
    prompts = _examples(tok, with_target=False)
    ex = _extractor(model, tok, "cached", max_new=8)
    vecs = generate_batch(ex, prompts)
    batch = collate(prompts, tok.pad_token_id)
    with torch.no_grad():
        seqs = model.generate(**batch, generation_config=ex.generation_config()).sequences
    width = batch["input_ids"].shape[1]
    for row, (prompt, v) in enumerate(zip(prompts, vecs, strict=True)):
        assert not v.belief_span_found and not v.belief_parsed  # a random model writes no belief
        assert v.n_belief_tokens == 0
        new = seqs[row, width:]
        assert len(new) == v.n_generated_tokens == 8  # it never stopped: the budget bounds it
        assert v.generated_text == tok.decode(new, skip_special_tokens=False)
        # by hand: the unpadded prompt + generated tokens in one pass, mean over the generated ones
        full = dict(prompt)
        ids = torch.cat([prompt["input_ids"], new])
        full.update(input_ids=ids, attention_mask=torch.ones_like(ids))
        full["mm_token_type_ids"] = torch.cat(
            [prompt["mm_token_type_ids"], torch.zeros(len(new), dtype=torch.long)]
        )
        with torch.no_grad():
            hs = model(**collate([full], tok.pad_token_id), output_hidden_states=True).hidden_states
        p = len(prompt["input_ids"])
        z = torch.cat([hs[layer][0, p:].mean(dim=0) for layer in LAYERS]).numpy()
        assert _rel(v.z, z) <= TOL
        assert _rel(v.r, hs[POLICY][0, -1].numpy()) <= TOL


def test_generation_uses_no_deprecated_transformers_argument(tiny):
    """The cached hidden pass hands the KV cache on as `cache=`: no FutureWarning reaches a job log."""
    import warnings

    model, tok = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        vecs = generate_batch(_extractor(model, tok, "cached", max_new=4), _examples(tok, with_target=False))
    assert all(v.n_generated_tokens == 4 for v in vecs)


def test_run_examples_returns_results_in_input_order(tiny):
    model, tok = tiny
    examples = _examples(tok, with_target=True)
    seen = []
    both = run_examples(_extractor(model, tok), examples[::-1], 1, True, seen.append)
    assert seen == [1, 1]
    singles = [teacher_forced_batch(_extractor(model, tok), [e])[0] for e in examples[::-1]]
    for a, b in zip(both, singles, strict=True):
        assert a.generated_text == b.generated_text
        np.testing.assert_array_equal(a.z, b.z)


def test_a_layer_beyond_the_model_is_an_error(tiny):
    model, tok = tiny
    ex = Extractor(model, tok, (1, 9), POLICY, 8, "cached")
    with pytest.raises(ValueError, match="layer 9 requested but the model returns 5 hidden states"):
        teacher_forced_batch(ex, _examples(tok, with_target=True)[:1])
