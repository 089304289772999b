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

from .._core._result import TaskResult, coverage
from .._core._task import Task
from .._core._types import Status
from .._core._validate import check_instance, check_number

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


def _coverage(results: Sequence[TaskResult], tasks: Sequence[Task]) -> float:
    """The coverage of ``results`` with the weights of ``tasks`` (see :func:`coverage`)."""
    return coverage(results, {t.name: t.weight for t in tasks})


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
        return Verdict(False, _ok_values(results), _coverage(results, self.tasks), reason)


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
        check_number(min_success, "BestEffort(min_success=...)", minimum=0, integer=True)
        if max_failures is not None:
            check_number(
                max_failures,
                "BestEffort(max_failures=...)",
                minimum=0,
                what="a count (int) or a fraction (float)",
            )
            if isinstance(max_failures, float) and max_failures > 1.0:
                raise ValueError(
                    "BestEffort(max_failures=...) as a fraction must be in [0, 1]; "
                    f"got {max_failures!r} (pass an int for a count)"
                )
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
        cov = _coverage(results, self.tasks)
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
        self.n: int = check_number(n, "FirstN(n=...)", minimum=1, integer=True)

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
    check_instance(weights, f"{owner}(weights=...)", Mapping, "a mapping of task names to numbers")
    return {
        name: float(check_number(w, f"{owner}(weights=...): weight of {name!r}", minimum=0))
        for name, w in weights.items()
    }
