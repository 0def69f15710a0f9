"""One spend ledger shared by every beliefs job that uses the same LLM cache: the budget cap holds run-wide.

The ledger is a SQLite file beside the answers (`{cache_dir}/spend.sqlite`), so the jobs of all
sources of a run (the cache is shared) draw on one `max_cost_usd`, whether they run one after the
other, side by side as processes, or on different nodes of a cluster sharing the results folder.

Before a request is sent, `reserve` books its worst-case cost (the largest prompt seen so far or an
estimate from the request's size, plus `max_output_tokens` of output) inside one exclusive
transaction, and only if the total with that reservation stays within the cap; `settle` then
replaces the reservation by the answer's actual cost, and `release` drops it when no answer came.
So the sum of what the ledger holds never passes the cap.

Rows: one per reservation / paid answer / cached answer used (`used`: an answer already in the
cache but not yet in the ledger, e.g. paid before the ledger existed; it counts once). A job killed
with SIGKILL leaves its reservations behind; the next job to open the ledger turns those of dead
processes on this host (or any whose lease has expired) into `orphaned` spend at the reserved
amount, since the endpoint may have billed a request that was in flight: the cap errs on the
side of money. Batch-API bookings (the batch book below) belong to no process: the provider runs
them while no job does, so they stay reserved until a job settles them by key (`settle_batch`; or
their lease, the completion window plus a margin, expires).

Throughput: every write is one exclusive transaction with a synchronous commit (several fsyncs),
so a process funnels its threads' operations through one connection and commits whatever has
queued up meanwhile in one transaction (group commit): 64 requests in flight cost a few commits a
second, not 128 lock waits in SQLite's sleeping busy handler. Each operation still happens-before
its caller goes on (a request is sent only once its reservation is committed). The running total
is kept in `spend_sum` by triggers (in integer pico-USD, so it drifts by no rounding), so checking
the cap reads one row, not the whole ledger.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LEDGER_NAME = "spend.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'paid', 'used', 'orphaned')),
    usd REAL NOT NULL,
    prompt_tokens INTEGER,
    host TEXT,
    pid INTEGER,
    expires REAL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_key ON spend (key);
CREATE INDEX IF NOT EXISTS spend_prompt ON spend (prompt_tokens);
CREATE TABLE IF NOT EXISTS spend_sum (id INTEGER PRIMARY KEY CHECK (id = 0), pusd INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS spend_sum_ins AFTER INSERT ON spend
    BEGIN UPDATE spend_sum SET pusd = pusd + CAST(ROUND(NEW.usd * 1e12) AS INTEGER) WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS spend_sum_upd AFTER UPDATE OF usd ON spend
    BEGIN UPDATE spend_sum SET pusd = pusd - CAST(ROUND(OLD.usd * 1e12) AS INTEGER)
        + CAST(ROUND(NEW.usd * 1e12) AS INTEGER) WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS spend_sum_del AFTER DELETE ON spend
    BEGIN UPDATE spend_sum SET pusd = pusd - CAST(ROUND(OLD.usd * 1e12) AS INTEGER) WHERE id = 0; END;
INSERT OR IGNORE INTO spend_sum (id, pusd)
    SELECT 0, COALESCE(SUM(CAST(ROUND(usd * 1e12) AS INTEGER)), 0) FROM spend;
CREATE TABLE IF NOT EXISTS batch_chunk (
    chunk_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('booked', 'uploaded', 'submitted', 'done')),
    input_file_id TEXT,
    batch_id TEXT,
    owner_host TEXT,
    owner_pid INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_request (custom_id TEXT PRIMARY KEY, chunk_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS batch_request_chunk ON batch_request (chunk_id);
"""
BATCH_HOST = "batch"  # `host` of a Batch-API reservation: no process holds it


class CapReached(Exception):
    """A reservation would take the ledger past the cap; nothing was booked.

    `pending_usd` is what live jobs' requests in flight hold reserved at their worst case; they
    settle at their actual (lower) cost, so the booking may fit once they do.
    """

    def __init__(self, spent_usd: float, need_usd: float, pending_usd: float = 0.0) -> None:
        super().__init__(f"${spent_usd:.4f} spent or reserved, a request needs up to ${need_usd:.4f}")
        self.spent_usd = spent_usd
        self.need_usd = need_usd
        self.pending_usd = pending_usd


@dataclass(frozen=True)
class Reservation:
    row_id: int
    usd: float


class _Tx:
    """One transaction's view: the running total, updated as its operations book and drop spend."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._total: float | None = None

    @property
    def total(self) -> float:
        if self._total is None:
            pusd = self.db.execute("SELECT pusd FROM spend_sum WHERE id = 0").fetchone()[0]
            self._total = int(pusd) / 1e12
        return self._total

    def add(self, usd: float) -> None:
        self._total = self.total + usd

    def max_prompt_tokens(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(prompt_tokens), 0) FROM spend").fetchone()[0])

    def pending(self) -> float:
        """USD reserved by requests of jobs in flight (not Batch-API bookings, which settle in hours)."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(usd), 0) FROM spend WHERE state = 'reserved' AND host IS NOT ?",
            (BATCH_HOST,),
        ).fetchone()
        return float(row[0])


