"""Where a fan-out's tasks come from (sources) and where its results go (sinks).

``fan_out`` and ``as_completed`` read a :class:`ListSource` (every task known
and checked up front; tasks with ``needs`` wait in the graph). ``fan_map``
reads an :class:`IterSource` or :class:`AsyncSource`: items are taken only
while there is room, so memory is bounded by the in-flight window. A source
may also give an already-finished :class:`TaskResult` (a journal's replay).

A sink receives each result as it is settled: :class:`Collect` keeps
nothing (``fan_out`` reads the results at the end), :class:`Stream` queues
them for the consumer in completion order, :class:`Ordered` in input order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ._graph import NeedsGraph
from ._result import TaskResult
from ._task import Task

__all__ = ["AsyncSource", "Collect", "IterSource", "ListSource", "Ordered", "Sink", "Stream"]

Item = Task | TaskResult


class ListSource:
    """The tasks of ``fan_out``/``as_completed``, in submission order."""

    __slots__ = ("_next", "graph", "is_async", "open", "ready", "tasks", "window")

    def __init__(self, tasks: Sequence[Task], graph: NeedsGraph | None) -> None:
        self.tasks = tasks
        self.graph = graph
        self._next = 0
        #: tasks whose needs have all succeeded, by position
        self.ready: deque[int] = deque()
        self.open = bool(tasks)
        self.window = math.inf
        self.is_async = False

    def take(self, taken: int) -> tuple[Item, int] | None:
        """The next task to start and its position; ``None`` when none can start now."""
        tasks = self.tasks
        i = self._next
        n = len(tasks)
        graph = self.graph
        if graph is None:
            if i < n:
                self._next = i + 1
                if i + 1 == n:
                    self.open = False
                return tasks[i], i
            return None
        while i < n:
            task = tasks[i]
            i += 1
            # A task with needs comes only through `ready`, once released:
            # the scan may pass it before or after that happens.
            if not task.needs:
                self._next = i
                return task, i - 1
        self._next = n
        if self.ready:
            j = self.ready.popleft()
            return tasks[j], j
        return None

    def release(self, name: str) -> None:
        """Every need of ``name`` succeeded: it may start."""
        assert self.graph is not None
        self.ready.append(self.graph.index[name])
        self.open = True

    def unstarted(self) -> list[int]:
        """Close the source; the positions of tasks it will now never give."""
        left = list(self.ready)
        self.ready.clear()
        graph = self.graph
        for i in range(self._next, len(self.tasks)):
            if graph is None or not self.tasks[i].needs:
                left.append(i)
        self._next = len(self.tasks)
        if graph is not None:
            left.extend(graph.index[name] for name in graph.blocked_names())
        self.open = False
        return left

    def pending(self) -> bool:
        """Whether tasks may be waiting to be taken."""
        return self._next < len(self.tasks) or bool(self.ready)


class _Stream:
    """What a lazy source keeps: how many items it gave, and its window."""

    __slots__ = ("_items", "is_async", "open", "pulled", "window")

    def __init__(self, items: Any, window: float, is_async: bool) -> None:
        self._items = items
        self.open = True
        self.pulled = 0
        self.window = window
        self.is_async = is_async

    def room(self, taken: int) -> bool:
        """Whether another item may be taken: fewer than ``window`` not yet consumed."""
        return self.open and self.pulled - taken < self.window

    def _number(self, item: Item) -> tuple[Item, int]:
        index = self.pulled
        self.pulled += 1
        return item, index

    def unstarted(self) -> list[int]:
        self.open = False
        return []

    def pending(self) -> bool:
        return self.open


class IterSource(_Stream):
    """A lazy iterable of tasks (or replayed results), taken while there is room."""

    __slots__ = ()

    def __init__(self, items: Iterator[Item], window: float) -> None:
        super().__init__(items, window, is_async=False)

    def take(self, taken: int) -> tuple[Item, int] | None:
        if not self.room(taken):
            return None
        try:
            item = next(self._items)
        except StopIteration:
            self.open = False
            return None
        return self._number(item)


class AsyncSource(_Stream):
    """An async iterable of tasks (or replayed results), awaited by the driver loop."""

    __slots__ = ()

    def __init__(self, items: AsyncIterator[Item], window: float) -> None:
        super().__init__(items, window, is_async=True)

    def take(self, taken: int) -> tuple[Item, int] | None:
        return None  # only the driver loop's pull() takes from it

    async def pull(self) -> tuple[Item, int] | None:
        try:
            item = await anext(self._items)
        except StopAsyncIteration:
            self.open = False
            return None
        return self._number(item)


Source = ListSource | IterSource | AsyncSource


class Sink:
    """Receives results as they settle; the driver yields what lands in :attr:`out`."""

    streams = True

    def __init__(self) -> None:
        self.out: deque[TaskResult] = deque()

    def deliver(self, result: TaskResult) -> None:
        """A task's result was settled."""
        self.out.append(result)

    def replay(self, result: TaskResult) -> None:
        """A source gave an already-finished result."""
        self.deliver(result)

    def drained(self) -> bool:
        """Whether every result delivered has reached :attr:`out`."""
        return True

    def close(self, failed: bool) -> None:
        """The fan-out ends (``failed``: by an error); flush what is held."""


class Collect(Sink):
    """Keeps nothing: ``fan_out`` reads every result at the end."""

    streams = False

    def deliver(self, result: TaskResult) -> None:
        return None


class Stream(Sink):
    """Results in completion order."""


class Ordered(Sink):
    """Results in input order (a result waits for those before it)."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0
        self._waiting: dict[int, TaskResult] = {}

    def deliver(self, result: TaskResult) -> None:
        assert result.index is not None
        self._waiting[result.index] = result
        while self._next in self._waiting:
            self.out.append(self._waiting.pop(self._next))
            self._next += 1

    def drained(self) -> bool:
        return not self._waiting
