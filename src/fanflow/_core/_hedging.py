"""When to race a duplicate attempt against a slow one, at O(log n) per decision.

An attempt's rank needs "how many running attempts started no later than
it": the start times of running attempts are kept in a sorted list (bisect,
O(log n) to count; the insert/delete memmove is C-speed over at most
``max_concurrency`` floats, cheaper in practice than a Fenwick tree over
bucketed times, and exact). Only the oldest hedgeable attempt can cross the
percentile first (a younger one has run less and has more older attempts
ahead of it), so one timer for that head replaces a timer per attempt and a
scan of the running ones per check.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._records import Attempt

if TYPE_CHECKING:
    from .._policies._hedge import Hedge

__all__ = ["HedgeController"]


class _LatencyWindow:
    """The most recent ``size`` latencies, kept sorted for percentile queries."""

    __slots__ = ("_order", "_size", "_sorted")

    def __init__(self, size: int = 1000) -> None:
        self._size = size
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, value: float) -> None:
        if len(self._order) == self._size:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._order.append(value)
        bisect.insort(self._sorted, value)

    def count_at_least(self, value: float) -> int:
        """How many kept latencies are >= ``value``."""
        return len(self._sorted) - bisect.bisect_left(self._sorted, value)

    def value_at(self, index: int) -> float:
        """The ``index``-th smallest kept latency (0-based)."""
        return self._sorted[index]

    def percentile(self, p: float) -> float:
        """The nearest-rank ``p``-th percentile (0 < p < 100)."""
        data = self._sorted
        rank = max(1, math.ceil(p / 100.0 * len(data)))
        return data[rank - 1]


class HedgeController:
    """Decides which running attempts get a hedge; calls ``launch(attempt)`` for each."""

    __slots__ = (
        "_candidates",
        "_head_timer",
        "_in_starts",
        "_latencies",
        "_loop",
        "_schedule",
        "_starts",
        "_tasks",
        "budget",
        "launch",
        "left",
        "policy",
    )

    def __init__(
        self,
        policy: Hedge,
        tasks: int,
        loop: asyncio.AbstractEventLoop,
        schedule: Callable[..., asyncio.TimerHandle],
        launch: Callable[[Attempt], None],
    ) -> None:
        self.policy = policy
        self._tasks = tasks
        self.left = self.budget = policy.budget(tasks)
        self._loop = loop
        # schedule(when, fn, *args): loop.call_at with the driver's error guard.
        self._schedule = schedule
        self.launch = launch
        self._latencies = _LatencyWindow()
        self._starts: list[float] = []
        self._in_starts: set[Attempt] = set()
        self._candidates: deque[Attempt] = deque()  # hedgeable originals, oldest first
        self._head_timer: asyncio.TimerHandle | None = None

    def hedgeable(self, attempt: Attempt) -> bool:
        state = attempt.state
        return (
            not attempt.hedge
            and not state.hedge_used
            and state.task.idempotent
            and self.left > 0
            and attempt.hedge_timer is None
        )

    def add_tasks(self, count: int) -> None:
        """A streaming source gave ``count`` more tasks: the budget grows with them."""
        self._tasks += count
        budget = self.policy.budget(self._tasks)
        self.left += budget - self.budget
        self.budget = budget

    def give_back(self) -> None:
        """A hedge that was to start did not (its original finished first)."""
        self.left += 1

    def started(self, attempt: Attempt) -> None:
        """An attempt started: arm its fixed-delay hedge, or rank it for the percentile."""
        policy = self.policy
        if policy.percentile is None:
            after = policy.after
            # Armed even with no budget left: a streaming source's budget
            # grows as it gives tasks, and the timer looks again when it fires.
            state = attempt.state
            if (
                after is not None
                and not attempt.hedge
                and not state.hedge_used
                and state.task.idempotent
                and attempt.hedge_timer is None
            ):
                attempt.hedge_timer = self._schedule(
                    attempt.started + after, self._fixed_due, attempt
                )
            return
        bisect.insort(self._starts, attempt.started)
        self._in_starts.add(attempt)
        if self.hedgeable(attempt):
            # Starts come from the loop's monotonic clock: appending keeps age order.
            self._candidates.append(attempt)
        self._schedule_head()

    def ended(self, attempt: Attempt, task_settled: bool) -> None:
        """A started attempt ended: it no longer ranks among the running ones."""
        if attempt not in self._in_starts:
            return
        self._in_starts.discard(attempt)
        starts = self._starts
        del starts[bisect.bisect_left(starts, attempt.started)]
        if not attempt.hedge and task_settled:
            # An original that lost to its hedge ran at least this long: keep
            # that lower bound, as for running attempts. Dropping it would
            # leave only the fast attempts in the window, pull the percentile
            # down and hedge ordinary tasks (measured: 6.6 % extra attempts
            # instead of 5 % on the bench's 2 %-straggler mix). A lost hedge
            # says nothing about the tail: it was cut short by the original.
            self._latencies.add(self._loop.time() - attempt.started)
        self._schedule_head()

    def succeeded(self, seconds: float) -> None:
        """An attempt succeeded after ``seconds``: a sample for the percentile."""
        if self.policy.percentile is None:
            return
        self._latencies.add(seconds)
        self._schedule_head()

    def _fixed_due(self, attempt: Attempt) -> None:
        attempt.hedge_timer = None
        if attempt.fut is None or attempt.state.result is not None:
            return
        if self.hedgeable(attempt):
            self._take(attempt)

    def _take(self, attempt: Attempt) -> None:
        attempt.state.hedge_used = True
        self.left -= 1
        self.launch(attempt)

    def _head(self) -> Attempt | None:
        """The oldest running attempt that may still be hedged (drops stale ones)."""
        candidates = self._candidates
        while candidates:
            attempt = candidates[0]
            state = attempt.state
            # Not hedgeable(): the budget can come back (a hedge that never
            # started), and the candidates must still be here then.
            if (
                attempt in self._in_starts
                and not state.hedge_used
                and state.result is None
                and attempt.stop_status is None
            ):
                return attempt
            candidates.popleft()
        return None

    def _due_at(self, attempt: Attempt) -> float | None:
        """When ``attempt`` will have run longer than the percentile of all attempts.

        Finished attempts count by their duration, running ones by their time
        so far: every running attempt started no later than ``attempt`` has
        run at least as long. None: more of those than the percentile allows,
        so only a finishing attempt can change the answer. Never before the
        percentile of the finished attempts alone, so that a head far older
        than the rest is not hedged the moment it starts. O(log n).
        """
        percentile = self.policy.percentile
        assert percentile is not None
        window = self._latencies
        finished = len(window)
        total = finished + len(self._starts)
        allowed = max(1, math.floor((100.0 - percentile) / 100.0 * total + 1e-9))
        room = allowed - bisect.bisect_right(self._starts, attempt.started)
        if room < 0:
            return None
        due = attempt.started + window.percentile(percentile)
        if room < finished:
            # At most `room` finished durations may be >= its time so far: it
            # must outlast the (room + 1)-th longest one (1 µs: strictly).
            due = max(due, attempt.started + window.value_at(finished - room - 1) + 1e-6)
        return due

    def _schedule_head(self) -> None:
        """(Re)arm the one percentile timer, only if the head's time moved earlier."""
        due: float | None = None
        if self.left > 0 and len(self._latencies) >= self.policy.min_samples:
            head = self._head()
            if head is not None:
                due = self._due_at(head)
        timer = self._head_timer
        if due is None:
            if timer is not None:
                timer.cancel()
                self._head_timer = None
            return
        if timer is not None:
            if timer.when() <= due:
                return  # it fires first and looks again: no re-arming storm
            timer.cancel()
        self._head_timer = self._schedule(due, self._head_fire)

    def _head_fire(self) -> None:
        self._head_timer = None
        now = self._loop.time()
        while self.left > 0:
            head = self._head()
            if head is None:
                break
            due = self._due_at(head)
            if due is None or due > now:
                break
            self._take(head)
        self._schedule_head()

    def close(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def warn_if_never_armed(self, stacklevel: int) -> None:
        """Say so once when a percentile hedge had too few samples to ever fire.

        Without this, a fan-out with a hedge budget but fewer successes than
        ``min_samples`` silently never hedges, and its stragglers look as if
        hedging did not help.
        """
        policy = self.policy
        if policy.percentile is None or self.budget == 0:
            return
        if len(self._latencies) < policy.min_samples:
            warnings.warn(
                f"{policy!r} never hedged: only {len(self._latencies)} attempts succeeded, "
                f"fewer than min_samples={policy.min_samples}; lower min_samples or use "
                "seconds for after",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )
