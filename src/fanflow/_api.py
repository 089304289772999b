"""The verbs over the engine: ``fan_out``, ``run`` and ``as_completed``.

They share one set of options (``fanflow._options``) and one driver
(``fanflow._core``), fed by a :class:`~fanflow._core._sources.ListSource`:
``fan_out`` collects, ``as_completed`` streams.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Self, Unpack

from ._core._driver import Driver
from ._core._graph import NeedsGraph
from ._core._result import FanInResult, TaskResult, _strategy_failed
from ._core._sources import Collect, ListSource, Sink, Stream
from ._core._task import Task
from ._options import FanOutOptions, Resolved, resolve
from ._policies._audit import MutationWatch, check_before_run

__all__ = ["as_completed", "fan_out", "run"]


def check_tasks(tasks: Iterable[Task]) -> list[Task]:
    """The tasks as a list, each an ``ff.Task`` with a unique name.

    Raises:
        TypeError: not an iterable of tasks (a coroutine object gets a HINT).
        ValueError: a duplicate name.
    """
    if isinstance(tasks, Task):
        raise TypeError("tasks must be a list of ff.Task; got a single Task. HINT: pass [task]")
    try:
        task_list = list(tasks)
    except TypeError:
        raise TypeError(f"tasks must be an iterable of ff.Task; got {tasks!r}") from None
    names: set[str] = set()
    for i, t in enumerate(task_list):
        if not isinstance(t, Task):
            hint = ""
            if inspect.iscoroutine(t):
                t.close()  # don't leave a "never awaited" warning behind
                hint = " HINT: wrap the function, e.g. ff.Task('name', fetch, args=(x,))"
            raise TypeError(f"tasks[{i}] must be an ff.Task; got {t!r}.{hint}")
        if t.name in names:
            raise ValueError(f"duplicate task name {t.name!r}: names must be unique in a fan-out")
        names.add(t.name)
    return task_list


def prepare(tasks: Iterable[Task], resolved: Resolved, sink: Sink) -> Driver:
    """A driver for ``tasks``: every check done, nothing started.

    Raises:
        ValueError: duplicate names, unknown needs, a cycle.
        HiddenDependencyError: the audit refused the tasks.
    """
    task_list = check_tasks(tasks)
    needs = {t.name: t.needs for t in task_list if t.needs}
    graph = NeedsGraph([t.name for t in task_list], needs) if needs else None
    strategy = copy.copy(resolved.strategy)
    strategy.start(task_list)
    audit = check_before_run(task_list, resolved.audit, needs or None)
    watch = None
    if audit is not None and resolved.audit == "strict":
        watch = MutationWatch(task_list, audit)
        watch = watch if watch.has_objects else None
    settings = resolved.settings
    if resolved.journal is not None:
        from ._durable import TaskJournal, open_journal

        journal, owned = open_journal(resolved.journal)
        try:
            settings.journal = TaskJournal(journal, owned, task_list)
        except BaseException:
            if owned:
                journal.close()
            raise
    if resolved.progress:
        from ._progress import ProgressBar

        settings.on_event = ProgressBar(len(task_list), settings.on_event)
    return Driver(settings, ListSource(task_list, graph), sink, strategy, audit=audit, watch=watch)


async def fan_out(tasks: Iterable[Task], **options: Unpack[FanOutOptions]) -> FanInResult:
    """Run tasks concurrently and fan their results in.

    Args:
        tasks: the :class:`Task` objects to run; names must be unique. A
            task with ``needs`` (or an :class:`Ref` in its arguments) starts
            once the tasks it needs have succeeded, and is skipped if one
            did not.
        **options: the options every verb shares (``fanflow._options``):
            ``strategy`` (default :class:`BestEffort` ``()``: at least one
            success, failures kept), ``max_concurrency`` (attempts in flight,
            hedges included; default 100; ``None`` for no limit; an
            :class:`AdaptiveConcurrency` to find the limit as it goes),
            ``timeout`` (default per-attempt seconds; a task's own overrides
            it), ``deadline`` (seconds for the whole fan-out: running tasks
            end ``timeout``, unstarted ones ``skipped``), ``retry`` (a
            :class:`Retry`), ``hedge`` (a :class:`Hedge`), ``rate_limit`` (a
            :class:`RateLimit`, shareable), ``executor`` (``"async"``:
            coroutines on the loop, plain callables in threads;
            ``"thread"``; ``"process"`` or ``ff.executors.Process(...)``:
            worker processes, killed on timeout or cancellation;
            ``ff.executors.Ray(...)``; or any ``ff.executors.Executor``),
            ``on_event`` (called, sync or async, with each :class:`Event`),
            ``progress`` (a progress bar on stderr, on a terminal),
            ``audit`` (``"error"``: raise :class:`HiddenDependencyError`
            before anything starts; ``"warn"``; ``"off"``; ``"strict"``:
            watch shared arguments and report who changed what) and
            ``raise_on_failure`` (default ``True``: raise
            :class:`StrategyFailed`; ``False`` returns the result with
            ``ok == False``).

    Returns:
        The :class:`FanInResult`: one :class:`TaskResult` per task in
        submission order, the strategy's value, coverage and confidence.

    Raises:
        StrategyFailed: the strategy's success condition was not met; its
            ``.result`` holds every task's result.
        HiddenDependencyError: the audit found tasks that are not
            independent; nothing was started.
        ValueError, TypeError: bad arguments (duplicate names, unknown
            needs, a cycle of needs, a wrong option), before any task starts.

    When ``fan_out`` returns or raises (its caller cancelled included), no
    attempt it started is still running: losers are cancelled and awaited.
    A plain callable already running in a worker thread cannot be
    interrupted; it finishes in the background and its result is discarded.
    """
    resolved = resolve("fan_out", options)
    driver = prepare(tasks, resolved, Collect())
    try:
        return await drive(driver, resolved.raise_on_failure)
    finally:
        close_journal(driver)


def close_journal(driver: Driver) -> None:
    """Close the driver's journal if its verb opened it."""
    journal = driver.settings.journal
    if journal is not None:
        journal.close()


