"""The `llm` belief provider against a real HTTP server on 127.0.0.1 (tests/llm_server.py).

Each test scripts the server's replies and checks what a user relies on: the result, what was
sent, what was paid, what was cached, and that the API key never leaks.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llm_server import (
    ENV,
    KEY,
    N_TICKS,
    ROW_COST,
    FakeLLMServer,
    Reply,
    agreeing_reply,
    contradicting_reply,
    fake_frames,
    is_retry,
    is_tick,
    llm_config,
    llm_source,
    small_llm_clips,
    user_text,
)
from PIL import Image

from vlalert.beliefs.cache import ResponseCache, request_key
from vlalert.beliefs.ledger import CapReached, SpendLedger
from vlalert.beliefs.llm import BudgetExceeded, LLMBeliefProvider, RequestsFailed
from vlalert.beliefs.request import (
    LLMError,
    check_reply,
    cost_usd,
    encode_frames,
    max_reply_bytes,
    prompt_text,
    redact,
)
from vlalert.beliefs.rules import rules_reply
from vlalert.beliefs.schema import Belief
from vlalert.beliefs.stage import belief_contexts, generate_beliefs
from vlalert.config import LLMConfig
from vlalert.labels import label_source
from vlalert.schemas import check_table


def _run(tmp_path, server, **llm):
    cfg = llm_config(tmp_path, server, **llm)
    labels, videos = llm_source(cfg)
    return generate_beliefs(labels, videos, cfg, frames_loader=fake_frames, environ={ENV: KEY})


def _provider(tmp_path, server, concurrency=None, **llm):
    cfg = llm_config(tmp_path, server, **llm)
    labels, videos = llm_source(cfg)
    provider = LLMBeliefProvider(
        cfg.beliefs.llm,
        cfg.labels,
        cfg.window,
        api_key=KEY,
        frames_loader=fake_frames,
        concurrency=concurrency,
    )
    return provider, belief_contexts(labels, videos, cfg)


def _rows(table) -> dict[tuple[str, int], dict]:
    return {(r["video_id"], r["tick"]): r for r in table.to_pylist()}


def _key_of(request) -> str:
    """The cache key of a request as the server received it (model, prompt text, frame bytes)."""
    images = [c["image_url"]["url"] for c in request["messages"][1]["content"] if c["type"] == "image_url"]
    jpegs = [base64.b64decode(u.split(",", 1)[1]) for u in images]
    return request_key(request["model"], prompt_text(user_text(request)), jpegs)


# ---------------------------------------------------------------- happy path, cache, requests


def test_happy_path_then_a_rerun_sends_nothing(tmp_path):
    with FakeLLMServer() as server:
        out = _run(tmp_path, server)
        check_table("beliefs", out)
        assert len(out) == N_TICKS
        assert set(out.column("provider").to_pylist()) == {"llm"}
        assert set(out.column("model").to_pylist()) == {"test-model"}
        assert out.column("cost_usd").to_pylist() == pytest.approx([ROW_COST] * N_TICKS)
        rows = _rows(out)
        alert = rows[("pos_dota", 4)]  # t = 6 s, ALERT, danger 0.75
        assert Belief.from_json(alert["belief"]) == Belief(
            hazard="vehicle", where="ahead", motion="braking", ttc_s=1.5, danger=0.75, ego_involved=True
        )
        assert alert["analysis"] == "The car ahead brakes hard about 1.5 s ahead; slow down."
        assert alert["belief_text"].startswith("<|BELIEF|> hazard=vehicle;")

        assert len(server.seen) == N_TICKS
        assert len({s.body_sha256 for s in server.seen}) == N_TICKS
        for seen in server.seen:
            req = seen.request
            assert seen.headers["authorization"] == f"Bearer {KEY}"
            assert req["model"] == "test-model"
            assert req["response_format"]["type"] == "json_schema"
            assert req["response_format"]["json_schema"]["strict"] is True
            images = [c for c in req["messages"][1]["content"] if c["type"] == "image_url"]
            assert len(images) == 8
            url = images[0]["image_url"]["url"]
            assert url.startswith("data:image/jpeg;base64,")
            img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert img.format == "JPEG" and img.size == (64, 48)

        cache = ResponseCache(tmp_path / "cache")
        assert cache.keys() == sorted(out.column("prompt_sha256").to_pylist())
        assert set(cache.keys()) == {_key_of(s.request) for s in server.seen}  # keyed on what was sent

        again = _run(tmp_path, server)
        assert len(server.seen) == N_TICKS  # every answer came from the cache
        assert again.equals(out)


def test_progress_bar_counts_done_cached_failed(tmp_path, capsys):
    with FakeLLMServer() as server:
        provider, ctxs = _provider(tmp_path, server)
        provider.run(ctxs[:3], progress=True)
        assert "done=3, cached=0, failed=0" in capsys.readouterr().err
        provider.run(ctxs, progress=True)
        assert f"done={N_TICKS - 3}, cached=3, failed=0" in capsys.readouterr().err


def test_frames_are_downscaled_to_max_image_side(tmp_path):
    with FakeLLMServer() as server:
        _run(tmp_path, server, max_image_side=32)
        url = server.seen[0].request["messages"][1]["content"][1]["image_url"]["url"]
        img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert img.size == (32, 24)


def _slow_counting(delay: float):
    """A reply script that holds each request `delay` s and counts the most held at once."""
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(n, req):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(delay)
        with lock:
            state["now"] -= 1
        return Reply()

    return slow, state


def test_concurrency_is_bounded(tmp_path):
    slow, state = _slow_counting(0.15)
    with FakeLLMServer(slow) as server:
        out = _run(tmp_path, server, max_concurrency=3)
    assert len(out) == N_TICKS
    assert state["max"] == 3


def test_one_kept_alive_connection_per_request_in_flight(tmp_path):
    """Each request slot sends on its own connection, kept alive: 3 in flight open 3 connections for
    all 8 ticks (more workers than slots prepare ticks meanwhile, without sending them)."""
    slow, state = _slow_counting(0.1)
    with FakeLLMServer(slow) as server:
        out = _run(tmp_path, server, max_concurrency=3)
        peers = collections.Counter(s.peer for s in server.seen)
    assert len(out) == N_TICKS
    assert state["max"] == 3
    assert len(peers) == 3, peers  # one connection per slot: none opened per request, none spare
    assert sum(peers.values()) == N_TICKS


def test_job_concurrency_overrides_max_concurrency(tmp_path):
    """The workflow passes the job's `llm_requests` resource as its concurrency."""
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(n, req):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.1)
        with lock:
            state["now"] -= 1
        return Reply()

    with FakeLLMServer(slow) as server:
        provider, ctxs = _provider(tmp_path, server, concurrency=1, max_concurrency=4)
        assert len(provider.run(ctxs, progress=False)) == N_TICKS
    assert state["max"] == 1


