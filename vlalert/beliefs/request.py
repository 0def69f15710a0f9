"""The request/reply protocol of an OpenAI-compatible chat endpoint, shared by online and batch mode.

Online mode (`vlalert.beliefs.llm`) sends each tick's request itself; batch mode
(`vlalert.beliefs.batch`) writes the same requests as lines of a Batch API input file. Both build the
request, price it and read its reply the same way, so that an answer is cached under the same key
whichever way it came. That shared part lives here, with no provider state, so that neither mode
imports the other:

- building a request: the frames as JPEG data URLs (`encode_frames`), the tick's instruction
  (`build_instruction`, `retry_instruction`), the text that keys the cache (`prompt_text`), the
  messages and the JSON body of one chat completion (`build_messages`, `request_body`, and as the
  bytes sent, `request_json`);
- pricing it: the cost of an answer from its usage (`cost_usd`) and the worst case booked before a
  request is sent (`reserve_usd`);
- reading a reply: the content and usage of a chat completion (`completion_content`), its check
  against the schema and the label (`check_reply`), the size cap on a reply body (`max_reply_bytes`);
- the errors and secrets both modes raise and hide (`LLMError`, `redact`, `api_key_from_env`).
"""

from __future__ import annotations

import base64
import io
import json
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from vlalert.beliefs.rules import TickContext
from vlalert.beliefs.schema import TickReply, agreement_errors, reply_json_schema, response_format
from vlalert.beliefs.schema import validation_message as _validation_message
from vlalert.beliefs.text import clean_analysis
from vlalert.config import LLMConfig, WindowConfig

REDACTED = "[REDACTED]"
FATAL_STATUSES = frozenset({401, 403, 404})  # a wrong key, model or URL: every request would fail


# ---------------------------------------------------------------- errors and secrets


class LLMError(RuntimeError):
    """The endpoint cannot be used at all (no key, wrong key, wrong model or URL). Key redacted."""


class ReplyTooLarge(RuntimeError):
    """The endpoint sent more than max_reply_bytes; the reply was not read further."""


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret (of 4+ characters) replaced by [REDACTED]."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED)
    return text


def api_key_from_env(cfg: LLMConfig, environ: Mapping[str, str]) -> str:
    """The API key, from the environment variable the config names (never from the config itself)."""
    key = environ.get(cfg.api_key_env)
    if not key:
        raise LLMError(
            f"beliefs.llm: environment variable {cfg.api_key_env} is not set; export the API key there "
            "(servers that need no key, e.g. a local vLLM, accept any value such as 'EMPTY')"
        )
    return key


# ---------------------------------------------------------------- pricing


def cost_usd(usage: Mapping[str, Any] | None, cfg: LLMConfig) -> float:
    """Price of one answer from its usage tokens; an answer without usage is counted as free."""
    if not usage:
        return 0.0
    p = float(usage.get("prompt_tokens") or 0)
    c = float(usage.get("completion_tokens") or 0)
    return p / 1000.0 * cfg.usd_per_1k_input_tokens + c / 1000.0 * cfg.usd_per_1k_output_tokens


def max_reply_bytes(cfg: LLMConfig) -> int:
    """The largest reply body read: 1 MiB of envelope plus 64 bytes per allowed output token."""
    return (1 << 20) + 64 * cfg.max_output_tokens


def image_tokens(cfg: LLMConfig) -> int:
    """Upper estimate of one frame's prompt tokens: OpenAI's fixed 85 at detail=low, else the larger
    of OpenAI's 512-px tiles and a 28-px-patch model's (Qwen-VL behind vLLM) count."""
    if cfg.image_detail == "low":
        return 85
    tiles = math.ceil(cfg.max_image_side / 512) ** 2
    return max(85 + 170 * tiles, math.ceil(cfg.max_image_side / 28) ** 2)