@dataclass
class _Op:
    fn: Callable[[_Tx], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class SpendLedger:
    """The run-wide spend of one LLM cache against `cap_usd`; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str], cap_usd: float, lease_s: float = 3600.0) -> None:
        self.path = Path(path)
        self.cap = float(cap_usd)
        self.lease_s = float(lease_s)
        self.host = socket.gethostname()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None
        self._db_pid = -1
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Op] = []
        self._busy = False
        self.commits = 0  # transactions this object committed (group commit: fewer than operations)
        self.reclaim()

    @classmethod
    def for_cache(cls, cache_dir: str | os.PathLike[str], cap_usd: float, lease_s: float) -> SpendLedger:
        return cls(Path(cache_dir) / LEDGER_NAME, cap_usd, lease_s)

    def _connect(self) -> sqlite3.Connection:
        # Rollback journal (not WAL): it works on the network file systems clusters share results on.
        # TRUNCATE, not the default DELETE: the same durability, but a commit empties the journal
        # instead of deleting the file and creating it again: 0.12 against 0.75 ms of CPU per commit
        # measured here, most of it the file system's.
        db = sqlite3.connect(self.path, timeout=120.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=TRUNCATE")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";\n"):
                if stmt.strip():
                    db.execute(stmt)
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        db.execute("COMMIT")
        return db

    def _conn(self) -> sqlite3.Connection:
        """This process's connection (only the thread committing a group uses it)."""
        if self._db is None or self._db_pid != os.getpid():  # a forked child opens its own
            self._db, self._db_pid = self._connect(), os.getpid()
        return self._db

    def close(self) -> None:
        with self._cv:
            if self._db is not None and self._db_pid == os.getpid():
                self._db.close()
            self._db = None

    def _commit_group(self, ops: list[_Op]) -> None:
        """Run `ops` in one exclusive transaction; each op's exception is its own (it wrote nothing)."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            tx = _Tx(db)
            for op in ops:
                try:
                    op.result = op.fn(tx)
                except CapReached as err:  # raised before the op writes: the others go on
                    op.error = err
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.commits += 1

    def _run(self, fn: Callable[[_Tx], Any]) -> Any:
        """Run `fn` inside a committed transaction, together with whatever other threads queued meanwhile."""
        op = _Op(fn)
        with self._cv:
            self._queue.append(op)
            while self._busy and not op.done:
                self._cv.wait()
            if not op.done:
                self._busy = True
                group, self._queue = self._queue, []
        if not op.done:
            try:
                self._commit_group(group)
            except BaseException as err:
                for other in group:
                    other.error = other.error or err
                raise
            finally:
                with self._cv:
                    for other in group:
                        other.done = True
                    self._busy = False
                    self._cv.notify_all()
        if op.error is not None:
            raise op.error
        return op.result

    def transaction(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `fn(connection)` inside one committed transaction of this ledger (the batch book uses it)."""
        return self._run(lambda tx: fn(tx.db))

    def total(self) -> float:
        """Everything paid, used from the cache, orphaned or reserved right now, in USD."""
        return float(self._run(lambda tx: tx.total))

    def max_prompt_tokens(self) -> int:
        return int(self._run(lambda tx: tx.max_prompt_tokens()))

    def reclaim(self) -> float:
        """Turn reservations of dead jobs into orphaned spend; return how much (USD)."""
        now = time.time()

        def fn(tx: _Tx) -> list[tuple[int, float]]:
            rows = tx.db.execute(
                "SELECT id, host, pid, expires, usd FROM spend WHERE state = 'reserved'"
            ).fetchall()
            dead = [
                (rid, usd)
                for rid, host, pid, expires, usd in rows
                if (expires is not None and expires < now)
                or (host == self.host and pid is not None and not _pid_alive(int(pid)))
            ]
            for rid, _ in dead:
                tx.db.execute("UPDATE spend SET state = 'orphaned' WHERE id = ?", (rid,))
            return dead

        dead = self._run(fn)
        usd = sum(u for _, u in dead)
        if dead:
            log.warning(
                "beliefs llm: %d request(s) of a killed job were in flight; their reservations ($%.4f) stay "
                "counted against max_cost_usd since the endpoint may have billed them",
                len(dead),
                usd,
            )
        return usd

    def reserve(
        self,
        key: str,
        usd: float | Callable[[int], float],
        *,
        wait_s: float = 0.0,
        give_up: Callable[[], bool] | None = None,
    ) -> Reservation:
        """Book `usd` for one request, or raise `CapReached` when total + usd would pass the cap.

        `usd` may be a function of the largest prompt (tokens) the ledger has seen answered, evaluated
        inside the booking's transaction (see `vlalert.beliefs.request.reserve_usd`).

        With `wait_s` > 0, a booking that does not fit only because requests in flight (this job's
        other threads, or other jobs) hold their worst case waits up to `wait_s` for them to settle
        at their actual cost, instead of stopping the job while the cap still has room: without it,
        jobs side by side stop early, each seeing the others' worst cases. It gives up at once when
        the settled spend alone leaves no room, and when `give_up()` turns true.
        """
        deadline = time.monotonic() + wait_s
        pause = 0.02
        while True:
            try:
                return self._reserve_once(key, usd)
            except CapReached as err:
                could_fit = err.spent_usd - err.pending_usd + err.need_usd <= self.cap + 1e-12
                if not could_fit or err.pending_usd <= 0 or time.monotonic() >= deadline:
                    raise
                if give_up is not None and give_up():
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
            self.reclaim()  # a job killed meanwhile: its bookings turn orphaned, no longer pending

    def _reserve_once(self, key: str, usd: float | Callable[[int], float]) -> Reservation:
        now = time.time()

        def fn(tx: _Tx) -> Reservation:
            need = float(usd(tx.max_prompt_tokens()) if callable(usd) else usd)
            if tx.total + need > self.cap + 1e-12:
                raise CapReached(tx.total, need, tx.pending())
            cur = tx.db.execute(
                "INSERT INTO spend (key, state, usd, host, pid, expires, created) "
                "VALUES (?, 'reserved', ?, ?, ?, ?, ?)",
                (key, need, self.host, os.getpid(), now + self.lease_s, now),
            )
            tx.add(need)
            return Reservation(int(cur.lastrowid), need)

        return self._run(fn)

    def settle(self, res: Reservation, usd: float, prompt_tokens: int) -> None:
        """The answer came: its actual cost replaces the reservation."""
        self._run(
            lambda tx: tx.db.execute(
                "UPDATE spend SET state = 'paid', usd = ?, prompt_tokens = ?, expires = NULL WHERE id = ?",
                (usd, prompt_tokens, res.row_id),
            )
        )
        if usd > res.usd + 1e-12:
            log.warning(
                "beliefs llm: an answer cost $%.4f, more than the $%.4f reserved for it", usd, res.usd
            )

    def release(self, res: Reservation) -> None:
        """No answer came (refused, failed, stopped): the reservation is dropped."""
        self._run(
            lambda tx: tx.db.execute("DELETE FROM spend WHERE id = ? AND state = 'reserved'", (res.row_id,))
        )

    def use_cached(self, key: str, usd: float, prompt_tokens: int) -> None:
        """A cached answer is used: count it once (it is already counted when this ledger paid it)."""

        def fn(tx: _Tx) -> None:
            known = tx.db.execute(
                "SELECT 1 FROM spend WHERE key = ? AND state IN ('paid', 'used') LIMIT 1", (key,)
            ).fetchone()
            if known is None:
                tx.db.execute(
                    "INSERT INTO spend (key, state, usd, prompt_tokens, created) VALUES (?, 'used', ?, ?, ?)",
                    (key, usd, prompt_tokens, time.time()),
                )

        self._run(fn)

    # -- Batch API: reservations that outlive the job (the provider runs the batch, not a process)

    def settle_batch(self, answers: Iterable[tuple[str, float, int]]) -> None:
        """Batch answers came, (key, usd, prompt_tokens) each: actual costs replace their bookings
        (an answer without a booking, e.g. its booking was released, is booked as paid now)."""
        answers = list(answers)
        now = time.time()

        def fn(tx: _Tx) -> None:
            for key, usd, prompt_tokens in answers:
                if tx.db.execute(  # ingested before (by another job, or before a kill): counted once
                    "SELECT 1 FROM spend WHERE key = ? AND state = 'paid' LIMIT 1", (key,)
                ).fetchone():
                    continue
                row = tx.db.execute(
                    "SELECT id FROM spend WHERE key = ? AND host = ? AND state IN ('reserved', 'orphaned') "
                    "LIMIT 1",
                    (key, BATCH_HOST),
                ).fetchone()
                if row is None:
                    tx.db.execute(
                        "INSERT INTO spend (key, state, usd, prompt_tokens, host, created) "
                        "VALUES (?, 'paid', ?, ?, ?, ?)",
                        (key, usd, prompt_tokens, BATCH_HOST, now),
                    )
                else:
                    tx.db.execute(
                        "UPDATE spend SET state = 'paid', usd = ?, prompt_tokens = ?, expires = NULL "
                        "WHERE id = ?",
                        (usd, prompt_tokens, row[0]),
                    )

        self._run(fn)

    # -- the batch book: which requests are in which Batch-API batch (same file, same transactions)

    def book_chunk(self, chunk_id: str, items: Iterable[tuple[str, float]], lease_s: float) -> list[str]:
        """Reserve (key, usd) items in order until the cap, and record the booked keys as chunk
        `chunk_id` (state 'booked', owned by this process), all in one transaction; the keys booked."""
        items = list(items)
        now = time.time()

        def fn(tx: _Tx) -> list[str]:
            booked = []
            for key, usd in items:
                if tx.total + usd > self.cap + 1e-12:
                    break
                tx.db.execute(
                    "INSERT INTO spend (key, state, usd, host, pid, expires, created) "
                    "VALUES (?, 'reserved', ?, ?, NULL, ?, ?)",
                    (key, usd, BATCH_HOST, now + lease_s, now),
                )
                tx.db.execute(
                    "INSERT INTO batch_request (custom_id, chunk_id) VALUES (?, ?)", (key, chunk_id)
                )
                tx.add(usd)
                booked.append(key)
            if booked:
                tx.db.execute(
                    "INSERT INTO batch_chunk (chunk_id, state, owner_host, owner_pid, created) "
                    "VALUES (?, 'booked', ?, ?, ?)",
                    (chunk_id, self.host, os.getpid(), now),
                )
            return booked

        return self._run(fn)

    def chunk_state(self, chunk_id: str, state: str, **ids: str) -> None:
        """Advance a chunk: 'uploaded' with input_file_id, 'submitted' with batch_id."""
        sets = ", ".join(["state = ?"] + [f"{k} = ?" for k in ids])
        self._run(
            lambda tx: tx.db.execute(
                f"UPDATE batch_chunk SET {sets} WHERE chunk_id = ?", (state, *ids.values(), chunk_id)
            )
        )

    def open_chunks(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Chunks not done (those holding any of `keys`, or all), with their custom_ids."""
        wanted = None if keys is None else set(keys)

        def fn(tx: _Tx) -> list[dict[str, Any]]:
            chunks = {}
            for cid, state, fid, bid, host, pid in tx.db.execute(
                "SELECT chunk_id, state, input_file_id, batch_id, owner_host, owner_pid FROM batch_chunk "
                "WHERE state != 'done' ORDER BY created"
            ):
                chunks[cid] = {
                    "chunk_id": cid,
                    "state": state,
                    "input_file_id": fid,
                    "batch_id": bid,
                    "owner_host": host,
                    "owner_pid": pid,
                    "custom_ids": [],
                }
            for key, cid in tx.db.execute("SELECT custom_id, chunk_id FROM batch_request"):
                if cid in chunks:
                    chunks[cid]["custom_ids"].append(key)
            return [c for c in chunks.values() if wanted is None or any(k in wanted for k in c["custom_ids"])]

        return self._run(fn)

    def chunk_owner_gone(self, chunk: dict[str, Any]) -> bool:
        """The process that booked a chunk is dead (same host), so its unfinished steps are ours to redo."""
        return chunk["owner_host"] == self.host and not _pid_alive(int(chunk["owner_pid"]))

    def finish_chunk(
        self, chunk_id: str, answered: Iterable[tuple[str, float, int]], unanswered: Iterable[str]
    ) -> None:
        """A chunk's batch is over: settle its answers (already in the cache), release the bookings of
        requests it did not answer (and forget them, so a later run may ask again), mark it done."""
        self.settle_batch(answered)
        unanswered = list(unanswered)

        def fn(tx: _Tx) -> None:
            for key in unanswered:
                tx.db.execute(
                    "DELETE FROM spend WHERE key = ? AND host = ? AND state IN ('reserved', 'orphaned')",
                    (key, BATCH_HOST),
                )
                tx.db.execute("DELETE FROM batch_request WHERE custom_id = ?", (key,))
            tx.db.execute("UPDATE batch_chunk SET state = 'done' WHERE chunk_id = ?", (chunk_id,))

        self._run(fn)

    def drop_chunk(self, chunk_id: str) -> None:
        """A chunk that was booked but never uploaded (its job was killed): nothing was sent; forget it."""

        def fn(tx: _Tx) -> None:
            keys = [
                r[0]
                for r in tx.db.execute("SELECT custom_id FROM batch_request WHERE chunk_id = ?", (chunk_id,))
            ]
            for key in keys:
                tx.db.execute(
                    "DELETE FROM spend WHERE key = ? AND host = ? AND state IN ('reserved', 'orphaned')",
                    (key, BATCH_HOST),
                )
            tx.db.execute("DELETE FROM batch_request WHERE chunk_id = ?", (chunk_id,))
            tx.db.execute("DELETE FROM batch_chunk WHERE chunk_id = ?", (chunk_id,))

        self._run(fn)