# ---------------------------------------------------------------- retries (the openai client's own)


@pytest.mark.parametrize(
    "first, min_gap, max_gap",
    [
        (Reply(429, headers={"retry-after-ms": "300"}), 0.3, 1.5),  # the server's Retry-After, honoured
        (Reply(500), 0.3, 1.5),  # no header: the client's jittered backoff (0.375-0.5 s)
        (Reply(503, headers={"Retry-After": "1"}), 1.0, 3.0),
        (Reply(408), 0.3, 1.5),
    ],
)
def test_retry_then_success(tmp_path, first, min_gap, max_gap):
    with FakeLLMServer(lambda n, req: first if n == 0 else Reply()) as server:
        provider, ctxs = _provider(tmp_path, server, max_concurrency=1)
        out = provider.run(ctxs, progress=False)
    assert len(out) == N_TICKS and set(out.column("provider").to_pylist()) == {"llm"}
    assert len(server.seen) == N_TICKS + 1
    assert server.seen[0].body_sha256 == server.seen[1].body_sha256  # the same request, asked again
    assert server.seen[1].headers.get("x-stainless-retry-count") == "1"
    assert min_gap <= server.seen[1].t - server.seen[0].t <= max_gap
    assert out.column("cost_usd").to_pylist() == pytest.approx([ROW_COST] * N_TICKS)  # errors are free