async def drive(driver: Driver, raise_on_failure: bool) -> FanInResult:
    """Run a prepared driver to its end; its result (or :class:`StrategyFailed`)."""
    stream = driver.stream()
    try:
        async for _ in stream:
            pass
    finally:
        await stream.aclose()
    result = driver.result
    assert result is not None
    if not result.ok and raise_on_failure:
        raise _strategy_failed(result)
    return result


def run(tasks: Iterable[Task], **options: Unpack[FanOutOptions]) -> FanInResult:
    """:func:`fan_out` for synchronous callers: runs it in a new event loop.

    Takes the same arguments and returns and raises the same as
    :func:`fan_out`.

    Raises:
        RuntimeError: called from inside a running event loop (use
            ``await ff.fan_out(...)`` there).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "ff.run() cannot be called from a running event loop. "
            "HINT: use 'await ff.fan_out(...)' inside async code"
        )
    resolve("run", options)  # bad options fail here, before a loop is made
    return asyncio.run(fan_out(tasks, **options))


class ResultStream(AsyncIterator[TaskResult]):
    """What ``as_completed`` and ``fan_map`` share: an async iterator over a driver.

    ``aclose()`` (or leaving ``async with``) cancels and awaits what still runs.
    """

    _stream: AsyncGenerator[TaskResult, None]

    def __aiter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        """Cancel and await every task still running."""
        await self._stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class as_completed(ResultStream):
    """Iterate over task results in completion order, as they finish.

    Takes the same arguments as :func:`fan_out`. Every task yields exactly
    one :class:`TaskResult`: cancelled and skipped ones come last, once the
    strategy has finished. After the last result, :attr:`result` holds the
    :class:`FanInResult`, and :class:`StrategyFailed` is raised if the
    strategy was not satisfied and ``raise_on_failure`` is true.

    Leaving the loop early (``break``) cancels every task still running.
    Use ``async with ff.as_completed(...) as results:`` to have them awaited
    before the block ends; otherwise they are cancelled when the iterator
    is discarded.

    Raises:
        ValueError, TypeError: bad arguments, at construction.
    """

    def __init__(self, tasks: Iterable[Task], **options: Unpack[FanOutOptions]) -> None:
        resolved = resolve("as_completed", options)
        self._driver = prepare(tasks, resolved, Stream())
        self._raise = resolved.raise_on_failure
        self._stream = self._driver.stream()

    @property
    def result(self) -> FanInResult | None:
        """The :class:`FanInResult`, once every result has been yielded."""
        return self._driver.result

    async def aclose(self) -> None:
        """Cancel and await every task still running; close the journal it opened."""
        try:
            await self._stream.aclose()
        finally:
            close_journal(self._driver)

    async def __anext__(self) -> TaskResult:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            close_journal(self._driver)
            result = self._driver.result
            if result is None or result.ok or not self._raise:
                raise
        except BaseException:
            close_journal(self._driver)
            raise
        # Raised outside the except block, so its __cause__ is the task error.
        raise _strategy_failed(result)
