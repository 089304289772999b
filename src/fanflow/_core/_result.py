"""Results: one TaskResult per task, and the FanInResult of a whole fan-out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._exceptions import StrategyFailed
from ._jsonable import error_to_dict, to_jsonable
from ._types import Status

if TYPE_CHECKING:
    from .._policies._audit import AuditReport
    from ._usage import Usage

__all__ = ["AttemptRecord", "FanInResult", "TaskResult", "confidence_level", "coverage"]


@dataclasses.dataclass(slots=True)
class AttemptRecord:
    """One attempt of a task: when it ran and how it ended.

    Attributes:
        number: 1 for the first attempt, 2 for the first retry, and so on.
        started_at: wall-clock start (seconds since the epoch).
        finished_at: wall-clock end.
        status: how this attempt ended.
        hedge: whether this attempt was a hedged duplicate.
        error: a short description of the error, if it failed.
    """

    number: int
    started_at: float
    finished_at: float
    status: Status
    hedge: bool = False
    error: str | None = None

    @property
    def duration(self) -> float:
        """Seconds this attempt ran."""
        return self.finished_at - self.started_at


_RESULT_FIELDS = (
    "name",
    "status",
    "value",
    "error",
    "attempts",
    "started_at",
    "finished_at",
    "duration",
    "reason",
    "hedged",
    "history",
    "index",
    "replayed",
)


class TaskResult:
    """How one task of a fan-out ended. Treat it as read-only.

    Attributes:
        name: the task's name.
        status: an :class:`Status` value.
        value: what the task returned (``None`` unless ``status == "ok"``).
        error: the exception for ``error`` and ``timeout`` (a
            ``TimeoutError``), else ``None``.
        attempts: how many attempts were started (retries and hedges count).
        started_at: wall-clock time the first attempt started (seconds since
            the epoch), ``None`` if the task never started.
        finished_at: wall-clock time the task's outcome was settled.
        duration: seconds from first start to settlement, ``None`` if the
            task never started.
        reason: why it was cancelled or skipped, in words.
        hedged: ``True`` when a hedged duplicate produced the outcome.
        history: one :class:`AttemptRecord` per attempt, in start order.
        index: the task's position in its input (submission order).
        replayed: ``True`` when ``fan_map`` took this result from its journal
            instead of running the task again.
    """

    # A plain class with __slots__ rather than a dataclass: the engine builds
    # one per task, and a task that ran once has its one AttemptRecord made
    # only when someone reads ``history`` (``history=None``): most results
    # are never asked, and the record and its tuple were a tenth of the
    # per-task memory of a large fan-out.
    __slots__ = (
        "_history",
        "attempts",
        "duration",
        "error",
        "finished_at",
        "hedged",
        "index",
        "name",
        "reason",
        "replayed",
        "started_at",
        "status",
        "value",
    )

    def __init__(
        self,
        name: str,
        status: Status,
        value: Any = None,
        error: BaseException | None = None,
        attempts: int = 0,
        started_at: float | None = None,
        finished_at: float | None = None,
        duration: float | None = None,
        reason: str | None = None,
        hedged: bool = False,
        history: tuple[AttemptRecord, ...] | None = (),
        index: int | None = None,
        replayed: bool = False,
    ) -> None:
        self.name = name
        self.status = status
        self.value = value
        self.error = error
        self.attempts = attempts
        self.started_at = started_at
        self.finished_at = finished_at
        self.duration = duration
        self.reason = reason
        self.hedged = hedged
        self._history = history
        self.index = index
        self.replayed = replayed

    @property
    def history(self) -> tuple[AttemptRecord, ...]:
        """One :class:`AttemptRecord` per attempt, in start order."""
        history = self._history
        if history is None:
            # One attempt: its record is this result's own times and outcome.
            error = self.error
            history = self._history = (
                AttemptRecord(
                    self.attempts,
                    self.started_at if self.started_at is not None else 0.0,
                    self.finished_at if self.finished_at is not None else 0.0,
                    self.status,
                    False,
                    None if error is None else f"{type(error).__name__}: {error}",
                ),
            )
        return history

    @history.setter
    def history(self, value: tuple[AttemptRecord, ...]) -> None:
        self._history = tuple(value)

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.status,
            self.value,
            self.error,
            self.attempts,
            self.started_at,
            self.finished_at,
            self.duration,
            self.reason,
            self.hedged,
            self.history,
            self.index,
            self.replayed,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not TaskResult:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        pairs = zip(_RESULT_FIELDS, self._fields(), strict=True)
        return f"TaskResult({', '.join(f'{n}={v!r}' for n, v in pairs)})"

    @property
    def ok(self) -> bool:
        """``True`` when the task returned a value."""
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (errors as type name + message)."""
        return {
            "name": self.name,
            "status": self.status.value,
            "ok": self.ok,
            "value": to_jsonable(self.value),
            "error": error_to_dict(self.error),
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "reason": self.reason,
            "hedged": self.hedged,
            "index": self.index,
            "replayed": self.replayed,
            "history": [
                {
                    "number": a.number,
                    "started_at": a.started_at,
                    "finished_at": a.finished_at,
                    "status": a.status.value,
                    "hedge": a.hedge,
                    "error": a.error,
                }
                for a in self.history
            ],
        }


def confidence_level(confidence: float) -> str:
    """Name a confidence: ``"high"`` (>= 0.8), ``"medium"`` (>= 0.5) or ``"low"``."""
    if confidence >= 0.8:
        return "high"
    if confidence >= 0.5:
        return "medium"
    return "low"


