"""The default executors: coroutines on the event loop, plain callables in threads."""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

from .._core._threads import WorkerThreads
from .._core._validate import check_number
from ._base import Call, Executor, ExecutorSession

__all__ = ["Async", "Threads"]

# Worker threads are created on demand, up to the concurrency limit; this
# caps them when the limit is unbounded.
_MAX_THREADS = 256


def _run_in(call: Call) -> Any:
    assert call.context is not None
    return call.context.run(call.fn, *call.args, **call.kwargs)


class Threads(Executor):
    """Run every attempt in a worker thread (daemon threads nothing joins).

    A coroutine function is run to completion in its thread with
    ``asyncio.run``. A thread cannot be interrupted: a timed-out or cancelled
    attempt's result is discarded, and the thread, if it already started,
    finishes in the background without keeping the interpreter alive.

    Args:
        workers: the most threads (default: the fan-out's ``max_concurrency``,
            at most 256 when that is unbounded).

    Raises:
        TypeError: ``workers`` is not an int.
        ValueError: ``workers`` < 1.
    """

    def __init__(self, workers: int | None = None) -> None:
        check_number(workers, "Threads(workers=...)", minimum=1, integer=True, allow_none=True)
        self.threads = workers

    def __repr__(self) -> str:
        return f"Threads(workers={self.threads})"

    def open(self, loop: asyncio.AbstractEventLoop, limit: float) -> _ThreadSession:
        if self.threads is not None:
            count = self.threads
        else:
            count = _MAX_THREADS if math.isinf(limit) else int(min(limit, 4 * _MAX_THREADS))
        return _ThreadSession(loop, count, run_coroutines=True)


class _ThreadSession(ExecutorSession):
    __slots__ = ("_count", "_loop", "_pool", "_run_coroutines")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, run_coroutines: bool) -> None:
        self._loop = loop
        self._count = count
        self._pool: WorkerThreads | None = None
        self._run_coroutines = run_coroutines

    def submit(self, call: Call) -> asyncio.Future[Any]:
        if self._pool is None:
            self._pool = WorkerThreads(self._count)
        if call.context is None:
            import contextvars

            call.context = contextvars.copy_context()
        if call.is_async and self._run_coroutines:
            coro_fn = call.fn

            def body(*args: Any, **kwargs: Any) -> Any:
                return asyncio.run(coro_fn(*args, **kwargs))

            call.fn = body
        return self._loop.run_in_executor(self._pool, _run_in, call)

    def close(self) -> None:
        if self._pool is not None:
            # Queued jobs are dropped; a job already running in a thread cannot
            # be interrupted, and its result is discarded.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class Async(Executor):
    """Coroutine functions as tasks on the event loop; plain callables in threads.

    The default (``executor="async"``). A coroutine attempt is cancelled at
    once on a timeout or when the fan-out stops. A plain callable runs in a
    worker thread (see :class:`Threads`), so it never blocks the loop, but it
    cannot be interrupted.

    Args:
        threads: the most worker threads for plain callables (default: the
            fan-out's ``max_concurrency``, at most 256 when unbounded).
    """

    def __init__(self, threads: int | None = None) -> None:
        self._threads = Threads(threads)

    def __repr__(self) -> str:
        return "Async()"

    def open(self, loop: asyncio.AbstractEventLoop, limit: float) -> _AsyncSession:
        return _AsyncSession(loop, self._threads.open(loop, limit))


class _AsyncSession(ExecutorSession):
    __slots__ = ("_new_task", "_threads")

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: _ThreadSession) -> None:
        threads._run_coroutines = False
        self._threads = threads
        # asyncio.Task(...) is what BaseEventLoop.create_task does, minus a
        # Python-level wrapper; loops with their own create_task or a task
        # factory keep theirs.
        if (
            type(loop).create_task is asyncio.BaseEventLoop.create_task
            and loop.get_task_factory() is None
        ):
            self._new_task: Any = functools.partial(asyncio.Task, loop=loop)
        else:
            self._new_task = loop.create_task

    def submit(self, call: Call) -> asyncio.Future[Any]:
        if call.is_async:
            kwargs = call.kwargs
            coro = call.fn(*call.args, **kwargs) if kwargs else call.fn(*call.args)
            # The task copies the current context: the fan-out's.
            task: asyncio.Future[Any] = self._new_task(coro)
            return task
        return self._threads.submit(call)

    def close(self) -> None:
        self._threads.close()
