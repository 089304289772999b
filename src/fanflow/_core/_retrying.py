"""Retry timers: a failed attempt's task waits out its backoff, then goes first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ._records import TaskState
from ._types import Status

__all__ = ["RetryTimers"]


class RetryTimers:
    """The tasks waiting between attempts, each with its timer."""

    __slots__ = ("_schedule", "due", "waiting")

    def __init__(
        self,
        schedule: Callable[..., asyncio.TimerHandle],
        due: Callable[[TaskState], None],
    ) -> None:
        # schedule(when, fn, *args): loop.call_at with the driver's error guard.
        self._schedule = schedule
        self.due = due
        self.waiting: set[TaskState] = set()

    def schedule(
        self,
        state: TaskState,
        status: Status,
        error: BaseException | None,
        end: float,
        deadline_at: float,
    ) -> float | None:
        """Arm a retry of ``state`` if its policy allows one; the delay, or ``None``."""
        policy = state.retry
        if policy is None or not state.task.idempotent:
            return None
        if not policy.should_retry(error, status is Status.TIMEOUT, state.attempts):
            return None
        delay: float = policy.delay(state.attempts, error)
        if end + delay >= deadline_at:
            return None  # the retry could not start before the deadline
        state.retry_handle = self._schedule(end + delay, self._fire, state)
        self.waiting.add(state)
        return delay

    def _fire(self, state: TaskState) -> None:
        state.retry_handle = None
        self.waiting.discard(state)
        self.due(state)

    def cancel_all(self) -> list[TaskState]:
        """Cancel every pending retry; the tasks that were waiting."""
        waiting = list(self.waiting)
        for state in waiting:
            if state.retry_handle is not None:
                state.retry_handle.cancel()
                state.retry_handle = None
        self.waiting.clear()
        return waiting
