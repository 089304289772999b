"""Durable fan-outs: ``journal=`` on ``fan_out``, ``run``, ``as_completed`` and the verbs.

The driver asks a :class:`TaskJournal` two things: before a task's first
attempt, whether the journal holds its result (:meth:`TaskJournal.replay`);
after a task ended ``ok``, the row to commit (:meth:`TaskJournal.row`) —
the driver commits every row of a loop turn in one transaction before the
strategy, the dependents or the caller see any of those results.

A task is identified by its fingerprint (``_core._fingerprint``): its name,
its function, and its arguments once :class:`~fanflow.Ref` values are
filled in. Tasks without references are fingerprinted before anything
starts (an argument that cannot be fingerprinted is an error then, and
nothing runs); the others when their needs are done.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._bulk._journal import TASKS, Journal
from ._core._exceptions import JournalError
from ._core._fingerprint import Unfingerprintable, call_fingerprint
from ._core._result import TaskResult
from ._core._task import Task, fill_refs
from ._core._types import Status

__all__ = ["TaskJournal", "open_journal"]

# The fingerprint of a task that cannot be identified: it runs, unrecorded.
_UNRECORDED = b""


def open_journal(spec: str | os.PathLike[str] | Journal) -> tuple[Journal, bool]:
    """The journal for a ``journal=`` option, and whether the verb opened it (and closes it).

    Raises:
        JournalError: as :class:`Journal`; or it is another job's journal.
    """
    if isinstance(spec, Journal):
        if spec.closed:
            raise JournalError(f"{spec.path}: this ff.Journal was closed")
        if spec.identity is None:
            spec.claim(TASKS)
        elif spec.identity != TASKS:
            spec.claim(TASKS)  # raises, naming both
        return spec, False
    journal = Journal(spec)
    try:
        journal.claim(TASKS)
    except BaseException:
        journal.close()
        raise
    return journal, True


class TaskJournal:
    """One fan-out's view of its journal: fingerprints by position, replays, rows."""

    __slots__ = (
        "_cache",
        "_codecs",
        "_ended",
        "_found",
        "_fps",
        "_models",
        "_started",
        "journal",
        "lost",
        "owned",
        "replayed",
    )

    def __init__(self, journal: Journal, owned: bool, tasks: Sequence[Task]) -> None:
        self.journal = journal
        self.owned = owned
        self._cache: dict[Any, bytes] = {}
        self._fps: list[bytes | None] = [None] * len(tasks)
        self.replayed = 0
        # A task's own way to store its value: fn.__fanflow_codec__ = (dump,
        # load), e.g. a structured prompt task's pydantic model.
        self._codecs: dict[int, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {}
        # Tasks that call a model (fn.__fanflow_model__: prompt and agent
        # tasks): their start is recorded, so that a run that dies with the
        # call in flight leaves a trace the rerun books as wasted.
        self._models: dict[int, tuple[str | None, int]] = {}
        self._started: list[tuple[bytes, str | None, int]] = []
        self._ended: list[bytes] = []
        known: list[bytes] = []
        for i, task in enumerate(tasks):
            codec = getattr(task.fn, "__fanflow_codec__", None)
            if codec is not None:
                self._codecs[i] = codec
            model = getattr(task.fn, "__fanflow_model__", None)
            if model is not None:
                self._models[i] = (model[0], int(model[1]))
            if task.has_refs:
                continue  # its arguments are known once its needs are done
            fp = self._fingerprint(task, task.args, task.kwargs)
            self._fps[i] = fp
            known.append(fp)
        self._found = journal.recorded_ok(known)
        #: model calls an earlier run started and lost when it died: (model, prompt tokens)
        self.lost: list[tuple[str | None, int]] = []
        if self._models:
            calling = [fp for i, fp in enumerate(self._fps) if fp and i in self._models]
            for ident, model, tokens in journal.lost_calls(calling):
                self.lost.append((model, int(tokens or 0)))
                self._ended.append(ident)  # booked now: forgotten at the next commit

    def started(self, index: int) -> bool:
        """A task that calls a model is starting: record it (``True``: a commit is due)."""
        model = self._models.get(index)
        fp = self._fps[index]
        if model is None or not fp:
            return False
        self._started.append((fp, model[0], model[1]))
        return True

    def ended(self, index: int) -> bool:
        """A recorded start ended (any status): forget it (``True``: a commit is due)."""
        if index not in self._models:
            return False
        fp = self._fps[index]
        if not fp:
            return False
        self._ended.append(fp)
        return True

    def pending(self) -> bool:
        """Whether starts or ends wait for a commit."""
        return bool(self._started or self._ended)

    def _fingerprint(self, task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        try:
            return call_fingerprint(task.name, task.fn, args, kwargs, self._cache)
        except Unfingerprintable as exc:
            raise JournalError(
                f"cannot journal {exc}. HINT: pass such objects to the task another way "
                "(a module-level name), give the object a __fanflow_fingerprint__() method "
                "returning data that identifies it, or give the function a "
                "__fanflow_fingerprint__(*args, **kwargs) attribute"
            ) from None
        except Exception:
            # The function's own __fanflow_fingerprint__ failed (a workflow
            # template that cannot render these values): the task runs, fails
            # the same way and says why; it is not recorded.
            return _UNRECORDED

    def replay(
        self, task: Task, index: int, value_of: Callable[[str], Any], at: float
    ) -> TaskResult | None:
        """The task's recorded result (``replayed``), or ``None``: it must run.

        Raises:
            JournalError: a filled-in argument cannot be fingerprinted, or a
                stored value cannot be deserialized.
        """
        fp = self._fps[index]
        if fp is None:
            values = {name: value_of(name) for name in task.needs}
            try:
                args = fill_refs(task.args, values)
                kwargs = fill_refs(dict(task.kwargs), values)
            except LookupError:
                return None  # the attempt will fail the same way, and say so
            fp = self._fps[index] = self._fingerprint(task, args, kwargs)
            found = self.journal.recorded_ok([fp]).get(fp) if fp else None
        else:
            found = self._found.pop(fp, None) if fp else None
        if found is None:
            return None
        stored, _, duration, finished_at = found
        codec = self._codecs.get(index)
        if codec is None:
            value = self.journal.replay_value(task.name, stored)
        else:
            try:
                value = codec[1](json.loads(stored) if stored is not None else None)
            except Exception as exc:
                raise JournalError(
                    f"{self.journal.path}: the stored value of task {task.name!r} no longer "
                    f"loads ({type(exc).__name__}: {exc}); delete the journal to start over"
                ) from None
        self.replayed += 1
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished_at or 0))
        took = f", took {duration:.3g} s" if duration is not None else ""
        return TaskResult(
            task.name,
            Status.OK,
            value,
            None,
            0,
            None,
            at,
            None,
            f"replayed from the journal {self.journal.path} (ran {when}{took})",
            False,
            (),
            index,
            replayed=True,
        )

    def row(self, result: TaskResult) -> tuple[Any, ...] | None:
        """The journal row for an ``ok`` result of this fan-out (``None``: not recorded).

        Raises:
            JournalError: its value cannot be stored (the task is named).
        """
        assert result.index is not None
        fp = self._fps[result.index]
        if not fp:
            return None
        codec = self._codecs.get(result.index)
        return self.journal.task_row(fp, result, None if codec is None else codec[0])

    def commit(self, rows: list[tuple[Any, ...] | None]) -> None:
        """Commit rows, and the starts and ends waiting, in one transaction."""
        started, self._started = self._started, []
        ended, self._ended = self._ended, []
        self.journal.record_tasks([row for row in rows if row is not None], started, ended)

    def close(self) -> None:
        """Close the journal if this fan-out opened it."""
        if self.owned:
            self.journal.close()
            self.owned = False