def test_timeout_then_success(tmp_path):
    with FakeLLMServer(lambda n, req: Reply(delay_s=3.0) if n == 0 else Reply()) as server:
        provider, ctxs = _provider(tmp_path, server, max_concurrency=1, timeout_s=0.5)
        t0 = time.monotonic()
        out = provider.run(ctxs, progress=False)
        elapsed = time.monotonic() - t0
    assert len(out) == N_TICKS
    assert server.seen[0].body_sha256 == server.seen[1].body_sha256
    assert server.seen[1].headers.get("x-stainless-retry-count") == "1"
    assert 0.5 <= elapsed < 3.0  # the client gave up at timeout_s, it did not wait for the slow reply


def test_retries_are_bounded_and_failures_are_not_cached(tmp_path):
    with FakeLLMServer(lambda n, req: Reply(503, headers={"retry-after-ms": "1"})) as server:
        provider, ctxs = _provider(tmp_path, server, max_retries=2)
        with pytest.raises(RequestsFailed, match=f"{N_TICKS} of {N_TICKS} ticks failed") as info:
            provider.run(ctxs, progress=False)
        assert "HTTP 503" in str(info.value)
        assert len(info.value.partial) == 0
        assert len(server.seen) == 3 * N_TICKS  # 1 try + 2 retries each, no more
        assert ResponseCache(tmp_path / "cache").keys() == []
        assert (
            SpendLedger.for_cache(tmp_path / "cache", 50.0, 60.0).total() == 0.0
        )  # nothing paid, nothing held

        server.script = lambda n, req: Reply()  # the endpoint is back: a rerun finishes
        out = _run(tmp_path, server)
        assert len(out) == N_TICKS


def test_an_oversized_reply_fails_its_tick_by_name(tmp_path):
    script = lambda n, req: Reply(pad_bytes=2 << 20) if is_tick(req, "ALERT", 0.75) else Reply()  # noqa: E731
    with FakeLLMServer(script) as server:
        with pytest.raises(RequestsFailed, match="1 of 8 ticks failed: pos_dota tick 4") as info:
            _run(tmp_path, server, max_retries=0)
    cfg = llm_config(tmp_path, server)
    assert f"exceeds {max_reply_bytes(cfg.beliefs.llm):,} bytes" in str(info.value) or "over the" in str(
        info.value
    )
    assert "ReplyTooLarge" in str(info.value)
    assert len(info.value.partial) == N_TICKS - 1


def test_a_refused_request_fails_the_tick_loudly(tmp_path):
    script = lambda n, req: Reply(400) if is_tick(req, "ALERT", 0.75) else Reply()  # noqa: E731
    with FakeLLMServer(script) as server:
        with pytest.raises(RequestsFailed, match="1 of 8 ticks failed: pos_dota tick 4") as info:
            _run(tmp_path, server)
        assert len(info.value.partial) == N_TICKS - 1  # the other ticks are kept
        assert len(server.seen) == N_TICKS  # a 400 is not retried


# ---------------------------------------------------------------- bad replies


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"analysis": "x", "action": "ALERT"}), "does not fit the schema: belief: Field required"),
        (
            lambda req: {
                **agreeing_reply(req),
                "belief": {**agreeing_reply(req)["belief"], "hazard": "truck"},
            },
            "does not fit the schema: belief.hazard",
        ),
        (contradicting_reply, "contradicts the label: danger 0.20 < 0.5 on an ALERT tick"),
        (lambda req: {**agreeing_reply(req), "action": "OBSERVE"}, "action OBSERVE but the label is ALERT"),
        (lambda req: {**agreeing_reply(req), "analysis": "x <|BELIEF|> y"}, "must not contain '<|BELIEF|>'"),
    ],
)
def test_bad_reply_is_asked_again_once(tmp_path, bad, reason):
    def script(n, req):
        if is_tick(req, "ALERT", 0.75) and not is_retry(req):
            return Reply(content=bad(req) if callable(bad) else bad)
        return Reply()

    with FakeLLMServer(script) as server:
        out = _run(tmp_path, server)
    row = _rows(out)[("pos_dota", 4)]
    assert row["provider"] == "llm"
    assert row["cost_usd"] == pytest.approx(2 * ROW_COST)  # both answers were paid
    retries = [s for s in server.seen if is_retry(s.request)]
    assert len(retries) == 1 and len(server.seen) == N_TICKS + 1
    assert reason in user_text(retries[0].request)
    # the row names the answer it used: the key of exactly what the retry sent
    assert row["prompt_sha256"] == _key_of(retries[0].request)
    assert row["prompt_sha256"] in ResponseCache(tmp_path / "cache").keys()


