"""What may start next: the urgent queue, capacity, rate-limit reservations, feedback.

New tasks come from the fan-out's source; retries whose backoff is over and
hedges wait in the urgent queue and go first. Capacity is the fan-out's
``max_concurrency`` (or its adaptive limit), capped by the executor's
workers. A rate limit reserves each attempt's start: an attempt whose slot
is later waits on a timer, counted as running (it holds its place).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from ._exceptions import RateLimited
from ._records import Attempt, TaskState
from ._types import Status

__all__ = ["Admission", "server_wait"]


def server_wait(error: BaseException | None) -> float | None:
    """The wait a server asked for on ``error`` (its ``retry_after``), or ``None``.

    A value that is not a finite number >= 0 (``inf``, ``nan``, negative, a
    string) is no usable hint: a broken or hostile header must not park a
    task, or every fan-out sharing a rate limit, forever.
    """
    value = getattr(error, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


class Admission:
    """Queues and capacity of one fan-out; told how each attempt went."""

    __slots__ = (
        "adaptive",
        "feedback_needed",
        "limit",
        "rate_limit",
        "running",
        "urgent",
        "workers",
    )

    def __init__(self, limit: float, adaptive: Any, workers: int | None, rate_limit: Any) -> None:
        self.limit = limit if workers is None else min(limit, workers)
        self.adaptive = adaptive
        self.workers = workers
        self.rate_limit = rate_limit
        #: attempts started or reserved, not yet settled
        self.running: set[Attempt] = set()
        #: (task, is_hedge): retries whose backoff is over, and hedges
        self.urgent: deque[tuple[TaskState, bool]] = deque()
        self.feedback_needed = adaptive is not None or rate_limit is not None

    def cap(self) -> float:
        adaptive = self.adaptive
        if adaptive is None:
            return self.limit
        limit: float = adaptive.limit
        if self.workers is not None:
            return min(limit, self.workers)
        return limit

    def reserve(self, now: float, tokens: float) -> float:
        """When an attempt asked for ``now`` may start (``now`` without a rate limit)."""
        limiter = self.rate_limit
        if limiter is None:
            return now
        start: float = limiter.reserve(now, tokens)
        return start

    def feedback(
        self, attempt: Attempt, status: Status, error: BaseException | None, end: float
    ) -> None:
        """Tell the adaptive limit and the rate limit how an attempt ended."""
        adaptive = self.adaptive
        if status is Status.OK:
            if adaptive is not None:
                adaptive.on_success()
        elif isinstance(error, RateLimited) or status is Status.TIMEOUT:
            if adaptive is not None:
                adaptive.on_overload(attempt.started, end)
            retry_after = server_wait(error)
            if self.rate_limit is not None and retry_after:
                # The pause is no longer than the task itself would wait.
                policy = attempt.state.retry
                if policy is not None:
                    retry_after = min(retry_after, policy.max_backoff)
                self.rate_limit.pause(end, retry_after)
