"""A crash-safe record of finished items, in SQLite, for resumable bulk runs.

Each finished item is written (key, status, value as JSON, error, attempts,
timings) in a transaction per event-loop turn, in WAL mode, *before*
``fan_map`` yields it: whatever the consumer has seen survives a
``kill -9``. (With ``confirm=True`` a record is written only once the
consumer confirms it has delivered the result: ``fanflow map`` confirms a
job after its output was written and flushed.) A rerun skips items recorded
``ok`` and yields their stored results, marked ``replayed``. A journal
remembers which function or command wrote it and refuses to be mixed with
another.

An item is identified by its position and a fingerprint of the item (two
equal items are two items), or by a caller's ``key``. A rerun whose item at
a recorded position differs from the recorded one is an error naming the
position and both items, never a skip: the input changed, and skipping by
position would silently drop work.

The same table serves ``fan_out``, ``run``, ``as_completed``, ``Plan.run``
and ``ask`` (``journal=``): there a task is identified by its fingerprint
(``fanflow._core._fingerprint``: what it computes), only tasks that ended
``ok`` are recorded, and a rerun replays every task whose fingerprint is
recorded. One journal may hold the tasks of many fan-outs.

A journal is held by one connection at a time (SQLite's exclusive locking
mode): a second process — or a second ``Journal`` on the same file — is
refused with :class:`JournalError` rather than interleaving its records.
The lock goes with the process, ``kill -9`` included.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._core._exceptions import JournalError, JournalMismatchError
from .._core._result import TaskResult
from .._core._types import Status

__all__ = ["TASKS", "Journal", "JournalError", "JournalMismatchError", "fingerprint"]

_OK = Status.OK.value

# One strict encoder: json.dumps(..., allow_nan=False) builds a new
# JSONEncoder on every call, a sixth of a journaled no-op task's cost.
_ENCODE = json.JSONEncoder(allow_nan=False).encode

#: The identity of a journal of tasks (``journal=`` on ``fan_out`` and the verbs).
TASKS = "fanflow tasks"

# The format this fanflow writes and reads. 1 keyed rows by the item's text
# alone (refused); 2 (first written by fan_map alone) keys rows by identity
# (position, the caller's key) and remembers each position's item, but did
# not write its format (read as 2, then marked); a format above this one is
# a newer fanflow's, refused.
_FORMAT = 2
_SCHEMA = """

CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    ident BLOB PRIMARY KEY,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL,
    finished_at REAL,
    duration REAL,
    position INTEGER,
    input BLOB
);
CREATE TABLE IF NOT EXISTS started (ident BLOB PRIMARY KEY, model TEXT, input_tokens INTEGER);
"""

# Items longer than this are fingerprinted by a digest (and a prefix, to name
# them in errors) rather than stored whole.
_INPUT_MAX = 1024


def fingerprint(item: Any) -> bytes:
    """A lossless, type-tagged encoding of ``item`` that tells different items apart.

    Strings keep lone surrogates (``surrogateescape`` arguments such as a
    non-UTF-8 file name) and bytes are kept as they are; other items must be
    JSON data. Long items are reduced to a SHA-256 digest plus a prefix.

    Raises:
        TypeError: the item is neither text, bytes nor JSON data.
    """
    if isinstance(item, str):
        data = b"s" + item.encode("utf-8", "surrogatepass")
    elif type(item) is int and item.bit_length() < 64:  # common: skip the JSON encoder
        data = b"j%d" % item
    elif isinstance(item, bytes | bytearray):
        data = b"b" + bytes(item)
    else:
        try:
            # ensure_ascii (the default) escapes lone surrogates: the text is ASCII.
            text = json.dumps(item, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            raise TypeError(
                f"a fan_map item must be text, bytes or JSON data to be journaled; got {item!r}. "
                "HINT: pass key=lambda item: ... returning a string that identifies it"
            ) from None
        data = b"j" + text.encode("ascii")
    if len(data) <= _INPUT_MAX:
        return data
    return b"h" + hashlib.sha256(data).digest() + data[:100]


def describe(fp: bytes) -> Any:
    """The item a :func:`fingerprint` was made of (a long one: its start and ``...``)."""
    tag, data = fp[:1], fp[1:]
    if tag == b"h":
        return f"{describe(data[32:])!r}... (longer; compared by SHA-256)"
    if tag == b"s":
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # a prefix cut inside a character
            return data.decode("utf-8", "replace")
    if tag == b"b":
        return data
    try:
        return json.loads(data)
    except ValueError:  # a prefix of a long item: not JSON on its own
        return data.decode("ascii", "replace")


def _text(value: str) -> str:
    # SQLite text must be UTF-8: lone surrogates (an argument that was not
    # UTF-8) are written as backslash escapes in names and messages.
    if value.isascii():
        return value  # the common case, without a round trip
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


class Journal:
    """A SQLite journal: what finished, so that a rerun does not do it again.

    Pass it (or just a file name) as ``journal=`` to ``fan_out``, ``run``,
    ``as_completed``, ``Plan.run``, ``ask`` or ``fan_map``. A verb given a
    file name opens and closes the journal itself; a ``Journal`` object is
    left open for the caller (use it to share one journal between verbs that
    run at the same time in one process, and close it when done).

    Args:
        path: the database file (created if missing; its folder must exist).
        identity: what the job runs (a function's qualified name, a command
            template, or ``TASKS`` for a journal of tasks): a journal written
            by another job is refused. ``None`` (the default) lets the first
            verb that uses it say.
        serialize: turns a value into JSON data before it is stored; by
            default values must already be JSON data.
        deserialize: turns stored JSON data back into a value when it is
            replayed (default: the JSON data as stored, so a tuple comes
            back as a list).
        confirm: record a result only when :meth:`confirm` is called for
            it, after the consumer has delivered it (printed its output,
            saved its value), instead of before it is yielded. A crash
            between delivery and confirmation runs the item again: at least
            once, never lost.

    Raises:
        JournalError: the file belongs to another job, is in use by another
            process (or another open ``Journal``), is not a journal, was
            written by an older or newer fanflow that this one cannot read,
            or its folder does not exist.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        identity: str | None = None,
        serialize: Callable[[Any], Any] | None = None,
        deserialize: Callable[[Any], Any] | None = None,
        *,
        confirm: bool = False,
    ) -> None:
        self.path = Path(path)
        self.identity = identity
        if serialize is not None and not callable(serialize):
            raise TypeError(f"Journal(serialize=...) must be callable; got {serialize!r}")
        if deserialize is not None and not callable(deserialize):
            raise TypeError(f"Journal(deserialize=...) must be callable; got {deserialize!r}")
        self.serialize = serialize
        self.deserialize = deserialize
        self.confirming = confirm
        folder = self.path.parent
        if not folder.is_dir():
            raise JournalError(f"{self.path}: the folder {str(folder)!r} does not exist")
        if self.path.is_dir():
            raise JournalError(f"{self.path} is a folder, not a journal file")
        try:
            # timeout=0: a journal held by another connection is refused at
            # once, not waited for.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open ({exc})") from None
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        db = self._db
        try:
            # One connection holds the file for as long as it is open: the
            # first read takes a lock that the first write makes exclusive,
            # and closing (or dying) lets it go.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            # Look before writing anything: a file that is not a journal we
            # can use (a user's database, an older or newer fanflow's
            # journal) is refused untouched.
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = {c[1] for c in db.execute("PRAGMA table_info(items)")}
            fmt = None
            if "meta" in tables and "ident" in columns:
                fmt = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
            self._check_layout(tables, columns, fmt)
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if fmt is None:
                db.execute("INSERT INTO meta VALUES ('format', ?)", (str(_FORMAT),))
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a crash of this process (kill -9);
            # FULL would add an fsync per transaction for power loss too.
            db.execute("PRAGMA synchronous=NORMAL")
            row = db.execute("SELECT value FROM meta WHERE name = 'identity'").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise JournalError(
                    f"{self.path} is in use by another fanflow process (or another open "
                    "ff.Journal in this one); wait for it to finish, or use another file. "
                    "HINT: to share one journal between fan-outs of one program, pass them "
                    "the same ff.Journal object"
                ) from None
            raise JournalError(f"{self.path}: not a fanflow journal ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: not a fanflow journal ({exc})") from None
        self._recorded_identity = None if row is None else row[0]
        if self.identity is not None:
            self.claim(self.identity)
        self._has_rows = db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is not None
        # Positions at or past this one were never recorded before this run,
        # and a position is looked up once per run, before its item runs: a
        # lookup there needs no query (a first run queries nothing at all).
        (last,) = db.execute("SELECT MAX(position) FROM items").fetchone()
        self._recorded_below = -1 if last is None else int(last) + 1
        self._keyed: bool | None = None
        self._verified = 0
        # Per item between lookup and write: its identity and fingerprint.
        self._pending: dict[int, tuple[bytes, bytes | None]] = {}
        # Rows waiting for confirm(), by position.
        self._unconfirmed: dict[int, tuple[Any, ...]] = {}
        self.replayed = 0
        self.closed = False

    def _check_layout(self, tables: set[str], columns: set[str], fmt: tuple[str] | None) -> None:
        """Refuse a file that is not a journal this fanflow can use.

        Raises:
            JournalError: another database, an older or a newer journal.
        """
        if not tables:
            return  # a new (or empty) file
        if "ident" in columns and "meta" in tables:
            if fmt is not None and (not fmt[0].isdigit() or int(fmt[0]) > _FORMAT):
                raise JournalError(
                    f"{self.path} was written by a newer fanflow (journal format {fmt[0]}; "
                    f"this fanflow reads format {_FORMAT}); use that fanflow, or another file"
                )
            return
        if {"key", "status", "attempts"} <= columns and tables <= {"items", "meta"}:
            # Version 1 identified items by their text alone, so equal items
            # were one item: its records cannot be trusted to say what ran.
            raise JournalError(
                f"{self.path} was written by an older fanflow, which identified items by "
                "their text alone (equal items were skipped as done); finish that run with "
                "the older fanflow, or delete the file to start over"
            )
        raise JournalError(
            f"{self.path}: not a fanflow journal (a database with tables "
            f"{', '.join(sorted(tables))}); it was left as it is — use another file"
        )

    def claim(self, identity: str) -> None:
        """Say what job uses this journal: the first to do so owns the file.

        Raises:
            JournalError: the journal is another job's.
        """
        recorded = self._recorded_identity
        if recorded is None:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (_text(identity),)
            )
            self._recorded_identity = _text(identity)
        elif recorded != _text(identity):
            if recorded == TASKS:
                what = "a journal of tasks (fan_out, fanflow run or ask)"
            else:
                what = f"the journal of another job ({recorded!r})"
            mine = "tasks (fan_out, fanflow run or ask)" if identity == TASKS else repr(identity)
            raise JournalError(
                f"{self.path} is {what}, not of {mine}; use another file, or delete it to "
                "start over"
            )
        self.identity = identity

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, identity={self.identity!r})"

    def bind(self, keyed: bool) -> None:
        """Say how items are identified: by the caller's key, or by position and item.

        Raises:
            JournalError: the journal was written the other way.
        """
        how = "key" if keyed else "position"
        row = self._db.execute("SELECT value FROM meta WHERE name = 'identified_by'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('identified_by', ?)", (how,))
        elif row[0] != how:
            raise JournalError(
                f"{self.path} identifies items by {row[0]}, this run by {how} "
                f"({'with' if keyed else 'without'} key=); use the same, or another file"
            )
        self._keyed = keyed
        self._verified = 0  # a new run: its items are not verified yet

    def verify(self, items: Sequence[Any]) -> None:
        """Check every recorded position against ``items``, before anything runs.

        Raises:
            JournalMismatchError: the item at a recorded position differs.
            TypeError: an item cannot be fingerprinted.
        """
        if not self._has_rows:
            return
        rows = self._db.execute(
            "SELECT position, input FROM items WHERE input IS NOT NULL AND position < ? "
            "ORDER BY position",
            (len(items),),
        )
        try:
            for position, recorded in rows:
                given = fingerprint(items[position])
                if given != recorded:
                    raise JournalMismatchError(
                        self.path, position, describe(recorded), describe(given)
                    )
        finally:
            # An open statement would keep the connection (and its lock)
            # alive after close() while the traceback holds this frame.
            rows.close()
        # lookup() need not fingerprint these positions again to compare.
        self._verified = len(items)

    def lookup(self, key: str, index: int, item: Any = None) -> TaskResult | None:
        """The stored result of the item at ``index`` if it is recorded ok, marked replayed.

        Identified by ``key`` if the journal was bound to keys, else by
        ``index`` and the fingerprint of ``item``.

        Raises:
            JournalMismatchError: a different item was recorded at ``index``.
        """
        keyed = bool(self._keyed)
        ident = key.encode("utf-8", "surrogatepass") if keyed else b"#%d" % index
        row = None
        if self._has_rows if keyed else index < self._recorded_below:
            row = self._db.execute(
                "SELECT status, input, value, attempts, started_at, finished_at, duration "
                "FROM items WHERE ident = ?",
                (ident,),
            ).fetchone()
        # The fingerprint is needed to record the item, or to compare it
        # with a record verify() has not checked yet; not to replay it.
        fp = None
        if not keyed and (row is None or row[0] != Status.OK.value or index >= self._verified):
            fp = fingerprint(item)
        if row is not None and fp is not None and row[1] != fp:
            raise JournalMismatchError(self.path, index, describe(row[1]), describe(fp))
        if row is None or row[0] != Status.OK.value:
            self._pending[index] = (ident, fp)
            return None
        self.replayed += 1
        value = self.replay_value(key, row[2])
        return TaskResult(
            key,
            Status.OK,
            value,
            None,
            row[3],
            row[4],
            row[5],
            row[6],
            "replayed from the journal",
            index=index,
            replayed=True,
        )

    def _encode(self, result: TaskResult) -> str | None:
        if result.status is not Status.OK:
            return None
        value = result.value if self.serialize is None else self.serialize(result.value)
        try:
            return _ENCODE(value)
        except (TypeError, ValueError) as exc:
            raise JournalError(
                f"the value of item {result.name!r} cannot be stored in the journal: {exc}. "
                "HINT: return JSON data, or pass serialize= to convert values"
            ) from None

    def write(self, results: Sequence[TaskResult]) -> None:
        """Record ``results`` in one transaction (with ``confirm=True``: once confirmed).

        Raises:
            JournalError: a value is not JSON-serialisable (nothing of this
                batch is written; the key is named).
        """
        rows = []
        for r in results:
            if r.replayed:
                continue
            assert r.index is not None
            ident, fp = self._pending.get(r.index) or (
                r.name.encode("utf-8", "surrogatepass"),
                None,
            )
            error = None if r.error is None else _text(f"{type(r.error).__name__}: {r.error}")
            rows.append(
                (
                    ident,
                    _text(r.name),
                    r.status.value,
                    self._encode(r),
                    error,
                    r.attempts,
                    r.started_at,
                    r.finished_at,
                    r.duration,
                    r.index,
                    fp,
                )
            )
        for r in results:
            if not r.replayed and r.index is not None:
                self._pending.pop(r.index, None)
        if self.confirming:
            for row in rows:
                self._unconfirmed[row[9]] = row
            return
        self._insert(rows)

    def confirm(self, results: Sequence[TaskResult]) -> None:
        """Record ``results``, delivered by the consumer, in one transaction.

        Only for a journal made with ``confirm=True``; replayed results and
        results that were never written are ignored.
        """
        rows = [
            row
            for r in results
            if r.index is not None and (row := self._unconfirmed.pop(r.index, None)) is not None
        ]
        self._insert(rows)

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
        self._has_rows = True

    def counts(self) -> dict[str, int]:
        """Recorded items per status."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM items GROUP BY status"))

    # -- a journal of tasks -------------------------------------------------
    def recorded_ok(self, fingerprints: Sequence[bytes]) -> dict[bytes, tuple[Any, ...]]:
        """The rows recorded ``ok`` for these task fingerprints (one query per 500)."""
        found: dict[bytes, tuple[Any, ...]] = {}
        if not self._has_rows:
            return found
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                "SELECT ident, value, attempts, duration, finished_at FROM items "
                f"WHERE status = 'ok' AND ident IN ({marks})",
                chunk,
            ):
                found[row[0]] = row[1:]
        return found

    def replay_value(self, name: str, stored: str | None) -> Any:
        """A stored value, as the task returned it (through ``deserialize``).

        Raises:
            JournalError: ``deserialize`` raised (the task is named).
        """
        value = json.loads(stored) if stored is not None else None
        if self.deserialize is None:
            return value
        try:
            return self.deserialize(value)
        except Exception as exc:
            raise JournalError(
                f"{self.path}: deserialize failed for the stored value of task {name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def task_row(
        self, fp: bytes, result: TaskResult, encode: Callable[[Any], Any] | None = None
    ) -> tuple[Any, ...]:
        """The row recording a task's ``ok`` result under its fingerprint.

        ``encode`` (the task's own) turns the value into JSON data instead
        of the journal's ``serialize``.

        Raises:
            JournalError: the value cannot be stored (the task is named).
        """
        if encode is not None:
            value = encode(result.value)
        else:
            value = result.value if self.serialize is None else self.serialize(result.value)
        try:
            text = "null" if value is None else _ENCODE(value)
        except (TypeError, ValueError) as exc:
            raise JournalError(
                f"the value of task {result.name!r} cannot be stored in the journal "
                f"{self.path}: {exc}. HINT: return JSON data, or give "
                "ff.Journal(path, serialize=..., deserialize=...) to convert values"
            ) from None
        return (
            fp,
            _text(result.name),
            _OK,
            text,
            None,
            result.attempts,
            result.started_at,
            result.finished_at,
            result.duration,
            result.index,
            None,
        )

    def record_tasks(
        self,
        rows: list[tuple[Any, ...]],
        started: Sequence[tuple[bytes, str | None, int]] = (),
        ended: Sequence[bytes] = (),
    ) -> None:
        """Commit task rows (from :meth:`task_row`) in one transaction.

        ``started`` records model calls about to be made (fingerprint,
        model, estimated prompt tokens) and ``ended`` forgets them: what is
        still there when a run dies was paid for, or cut off, and lost.
        """
        if not (rows or started or ended):
            return
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            if rows:
                self._db.executemany(
                    "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
            # Starts first: a task that started and ended in one batch leaves no row.
            if started:
                self._db.executemany("INSERT OR REPLACE INTO started VALUES (?, ?, ?)", started)
            if ended:
                self._db.executemany("DELETE FROM started WHERE ident = ?", [(e,) for e in ended])
        if rows:
            self._has_rows = True

    def lost_calls(self, fingerprints: Sequence[bytes]) -> list[tuple[bytes, str | None, int]]:
        """Model calls a run recorded as started and never saw end (it died), for these tasks."""
        found: list[tuple[bytes, str | None, int]] = []
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.extend(
                self._db.execute(
                    f"SELECT ident, model, input_tokens FROM started WHERE ident IN ({marks})",
                    chunk,
                )
            )
        return found

    def close(self) -> None:
        """Close the database (and let another process have it)."""
        self.closed = True
        self._db.close()