def test_twice_bad_reply_falls_back_to_rules_and_a_rerun_pays_nothing(tmp_path):
    def script(n, req):
        if is_tick(req, "ALERT", 0.75):
            return Reply(content=contradicting_reply(req))
        if is_tick(req, "SILENT", 0.0) and not is_retry(req):
            return Reply(content=contradicting_reply(req))  # danger 0.9 on SILENT, fixed on retry
        return Reply()

    with FakeLLMServer(script) as server:
        cfg = llm_config(tmp_path, server)
        labels, videos = llm_source(cfg)
        out = generate_beliefs(labels, videos, cfg, frames_loader=fake_frames, environ={ENV: KEY})
        rows = _rows(out)
        fb = rows[("pos_dota", 4)]
        assert fb["provider"] == "rules-fallback"
        ctx = [c for c in belief_contexts(labels, videos, cfg) if (c.video_id, c.tick) == ("pos_dota", 4)][0]
        want = rules_reply(ctx, cfg.labels)
        assert fb["analysis"] == want.analysis and Belief.from_json(fb["belief"]) == want.belief
        assert fb["cost_usd"] == pytest.approx(2 * ROW_COST)
        assert fb["prompt_sha256"] in ResponseCache(tmp_path / "cache").keys()
        providers = collections.Counter(r["provider"] for r in rows.values())
        assert providers == {"llm": N_TICKS - 1, "rules-fallback": 1}
        assert len(server.seen) == N_TICKS + 1 + 3  # 1 retry for ALERT 0.75 + 3 for the SILENT ticks

        seen = len(server.seen)
        again = generate_beliefs(labels, videos, cfg, frames_loader=fake_frames, environ={ENV: KEY})
        assert len(server.seen) == seen
        assert again.equals(out)


# ---------------------------------------------------------------- budget


def test_budget_cap_stops_cleanly_and_resumes(tmp_path):
    cap = 0.02
    with FakeLLMServer() as server:
        with pytest.raises(BudgetExceeded) as info:
            _run(tmp_path, server, max_cost_usd=cap, max_concurrency=1)
        err = info.value
        sent = len(server.seen)
        # each request books its worst case first (600 output tokens: $0.006 + the prompt), so the
        # stage stops while the next booking would not fit, and never after the cap
        assert 1 <= sent < N_TICKS
        assert sent * ROW_COST <= cap
        assert len(err.partial) == sent and err.done == sent and err.total == N_TICKS
        check_table("beliefs", err.partial)
        assert err.spent_usd == pytest.approx(sent * ROW_COST)
        assert cap - err.spent_usd < 0.006 + 0.004  # stopped because one more worst case did not fit
        msg = str(err)
        assert (
            "max_cost_usd" in msg
            and f"{sent} of 8 ticks done" in msg
            and f"{N_TICKS - sent} not requested" in msg
        )
        assert str(tmp_path / "cache") in msg

        with pytest.raises(BudgetExceeded):  # same cap: the cached answers already use it up
            _run(tmp_path, server, max_cost_usd=cap, max_concurrency=1)
        assert len(server.seen) == sent

        out = _run(tmp_path, server, max_cost_usd=1.0)
        assert len(out) == N_TICKS
        assert len(server.seen) == N_TICKS
        assert len({s.body_sha256 for s in server.seen}) == N_TICKS


