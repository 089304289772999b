"""Events a fan-out reports to its ``on_event`` callback, in the order they happen."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._result import FanInResult, TaskResult

__all__ = [
    "Event",
    "FanOutFinished",
    "TaskFinished",
    "TaskHedged",
    "TaskRetrying",
    "TaskStarted",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """Base class of fan-out events. ``at`` is the wall-clock time it happened."""

    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class TaskStarted(Event):
    """An attempt of task ``name`` started (``attempt`` counts from 1)."""

    name: str
    attempt: int
    hedge: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRetrying(Event):
    """Attempt ``attempt`` of ``name`` failed with ``error``; the next starts in ``delay`` s."""

    name: str
    attempt: int
    delay: float
    error: BaseException


@dataclasses.dataclass(frozen=True, slots=True)
class TaskHedged(Event):
    """A duplicate (hedge) attempt of a slow task ``name`` was launched."""

    name: str
    attempt: int
    after: float


@dataclasses.dataclass(frozen=True, slots=True)
class TaskFinished(Event):
    """Task ``result.name`` has its final :class:`TaskResult`."""

    result: TaskResult


@dataclasses.dataclass(frozen=True, slots=True)
class FanOutFinished(Event):
    """The fan-out is over; ``result`` is its :class:`FanInResult`."""

    result: FanInResult
