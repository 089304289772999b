"""Bulk data processing: ``fan_map`` streams items through the fan-out engine.

Items are pulled from the (async) iterable only as slots free up, results
are yielded as they finish and then forgotten, so memory is bounded by the
in-flight window, never by the input's size. The engine is the one behind
``fan_out``: timeouts, retries, rate limits and adaptive concurrency work
the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ._engine import EventHandler, _Driver, _Options
from ._journal import Journal
from ._limits import AdaptiveConcurrency, RateLimit
from ._result import TaskResult
from ._retry import Retry
from ._strategies import Strategy, Verdict
from ._task import Task

__all__ = ["fan_map"]


class _Stream(Strategy):
    """fan_map's strategy: never stop early; each result is the caller's to judge."""

    def finish(self, results: Any) -> Verdict:
        return Verdict(True, None, 1.0)


class _StreamDriver(_Driver):
    """The engine fed by a lazy source of tasks (or of replayed results)."""

    def __init__(
        self,
        source: Iterable[Task | TaskResult] | AsyncIterable[Task | TaskResult],
        options: _Options,
        *,
        ordered: bool,
        buffer: int,
        journal: Journal | None,
    ) -> None:
        self.tasks = []
        self.opts = options
        self.strategy = _Stream()
        self.strategy.start([])
        self.audit = None
        self._watch = None
        self._async_cache = {}
        self.states = []
        self._init_runtime(options, [])
        self._source_open = True
        self._sync_source: Iterator[Task | TaskResult] | None = None
        if isinstance(source, AsyncIterable):
            self._async_source = aiter(source)
        else:
            self._sync_source = iter(source)
        self._ordered = ordered
        self._buffer = buffer
        self._journal = journal
        self._pulled = 0
        self._next_index = 0
        self._reorder: dict[int, TaskResult] = {}
        self._hold: list[TaskResult] = []
        self._commit_pending = False

    def _window(self) -> float:
        # Items taken from the source but not yet taken by the consumer:
        # running, waiting to retry, held for the journal, waiting for an
        # earlier item (ordered), or queued for the consumer.
        return self._cap() + self._buffer

    def _room(self) -> bool:
        return (
            self._source_open
            and not self._stopping
            and len(self._running) < self._cap()
            and self._pulled - self._taken < self._window()
        )

    def _pull(self, now: float) -> bool:
        if self._sync_source is None or not self._room():
            return False
        try:
            item = next(self._sync_source)
        except StopIteration:
            self._source_open = False
            return False
        self._accept(item, now)
        return True

    async def _pull_async(self) -> None:
        assert self._async_source is not None
        try:
            item = await anext(self._async_source)
        except StopAsyncIteration:
            self._source_open = False
            self._async_source = None
            return
        self._accept(item, self._loop.time())

    def _accept(self, item: Task | TaskResult, now: float) -> None:
        index = self._pulled
        self._pulled += 1
        if isinstance(item, TaskResult):  # replayed from the journal
            item.index = index
            self._release(item)
            return
        self._unsettled += 1
        self._launch(self._make_state(item, index), now, False)

    def _output(self, result: TaskResult) -> None:
        if self._journal is None:
            self._release(result)
            return
        self._hold.append(result)
        if not self._commit_pending:
            # One transaction per loop turn, for everything settled in it.
            self._commit_pending = True
            self._loop.call_soon(self._guard, self._commit)

    def _commit(self) -> None:
        self._commit_pending = False
        batch, self._hold = self._hold, []
        if batch and self._journal is not None:
            self._journal.write(batch)
            for result in batch:
                self._release(result)

    def _release(self, result: TaskResult) -> None:
        if not self._ordered:
            self._out.append(result)
            return
        assert result.index is not None
        self._reorder[result.index] = result
        while self._next_index in self._reorder:
            self._out.append(self._reorder.pop(self._next_index))
            self._next_index += 1

    def _drained(self) -> bool:
        return not self._hold and not self._reorder and not self._commit_pending

    def _conclude(self) -> None:
        return None

    async def _shutdown(self) -> None:
        # Results settled but not yet committed are recorded before leaving:
        # they finished, and a rerun must not do them again.
        if self._hold and self._journal is not None and self._error is None:
            batch, self._hold = self._hold, []
            self._journal.write(batch)
        await super()._shutdown()


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


class fan_map(AsyncIterator[TaskResult]):
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
            :class:`AdaptiveConcurrency`).
        timeout: per-attempt timeout in seconds.
        retry: a :class:`Retry` policy for failed items.
        rate_limit: a shared :class:`RateLimit`.
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
        max_concurrency: int | AdaptiveConcurrency = 64,
        timeout: float | None = None,
        retry: Retry | None = None,
        rate_limit: RateLimit | None = None,
        ordered: bool = False,
        buffer: int | None = None,
        journal: str | Path | Journal | None = None,
        key: Callable[[Any], Any] | None = None,
        name: Callable[[Any], str] | None = None,
        serialize: Callable[[Any], Any] | None = None,
        executor: Any = "async",
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
        options = _Options(
            strategy=_Stream(),
            max_concurrency=max_concurrency,
            timeout=timeout,
            deadline=None,
            retry=retry,
            hedge=None,
            rate_limit=rate_limit,
            executor=executor,
            on_event=on_event,
            raise_on_failure=False,
            audit="off",
        )
        if buffer is None:
            buffer = max_concurrency if isinstance(max_concurrency, int) else 64
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1; got {buffer!r}")
        self._owns_journal = not isinstance(journal, Journal) and journal is not None
        if isinstance(journal, Journal) or journal is None:
            self.journal = journal
        else:
            self.journal = Journal(journal, _identity(fn), serialize)
        if self.journal is not None:
            try:
                self.journal.bind(keyed=key is not None)
                if key is None and isinstance(items, Sequence):
                    self.journal.verify(items)
            except BaseException:
                self._close_journal()
                raise
        source = self._source(fn, items, key, name)
        self._driver = _StreamDriver(
            source, options, ordered=bool(ordered), buffer=buffer, journal=self.journal
        )
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

    def __aiter__(self) -> fan_map:
        return self

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
            await self._stream.aclose()
        finally:
            self._close_journal()

    async def __aenter__(self) -> fan_map:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