SOURCE_CHILD = r"""
import json, os, sys, time
import pyarrow.parquet as pq
work, tests, name = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, tests)
import openai, PIL.Image
from llm_server import fake_frames
from vlalert.beliefs.llm import BudgetExceeded
from vlalert.beliefs.stage import generate_beliefs
from vlalert.config import validate_config
cfg = validate_config(json.load(open(f"{work}/cfg.json")))
open(f"{work}/{name}.ready", "w").close()  # imported: start when all jobs are (they overlap)
while not os.path.exists(f"{work}/go"):
    time.sleep(0.01)
videos = pq.read_table(f"{work}/{name}.videos.parquet")
try:
    labels = pq.read_table(f"{work}/{name}.labels.parquet")
    out = generate_beliefs(labels, videos, cfg, frames_loader=fake_frames)
    print("done", len(out))
except BudgetExceeded as err:
    print("budget", err.done)
"""


def test_the_cap_holds_across_concurrent_source_jobs(tmp_path):
    """4 sources' beliefs jobs as concurrent processes share one cap: the total paid stays within it."""
    cap = 0.05  # 32 ticks at $0.0035 would cost $0.112
    with FakeLLMServer(lambda n, req: Reply(delay_s=0.05)) as server:
        cfg = llm_config(tmp_path, server, max_cost_usd=cap, max_concurrency=2)
        (tmp_path / "cfg.json").write_text(json.dumps(cfg.model_dump(mode="json")))
        for name in ("nexar", "dota", "dada", "dad"):
            rows = [{**r, "path": f"/videos/{name}/{r['video_id']}.mp4"} for r in small_llm_clips()]
            videos = pa.Table.from_pylist(rows)
            pq.write_table(label_source(videos, None, "mix", cfg), tmp_path / f"{name}.labels.parquet")
            pq.write_table(videos, tmp_path / f"{name}.videos.parquet")
        env = {**os.environ, ENV: KEY, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        children = [
            subprocess.Popen(
                [sys.executable, "-c", SOURCE_CHILD, str(tmp_path), str(Path(__file__).parent), name],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("nexar", "dota", "dada", "dad")
        ]
        # Start together: a job whose imports finish first could otherwise answer all its 8 ticks
        # ($0.028) before the others send anything, and never meet the cap.
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"{n}.ready").exists() for n in ("nexar", "dota", "dada", "dad")):
            assert time.monotonic() < deadline and all(c.poll() is None for c in children)
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outs = [c.communicate(timeout=120) for c in children]
        for c, (_out, err) in zip(children, outs, strict=True):
            assert c.returncode == 0, err[-3000:]
        paid = len(server.answered()) * ROW_COST
    # The jobs stopped at the shared cap: 32 ticks cost more than it. Which ones is timing: a job that
    # booked early may have answered all its 8 ticks before the others filled the cap.
    outcomes = [o.split()[0] for o, _ in outs]
    assert "budget" in outcomes and set(outcomes) <= {"budget", "done"}, outcomes
    print(f"4 source jobs, cap ${cap:.4f}: paid ${paid:.4f} ({len(server.answered())} answers)")
    assert paid <= cap
    # and the cap was used, not stopped early: the jobs waited for the others' worst-case bookings to
    # settle, and stopped only when what was paid left no room for one more worst case ($0.0095)
    assert paid > cap - 0.0095
    ledger = SpendLedger.for_cache(tmp_path / "cache", cap, 60.0)
    assert ledger.total() == pytest.approx(paid)


def test_a_booking_waits_for_requests_in_flight_to_settle(tmp_path):
    """A booking that fits once another request settles at its actual cost waits for it, not stops."""
    ledger = SpendLedger(tmp_path / "spend.sqlite", cap_usd=0.01, lease_s=60.0)
    first = ledger.reserve("a" * 64, 0.006)
    with pytest.raises(CapReached):  # no waiting asked for: the worst case in flight blocks it
        ledger.reserve("b" * 64, 0.006)
    settler = threading.Timer(0.3, lambda: ledger.settle(first, 0.003, 100))
    settler.start()
    second = ledger.reserve("b" * 64, 0.006, wait_s=30.0)
    settler.join()
    assert second.usd == pytest.approx(0.006)
    assert ledger.total() == pytest.approx(0.009)
    t0 = time.monotonic()
    with pytest.raises(CapReached):  # the job is stopping: it does not wait
        ledger.reserve("c" * 64, 0.006, wait_s=30.0, give_up=lambda: True)
    assert time.monotonic() - t0 < 5.0
    ledger.settle(second, 0.004, 100)
    with pytest.raises(CapReached):  # settled alone leaves no room: stops at once
        ledger.reserve("c" * 64, 0.006, wait_s=30.0)
    assert time.monotonic() - t0 < 5.0


