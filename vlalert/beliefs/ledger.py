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
side of money.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

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
"""


class CapReached(Exception):
    """A reservation would take the ledger past the cap; nothing was booked."""

    def __init__(self, spent_usd: float, need_usd: float) -> None:
        super().__init__(f"${spent_usd:.4f} spent or reserved, a request needs up to ${need_usd:.4f}")
        self.spent_usd = spent_usd
        self.need_usd = need_usd


@dataclass(frozen=True)
class Reservation:
    row_id: int
    usd: float


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
        self.reclaim()

    @classmethod
    def for_cache(cls, cache_dir: str | os.PathLike[str], cap_usd: float, lease_s: float) -> SpendLedger:
        return cls(Path(cache_dir) / LEDGER_NAME, cap_usd, lease_s)

    def _connect(self) -> sqlite3.Connection:
        # Rollback journal (not WAL): it works on the network file systems clusters share results on.
        db = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One exclusive transaction: every process sees the ledger change all at once or not at all."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _total(db: sqlite3.Connection) -> float:
        return float(db.execute("SELECT COALESCE(SUM(usd), 0) FROM spend").fetchone()[0])

    def total(self) -> float:
        """Everything paid, used from the cache, orphaned or reserved right now, in USD."""
        with closing(self._connect()) as db:
            return self._total(db)

    def max_prompt_tokens(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COALESCE(MAX(prompt_tokens), 0) FROM spend").fetchone()[0])

    def reclaim(self) -> float:
        """Turn reservations of dead jobs into orphaned spend; return how much (USD)."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, host, pid, expires, usd FROM spend WHERE state = 'reserved'"
            ).fetchall()
            dead = [
                (rid, usd)
                for rid, host, pid, expires, usd in rows
                if (expires is not None and expires < now) or (host == self.host and not _pid_alive(int(pid)))
            ]
            for rid, _ in dead:
                db.execute("UPDATE spend SET state = 'orphaned' WHERE id = ?", (rid,))
        usd = sum(u for _, u in dead)
        if dead:
            log.warning(
                "beliefs llm: %d request(s) of a killed job were in flight; their reservations ($%.4f) stay "
                "counted against max_cost_usd since the endpoint may have billed them",
                len(dead),
                usd,
            )
        return usd

    def reserve(self, key: str, usd: float) -> Reservation:
        """Book `usd` for one request, or raise `CapReached` when total + usd would pass the cap."""
        with self._tx() as db:
            total = self._total(db)
            if total + usd > self.cap + 1e-12:
                raise CapReached(total, usd)
            cur = db.execute(
                "INSERT INTO spend (key, state, usd, host, pid, expires, created) "
                "VALUES (?, 'reserved', ?, ?, ?, ?, ?)",
                (key, usd, self.host, os.getpid(), time.time() + self.lease_s, time.time()),
            )
            return Reservation(int(cur.lastrowid), usd)

    def settle(self, res: Reservation, usd: float, prompt_tokens: int) -> None:
        """The answer came: its actual cost replaces the reservation."""
        with self._tx() as db:
            db.execute(
                "UPDATE spend SET state = 'paid', usd = ?, prompt_tokens = ?, expires = NULL WHERE id = ?",
                (usd, prompt_tokens, res.row_id),
            )
        if usd > res.usd + 1e-12:
            log.warning(
                "beliefs llm: an answer cost $%.4f, more than the $%.4f reserved for it", usd, res.usd
            )

    def release(self, res: Reservation) -> None:
        """No answer came (refused, failed, stopped): the reservation is dropped."""
        with self._tx() as db:
            db.execute("DELETE FROM spend WHERE id = ? AND state = 'reserved'", (res.row_id,))

    def use_cached(self, key: str, usd: float, prompt_tokens: int) -> None:
        """A cached answer is used: count it once (it is already counted when this ledger paid it)."""
        with self._tx() as db:
            known = db.execute(
                "SELECT 1 FROM spend WHERE key = ? AND state IN ('paid', 'used') LIMIT 1", (key,)
            ).fetchone()
            if known is None:
                db.execute(
                    "INSERT INTO spend (key, state, usd, prompt_tokens, created) VALUES (?, 'used', ?, ?, ?)",
                    (key, usd, prompt_tokens, time.time()),
                )
