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
import random
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
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    FakeLLMServer,
    Reply,
    agreeing_reply,
    base_config,
    contradicting_reply,
    fake_frames,
    small_llm_clips,
    user_text,
)
from PIL import Image

from vlalert.beliefs.cache import ResponseCache, request_key
from vlalert.beliefs.llm import (
    BudgetExceeded,
    LLMBeliefProvider,
    LLMError,
    RequestsFailed,
    backoff_delay,
    check_reply,
    cost_usd,
    encode_frames,
    prompt_text,
    redact,
    retry_after_seconds,
)
from vlalert.beliefs.rules import rules_reply
from vlalert.beliefs.schema import Belief
from vlalert.beliefs.stage import belief_contexts, generate_beliefs
from vlalert.config import LLMConfig, validate_config
from vlalert.labels import label_source
from vlalert.schemas import check_table

KEY = "sk-test-SECRET-0123456789abcdef"
ENV = "VLALERT_TEST_LLM_KEY"
ROW_COST = PROMPT_TOKENS / 1000 * 0.0025 + COMPLETION_TOKENS / 1000 * 0.01  # default prices: $0.0035
N_TICKS = 8  # pos_dota: 3 OBSERVE + 2 ALERT (+1 post-event, excluded); neg_nexar: 3 SILENT


