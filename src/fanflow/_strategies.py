"""Strategies: when a fan-out is done, whether it succeeded, and its value.

A strategy is the fan-in half of the pattern. The engine feeds it each
finished :class:`TaskResult` in completion order (``observe``), stops the
fan-out when ``observe`` returns ``True`` (cancelling what still runs), and
asks it for the :class:`Verdict` at the end (``finish``).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._result import TaskResult
from ._task import Task
from ._types import Status

__all__ = ["AllOrNothing", "BestEffort", "FirstN", "Strategy", "Verdict"]

_FAILED = (Status.ERROR, Status.TIMEOUT)


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What a strategy concludes about a finished fan-out.

    Attributes:
        ok: whether the success condition was met.
        value: the aggregate (``FanInResult.value``).
        confidence: 0..1, as the strategy defines it.
        reason: the outcome in words, e.g. ``"2 of 3 ok (min_success=2)"``.
        votes: each answer's weight, for voting strategies.
    """

    ok: bool
    value: Any
    confidence: float
    reason: str = ""
    votes: dict[Any, float] | None = None


class Strategy(abc.ABC):
    """Base class of completion policies; subclass it for a custom one.

    The protocol, called by the engine on a fresh shallow copy of the
    strategy object for every fan-out (so one object may be shared by
    concurrent fan-outs; keep per-run state in attributes set in
    :meth:`start`):

    1. :meth:`start` once, with the tasks, before any task starts. Raise
       ``ValueError`` here when the strategy cannot work with these tasks.
    2. :meth:`observe` for each task that finishes (ok, error or timeout),
       in completion order. Return ``True`` to end the fan-out now: running
       tasks are cancelled (status ``cancelled``) and unstarted ones skipped.
    3. :meth:`finish` once, with every task's result in submission order;
       return the :class:`Verdict`.

    Example::

        class AtLeastHalf(ff.Strategy):
            def start(self, tasks):
                super().start(tasks)
                self.good = 0

            def observe(self, result):
                self.good += result.ok
                return self.good * 2 >= len(self.tasks)

            def finish(self, results):
                ok = self.good * 2 >= len(self.tasks)
                return ff.Verdict(ok, [r.value for r in results if r.ok], 1.0 if ok else 0.0)
    """

    tasks: Sequence[Task]

    def start(self, tasks: Sequence[Task]) -> None:
        """Prepare for a fan-out of ``tasks``.

        Raises:
            ValueError: the strategy cannot be satisfied by these tasks.
        """
        self.tasks = tasks

    def observe(self, result: TaskResult) -> bool:
        """Take one finished task's result; return ``True`` to stop the fan-out."""
        return False

    @abc.abstractmethod
    def finish(self, results: Sequence[TaskResult]) -> Verdict:
        """Judge the fan-out from every task's result (submission order)."""

    @property
    def name(self) -> str:
        """How the strategy is named in results and reports (its repr)."""
        return repr(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def coverage(results: Sequence[TaskResult], tasks: Sequence[Task]) -> float:
    """Succeeded weight / total weight of ``tasks`` (by count when weights sum to 0)."""
    weights = {t.name: t.weight for t in tasks}
    total = sum(weights.values())
    if total <= 0:
        return sum(r.ok for r in results) / len(results) if results else 0.0
    return sum(weights.get(r.name, 0.0) for r in results if r.ok) / total


def _ok_values(results: Sequence[TaskResult]) -> dict[str, Any]:
    return {r.name: r.value for r in results if r.status is Status.OK}


class AllOrNothing(Strategy):
    """Every task must succeed; the first failure or timeout cancels the rest.

    ``value`` is a dict of task name to value in submission order;
    ``confidence`` is 1.0 when ok, else the coverage. An empty task list
    succeeds with ``{}``.
    """

    def start(self, tasks: Sequence[Task]) -> None:
        super().start(tasks)
        self._failed: TaskResult | None = None

    def observe(self, result: TaskResult) -> bool:
        if result.status in _FAILED:
            self._failed = result
            return True
        return False

    def finish(self, results: Sequence[TaskResult]) -> Verdict:
        ok = all(r.ok for r in results)
        if ok:
            return Verdict(True, _ok_values(results), 1.0, f"all {len(results)} tasks ok")
        failed = self._failed or next(r for r in results if not r.ok)
        reason = f"task {failed.name!r} ended {failed.status.value}"
        return Verdict(False, _ok_values(results), coverage(results, self.tasks), reason)


class BestEffort(Strategy):
    """Partial results are acceptable: keep going when some tasks fail.

    Args:
        min_success: at least this many tasks must succeed.
        max_failures: the error budget: the most failures (errors and
            timeouts) tolerated, as a count (``int``) or a fraction of the
            tasks (``float`` in [0, 1]). ``None`` means no budget.

    The fan-out stops early (failing) when failures exceed the budget or
    ``min_success`` can no longer be reached. ``value`` is a dict of the ok
    tasks' names to values in submission order; ``confidence`` is coverage.

    Raises:
        ValueError, TypeError: a negative or mistyped option.
    """

    def __init__(self, min_success: int = 1, max_failures: int | float | None = None) -> None:
        if isinstance(min_success, bool) or not isinstance(min_success, int):
            raise TypeError(f"BestEffort(min_success=...) must be an int; got {min_success!r}")
        if min_success < 0:
            raise ValueError(f"BestEffort(min_success=...) must be >= 0; got {min_success!r}")
        if max_failures is not None:
            if isinstance(max_failures, bool) or not isinstance(max_failures, int | float):
                raise TypeError(
                    "BestEffort(max_failures=...) must be a count (int) or a fraction (float); "
                    f"got {max_failures!r}"
                )
            if isinstance(max_failures, float) and not 0.0 <= max_failures <= 1.0:
                raise ValueError(
                    "BestEffort(max_failures=...) as a fraction must be in [0, 1]; "
                    f"got {max_failures!r} (pass an int for a count)"
                )
            if max_failures < 0:
                raise ValueError(f"BestEffort(max_failures=...) must be >= 0; got {max_failures!r}")
        self.min_success = min_success
        self.max_failures = max_failures

    def __repr__(self) -> str:
        args = [f"min_success={self.min_success}"]
        if self.max_failures is not None:
            args.append(f"max_failures={self.max_failures!r}")
        return f"BestEffort({', '.join(args)})"

    def start(self, tasks: Sequence[Task]) -> None:
        super().start(tasks)
        n = len(tasks)
        if n == 0 and self.min_success > 0:
            raise ValueError(f"{self!r} needs at least one task; got an empty task list")
        if self.min_success > n:
            raise ValueError(
                f"{self!r} can never succeed: min_success={self.min_success} "
                f"is more than the {n} tasks given"
            )
        if self.max_failures is None:
            self._budget = n
        elif isinstance(self.max_failures, float):
            self._budget = math.floor(self.max_failures * n + 1e-9)
        else:
            self._budget = self.max_failures
        self._ok = 0
        self._failed = 0
        self._seen = 0

    def observe(self, result: TaskResult) -> bool:
        self._seen += 1
        if result.status is Status.OK:
            self._ok += 1
        elif result.status in _FAILED:
            self._failed += 1
        unseen = len(self.tasks) - self._seen
        return self._failed > self._budget or self._ok + unseen < self.min_success

    def finish(self, results: Sequence[TaskResult]) -> Verdict:
        ok_count = sum(r.ok for r in results)
        failures = sum(r.status in _FAILED for r in results)
        cov = coverage(results, self.tasks)
        ok = ok_count >= self.min_success and failures <= self._budget
        if failures > self._budget:
            reason = (
                f"{failures} failures exceed the error budget of {self._budget} "
                f"(max_failures={self.max_failures!r})"
            )
        elif ok_count < self.min_success:
            reason = f"only {ok_count} of {len(results)} ok; min_success={self.min_success}"
        else:
            reason = f"{ok_count} of {len(results)} ok"
        return Verdict(ok, _ok_values(results), cov, reason)


class FirstN(Strategy):
    """Redundant tasks: the first ``n`` successes are enough.

    Stops as soon as ``n`` tasks succeeded (the rest are cancelled or
    skipped), or as soon as ``n`` can no longer be reached. ``value`` is the
    list of the first ``n`` values **in completion order**; ``confidence``
    is successes / n, capped at 1.

    Raises:
        ValueError, TypeError: ``n`` is not a positive int; at the start of a
            fan-out, ``n`` is larger than the number of tasks.
    """

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"FirstN(n) needs an int; got {n!r}")
        if n < 1:
            raise ValueError(f"FirstN(n) needs n >= 1; got {n!r}")
        self.n = n

    def __repr__(self) -> str:
        return f"FirstN({self.n})"

    def start(self, tasks: Sequence[Task]) -> None:
        super().start(tasks)
        if self.n > len(tasks):
            raise ValueError(
                f"FirstN({self.n}) can never succeed: n={self.n} is more than "
                f"the {len(tasks)} tasks given"
            )
        self._values: list[Any] = []
        self._seen = 0

    def observe(self, result: TaskResult) -> bool:
        self._seen += 1
        if result.status is Status.OK:
            self._values.append(result.value)
        unseen = len(self.tasks) - self._seen
        return len(self._values) >= self.n or len(self._values) + unseen < self.n

    def finish(self, results: Sequence[TaskResult]) -> Verdict:
        got = len(self._values)
        ok = got >= self.n
        reason = (
            f"first {self.n} successes collected"
            if ok
            else f"only {got} of the {self.n} successes needed"
        )
        return Verdict(ok, self._values[: self.n], min(1.0, got / self.n), reason)


def _check_weights(weights: Mapping[str, float] | None, owner: str) -> dict[str, float]:
    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        raise TypeError(f"{owner}(weights=...) must map task names to numbers; got {weights!r}")
    out: dict[str, float] = {}
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int | float):
            raise TypeError(f"{owner}(weights=...): weight of {name!r} must be a number; got {w!r}")
        if not math.isfinite(w) or w < 0:
            raise ValueError(
                f"{owner}(weights=...): weight of {name!r} must be finite and >= 0; got {w!r}"
            )
        out[name] = float(w)
    return out