def coverage(results: Sequence[TaskResult], weights: Mapping[str, float]) -> float:
    """The share of the work that succeeded: succeeded weight / total weight, 0..1.

    The one coverage rule, used by :attr:`FanInResult.coverage` and by the
    strategies whose confidence is coverage.

    Args:
        results: one :class:`TaskResult` per task (each counted once, even
            if two share a name).
        weights: task name to weight (``Task.weight``). A task missing from
            it weighs 1.0, the default weight of a task.

    Returns:
        ``sum(weight of ok tasks) / sum(weight of all tasks)``. When the
        total weight is 0 (every task weighs 0), every task counts as 1:
        the share of tasks that succeeded, so a fan-out of weightless tasks
        is 0.0 only if nothing succeeded. No results at all is 0.0.
    """
    if not results:
        return 0.0
    each = [float(weights.get(r.name, 1.0)) for r in results]
    total = sum(each)
    if total <= 0:
        return sum(r.ok for r in results) / len(results)
    return sum(w for w, r in zip(each, results, strict=True) if r.ok) / total


@dataclasses.dataclass(frozen=True)
class FanInResult:
    """The outcome of a whole fan-out, as judged by its strategy.

    Attributes:
        value: the strategy's aggregate (see each strategy).
        results: one :class:`TaskResult` per task, in submission order.
        ok: whether the strategy's success condition was met.
        strategy: the strategy's name, e.g. ``"BestEffort(min_success=2)"``.
        confidence: 0..1, defined by the strategy.
        elapsed: seconds from the start of the fan-out to its end.
        reason: the strategy's explanation of the outcome, in words.
        stopped_early: whether the strategy ended the fan-out before every
            task finished (the rest were cancelled or skipped).
        votes: for :class:`Vote`, each normalised answer's weight; else ``None``.
        audit: the independence audit's :class:`AuditReport` (``None`` with
            ``audit="off"``).
        usage: tokens the tasks' model calls spent, and what cancelled
            attempts and losing hedges wasted (:class:`Usage`); ``None`` when
            no task called a model.
    """

    value: Any
    results: list[TaskResult]
    ok: bool
    strategy: str
    confidence: float
    elapsed: float
    reason: str = ""
    stopped_early: bool = False
    votes: dict[Any, float] | None = None
    audit: AuditReport | None = None
    usage: Usage | None = None
    _weights: Mapping[str, float] = dataclasses.field(default_factory=dict, repr=False)
    _first_error: BaseException | None = dataclasses.field(default=None, repr=False)

    def _with(self, status: Status) -> list[TaskResult]:
        return [r for r in self.results if r.status is status]

    @property
    def succeeded(self) -> list[TaskResult]:
        """Results of the tasks that returned a value."""
        return self._with(Status.OK)

    @property
    def failed(self) -> list[TaskResult]:
        """Results of the tasks that raised or timed out."""
        return [r for r in self.results if r.status in (Status.ERROR, Status.TIMEOUT)]

    @property
    def timed_out(self) -> list[TaskResult]:
        """Results of the tasks that timed out (a subset of :attr:`failed`)."""
        return self._with(Status.TIMEOUT)

    @property
    def cancelled(self) -> list[TaskResult]:
        """Results of the tasks stopped because the strategy finished early."""
        return self._with(Status.CANCELLED)

    @property
    def skipped(self) -> list[TaskResult]:
        """Results of the tasks that never started."""
        return self._with(Status.SKIPPED)

    @property
    def coverage(self) -> float:
        """Succeeded weight / total weight, 0..1: see :func:`coverage`."""
        return coverage(self.results, self._weights)

    @property
    def confidence_level(self) -> str:
        """``"high"`` (confidence >= 0.8), ``"medium"`` (>= 0.5) or ``"low"``."""
        return confidence_level(self.confidence)

    def __getitem__(self, name: str) -> TaskResult:
        """The result of the task called ``name``.

        Raises:
            KeyError: no task has that name.
        """
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def raise_for_status(self) -> FanInResult:
        """Return ``self`` when ok, else raise :class:`StrategyFailed`.

        Raises:
            StrategyFailed: the strategy was not satisfied; ``.result`` is
                this result and ``__cause__`` the first task error.
        """
        if self.ok:
            return self
        raise _strategy_failed(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data for reports.

        Task errors appear as ``{"type", "message"}``; values JSON cannot
        encode are converted to the nearest JSON form or their ``repr``
        (see :func:`fanflow._core._jsonable.to_jsonable`).
        """
        return {
            "ok": self.ok,
            "strategy": self.strategy,
            "value": to_jsonable(self.value),
            "reason": self.reason,
            "coverage": self.coverage,
            "confidence": self.confidence,
            "confidence_level": self.confidence_level,
            "elapsed": self.elapsed,
            "stopped_early": self.stopped_early,
            "votes": to_jsonable(self.votes) if self.votes is not None else None,
            "counts": {s.value: len(self._with(s)) for s in Status},
            "audit": self.audit.to_dict() if self.audit is not None else None,
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "results": [r.to_dict() for r in self.results],
        }

    def first_error(self) -> BaseException | None:
        """The error of the task failure that was settled first, if any."""
        if self._first_error is not None:
            return self._first_error
        return next((r.error for r in self.failed if r.error is not None), None)


def _strategy_failed(result: FanInResult) -> StrategyFailed:
    ok = len(result.succeeded)
    failed = result.failed
    detail = ", ".join(f"{r.name} ({r.status.value}: {_describe(r.error)})" for r in failed[:5]) + (
        f", and {len(failed) - 5} more" if len(failed) > 5 else ""
    )
    message = f"{result.strategy} failed: {result.reason or 'not satisfied'}"
    message += f" [{ok} of {len(result.results)} tasks ok"
    message += f"; failed: {detail}]" if failed else "]"
    exc = StrategyFailed(message, result)
    exc.__cause__ = result.first_error()
    return exc


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no error"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
