"""Batch mode of the `llm` provider: the OpenAI-compatible Batch API fills the answer cache at batch price.

`beliefs.llm.mode: batch`. Before the ticks are worked through as in online mode, every tick's first
request that the cache lacks is sent through the Batch API (JSONL upload with purpose "batch",
`POST /batches` on /v1/chat/completions, polling, download of the output file); the answers go into
the same cache under the same key, so the online pass then finds them, and only what the batch could
not settle (a reply that fails the schema or contradicts the label: the re-ask; a request the batch
did not answer) goes online.

- A request's `custom_id` is its cache key. Requests already cached or already in a batch of any job
  (the batch book) are never put in another one.
- Requests are split into batches at `batch_max_requests` lines and `batch_max_bytes` of JSONL.
- The batch book lives in the ledger file beside the cache (`spend.sqlite`, tables batch_chunk and
  batch_request), written in the same transactions as the spend: a chunk's requests are reserved at
  `batch_price_factor` of the prices (their worst case, as online) and recorded together, before
  anything is uploaded; then the chunk's input file id, then its batch id, are recorded. A killed job's
  chunks resume: booked but not uploaded -> nothing was sent, they are dropped and planned again;
  uploaded -> the batch is looked up by its metadata (`vlalert_chunk`) and adopted, created only if
  it does not exist; submitted -> polled. No request is submitted twice.
- On download, answers are cached first, then their bookings settle to the actual cost (usage x
  price x factor); bookings of requests the batch did not answer are released.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from vlalert.beliefs.cache import request_key
from vlalert.beliefs.frames import ClipJpegs
from vlalert.beliefs.request import (
    FATAL_STATUSES,
    LLMError,
    build_instruction,
    build_messages,
    completion_content,
    cost_usd,
    prompt_text,
    request_body,
    reserve_usd,
)

if TYPE_CHECKING:
    from vlalert.beliefs.cache import ResponseCache
    from vlalert.beliefs.ledger import SpendLedger
    from vlalert.beliefs.rules import TickContext
    from vlalert.config import LLMConfig, WindowConfig

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
CHUNK_TAG = "vlalert_chunk"


class Provider(Protocol):
    """What the batch pass uses of the online provider (`vlalert.beliefs.llm.LLMBeliefProvider`):
    its config, frames and cache, its ledger, its shared client and its key redaction."""

    cfg: LLMConfig
    window_cfg: WindowConfig
    cache: ResponseCache

    @property
    def ledger(self) -> SpendLedger: ...

    def clip_jpegs(self, contexts: Sequence[TickContext] | None = None) -> ClipJpegs: ...

    def _get_client(self) -> Any: ...

    def _redact(self, text: str) -> str: ...


@dataclass
class BatchReport:
    """What the batch pass did (for logs and tests)."""

    submitted: list[str] = field(default_factory=list)  # batch ids this run created
    adopted: list[str] = field(default_factory=list)  # batch ids of earlier (killed) runs polled
    answered: int = 0
    unanswered: int = 0
    not_booked: set[str] = field(default_factory=set)  # requests left out at the budget cap


def _lines(
    provider: Provider, contexts: Sequence[TickContext], booked: set[str]
) -> Iterator[tuple[str, bytes | None, float]]:
    """(custom_id, JSONL line, worst-case usd at batch price) of every tick's first request not cached;
    the line is None when the request is already in a batch (`booked`)."""
    cfg = provider.cfg
    max_seen = provider.ledger.max_prompt_tokens()
    seen: set[str] = set()
    frames = provider.clip_jpegs(contexts)  # each clip read once, each frame encoded once
    for ctx in contexts:
        jpegs = frames.jpegs(ctx.path, ctx.frame_idx)
        instruction = build_instruction(ctx, provider.window_cfg)
        prompt = prompt_text(instruction)
        key = request_key(cfg.model, prompt, jpegs)
        if key in seen or provider.cache.get(key) is not None:
            continue
        seen.add(key)
        if key in booked:
            yield key, None, 0.0
            continue
        body = request_body(cfg, build_messages(instruction, jpegs, cfg.image_detail))
        line = (
            json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}).encode() + b"\n"
        )
        usd = reserve_usd(cfg, prompt, len(jpegs), max_seen) * cfg.batch_price_factor
        yield key, line, usd


class BatchRunner:
    """Fill `provider`'s cache for `contexts` through the Batch API (see the module docstring)."""

    # test hook: called with the batch id right after a batch is created and recorded
    after_submit: Callable[[str], None] | None = None

    def __init__(self, provider: Provider, sleep: Callable[[float], None] = time.sleep) -> None:
        self.p = provider
        self.cfg = provider.cfg
        self.ledger = provider.ledger
        self.sleep = sleep
        # a booking may wait the completion window, then the batch's output must still be collected
        self.lease_s = 2 * 24 * 3600.0

    # -- API calls (errors: a wrong key / URL stops the stage, key redacted)

    def _api(self, what: str, fn: Callable[[], Any]) -> Any:
        import openai

        try:
            return fn()
        except openai.APIStatusError as err:
            msg = self.p._redact(f"HTTP {err.status_code}: {err.message}")
            kind = "refused" if err.status_code in FATAL_STATUSES else "failed"
            raise LLMError(f"beliefs llm batch: {what} {kind} at {self.cfg.base_url}: {msg}") from None
        except openai.APIError as err:
            raise LLMError(self.p._redact(f"beliefs llm batch: {what} failed: {err}")) from None

    def _create(self, chunk_id: str, file_id: str) -> str:
        client = self.p._get_client()
        batch = self._api(
            "creating a batch",
            lambda: client.batches.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window=self.cfg.batch_completion_window,
                metadata={CHUNK_TAG: chunk_id},
            ),
        )
        self.ledger.chunk_state(chunk_id, "submitted", batch_id=batch.id)
        log.info("beliefs llm batch: submitted %s (chunk %s)", batch.id, chunk_id)
        if self.after_submit is not None:
            self.after_submit(batch.id)
        return str(batch.id)

    def _submit(self, lines: list[tuple[str, bytes, float]], report: BatchReport) -> bool:
        """Book, upload and create one chunk; False when the cap left some of its requests out."""
        chunk_id = uuid.uuid4().hex
        booked = set(self.ledger.book_chunk(chunk_id, [(k, usd) for k, _, usd in lines], self.lease_s))
        report.not_booked.update(k for k, _, _ in lines if k not in booked)
        if not booked:
            return False
        data = b"".join(line for k, line, _ in lines if k in booked)
        client = self.p._get_client()
        upload = self._api(
            "uploading the batch input",
            lambda: client.files.create(
                file=(f"{chunk_id}.jsonl", data, "application/jsonl"), purpose="batch"
            ),
        )
        self.ledger.chunk_state(chunk_id, "uploaded", input_file_id=upload.id)
        report.submitted.append(self._create(chunk_id, upload.id))
        return len(booked) == len(lines)

    def _find_batch(self, chunk_id: str, file_id: str) -> str | None:
        """The batch a killed job may have created for this chunk (by its metadata or input file)."""
        client = self.p._get_client()
        for batch in self._api("listing batches", lambda: client.batches.list(limit=100)):
            if (batch.metadata or {}).get(CHUNK_TAG) == chunk_id or batch.input_file_id == file_id:
                return str(batch.id)
        return None

    # -- resume, plan, poll, ingest

    def _resume(self, chunks: list[dict[str, Any]], report: BatchReport) -> None:
        """Bring killed jobs' unfinished chunks to 'submitted' (or drop them if nothing was sent)."""
        for chunk in chunks:
            if chunk["state"] == "submitted" or not self.ledger.chunk_owner_gone(chunk):
                continue
            if chunk["state"] == "booked":  # not uploaded, so no batch can hold it
                self.ledger.drop_chunk(chunk["chunk_id"])
                continue
            found = self._find_batch(chunk["chunk_id"], chunk["input_file_id"])
            if found is not None:
                self.ledger.chunk_state(chunk["chunk_id"], "submitted", batch_id=found)
                report.adopted.append(found)
            else:
                report.submitted.append(self._create(chunk["chunk_id"], chunk["input_file_id"]))

    def _ingest(self, chunk: dict[str, Any], batch: Any, report: BatchReport) -> None:
        """Cache a finished batch's answers, then settle and release its bookings."""
        client = self.p._get_client()
        answered: list[tuple[str, float, int]] = []
        ids = set(chunk["custom_ids"])
        for file_id in (batch.output_file_id,):
            if not file_id:
                continue
            raw = self._api("downloading batch output", lambda f=file_id: client.files.content(f).content)
            for text in raw.decode("utf-8").splitlines():
                if not text.strip():
                    continue
                line = json.loads(text)
                key = line.get("custom_id")
                response = line.get("response") or {}
                if key not in ids or response.get("status_code") != 200:
                    continue
                content, usage = completion_content(response.get("body"))
                entry = {
                    "content": content,
                    "usage": usage,
                    "model": self.cfg.model,
                    "price_factor": self.cfg.batch_price_factor,
                    "batch_id": batch.id,
                }
                self.p.cache.put(key, entry)
                cost = cost_usd(usage, self.cfg) * self.cfg.batch_price_factor
                answered.append((key, cost, int(usage.get("prompt_tokens") or 0)))
        done = {k for k, _, _ in answered}
        unanswered = [k for k in chunk["custom_ids"] if k not in done]
        self.ledger.finish_chunk(chunk["chunk_id"], answered, unanswered)
        report.answered += len(answered)
        report.unanswered += len(unanswered)
        log.info(
            "beliefs llm batch: %s %s, %d answered, %d not (these go online)",
            batch.id,
            batch.status,
            len(answered),
            len(unanswered),
        )

    def _poll(self, keys: set[str], report: BatchReport) -> None:
        client = self.p._get_client()
        while True:
            chunks = [c for c in self.ledger.open_chunks(keys) if c["state"] == "submitted"]
            if not chunks:
                return
            waiting = 0
            for chunk in chunks:
                batch = self._api("polling a batch", lambda c=chunk: client.batches.retrieve(c["batch_id"]))
                if batch.status in TERMINAL:
                    self._ingest(chunk, batch, report)
                else:
                    waiting += 1
            if waiting:
                self.sleep(self.cfg.batch_poll_s)

    def run(self, contexts: Sequence[TickContext]) -> BatchReport:
        report = BatchReport()
        keys_of_run: set[str] = set()
        self._resume(self.ledger.open_chunks(), report)
        booked = {k for c in self.ledger.open_chunks() for k in c["custom_ids"]}
        chunk: list[tuple[str, bytes, float]] = []
        size = 0
        budget_left = True
        for key, line, usd in _lines(self.p, contexts, booked):
            keys_of_run.add(key)
            if line is None:
                continue
            if not budget_left:
                report.not_booked.add(key)
                continue
            full = len(chunk) >= self.cfg.batch_max_requests or size + len(line) > self.cfg.batch_max_bytes
            if chunk and full:
                budget_left = self._submit(chunk, report)
                chunk, size = [], 0
            chunk.append((key, line, usd))
            size += len(line)
        if chunk and budget_left:
            self._submit(chunk, report)
        self._poll(keys_of_run, report)
        return report
