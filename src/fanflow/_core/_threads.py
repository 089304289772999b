"""Worker threads for plain callables that never keep the interpreter from exiting.

Python cannot interrupt a thread. ``concurrent.futures.ThreadPoolExecutor``
joins its threads at interpreter exit (and ``asyncio.run`` joins the
default executor's), so one plain function that hangs past its timeout
keeps the whole program alive — forever, if it never returns — and Ctrl-C
cannot end it. fanflow's threads are daemon threads that nothing joins: a
fan-out ends without waiting for them, and so does the interpreter; a
function still running then is abandoned, its result discarded. Code that
must really be stopped belongs in ``executor="process"``.

``SystemExit`` raised by a task (``sys.exit(3)`` in task code) is that
task's error, :class:`TaskExit`, never the end of the program.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._exceptions import TaskExit

__all__ = ["TaskExit", "WorkerThreads", "run_sync"]

T = TypeVar("T")


_Item = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WorkerThreads(concurrent.futures.Executor):
    """A pool of daemon threads with ``submit`` as ``ThreadPoolExecutor`` has.

    Threads are started as work arrives, up to ``max_workers``, and kept for
    reuse; :meth:`shutdown` drops queued work and lets idle threads end,
    without waiting for busy ones.
    """

    def __init__(self, max_workers: int, name: str = "fanflow") -> None:
        self._max = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0
        self._closed = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` in a worker thread; a future of its result.

        Raises:
            RuntimeError: the pool was shut down.
        """
        if self._closed:
            raise RuntimeError("fanflow: the worker threads were shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._threads < self._max:
                    self._threads += 1
                    threading.Thread(
                        target=self._work, name=f"{self._name}-{self._threads}", daemon=True
                    ).start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except SystemExit as exc:
                    error = TaskExit(exc.code)
                    error.__cause__ = exc
                    future.set_exception(error)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            # Drop references at once: a finished task's value is not kept alive here.
            del future, fn, args, kwargs
            if self._closed:
                return
            self._idle.release()

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        """Drop queued work (``cancel_futures``) and let the threads end; never waits.

        ``wait`` is accepted for ``Executor`` compatibility and ignored: a
        busy thread cannot be stopped, so it is abandoned.
        """
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in range(self._threads):
            self._queue.put(None)


_shared: WorkerThreads | None = None
_shared_lock = threading.Lock()


def _shared_pool() -> WorkerThreads:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WorkerThreads(256, name="fanflow-call")
        return _shared


async def run_sync(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread`` on fanflow's daemon threads (context copied).

    A cancelled await returns at once; the thread, if it already started,
    is abandoned. ``SystemExit`` in ``fn`` comes back as :class:`TaskExit`.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    return await asyncio.wrap_future(_shared_pool().submit(call), loop=loop)
