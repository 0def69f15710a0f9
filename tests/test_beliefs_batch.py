"""Batch mode of the `llm` provider against the fake server's Batch API routes (tests/llm_server.py).

What a user relies on: the same beliefs as online mode at half the price, one submission per request
even across a kill, batches split at the per-batch limits, and the run-wide cap.
"""

from __future__ import annotations

import collections

import pytest
from llm_server import (
    COMPLETION_TOKENS,
    ENV,
    KEY,
    N_TICKS,
    PROMPT_TOKENS,
    ROW_COST,
    FakeLLMServer,
    Reply,
    contradicting_reply,
    is_retry,
    is_tick,
    llm_config,
    llm_source,
)

from vlalert.beliefs.batch import BatchRunner
from vlalert.beliefs.cache import ResponseCache
from vlalert.beliefs.ledger import SpendLedger
from vlalert.beliefs.llm import BudgetExceeded
from vlalert.beliefs.stage import generate_beliefs

BATCH = {"mode": "batch", "batch_poll_s": 0.01}


def _run(tmp_path, server, **llm):
    cfg = llm_config(tmp_path, server, **{**BATCH, **llm})
    labels, videos = llm_source(cfg)
    return generate_beliefs(labels, videos, cfg, frames_loader=_frames(), environ={ENV: KEY})


def _frames():
    from llm_server import fake_frames

    return fake_frames


def _online(tmp_path, server):
    cfg = llm_config(tmp_path, server)
    labels, videos = llm_source(cfg)
    return generate_beliefs(labels, videos, cfg, frames_loader=_frames(), environ={ENV: KEY})


def test_batch_run_gives_the_online_table_at_half_price(tmp_path):
    with FakeLLMServer() as server:
        online = _online(tmp_path / "online", server)
        assert len(server.seen) == N_TICKS
        server.seen.clear()
        out = _run(tmp_path / "batch", server)
        assert server.seen == []  # nothing went online
        assert len(server.batches) == 1 and len(server.batch_lines) == N_TICKS
        cols = ["video_id", "tick", "analysis", "belief", "belief_text", "provider", "model", "prompt_sha256"]
        assert out.select(cols).equals(online.select(cols))
        assert out.column("cost_usd").to_pylist() == pytest.approx([ROW_COST / 2] * N_TICKS)
        ledger = SpendLedger.for_cache(tmp_path / "batch" / "cache", 50.0, 60.0)
        assert ledger.total() == pytest.approx(N_TICKS * ROW_COST / 2)

        again = _run(tmp_path / "batch", server)  # all cached: no batch, no request, no spend
        assert len(server.batches) == 1 and server.seen == []
        assert again.equals(out)
        assert ledger.total() == pytest.approx(N_TICKS * ROW_COST / 2)


def test_a_job_killed_after_submitting_resumes_the_same_batch(tmp_path, monkeypatch):
    class Killed(BaseException):  # like SIGKILL: nothing of the job's own cleanup may matter
        pass

    def die(batch_id):
        raise Killed(batch_id)

    with FakeLLMServer() as server:
        server.batch_polls = 2
        monkeypatch.setattr(BatchRunner, "after_submit", staticmethod(die))
        with pytest.raises(Killed):
            _run(tmp_path, server)
        assert list(server.batches) == ["batch_0001"] and len(server.batch_lines) == N_TICKS
        assert ResponseCache(tmp_path / "cache").keys() == []
        # the kill left the batch's bookings in the ledger (at half price, worst case)
        ledger = SpendLedger.for_cache(tmp_path / "cache", 50.0, 60.0)
        booked = ledger.total()
        assert booked >= N_TICKS * ROW_COST / 2

        monkeypatch.setattr(BatchRunner, "after_submit", None)
        out = _run(tmp_path, server)
    assert len(out) == N_TICKS and set(out.column("provider").to_pylist()) == {"llm"}
    assert list(server.batches) == ["batch_0001"]  # polled, not submitted again
    assert max(collections.Counter(server.batch_lines).values()) == 1
    assert server.seen == []
    assert ledger.total() == pytest.approx(N_TICKS * ROW_COST / 2)  # bookings settled to the actual cost


