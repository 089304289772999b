"""The engine's records: one task's state, one attempt (both with ``__slots__``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..executors._base import Call
from ._result import AttemptRecord, TaskResult
from ._task import Task
from ._types import Status

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["Attempt", "TaskState"]


class TaskState:
    """A task from its first launch to its result (created only when it launches)."""

    __slots__ = (
        "attempts",
        "failure",
        "hedge_used",
        "history",
        "index",
        "is_async",
        "live",
        "result",
        "retry",
        "retry_handle",
        "started",
        "task",
        "timeout",
    )

    def __init__(
        self, task: Task, index: int, timeout: float | None, is_async: bool, retry: Any
    ) -> None:
        self.task = task
        self.index = index
        self.timeout = timeout
        self.is_async = is_async
        self.retry = retry
        self.attempts = 0
        self.started: float | None = None
        self.result: TaskResult | None = None
        # Records of attempts that ended, kept only once there is a second
        # attempt: a task that ran once is described by its result alone.
        self.history: list[AttemptRecord] | None = None
        self.live: list[Attempt] = []
        self.retry_handle: asyncio.TimerHandle | None = None
        self.hedge_used = False
        # Under a budget: the last attempt's status and error, for a retry
        # the budget refuses (the task ends as its last attempt did).
        self.failure: tuple[Status, BaseException | None] | None = None


class Attempt(Call):
    """One attempt of a task: reserved (waiting on the rate limit) or running.

    It is the :class:`~fanflow.executors.Call` its executor gets, and its
    future's done-callback (no bound method or closure per attempt).
    """

    __slots__ = (
        "driver",
        "fut",
        "hedge",
        "hedge_timer",
        "hold",
        "number",
        "reserve_handle",
        "started",
        "state",
        "stop_error",
        "stop_reason",
        "stop_status",
        "timed_out",
        "timer",
    )

    def __init__(self, driver: Driver, state: TaskState, hedge: bool) -> None:
        self.driver = driver
        self.state = state
        self.hedge = hedge
        self.number = 0
        self.started = 0.0
        self.fut: asyncio.Future[Any] | None = None
        self.context = None
        self.timer: asyncio.TimerHandle | None = None
        self.hedge_timer: asyncio.TimerHandle | None = None
        self.reserve_handle: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.stop_status: Status | None = None
        self.stop_reason: str | None = None
        self.stop_error: BaseException | None = None
        # Under a budget: the attempt's reservation (an ``ff.Spend``) until a
        # model request of it takes it over or the attempt is settled.
        self.hold: Any = None

    def __call__(self, fut: asyncio.Future[Any]) -> None:
        if fut is self.fut:  # else: a future this attempt has moved on from
            driver = self.driver
            if driver.closed:
                return
            try:
                driver.settle(self)
            except BaseException as exc:  # re-raised by the driver, after cleanup
                driver.fail(exc)
            driver.poke()

    def on_timeout(self) -> None:
        self.timer = None
        self.timed_out = True
        if self.fut is not None:
            self.fut.cancel(msg="fanflow: attempt timed out")

    def cancel_timers(self) -> None:
        reserve = self.reserve_handle
        if reserve is not None:
            reserve.cancel()
            if self.hold is not None:  # stopped before it started: its budget goes back
                self.driver.release_hold(self)
        for handle in (self.timer, self.hedge_timer):
            if handle is not None:
                handle.cancel()
        self.timer = self.hedge_timer = self.reserve_handle = None