def reserve_usd(cfg: LLMConfig, prompt: str, n_images: int, max_prompt_seen: int) -> float:
    """Worst-case cost of one request, booked before it is sent.

    Output: max_output_tokens (the server stops there). Prompt: 10% + 64 tokens over the largest
    prompt the ledger has seen answered; before any answer, 1 token per 2 bytes of text plus
    `image_tokens` per frame (an over-estimate for English text).
    """
    if max_prompt_seen > 0:
        prompt_tokens = math.ceil(max_prompt_seen * 1.1) + 64
    else:
        prompt_tokens = math.ceil(len(prompt.encode()) / 2) + n_images * image_tokens(cfg)
    return cost_usd({"prompt_tokens": prompt_tokens, "completion_tokens": cfg.max_output_tokens}, cfg)


# ---------------------------------------------------------------- request


def encode_frames(frames: np.ndarray, max_side: int, quality: int) -> list[bytes]:
    """JPEG bytes of each frame (N,H,W,3 uint8), downscaled so the longer side is <= max_side."""
    from PIL import Image

    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be an (N,H,W,3) uint8 array, got {arr.shape} {arr.dtype}")
    out = []
    for frame in arr:
        img = Image.fromarray(frame, "RGB")
        scale = max_side / max(img.size)
        if scale < 1.0:
            size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


SYSTEM_PROMPT = (
    "You annotate dashcam video for a driver-alert system. For the current moment (the last frame) "
    "you write a short analysis of the traffic scene and a structured safety belief, and you state "
    "the alert action: SILENT (nothing to do), OBSERVE (a hazard is developing, watch it) or ALERT "
    "(the driver must act now). The action and its danger level are given to you by a human label; "
    "your job is to describe what the frames show consistently with that label. Answer with JSON only."
)


def _annotation_lines(ctx: TickContext) -> list[str]:
    lines = []
    meta = ctx.meta
    if meta.get("anomaly_class"):
        lines.append(f"DoTA anomaly class: {meta['anomaly_class']}")
    for k in ("texts", "causes"):
        if meta.get(k):
            lines.append(f"DADA-2000 {k}: {meta[k]}")
    consensus = meta.get("consensus")
    if isinstance(consensus, Mapping) and consensus.get("Event-type"):
        lines.append(f"event kind: {consensus['Event-type']}")
    if ctx.event_type:
        lines.append(f"event type: {ctx.event_type}")
    if ctx.scene_clip is not None and ctx.scene_clip.get("scenario"):
        lines.append(f"scenario: {ctx.scene_clip['scenario']}")
    return lines


def build_instruction(ctx: TickContext, window: WindowConfig) -> str:
    """The user text of one tick's request: what the frames are, what the annotation says, the label."""
    ego = {True: "yes", False: "no", None: "unknown"}[ctx.ego_involved]
    lines = [
        f"The {len(ctx.frame_idx) or window.frames} images are dashcam frames spread over the last "
        f"{window.span_s:.1f} s up to the current moment, oldest first.",
    ]
    if ctx.is_positive and ctx.t_event_s is not None:
        dt = ctx.t_event_s - ctx.t_s
        when = f"{dt:.1f} s after" if dt >= 0 else f"{-dt:.1f} s before"
        lines.append(f"This clip contains an incident; its event happens {when} the current moment.")
    else:
        lines.append("This clip contains no incident (normal driving).")
    lines += [f"Annotation: {line}" for line in _annotation_lines(ctx)]
    lines += [
        f"Ego vehicle involved in the incident: {ego}",
        f"Label for the current moment: action={ctx.action} danger={ctx.danger:.2f}",
        "",
        "Rules: `action` must equal the label's action. ALERT needs danger >= 0.5 and a hazard; "
        "SILENT needs danger < 0.5; OBSERVE needs a hazard (hazard other than none). Use danger close "
        "to the label's. ttc_s is the seconds until contact if nothing changes, null when nothing is "
        "on a collision course. The analysis is one or two plain sentences naming the agent, its side, "
        "its motion, the timing and the advice, without any <| |> tags or [bracketed] headers.",
    ]
    return "\n".join(lines)


def prompt_text(instruction: str) -> str:
    """Everything textual that decides the answer (the cache key's prompt part)."""
    schema = json.dumps(reply_json_schema(), sort_keys=True, separators=(",", ":"))
    return f"{SYSTEM_PROMPT}\n\n{instruction}\n\nschema: {schema}"