def test_ledger_reserves_within_the_cap_and_reclaims_a_killed_job(tmp_path):
    ledger = SpendLedger(tmp_path / "spend.sqlite", cap_usd=0.01, lease_s=60.0)
    a = ledger.reserve("a" * 64, 0.006)
    with pytest.raises(CapReached):
        ledger.reserve("b" * 64, 0.006)  # 0.012 would pass the cap
    ledger.settle(a, 0.0035, 1000)
    b = ledger.reserve("b" * 64, 0.006)  # 0.0095 fits
    ledger.release(b)
    assert ledger.total() == pytest.approx(0.0035) and ledger.max_prompt_tokens() == 1000
    ledger.use_cached("a" * 64, 0.0035, 1000)  # already paid here: counted once
    ledger.use_cached("c" * 64, 0.002, 900)  # paid elsewhere (before the ledger): counted now
    assert ledger.total() == pytest.approx(0.0055)

    # a job killed with a request in flight: its booking becomes spend when the next job opens the ledger
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from vlalert.beliefs.ledger import SpendLedger; "
            "SpendLedger(sys.argv[1], 0.01, 60.0).reserve('d' * 64, 0.004); os._exit(0)",
            str(tmp_path / "spend.sqlite"),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=True,
    )
    assert child.returncode == 0
    again = SpendLedger(tmp_path / "spend.sqlite", cap_usd=0.01, lease_s=60.0)
    assert again.total() == pytest.approx(0.0095)
    with pytest.raises(CapReached):
        again.reserve("e" * 64, 0.001)


def test_a_finished_job_leaves_no_partial_file(tmp_path):
    from vlalert.beliefs.stage import partial_path, write_beliefs_job

    out = tmp_path / "beliefs" / "mix.parquet"
    with FakeLLMServer() as server:
        cfg = llm_config(tmp_path, server, max_cost_usd=0.02, max_concurrency=1)
        labels, videos = llm_source(cfg)
        with pytest.raises(BudgetExceeded):
            write_beliefs_job(out, labels, videos, cfg, frames_loader=fake_frames, environ={ENV: KEY})
        assert partial_path(out).exists() and not out.exists()
        cfg = llm_config(tmp_path, server, max_cost_usd=1.0)
        write_beliefs_job(out, labels, videos, cfg, frames_loader=fake_frames, environ={ENV: KEY})
    assert out.exists() and not partial_path(out).exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["mix.parquet"]


# ---------------------------------------------------------------- the key stays secret


