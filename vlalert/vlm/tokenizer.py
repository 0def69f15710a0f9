"""A small byte-level BPE tokenizer for the demo model, trained locally on the belief corpus.

The demo model cannot borrow Qwen's 151k-token vocabulary (its embedding alone would be larger than
the whole toy model), so the tiny model gets its own vocabulary, trained with the `tokenizers`
library on the texts it will actually read and write (analyses, belief spans, prompts). Everything
the model code looks up by name is kept identical to Qwen's tokenizer:

- the same pre-tokenisation (Qwen2's split regex, then byte-level; NFC normalisation), so text is
  cut into words the same way and any string round-trips;
- the same chat and vision special tokens (`QWEN_SPECIAL_TOKENS`, in Qwen's order), plus the
  belief/action span tokens of `vlalert.beliefs.text`; each is one id that BPE never splits;
- a chat template that renders messages exactly as Qwen3-VL's does for system / user (text,
  video, image parts) / assistant turns.

Training is deterministic given the corpus: the trainer breaks ties between equally frequent
pairs by token id, and ids come from a sorted alphabet, so two runs write the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vlalert.beliefs.text import SPECIAL_TOKENS as BELIEF_ACTION_TOKENS

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VISION_PAD = "<|vision_pad|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

# Qwen2/2.5/3-VL special tokens in Qwen's id order (151643 ... 151656 in the real vocabulary).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    VISION_START,
    VISION_END,
    VISION_PAD,
    IMAGE_PAD,
    VIDEO_PAD,
)
ALL_SPECIAL_TOKENS: tuple[str, ...] = QWEN_SPECIAL_TOKENS + tuple(BELIEF_ACTION_TOKENS)

# Qwen2's pre-tokenizer pattern (tokenizer.json of every Qwen2/2.5/3(-VL) checkpoint).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3-VL's chat template for system / user / assistant turns (tools and reasoning left out: this
# project uses neither). A video part renders as <|vision_start|><|video_pad|><|vision_end|>; the
# input builder expands it per temporal group (vlalert.vlm.inputs).
CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for c in messages[0].content %}{%- if 'text' in c %}{{- c.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for c in message.content %}"
    "{%- if c.type == 'image' or 'image' in c or 'image_url' in c %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif c.type == 'video' or 'video' in c %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in c %}{{- c.text }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _strip_specials(texts: Iterable[str]) -> Iterator[str]:
    # The BPE trainer does not cut added tokens out of the corpus; left in, "<|BELIEF|>" would spend
    # merges on pieces that the finished tokenizer never produces.
    for text in texts:
        for tok in ALL_SPECIAL_TOKENS:
            text = text.replace(tok, " ")
        yield text


def train_bpe(
    corpus: Iterable[str],
    vocab_size: int = 2048,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = ALL_SPECIAL_TOKENS,
) -> Any:
    """Train a byte-level BPE `tokenizers.Tokenizer` with Qwen's pre-tokenisation and special tokens.

    `vocab_size` is an upper bound: a small corpus yields fewer merges. Special tokens take the
    first ids, in `special_tokens` order.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    n_special = len(special_tokens)
    if vocab_size < n_special + 256:
        raise ValueError(f"vocab_size must be at least {n_special + 256} (special tokens + 256 bytes)")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The trainer's parallel word counting is exact either way; pinning it keeps runs comparable.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok.train_from_iterator(_strip_specials(corpus), trainer)
    return tok


def wrap_tokenizer(tok: Any) -> Any:
    """A transformers fast tokenizer around a trained `tokenizers.Tokenizer`, Qwen's roles attached.

    eos is `<|im_end|>` (the end of an assistant turn, where generation stops) and pad is
    `<|endoftext|>`, as in Qwen3-VL-Instruct; padding is on the left, what batched generation needs.
    """
    from transformers import PreTrainedTokenizerFast

    present = tok.get_vocab()
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=[t for t in ALL_SPECIAL_TOKENS if t not in (IM_END, ENDOFTEXT) and t in present],
        padding_side="left",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tokenizer(
    corpus: Iterable[str], out_dir: str | os.PathLike[str], vocab_size: int = 2048, min_frequency: int = 2
) -> Path:
    """Train on `corpus` and save tokenizer.json, tokenizer_config.json and the chat template."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrap_tokenizer(train_bpe(corpus, vocab_size, min_frequency)).save_pretrained(out)
    return out