def build_messages(instruction: str, jpegs: Sequence[bytes], detail: str) -> list[dict[str, Any]]:
    return _messages(instruction, [data_url(j) for j in jpegs], detail)


def _messages(instruction: str, urls: Sequence[str], detail: str) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": instruction}]
    content += [{"type": "image_url", "image_url": {"url": url, "detail": detail}} for url in urls]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def request_json(cfg: LLMConfig, instruction: str, jpegs: Sequence[bytes], detail: str) -> bytes:
    """`request_body(cfg, build_messages(instruction, jpegs, detail))` as the JSON bytes the openai
    client would send for it (UTF-8, no spaces), with the frames' base64 spliced in, not encoded.

    The frames are ~90% of a body: passing their base64 through the JSON encoder (a scan for escapes
    and three copies) cost more CPU than the rest of building a request, under the GIL. Each frame's
    URL is a random marker in the body that is encoded, then replaced by its data URL (base64 needs
    no JSON escape, so the bytes are the encoder's); a marker found twice (the instruction holding
    one, odds 2**-128) falls back to encoding the whole body.
    """
    token = secrets.token_hex(16)
    marks = [f"{token}{i:06d}" for i in range(len(jpegs))]
    text = _dumps(request_body(cfg, _messages(instruction, marks, detail)))
    pieces: list[bytes] = []
    for mark, jpeg in zip(marks, jpegs, strict=True):
        head, found, text = text.partition(mark)
        if not found or mark in text:
            return _dumps(request_body(cfg, build_messages(instruction, jpegs, detail))).encode()
        pieces += (head.encode(), b"data:image/jpeg;base64,", base64.b64encode(jpeg))
    pieces.append(text.encode())
    return b"".join(pieces)


def _dumps(body: Any) -> str:
    """JSON as the openai client writes a request body (`openai._utils._json.openapi_dumps`)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def request_body(cfg: LLMConfig, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON body of one chat completion (online; also each line's body in batch mode)."""
    return {
        "model": cfg.model,
        "messages": messages,
        "response_format": response_format(),
        "temperature": cfg.temperature,
        "max_completion_tokens": cfg.max_output_tokens,
    }


def retry_instruction(instruction: str, reason: str) -> str:
    return (
        f"{instruction}\n\nYour previous answer was rejected: {reason}. "
        "Answer again, following the rules above exactly."
    )


# ---------------------------------------------------------------- reply


def _strip_code_fence(content: str) -> str:
    """JSON wrapped in a ``` fence, as servers without structured output often send it."""
    text = content.strip()
    if text.startswith("```") and text.endswith("```"):
        text = text[3:-3]
        text = text[4:] if text.startswith("json") else text
    return text.strip()


def check_reply(content: str | None, ctx: TickContext) -> tuple[TickReply | None, str | None]:
    """The reply as a `TickReply` that agrees with the label, or None and the reason it does not."""
    if not content or not content.strip():
        return None, "the reply was empty"
    try:
        raw = json.loads(_strip_code_fence(content))
    except ValueError as err:
        return None, f"the reply is not valid JSON ({err.msg} at char {err.pos})"
    try:
        reply = TickReply.model_validate(raw)
    except ValidationError as err:
        return None, f"the reply does not fit the schema: {_validation_message(err)}"
    try:
        analysis = clean_analysis(reply.analysis)
    except ValueError as err:
        return None, str(err)
    problems = []
    if reply.action != ctx.action:
        problems.append(f"action {reply.action} but the label is {ctx.action}")
    problems += agreement_errors(reply.belief, ctx.action)
    if problems:
        return None, "the reply contradicts the label: " + "; ".join(problems)
    return TickReply(analysis=analysis, belief=reply.belief, action=reply.action), None


def _usage_dict(usage: Any) -> dict[str, int]:
    if not isinstance(usage, Mapping):
        return {}
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


def completion_content(data: Any) -> tuple[str | None, dict[str, int]]:
    """(content of the first choice, usage) of a chat completion's JSON (online reply or batch line)."""
    if not isinstance(data, Mapping):
        return None, {}
    choices = data.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    return (content if isinstance(content, str) else None), _usage_dict(data.get("usage"))
