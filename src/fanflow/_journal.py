"""A crash-safe record of finished items, in SQLite, for resumable bulk runs.

Each finished item is written (key, status, value as JSON, error, attempts,
timings) in a transaction per event-loop turn, in WAL mode, *before*
``fan_map`` yields it: whatever the consumer has seen survives a
``kill -9``. A rerun skips keys recorded ``ok`` and yields their stored
results, marked ``replayed``. A journal remembers which function or command
wrote it and refuses to be mixed with another.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._exceptions import FanOutError
from ._result import TaskResult
from ._types import Status

__all__ = ["Journal", "JournalError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    value TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL,
    finished_at REAL,
    duration REAL,
    position INTEGER
);
"""


class JournalError(FanOutError):
    """A journal that cannot be used: another job's, unreadable, or a value it cannot store."""


class Journal:
    """The SQLite journal of one bulk job.

    Args:
        path: the database file (created if missing).
        identity: what the job runs (a function's qualified name, a command
            template): a journal written by another job is refused.
        serialize: turns a value into JSON-serialisable data before it is
            stored; by default values must already be JSON data.

    Raises:
        JournalError: the file belongs to another job or is not a journal.
    """

    def __init__(
        self, path: str | Path, identity: str, serialize: Callable[[Any], Any] | None = None
    ) -> None:
        self.path = Path(path)
        self.identity = identity
        self.serialize = serialize
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a crash of this process (kill -9);
            # FULL would add an fsync per transaction for power loss too.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE name = 'identity'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: not a fanflow journal ({exc})") from None
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('identity', ?)", (identity,))
        elif row[0] != identity:
            self._db.close()
            raise JournalError(
                f"{self.path} is the journal of another job ({row[0]!r}), not of {identity!r}; "
                "use another file, or delete it to start over"
            )
        self._has_rows = self._db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is not None
        self.replayed = 0

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, identity={self.identity!r})"

    def lookup(self, key: str, index: int) -> TaskResult | None:
        """The stored result of ``key`` if it is recorded ok, marked replayed."""
        if not self._has_rows:
            return None
        row = self._db.execute(
            "SELECT value, attempts, started_at, finished_at, duration FROM items "
            "WHERE key = ? AND status = 'ok'",
            (key,),
        ).fetchone()
        if row is None:
            return None
        self.replayed += 1
        value = json.loads(row[0]) if row[0] is not None else None
        return TaskResult(
            key,
            Status.OK,
            value,
            None,
            row[1],
            row[2],
            row[3],
            row[4],
            "replayed from the journal",
            index=index,
            replayed=True,
        )

    def _encode(self, result: TaskResult) -> str | None:
        if result.status is not Status.OK:
            return None
        value = result.value if self.serialize is None else self.serialize(result.value)
        try:
            return json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise JournalError(
                f"the value of item {result.name!r} cannot be stored in the journal: {exc}. "
                "HINT: return JSON data, or pass serialize= to convert values"
            ) from None

    def write(self, results: Sequence[TaskResult]) -> None:
        """Record ``results`` in one transaction.

        Raises:
            JournalError: a value is not JSON-serialisable (nothing of this
                batch is written; the key is named).
        """
        rows = []
        for r in results:
            if r.replayed:
                continue
            error = None if r.error is None else f"{type(r.error).__name__}: {r.error}"
            rows.append(
                (
                    r.name,
                    r.status.value,
                    self._encode(r),
                    error,
                    r.attempts,
                    r.started_at,
                    r.finished_at,
                    r.duration,
                    r.index,
                )
            )
        if not rows:
            return
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
        self._has_rows = True

    def counts(self) -> dict[str, int]:
        """Recorded items per status."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM items GROUP BY status"))

    def close(self) -> None:
        """Close the database."""
        self._db.close()