def _all_text(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


def test_key_is_redacted_from_errors_and_logs(tmp_path, caplog):
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error"}}
    caplog.set_level(logging.DEBUG)  # every logger, the openai client and httpx included
    with FakeLLMServer(lambda n, req: Reply(401, body=echo)) as server:
        with pytest.raises(LLMError) as info:
            _run(tmp_path, server)
    assert "HTTP 401" in str(info.value) and "[REDACTED]" in str(info.value)
    assert KEY not in _all_text(info.value)

    # a retried 5xx and a refused 400 that echo the key: logged and raised, redacted
    def script(n, req):
        if n == 0:
            return Reply(500, body=echo)
        if is_tick(req, "SILENT", 0.0):
            return Reply(400, body=echo)
        return Reply()

    with FakeLLMServer(script) as server:
        with pytest.raises(RequestsFailed) as info:
            _run(tmp_path / "b", server, max_concurrency=1)
    assert "[REDACTED]" in str(info.value) and KEY not in _all_text(info.value)
    partial = info.value.partial
    assert KEY not in json.dumps(partial.to_pylist())
    assert "[REDACTED]" in caplog.text
    assert KEY not in caplog.text
    for path in (tmp_path / "b" / "cache").rglob("*.json"):
        assert KEY not in path.read_text()


def test_missing_key_names_the_variable(tmp_path):
    with FakeLLMServer() as server:
        cfg = llm_config(tmp_path, server)
        labels, videos = llm_source(cfg)
        with pytest.raises(LLMError, match=f"environment variable {ENV} is not set"):
            generate_beliefs(labels, videos, cfg, frames_loader=fake_frames, environ={})
        assert server.seen == []


# ---------------------------------------------------------------- kill and resume

CHILD = r"""
import json, sys
import pyarrow.parquet as pq
work, tests = sys.argv[1], sys.argv[2]
sys.path.insert(0, tests)
from llm_server import fake_frames
from vlalert.beliefs.stage import generate_beliefs
from vlalert.config import validate_config
cfg = validate_config(json.load(open(f"{work}/cfg.json")))
out = generate_beliefs(pq.read_table(f"{work}/labels.parquet"), pq.read_table(f"{work}/videos.parquet"),
                       cfg, frames_loader=fake_frames)
pq.write_table(out, f"{work}/out.parquet")
"""


def test_kill_mid_stage_then_resume_pays_no_answer_twice(tmp_path):
    answered_before_kill = 3
    with FakeLLMServer(hold_after=answered_before_kill) as server:
        cfg = llm_config(tmp_path, server, max_concurrency=1)
        labels, videos = llm_source(cfg)
        (tmp_path / "cfg.json").write_text(json.dumps(cfg.model_dump(mode="json")))
        pq.write_table(labels, tmp_path / "labels.parquet")
        pq.write_table(videos, tmp_path / "videos.parquet")
        cache = ResponseCache(tmp_path / "cache")
        env = {**os.environ, ENV: KEY, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), str(Path(__file__).parent)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            # killed while a request is in flight, after 3 answers are safely in the cache
            while not (len(cache.keys()) == answered_before_kill and len(server.seen) > answered_before_kill):
                assert child.poll() is None, child.stdout.read().decode()
                assert time.monotonic() < deadline, "the child never reached the kill point"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert not (tmp_path / "out.parquet").exists()
        run1_answered = set(server.answered())
        assert len(run1_answered) == answered_before_kill
        n_run1 = len(server.seen)

        server.hold_after = None
        server.release()
        out = generate_beliefs(labels, videos, cfg, frames_loader=fake_frames, environ={ENV: KEY})

    assert len(out) == N_TICKS
    assert set(_rows(out)) == {(r["video_id"], r["tick"]) for r in labels.to_pylist() if not r["excluded"]}
    answered = collections.Counter(server.answered())
    assert max(answered.values()) == 1  # no request was answered (paid) twice
    run2_sent = {s.body_sha256 for s in server.seen[n_run1:]}
    assert not run2_sent & run1_answered  # the resume sent no request whose answer was cached
    assert len(answered) == N_TICKS


# ---------------------------------------------------------------- pure helpers


def test_check_reply_reads_fenced_json_and_reports_empty(tmp_path):
    with FakeLLMServer() as server:
        provider, ctxs = _provider(tmp_path, server)
    ctx = next(c for c in ctxs if (c.video_id, c.tick) == ("pos_dota", 0))  # OBSERVE, danger 0.125
    good = {
        "analysis": "A car ahead is turning across our path.",
        "belief": {
            "hazard": "vehicle",
            "where": "ahead",
            "motion": "crossing",
            "ttc_s": 5.0,
            "danger": 0.12,
            "ego_involved": True,
        },
        "action": "OBSERVE",
    }
    reply, why = check_reply("```json\n" + json.dumps(good) + "\n```", ctx)
    assert why is None and reply.belief.motion == "crossing" and reply.action == "OBSERVE"
    assert check_reply(None, ctx) == (None, "the reply was empty")
    assert check_reply("  ", ctx) == (None, "the reply was empty")


def test_redact_and_cost():
    assert redact(f"bad key {KEY}!", [KEY, None]) == "bad key [REDACTED]!"
    assert redact("nothing here", [KEY]) == "nothing here"
    cfg = LLMConfig(usd_per_1k_input_tokens=0.002, usd_per_1k_output_tokens=0.008)
    assert cost_usd({"prompt_tokens": 1500, "completion_tokens": 250}, cfg) == pytest.approx(0.003 + 0.002)
    assert cost_usd({}, cfg) == 0.0 and cost_usd(None, cfg) == 0.0


def test_encode_frames():
    frames = fake_frames("x", [0, 1])
    jpegs = encode_frames(frames, max_side=640, quality=90)
    assert [Image.open(io.BytesIO(j)).size for j in jpegs] == [(64, 48), (64, 48)]
    assert encode_frames(frames, 640, 90) == jpegs  # deterministic: the cache key depends on it
    small = encode_frames(frames, max_side=16, quality=90)
    assert Image.open(io.BytesIO(small[0])).size == (16, 12)
    with pytest.raises(ValueError, match="uint8"):
        encode_frames(frames.astype("float32"), 640, 90)


def test_request_json_is_the_body_the_client_would_encode(monkeypatch):
    """The body is sent as bytes with the frames' base64 spliced in: the same bytes as the openai
    client's own encoding of `request_body`, also when the instruction holds a splice marker."""
    from openai._utils._json import openapi_dumps

    from vlalert.beliefs import request

    cfg = LLMConfig()
    jpegs = encode_frames(fake_frames("x", list(range(8))), 512, 85)
    for instruction, frames in [('a "quoted" \\ label\nnon-ASCII: é ✓ \u2028', jpegs), ("no frames", [])]:
        body = request.request_body(cfg, request.build_messages(instruction, frames, "low"))
        assert request.request_json(cfg, instruction, frames, "low") == openapi_dumps(body)
    monkeypatch.setattr(request.secrets, "token_hex", lambda n: "f" * 2 * n)  # a marker the text holds
    instruction = f"see {'f' * 32}000000, the first frame's marker"
    body = request.request_body(cfg, request.build_messages(instruction, jpegs, "high"))
    assert request.request_json(cfg, instruction, jpegs, "high") == openapi_dumps(body)  # the fallback


def test_request_key_and_cache_files(tmp_path):
    k = request_key("m", "prompt", [b"ab", b"c"])
    assert k != request_key("m", "prompt", [b"a", b"bc"])  # parts are length-prefixed
    assert k != request_key("m2", "prompt", [b"ab", b"c"])
    assert k != request_key("m", "prompt!", [b"ab", b"c"])
    assert k == request_key("m", "prompt", [b"ab", b"c"])
    cache = ResponseCache(tmp_path)
    assert cache.get(k) is None
    path = cache.put(k, {"content": "x", "usage": {"prompt_tokens": 1}})
    assert path == tmp_path / k[:2] / f"{k}.json"
    assert cache.get(k) == {"content": "x", "usage": {"prompt_tokens": 1}}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    path.write_text('{"content": "tru')  # a torn file (not written by put) is a miss
    assert cache.get(k) is None and cache.keys() == [k]
    with pytest.raises(ValueError, match="sha256"):
        cache.path("../../etc/passwd")


def test_requests_in_flight_are_one_run_wide_setting():
    """Both profiles bound llm_requests run-wide; the beliefs job asks for its concurrency and uses it."""
    import yte

    repo = Path(__file__).resolve().parents[1]
    for profile in ("default", "slurm"):
        with open(repo / "profiles" / profile / "config.yaml") as fh:
            raw = yte.process_yaml(fh)
        assert raw["resources"]["llm_requests"] >= LLMConfig().max_concurrency, profile
    rule = (repo / "rules" / "beliefs.smk").read_text()
    assert "llm_requests=CFG.beliefs.llm.max_concurrency" in rule
    script = (repo / "workflow" / "scripts" / "beliefs.py").read_text()
    assert 'snakemake.resources.get("llm_requests"' in script
