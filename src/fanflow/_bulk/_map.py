"""Bulk data processing: ``fan_map`` streams items through the fan-out engine.

Items are pulled from the (async) iterable only as slots free up, results
are yielded as they finish and then forgotten, so memory is bounded by the
in-flight window, never by the input's size. The engine is the one behind
``fan_out``: timeouts, retries, rate limits and adaptive concurrency work
the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .._api import ResultStream
from .._core._driver import Driver
from .._core._result import TaskResult
from .._core._sources import AsyncSource, IterSource, Ordered, Sink, Stream
from .._core._task import Task
from .._options import DEFAULT_CONCURRENCY, EventHandler, ExecutorSpec, resolve
from .._policies._budget import Budget
from .._policies._hedge import Hedge
from .._policies._limits import AdaptiveConcurrency, RateLimit
from .._policies._retry import Retry
from .._policies._strategies import Strategy, Verdict
from ._journal import Journal

__all__ = ["fan_map"]


class _Stream(Strategy):
    """fan_map's strategy: never stop early; each result is the caller's to judge."""

    def finish(self, results: Any) -> Verdict:
        return Verdict(True, None, 1.0)


class _JournalSink(Sink):
    """Results reach the consumer only once their journal record is committed.

    One transaction per loop turn, for everything settled in it; then the
    results go on to the ordered or unordered output.
    """

    def __init__(self, journal: Journal, then: Sink) -> None:
        super().__init__()
        self._journal = journal
        self._then = then
        self.out = then.out
        self._hold: list[TaskResult] = []
        self._commit_pending = False
        self.driver: Driver | None = None

    def deliver(self, result: TaskResult) -> None:
        self._hold.append(result)
        if not self._commit_pending:
            self._commit_pending = True
            assert self.driver is not None
            # Through the driver's guard: a value that cannot be stored is
            # the fan-out's error, raised where the consumer awaits.
            asyncio.get_running_loop().call_soon(self.driver._guard, self._commit)

    def replay(self, result: TaskResult) -> None:
        self._then.deliver(result)

    def _commit(self) -> None:
        self._commit_pending = False
        batch, self._hold = self._hold, []
        if batch:
            self._journal.write(batch)
            for result in batch:
                self._then.deliver(result)

    def drained(self) -> bool:
        return not self._hold and not self._commit_pending and self._then.drained()

    def close(self, failed: bool) -> None:
        # Results settled but not yet committed are recorded before leaving:
        # they finished, and a rerun must not do them again.
        if self._hold and not failed:
            batch, self._hold = self._hold, []
            self._journal.write(batch)


def _key_text(value: Any) -> str:
    if isinstance(value, str):
        # A task name cannot be empty; an empty string is still an item.
        return value or '""'
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape") or 'b""'
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except TypeError:
        raise TypeError(
            f"a fan_map key must be a string or JSON data; got {value!r}. "
            "HINT: pass key=lambda item: ... returning a string"
        ) from None


def _identity(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', repr(fn))}"


class fan_map(ResultStream):
    """Run ``fn(item)`` for every item, concurrently, yielding results as they finish.

    ``items`` may be any iterable or async iterable, including an endless
    generator: items are taken only when there is room, so memory holds at
    most ``max_concurrency + buffer`` items at a time, however long the input.
    Each result is a :class:`TaskResult` whose ``index`` is the item's
    position and whose ``name`` is ``name(item)``, or its key, or with a
    journal and no key the item's text (``'""'`` for an empty string), or
    else its position.

    Args:
        fn: called with one item (a coroutine function, or a plain callable
            run in a worker thread).
        items: the inputs.
        max_concurrency: items in flight at once (an int or
            :class:`AdaptiveConcurrency`; default 100, the default of every
            verb). ``None`` (no limit) is a ``TypeError`` here: ``fan_map``
            would read an endless input without bound.
        timeout: per-attempt timeout in seconds (default ``None``).
        deadline: seconds for the whole run (default ``None``): items
            running then end ``timeout``, no new item is taken, and the loop
            ends (items never taken yield no result).
        retry: a :class:`Retry` policy for failed items.
        rate_limit: a shared :class:`RateLimit`.
        budget: a shared :class:`Budget`: the items' model calls are
            charged to it, and one that does not fit raises
            :class:`BudgetExceeded` (items have no ``tokens`` estimate, so
            nothing is reserved before an item starts).
        ordered: yield in input order. Results that finish early wait for
            the items before them; a slow item holds back everything after
            it, and when ``max_concurrency + buffer`` items are waiting, no
            new item is started until it finishes (memory stays bounded).
        buffer: results that may wait for the consumer (default
            ``max_concurrency``); past that, intake pauses: backpressure.
        journal: a SQLite file (or a :class:`Journal`) recording each
            finished item. A result is yielded only once its record is
            committed; on a rerun, items recorded ok are not run again and
            their stored results are yielded with ``replayed=True``. Without
            ``key``, an item is identified by its position *and* the item
            (text, bytes or JSON data, compared losslessly): two equal items
            are two items, and a rerun whose item at a recorded position
            differs raises :class:`JournalMismatchError` (naming the position
            and both items; checked before anything runs when ``items`` is a
            sequence) rather than skipping it. A journal written by another
            function is refused.
        key: ``key(item)`` identifies an item in results and in the journal,
            wherever it is in the input: an item whose key is recorded ok is
            skipped, so equal keys are one item. Use it when the input's
            order may change between runs.
        name: ``name(item)`` labels an item in results and in the journal's
            ``key`` column, without identifying it (default: as above).
        serialize: converts a value to JSON data before it is journaled.
        deserialize: converts stored JSON data back into a value when it is
            replayed (default: the JSON data as stored).
        executor: where ``fn`` runs: ``"async"`` (the default: coroutine
            functions on the loop, plain callables in worker threads),
            ``"thread"``, ``"process"`` or an ``ff.executors.Executor``.
        on_event: called (sync or async) with each :class:`Event`.

    ``max_concurrency``, ``timeout``, ``deadline``, ``retry``,
    ``rate_limit``, ``hedge``, ``budget``, ``executor`` and ``on_event`` are the options
    every verb shares (``fanflow._options``), with the same types and
    defaults (a hedge's ``max_extra`` counts the items taken so far); the
    others (``strategy``, ``progress``, ``audit``,
    ``raise_on_failure``) make no sense for a stream, and passing one is a
    ``TypeError`` naming it.

    Leaving the loop early cancels the items in flight; ``async with``
    awaits them (as with :func:`as_completed`).

    Raises:
        ValueError, TypeError: bad arguments.
        JournalError: the journal belongs to another job, or a value cannot
            be stored (the key is named).
        JournalMismatchError: the item at a recorded position changed.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        max_concurrency: int | AdaptiveConcurrency = DEFAULT_CONCURRENCY,
        timeout: float | None = None,
        deadline: float | None = None,
        retry: Retry | None = None,
        rate_limit: RateLimit | None = None,
        hedge: Hedge | None = None,
        budget: Budget | None = None,
        ordered: bool = False,
        buffer: int | None = None,
        journal: str | Path | Journal | None = None,
        key: Callable[[Any], Any] | None = None,
        name: Callable[[Any], str] | None = None,
        serialize: Callable[[Any], Any] | None = None,
        deserialize: Callable[[Any], Any] | None = None,
        executor: ExecutorSpec = "async",
        on_event: EventHandler | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fan_map(fn, ...) needs a callable; got {fn!r}")
        if not isinstance(items, Iterable | AsyncIterable) or isinstance(items, str | bytes):
            raise TypeError(f"fan_map items must be an iterable of items; got {items!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable; got {key!r}")
        if name is not None and not callable(name):
            raise TypeError(f"name must be callable; got {name!r}")
        if max_concurrency is None:
            raise TypeError(
                "fan_map(max_concurrency=None) would read the input without bound; "
                "pass an int or an ff.AdaptiveConcurrency"
            )
        resolved = resolve(
            "fan_map",
            {
                "max_concurrency": max_concurrency,
                "timeout": timeout,
                "deadline": deadline,
                "retry": retry,
                "rate_limit": rate_limit,
                "hedge": hedge,
                "budget": budget,
                "executor": executor,
                "on_event": on_event,
            },
        )
        settings = resolved.settings
        if buffer is None:
            buffer = max_concurrency if isinstance(max_concurrency, int) else DEFAULT_CONCURRENCY
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1; got {buffer!r}")
        self._owns_journal = not isinstance(journal, Journal) and journal is not None
        if isinstance(journal, Journal) or journal is None:
            self.journal = journal
        else:
            self.journal = Journal(journal, _identity(fn), serialize, deserialize)
        if self.journal is not None:
            try:
                if self.journal.identity is None:
                    self.journal.claim(_identity(fn))
                self.journal.bind(keyed=key is not None)
                if key is None and isinstance(items, Sequence):
                    self.journal.verify(items)
            except BaseException:
                self._close_journal()
                raise
        tasks = self._source(fn, items, key, name)
        # Items taken but not yet taken by the consumer: running, waiting to
        # retry, held for the journal, waiting for an earlier item (ordered),
        # or queued for the consumer.
        window = settings.limit + buffer
        if settings.executor.workers is not None:
            window = min(settings.limit, settings.executor.workers) + buffer
        source: IterSource | AsyncSource
        if isinstance(tasks, AsyncIterator):
            source = AsyncSource(tasks, window)
        else:
            assert isinstance(tasks, Iterable)
            source = IterSource(iter(tasks), window)
        sink: Sink = Ordered() if ordered else Stream()
        if self.journal is not None:
            sink = _JournalSink(self.journal, sink)
        self._driver = Driver(settings, source, sink, _Stream())
        if isinstance(sink, _JournalSink):
            sink.driver = self._driver
        self._stream = self._driver.stream()

    def _source(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any] | AsyncIterable[Any],
        key: Any,
        label: Any,
    ) -> Iterable[Task | TaskResult] | AsyncIterable[Task | TaskResult]:
        journal = self.journal

        def one(index: int, item: Any) -> Task | TaskResult:
            given: str | None = None
            if key is not None:
                # The key as given identifies; its display form ('""' for "") names.
                raw = key(item)
                name = _key_text(raw)
                given = raw if isinstance(raw, str) else name
            elif journal is not None:
                name = _key_text(item)
            else:
                name = str(index)
            if label is not None:
                name = _key_text(label(item))
            if journal is not None:
                # By key if one was given, else by position and item: a
                # label never decides what was done.
                replay = journal.lookup(name if given is None else given, index, item)
                if replay is not None:
                    replay.name = name
                    return replay
            return Task(name, fn, (item,))

        if isinstance(items, AsyncIterable):

            async def agen() -> AsyncIterator[Task | TaskResult]:
                index = 0
                async for item in items:
                    yield one(index, item)
                    index += 1

            return agen()
        return (one(i, item) for i, item in enumerate(items))

    async def __anext__(self) -> TaskResult:
        try:
            return await self._stream.__anext__()
        except BaseException:
            self._close_journal()
            raise

    def _close_journal(self) -> None:
        if self._owns_journal and self.journal is not None:
            self.journal.close()
            self._owns_journal = False

    async def aclose(self) -> None:
        """Cancel and await the items in flight; close the journal."""
        try:
            await super().aclose()
        finally:
            self._close_journal()