def test_a_kill_between_upload_and_create_adopts_or_creates_once(tmp_path, monkeypatch):
    """Killed after the input file was recorded but before the batch id was: the resume looks the batch up."""

    class Killed(BaseException):
        pass

    with FakeLLMServer() as server:
        real_create = BatchRunner._create

        def create_then_die(self, chunk_id, file_id):
            client = self.p._get_client()
            client.batches.create(  # the batch exists on the server, the job dies before recording it
                input_file_id=file_id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"vlalert_chunk": chunk_id},
            )
            raise Killed

        monkeypatch.setattr(BatchRunner, "_create", create_then_die)
        with pytest.raises(Killed):
            _run(tmp_path, server)
        monkeypatch.setattr(BatchRunner, "_create", real_create)
        # the dead job's chunk is 'uploaded' and owned by this (live) pid: make it look dead
        ledger = SpendLedger.for_cache(tmp_path / "cache", 50.0, 60.0)
        ledger.transaction(lambda db: db.execute("UPDATE batch_chunk SET owner_pid = 999999999"))
        out = _run(tmp_path, server)
    assert len(out) == N_TICKS
    assert len(server.batches) == 1 and max(collections.Counter(server.batch_lines).values()) == 1


def test_batches_split_at_the_per_batch_limits(tmp_path):
    with FakeLLMServer() as server:
        out = _run(tmp_path, server, batch_max_requests=3)
        assert len(out) == N_TICKS
        assert [b["request_counts"]["total"] for b in server.batches.values()] == [3, 3, 2]
        assert sorted(server.batch_lines) == sorted(out.column("prompt_sha256").to_pylist())
    with FakeLLMServer() as server:
        one = len(next(iter(_lines_of(tmp_path / "b", server))))
        out = _run(tmp_path / "c", server, batch_max_bytes=int(one * 2.5))  # two lines per file
        assert len(out) == N_TICKS
        later = list(server.batches.values())[1:]  # the first is _lines_of's own run
        assert [b["request_counts"]["total"] for b in later] == [2, 2, 2, 2]


def _lines_of(tmp_path, server):
    """The JSONL lines one batch run uploads (the first file on the server)."""
    _run(tmp_path, server)
    return server.files["file-0001"].splitlines()


def test_rejected_batch_answers_are_asked_again_online(tmp_path):
    calls = [0]

    def script(n, req):
        calls[0] += 1
        in_batch = calls[0] <= N_TICKS  # the batch's lines are answered first, before anything online
        if is_tick(req, "ALERT", 0.75) and not is_retry(req):
            return Reply(content=contradicting_reply(req))
        if is_tick(req, "SILENT", 0.0) and in_batch:
            return Reply(status=500)  # the batch does not answer it: it goes online
        return Reply()

    with FakeLLMServer(script) as server:
        out = _run(tmp_path, server)
        assert len(out) == N_TICKS and set(out.column("provider").to_pylist()) == {"llm"}
        assert len(server.batch_lines) == N_TICKS
        online = [s.request for s in server.seen]
        assert sum(is_retry(r) for r in online) == 1  # the re-ask of the contradicting ALERT tick
        n_silent = sum(is_tick(r, "SILENT", 0.0) and not is_retry(r) for r in online)
        # the SILENT ticks of neg_nexar whose batch line failed went online once each, at full price
        assert n_silent >= 1 and len(online) == 1 + n_silent
        costs = {r["prompt_sha256"]: r["cost_usd"] for r in out.to_pylist()}
        assert sorted(set(round(c, 6) for c in costs.values())) == sorted(
            {round(ROW_COST / 2, 6), round(ROW_COST, 6), round(ROW_COST * 1.5, 6)}
        )


def test_the_cap_holds_in_batch_mode(tmp_path):
    # worst case per request at half price: (prompt estimate + 600 output tokens) / 2; the cap fits a few
    cap = 0.012
    with FakeLLMServer() as server:
        with pytest.raises(BudgetExceeded) as info:
            _run(tmp_path, server, max_cost_usd=cap)
        n = len(server.batch_lines)
        assert 1 <= n < N_TICKS and server.seen == []  # what did not fit was not sent online either
        paid = n * (PROMPT_TOKENS / 1000 * 0.0025 + COMPLETION_TOKENS / 1000 * 0.01) / 2
        assert info.value.spent_usd == pytest.approx(paid) and paid <= cap
        assert info.value.done == n
        ledger = SpendLedger.for_cache(tmp_path / "cache", cap, 60.0)
        assert ledger.total() == pytest.approx(paid)

        out = _run(tmp_path, server, max_cost_usd=1.0)  # raise the cap: only the rest is submitted
        assert len(out) == N_TICKS
        assert max(collections.Counter(server.batch_lines).values()) == 1
        assert len(server.batch_lines) == N_TICKS
