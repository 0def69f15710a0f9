"""The `llm` belief provider: an OpenAI-compatible chat endpoint, with a cache, a run-wide cap, a fallback.

Per tick: the tick's frames are sent as JPEG data URLs with an instruction that states the
tick's label, and the reply is asked for as structured output (`TickReply` JSON Schema). Then:

- every answer is cached on disk under the sha256 of (model, prompt text, frame bytes) before it
  is used, so a rerun or a resume after a kill sends only requests that were never answered;
- retries are the openai client's own (408, 409, 429, 5xx, timeouts and connection errors, with
  jittered exponential backoff, honouring Retry-After), `max_retries` and `timeout_s` from config;
- a reply body larger than `max_reply_bytes` (derived from max_output_tokens) is cut off and
  fails its tick, naming the clip and tick;
- a reply that fails the schema or contradicts the label is asked again once, with the reason
  appended to the prompt; a second failure falls back to the `rules` provider, flagged
  `provider = "rules-fallback"` (model and prompt_sha256 then name the request that was tried);
- cost per row = its answers' usage tokens x the configured prices. The cap is run-wide: every
  beliefs job sharing the cache books its spend in one ledger (`vlalert.beliefs.ledger`), reserving
  a request's worst-case cost before it is sent and settling to the actual cost after, so the
  total of all jobs never passes max_cost_usd (cached answers count once, so killing and resuming
  cannot pay past it either). A request that does not fit while others are in flight waits for
  them to settle (their actual cost is below the worst case booked); one that cannot fit on what
  is settled is not sent and `BudgetExceeded` carries the partial result;
- at most `concurrency` requests are in flight (the job's `llm_requests`), each on a kept-alive
  connection of its own request slot; a few spare workers prepare, book and finish ticks meanwhile;
- 401/403/404 stop the whole stage at once (a wrong key, model or URL fails every request);
  another 4xx, or retries exhausted, fails that tick: the other ticks go on, the failure is not
  cached (a rerun asks again) and `RequestsFailed` lists it at the end. A refused request is
  usually a setting the server does not support, which would hit every tick: it must be seen,
  not silently turned into rules beliefs;
- the API key is removed from every message this module logs or raises.

How a request is built, priced and its reply read is `vlalert.beliefs.request`, shared with batch
mode (`vlalert.beliefs.batch`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vlalert.beliefs.batch import BatchReport, BatchRunner
from vlalert.beliefs.cache import ResponseCache, request_key
from vlalert.beliefs.frames import ClipJpegs, FramesLoader
from vlalert.beliefs.ledger import CapReached, Reservation, SpendLedger
from vlalert.beliefs.request import (
    FATAL_STATUSES,
    LLMError,
    ReplyTooLarge,
    build_instruction,
    check_reply,
    completion_content,
    cost_usd,
    max_reply_bytes,
    prompt_text,
    redact,
    request_json,
    reserve_usd,
    retry_instruction,
)
from vlalert.beliefs.rules import TickContext, rules_reply
from vlalert.beliefs.schema import TickReply
from vlalert.beliefs.text import belief_text
from vlalert.config import LabelsConfig, LLMConfig, Phrasing, WindowConfig
from vlalert.schemas import table_from_rows

log = logging.getLogger(__name__)

PROVIDER = "llm"
FALLBACK_PROVIDER = "rules-fallback"


# ---------------------------------------------------------------- errors


class BeliefsIncomplete(RuntimeError):
    """The stage stopped before every tick had a belief; `partial` holds the rows that do.

    Everything answered so far is in the cache, so a rerun resumes without paying twice.
    """

    def __init__(self, message: str, partial: pa.Table, *, done: int, total: int) -> None:
        super().__init__(message)
        self.partial = partial
        self.done = done
        self.total = total


class BudgetExceeded(BeliefsIncomplete):
    """beliefs.llm.max_cost_usd was reached; no further request was sent."""

    def __init__(self, message: str, partial: pa.Table, *, done: int, total: int, spent_usd: float) -> None:
        super().__init__(message, partial, done=done, total=total)
        self.spent_usd = spent_usd


class RequestsFailed(BeliefsIncomplete):
    """Some ticks got no answer after all retries (endpoint down, frames unreadable, ...)."""


# ---------------------------------------------------------------- transport


def _slot_transport(limit: int, slots: int) -> Any:
    """An HTTP transport of the openai client's httpx with one kept-alive connection per request slot,
    refusing reply bodies over `limit` bytes.

    A request sent while its thread holds slot i (`bind(i)`) goes out on slot i's own connection
    pool, of one connection: so the provider keeps exactly one connection alive per request in
    flight, and no pool is ever scanned for a free one. httpx's default transport keeps 20 in one
    pool, so at 64 in flight 44 connections (a TLS handshake each, for a real provider) would be
    opened and closed per round of requests; and one pool of 64 costs more CPU than the rest of a
    request, under the GIL (httpcore walks all of a pool's connections twice per request, on taking
    one and on giving it back). Requests from a thread holding no slot (the Batch API's calls) share
    one ordinary pool.
    """
    import httpx2

    class _Capped(httpx2.SyncByteStream):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __iter__(self) -> Any:
            n = 0
            for chunk in self.inner:
                n += len(chunk)
                if n > limit:
                    raise ReplyTooLarge(f"the reply body exceeds {limit:,} bytes (max_reply_bytes)")
                yield chunk

        def close(self) -> None:
            self.inner.close()

    class _Transport(httpx2.BaseTransport):
        def __init__(self) -> None:
            ssl_context = httpx2.create_ssl_context()  # one for all pools (each would load the CA file)
            one = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
            self.pools = [httpx2.HTTPTransport(verify=ssl_context, limits=one) for _ in range(slots)]
            self.shared = httpx2.HTTPTransport(verify=ssl_context)
            self._bound = threading.local()

        @contextmanager
        def bind(self, slot: int) -> Iterator[None]:
            """This thread's requests use slot `slot`'s connection until the block ends."""
            self._bound.pool = self.pools[slot]
            try:
                yield
            finally:
                self._bound.pool = None

        def handle_request(self, request: Any) -> Any:
            pool = getattr(self._bound, "pool", None) or self.shared
            response = pool.handle_request(request)
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                response.close()
                raise ReplyTooLarge(
                    f"the reply body is {int(declared):,} bytes, over the {limit:,} allowed (max_reply_bytes)"
                )
            response.stream = _Capped(response.stream)
            return response

        def close(self) -> None:
            for pool in [*self.pools, self.shared]:
                pool.close()

    return _Transport()


class _Fatal(Exception):
    """The endpoint refuses every request (auth / not found): stop the stage."""


class _Rejected(Exception):
    """A 4xx other than auth: this one request is refused."""


class _BudgetStop(Exception):
    """No request may be sent: max_cost_usd reached, or the stage is stopping."""


@dataclass
class _Counts:
    done: int = 0
    cached: int = 0
    failed: int = 0
    fallback: int = 0

    def postfix(self) -> dict[str, int]:
        return {"done": self.done, "cached": self.cached, "failed": self.failed, "fallback": self.fallback}


@dataclass
class _RunState:
    """What a run has collected so far (only the main thread writes it)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    not_requested: int = 0
    counts: _Counts = field(default_factory=_Counts)


@dataclass(frozen=True)
class _Answer:
    content: str | None
    usage: dict[str, int]
    key: str
    cached: bool
    cost: float = 0.0  # usage x prices (x batch_price_factor for a batch answer)


class LLMBeliefProvider:
    """Beliefs for many ticks from one endpoint; `run` is the only entry point."""

    def __init__(
        self,
        cfg: LLMConfig,
        labels_cfg: LabelsConfig,
        window_cfg: WindowConfig,
        *,
        api_key: str,
        frames_loader: FramesLoader,
        cache: ResponseCache | None = None,
        ledger: SpendLedger | None = None,
        client: Any = None,
        concurrency: int | None = None,
        phrasing: Phrasing = "varied",
    ) -> None:
        self.cfg = cfg
        self.labels_cfg = labels_cfg
        self.phrasing = phrasing  # of the rules fallback
        self.window_cfg = window_cfg
        self._key = api_key
        self.frames_loader = frames_loader
        self._jpegs: ClipJpegs | None = None
        self.cache = cache if cache is not None else ResponseCache(cfg.cache_dir)
        self._ledger = ledger
        self.concurrency = int(concurrency or cfg.max_concurrency)
        if self.concurrency < 1:
            raise ValueError(f"beliefs llm: concurrency must be >= 1, got {self.concurrency}")
        self._client = client
        self._transport: Any = None  # the slot transport of a client this provider built
        self._slots: queue.SimpleQueue[int] = queue.SimpleQueue()  # request slots free now
        for slot in range(self.concurrency):
            self._slots.put(slot)
        self._owns_client = False
        self._client_lock = threading.Lock()
        self._stop = threading.Event()
        self._not_booked: set[str] = set()
        self.batch_report: BatchReport | None = None  # batch mode: what the last run's batch pass did

    @property
    def ledger(self) -> SpendLedger:
        """The run-wide ledger beside the cache (opened on first use; it reclaims killed jobs' bookings)."""
        with self._client_lock:
            return self._open_ledger()

    def _open_ledger(self) -> SpendLedger:
        if self._ledger is None:
            # A reservation outlives its request only if its job was killed: lease = every attempt's
            # timeout plus the longest waits between them (the client honours Retry-After up to 2 min).
            lease = (self.cfg.max_retries + 1) * (self.cfg.timeout_s + 120.0) + 60.0
            self._ledger = SpendLedger.for_cache(self.cache.root, self.cfg.max_cost_usd, lease)
        return self._ledger

    # -- client

    def _new_client(self, connections: int) -> Any:
        from openai import DefaultHttpxClient, OpenAI  # lazy: the rules provider never needs it

        self._transport = _slot_transport(max_reply_bytes(self.cfg), connections)
        return OpenAI(
            api_key=self._key,
            base_url=self.cfg.base_url,
            max_retries=self.cfg.max_retries,
            timeout=self.cfg.timeout_s,
            http_client=DefaultHttpxClient(transport=self._transport),
        )

    def _get_client(self) -> Any:
        """The one client all workers share (its pool keeps a connection per request in flight)."""
        with self._client_lock:  # workers start together: build one client, not one each
            if self._client is None:
                self._client = self._new_client(self.concurrency)
                self._owns_client = True
            return self._client

    def close(self) -> None:
        """Close the HTTP client this provider built (one that was passed in belongs to the caller)."""
        with self._client_lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None
                self._transport = None

    def _redact(self, text: str) -> str:
        return redact(text, [self._key])

    @contextmanager
    def _request_slot(self) -> Iterator[int]:
        """One of the `concurrency` request slots, held from a request's booking to its answer."""
        slot = self._slots.get()
        try:
            yield slot
        finally:
            self._slots.put(slot)

    def _call(self, body: bytes, slot: int) -> tuple[str | None, dict[str, int]]:
        """One chat completion on `slot`'s own connection (the client retries what is retryable, on the
        same slot); returns (content, usage)."""
        client = self._get_client()
        transport = self._transport  # None: a client the caller passed in (its own pool)
        with transport.bind(slot) if transport is not None else nullcontext():
            return self._post(client, body)

    def _post(self, client: Any, body: bytes) -> tuple[str | None, dict[str, int]]:
        import httpx2
        import openai

        try:
            # The client's generic `post` (its retries, timeouts and error mapping) with the JSON body as
            # bytes (`request_json`), read back as plain JSON: `chat.completions.create` walks the messages
            # through the SDK's TypedDict transform and builds pydantic models of the reply, which cost
            # more CPU than all the rest of a request (frames, cache, ledger) together, under the GIL, and
            # capped the rate at 64 in flight. The body is exactly what `create` sends.
            resp = client.post("/chat/completions", content=body, cast_to=httpx2.Response)
            data = resp.json()
        except openai.APIStatusError as err:
            msg = self._redact(f"HTTP {err.status_code}: {err.message}")
            if err.status_code in FATAL_STATUSES:
                raise _Fatal(msg) from None
            raise _Rejected(f"{msg} (after {self.cfg.max_retries} retries if retryable)") from None
        except openai.APITimeoutError:
            raise _Rejected(
                f"timed out after {self.cfg.timeout_s:g} s, {self.cfg.max_retries + 1} attempts"
            ) from None
        except openai.APIConnectionError as err:
            raise _Rejected(
                self._redact(f"connection error after {self.cfg.max_retries + 1} attempts: {err}")
            ) from None
        except ValueError as err:
            raise _Rejected(f"the reply is not JSON: {err}") from None
        return completion_content(data)

    # -- one tick

    def _answer(self, instruction: str, jpegs: list[bytes]) -> _Answer:
        """The cached answer to this exact request, or a fresh one (cached before it is used)."""
        prompt = prompt_text(instruction)
        key = request_key(self.cfg.model, prompt, jpegs)
        entry = self.cache.get(key)
        if entry is not None:
            usage = dict(entry.get("usage") or {})
            cost = cost_usd(usage, self.cfg) * float(entry.get("price_factor") or 1.0)  # batch: 0.5
            self.ledger.use_cached(key, cost, int(usage.get("prompt_tokens") or 0))
            return _Answer(entry.get("content"), usage, key, cached=True, cost=cost)
        if self._stop.is_set() or key in self._not_booked:  # batch mode: the cap left it out
            raise _BudgetStop("stopping")
        ledger = self.ledger
        body = request_json(self.cfg, instruction, jpegs, self.cfg.image_detail)
        # Booked before a slot is taken, so that a slot freed by an answer goes to a request that is
        # ready to send: booking on the slot put a ledger transaction (a group commit, several GIL
        # handovers under 80 threads) between each answer and the next request, 13 ms at the median
        # and 31 ms at p90 at 64 in flight, against 1 and 19 ms booked ahead. The bookings held are
        # then those of the requests in flight and of the few spare workers' next ticks (at most
        # `concurrency` x 1.25 + 1 worst cases; each is sent as soon as a slot frees).
        try:  # the worst case from the largest prompt seen, read in the booking's own transaction
            booking: Reservation = ledger.reserve(
                key,
                lambda max_seen: reserve_usd(self.cfg, prompt, len(jpegs), max_seen),
                wait_s=ledger.lease_s,  # requests in flight settle (or their lease lapses) by then
                give_up=self._stop.is_set,
            )
        except CapReached:
            raise _BudgetStop("budget") from None
        try:
            with self._request_slot() as slot:
                if self._stop.is_set():  # the stage stopped while this request waited for a slot
                    raise _BudgetStop("stopping")
                content, usage = self._call(body, slot)
        except BaseException:
            ledger.release(booking)
            raise
        try:
            self.cache.put(key, {"content": content, "usage": usage, "model": self.cfg.model})
        except BaseException:
            ledger.release(booking)
            raise
        cost = cost_usd(usage, self.cfg)
        ledger.settle(booking, cost, int(usage.get("prompt_tokens") or 0))
        return _Answer(content, usage, key, cached=False, cost=cost)

    def _row(
        self, ctx: TickContext, reply: TickReply, provider: str, key: str, cost: float
    ) -> dict[str, Any]:
        return {
            "video_id": ctx.video_id,
            "tick": ctx.tick,
            "analysis": reply.analysis,
            "belief": reply.belief.to_json(),
            "belief_text": belief_text(reply.belief),
            "provider": provider,
            "model": self.cfg.model,
            "prompt_sha256": key,
            "cost_usd": cost,
        }

    def tick_row(self, ctx: TickContext) -> tuple[dict[str, Any], bool]:
        """One tick's BELIEFS row and whether every answer it used came from the cache."""
        jpegs = self.clip_jpegs().jpegs(ctx.path, ctx.frame_idx)
        instruction = build_instruction(ctx, self.window_cfg)
        first = self._answer(instruction, jpegs)
        reply, reason = check_reply(first.content, ctx)
        cost = first.cost
        if reply is not None:
            return self._row(ctx, reply, PROVIDER, first.key, cost), first.cached
        log.info(
            "beliefs llm: %s tick %d asked again: %s", ctx.video_id, ctx.tick, self._redact(reason or "")
        )
        second = self._answer(retry_instruction(instruction, reason or "invalid"), jpegs)
        cost += second.cost
        reply, reason2 = check_reply(second.content, ctx)
        cached = first.cached and second.cached
        if reply is not None:
            return self._row(ctx, reply, PROVIDER, second.key, cost), cached
        log.info("beliefs llm: %s tick %d falls back to rules: %s", ctx.video_id, ctx.tick, reason2)
        return self._row(
            ctx, rules_reply(ctx, self.labels_cfg, self.phrasing), FALLBACK_PROVIDER, second.key, cost
        ), cached

    def clip_jpegs(self, contexts: Sequence[TickContext] | None = None) -> ClipJpegs:
        """The frames of a pass over `contexts` (vlalert.beliefs.frames: each clip read once, each frame
        encoded once); without contexts, the current pass's (or one that reads each window alone)."""
        if contexts is not None or self._jpegs is None:
            windows = [(c.path, c.frame_idx) for c in contexts or ()]
            self._jpegs = ClipJpegs(
                windows, self.frames_loader, self.cfg.max_image_side, self.cfg.jpeg_quality
            )
        return self._jpegs

    # -- all ticks

    def _collect(self, contexts: Sequence[TickContext], state: _RunState, bar: Any) -> None:
        """Run every tick on the worker pool, sorting each outcome into `state` as it arrives."""

        def work(ctx: TickContext) -> tuple[dict[str, Any], bool]:
            if self._stop.is_set():
                raise _BudgetStop("stopping")
            return self.tick_row(ctx)

        counts = state.counts
        self.clip_jpegs(contexts)
        if contexts:  # before the workers start: they would otherwise all wait on the first one's import
            self.ledger  # noqa: B018
            self._get_client()
        # A quarter more workers than request slots, plus one: a tick's local work outside its slot
        # (frames, JPEGs, cache write, settling) takes ~10-15% of a request's time, done meanwhile by
        # the spare workers, so no slot waits on it. More workers measured no faster: each costs CPU
        # in GIL handovers. The slots (`_request_slot`), not the workers, bound the requests in flight.
        workers = self.concurrency + self.concurrency // 4 + 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(work, ctx): ctx for ctx in contexts}
            for fut in as_completed(futures):
                ctx = futures[fut]
                try:
                    row, cached = fut.result()
                except _BudgetStop:
                    state.not_requested += 1
                except _Fatal as err:
                    state.fatal.append(str(err))
                    self._stop.set()
                except Exception as err:  # one tick's failure must not lose the other ticks' answers
                    counts.failed += 1
                    what = self._redact(f"{type(err).__name__}: {err}")
                    state.failures.append(f"{ctx.video_id} tick {ctx.tick}: {what}")
                    log.warning("beliefs llm: %s tick %d failed: %s", ctx.video_id, ctx.tick, what)
                else:
                    state.rows.append(row)
                    counts.fallback += row["provider"] == FALLBACK_PROVIDER
                    if cached:
                        counts.cached += 1
                    else:
                        counts.done += 1
                bar.update(1)
                bar.set_postfix(counts.postfix(), refresh=False)

    def run(self, contexts: Sequence[TickContext], *, progress: bool = True) -> pa.Table:
        """BELIEFS rows of every tick, or a `BeliefsIncomplete` carrying the rows that were done."""
        from tqdm import tqdm

        state = _RunState()
        self._stop.clear()
        self._not_booked = set()
        bar = tqdm(total=len(contexts), desc="beliefs (llm)", unit="tick", disable=not progress)
        try:
            if self.cfg.mode == "batch" and contexts:
                self.batch_report = BatchRunner(self).run(contexts)
                self._not_booked = self.batch_report.not_booked
            self._collect(contexts, state, bar)
        finally:
            bar.close()
            self.close()

        rows = sorted(state.rows, key=lambda r: (r["video_id"], r["tick"]))
        partial = table_from_rows("beliefs", rows)
        total = len(contexts)
        where = f"answers are cached in {self.cache.root}; a rerun sends only the missing requests"
        if state.fatal:
            raise LLMError(
                self._redact(
                    f"beliefs llm: the endpoint {self.cfg.base_url} refused the request: {state.fatal[0]}"
                )
            )
        spent = self.ledger.total()
        if state.not_requested:
            raise BudgetExceeded(
                f"beliefs llm: budget cap beliefs.llm.max_cost_usd = ${self.cfg.max_cost_usd:.4f} reached "
                f"(${spent:.4f} spent by all beliefs jobs sharing this cache, ledger {self.ledger.path}); "
                f"stopped cleanly with {len(rows)} of {total} ticks done and {state.not_requested} not "
                f"requested. {where}; raise max_cost_usd to finish.",
                partial,
                done=len(rows),
                total=total,
                spent_usd=spent,
            )
        if state.failures:
            n = len(state.failures)
            shown = "; ".join(state.failures[:3]) + (f"; ... ({n - 3} more)" if n > 3 else "")
            raise RequestsFailed(
                self._redact(f"beliefs llm: {n} of {total} ticks failed: {shown}. {where}."),
                partial,
                done=len(rows),
                total=total,
            )
        c = state.counts
        log.info(
            "beliefs llm: %d ticks (%d answered, %d cached, %d rules-fallback), $%.4f run-wide",
            total,
            c.done,
            c.cached,
            c.fallback,
            spent,
        )
        return partial