def _config(tmp_path: Path, server: FakeLLMServer, **llm):
    settings = {
        "base_url": server.base_url,
        "model": "test-model",
        "api_key_env": ENV,
        "cache_dir": str(tmp_path / "cache"),
        "max_concurrency": 2,
        "timeout_s": 5.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    settings.update(llm)
    return validate_config(base_config(provider="llm", progress=False, llm=settings))


def _source(cfg):
    videos = pa.Table.from_pylist(small_llm_clips())
    return label_source(videos, None, "mix", cfg), videos


def _run(tmp_path, server, **llm):
    cfg = _config(tmp_path, server, **llm)
    labels, videos = _source(cfg)
    return generate_beliefs(labels, videos, cfg, frames_loader=fake_frames, environ={ENV: KEY})


def _provider(tmp_path, server, sleeps: list[float] | None = None, **llm):
    cfg = _config(tmp_path, server, **llm)
    labels, videos = _source(cfg)
    provider = LLMBeliefProvider(
        cfg.beliefs.llm,
        cfg.labels,
        cfg.window,
        api_key=KEY,
        frames_loader=fake_frames,
        sleep=(sleeps.append if sleeps is not None else time.sleep),
        rng=random.Random(0),
    )
    return provider, belief_contexts(labels, videos, cfg)


def _rows(table) -> dict[tuple[str, int], dict]:
    return {(r["video_id"], r["tick"]): r for r in table.to_pylist()}


def _is_tick(request, action, danger) -> bool:
    return f"action={action} danger={danger:.2f}" in user_text(request)


def _key_of(request) -> str:
    """The cache key of a request as the server received it (model, prompt text, frame bytes)."""
    images = [c["image_url"]["url"] for c in request["messages"][1]["content"] if c["type"] == "image_url"]
    jpegs = [base64.b64decode(u.split(",", 1)[1]) for u in images]
    return request_key(request["model"], prompt_text(user_text(request)), jpegs)


def _is_retry(request) -> bool:
    return "previous answer was rejected" in user_text(request)


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


def test_concurrency_is_bounded(tmp_path):
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(n, req):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return Reply()

    with FakeLLMServer(slow) as server:
        out = _run(tmp_path, server, max_concurrency=3)
    assert len(out) == N_TICKS
    assert state["max"] == 3


# ---------------------------------------------------------------- retries


@pytest.mark.parametrize(
    "first, want_sleep",
    [
        (Reply(429, headers={"Retry-After": "0"}), (0.0, 0.0)),  # the server's Retry-After, exactly
        (Reply(500), (0.005, 0.01)),  # base 0.01 s, attempt 0, equal jitter: [0.005, 0.01]
        (Reply(503, headers={"Retry-After": "7"}), (0.05, 0.05)),  # capped at backoff_max_s
    ],
)
def test_retry_then_success(tmp_path, first, want_sleep):
    sleeps: list[float] = []
    with FakeLLMServer(lambda n, req: first if n == 0 else Reply()) as server:
        provider, ctxs = _provider(tmp_path, server, sleeps, max_concurrency=1)
        out = provider.run(ctxs, progress=False)
    assert len(out) == N_TICKS and set(out.column("provider").to_pylist()) == {"llm"}
    assert len(sleeps) == 1 and want_sleep[0] <= sleeps[0] <= want_sleep[1]
    assert len(server.seen) == N_TICKS + 1
    assert server.seen[0].body_sha256 == server.seen[1].body_sha256  # the same request, asked again
    assert out.column("cost_usd").to_pylist() == pytest.approx([ROW_COST] * N_TICKS)  # errors are free


def test_timeout_then_success(tmp_path):
    sleeps: list[float] = []
    with FakeLLMServer(lambda n, req: Reply(delay_s=3.0) if n == 0 else Reply()) as server:
        provider, ctxs = _provider(tmp_path, server, sleeps, max_concurrency=1, timeout_s=0.5)
        t0 = time.monotonic()
        out = provider.run(ctxs, progress=False)
        elapsed = time.monotonic() - t0
    assert len(out) == N_TICKS
    assert len(sleeps) == 1
    assert server.seen[0].body_sha256 == server.seen[1].body_sha256
    assert 0.5 <= elapsed < 3.0  # the client gave up at timeout_s, it did not wait for the slow reply


def test_retries_are_bounded_and_failures_are_not_cached(tmp_path):
    sleeps: list[float] = []
    with FakeLLMServer(lambda n, req: Reply(503)) as server:
        provider, ctxs = _provider(tmp_path, server, sleeps, max_retries=2)
        with pytest.raises(RequestsFailed, match=f"{N_TICKS} of {N_TICKS} ticks failed") as info:
            provider.run(ctxs, progress=False)
        assert "HTTP 503" in str(info.value)
        assert len(info.value.partial) == 0
        assert len(server.seen) == 3 * N_TICKS  # 1 try + 2 retries each, no more
        assert len(sleeps) == 2 * N_TICKS
        assert ResponseCache(tmp_path / "cache").keys() == []

        server.script = lambda n, req: Reply()  # the endpoint is back: a rerun finishes
        out = _run(tmp_path, server)
        assert len(out) == N_TICKS


def test_a_refused_request_fails_the_tick_loudly(tmp_path):
    script = lambda n, req: Reply(400) if _is_tick(req, "ALERT", 0.75) else Reply()  # noqa: E731
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
        if _is_tick(req, "ALERT", 0.75) and not _is_retry(req):
            return Reply(content=bad(req) if callable(bad) else bad)
        return Reply()

    with FakeLLMServer(script) as server:
        out = _run(tmp_path, server)
    row = _rows(out)[("pos_dota", 4)]
    assert row["provider"] == "llm"
    assert row["cost_usd"] == pytest.approx(2 * ROW_COST)  # both answers were paid
    retries = [s for s in server.seen if _is_retry(s.request)]
    assert len(retries) == 1 and len(server.seen) == N_TICKS + 1
    assert reason in user_text(retries[0].request)
    # the row names the answer it used: the key of exactly what the retry sent
    assert row["prompt_sha256"] == _key_of(retries[0].request)
    assert row["prompt_sha256"] in ResponseCache(tmp_path / "cache").keys()


def test_twice_bad_reply_falls_back_to_rules_and_a_rerun_pays_nothing(tmp_path):
    def script(n, req):
        if _is_tick(req, "ALERT", 0.75):
            return Reply(content=contradicting_reply(req))
        if _is_tick(req, "SILENT", 0.0) and not _is_retry(req):
            return Reply(content=contradicting_reply(req))  # danger 0.9 on SILENT, fixed on retry
        return Reply()

    with FakeLLMServer(script) as server:
        cfg = _config(tmp_path, server)
        labels, videos = _source(cfg)
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
    with FakeLLMServer() as server:
        with pytest.raises(BudgetExceeded) as info:
            _run(tmp_path, server, max_cost_usd=0.01, max_concurrency=1)
        err = info.value
        # 0.0035 + 0.0035 = 0.007 < 0.01: a third request is sent; 0.0105 >= 0.01: no fourth
        assert len(server.seen) == 3
        assert len(err.partial) == 3 and err.done == 3 and err.total == N_TICKS
        check_table("beliefs", err.partial)
        assert err.spent_usd == pytest.approx(3 * ROW_COST)
        msg = str(err)
        assert "max_cost_usd" in msg and "3 of 8 ticks done" in msg and "5 not requested" in msg
        assert str(tmp_path / "cache") in msg

        with pytest.raises(BudgetExceeded):  # same cap: the cached answers already use it up
            _run(tmp_path, server, max_cost_usd=0.01, max_concurrency=1)
        assert len(server.seen) == 3

        out = _run(tmp_path, server, max_cost_usd=1.0)
        assert len(out) == N_TICKS
        assert len(server.seen) == N_TICKS
        assert len({s.body_sha256 for s in server.seen}) == N_TICKS


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
        if _is_tick(req, "SILENT", 0.0):
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
        cfg = _config(tmp_path, server)
        labels, videos = _source(cfg)
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
        cfg = _config(tmp_path, server, max_concurrency=1)
        labels, videos = _source(cfg)
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


def test_backoff_delay():
    rng = random.Random(1)
    assert backoff_delay(0, 1.0, 60.0, 0.0, rng) == 0.0
    assert backoff_delay(3, 1.0, 60.0, 2.5, rng) == 2.5
    assert backoff_delay(3, 1.0, 60.0, 600.0, rng) == 60.0
    for attempt, (lo, hi) in enumerate([(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]):
        for _ in range(50):
            assert lo <= backoff_delay(attempt, 1.0, 60.0, None, rng) <= hi
    assert 5.0 <= backoff_delay(10, 1.0, 10.0, None, rng) <= 10.0  # capped
    assert len({backoff_delay(2, 1.0, 60.0, None, rng) for _ in range(20)}) > 1  # jittered


def test_retry_after_seconds():
    assert retry_after_seconds({"retry-after": "0"}) == 0.0
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None


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
