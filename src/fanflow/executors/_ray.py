"""The Ray executor: each attempt a Ray remote task, on a local or existing cluster.

The engine keeps owning strategies, timeouts and results: an attempt is a
Ray task whose ``ObjectRef`` the engine awaits; when the engine cancels it
(a timeout, the strategy finishing, a lost hedge, the fan-out ending) the
task is stopped with ``ray.cancel(ref, force=True)``, which kills the worker
running it. Nothing of a cluster is re-implemented here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

__all__ = ["Ray"]


_worker_loop: asyncio.AbstractEventLoop | None = None


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    # Runs in a Ray worker, which runs many attempts one after another: one
    # event loop serves them all (asyncio.run would build and close a loop
    # per attempt, about 0.15 ms each). As with asyncio.run, whatever the
    # attempt left running is cancelled when it ends.
    global _worker_loop
    if _worker_loop is None or _worker_loop.is_closed():
        _worker_loop = asyncio.new_event_loop()
    loop = _worker_loop
    try:
        return loop.run_until_complete(coro)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Runs in a Ray worker, for callables that are not plain functions.
    if asyncio.iscoroutinefunction(fn):
        return _run_coroutine(fn(*args, **kwargs))
    return fn(*args, **kwargs)


def _as_remote_body(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What to register with ``ray.remote`` for the plain function ``fn``."""
    if not asyncio.iscoroutinefunction(fn):
        return fn

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return _run_coroutine(fn(*args, **kwargs))

    return run


class Ray:
    """Run attempts as Ray remote tasks (``pip install 'fanflow[ray]'``).

    Args:
        address: an existing cluster (``"ray://host:10001"``, ``"auto"``);
            ``None`` starts a local one on first use (or uses the one this
            process already started with ``ray.init``).
        num_cpus, num_gpus, memory: the default resources of each attempt.
        resources: per-task overrides, ``{task name: {"num_gpus": 1, ...}}``.
        init_options: passed to ``ray.init`` when fanflow starts Ray.

    The cluster is left running when a fan-out ends (it is the process's,
    not the fan-out's); call ``ray.shutdown()`` when you are done with it.

    Raises:
        ImportError: Ray is not installed (at first use).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: int | None = None,
        resources: Mapping[str, Mapping[str, Any]] | None = None,
        **init_options: Any,
    ) -> None:
        self.address = address
        self.defaults = {
            k: v
            for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("memory", memory))
            if v is not None
        }
        self.resources = {name: dict(opts) for name, opts in (resources or {}).items()}
        self.init_options = init_options
        self._remote: Any = None
        # ray.remote(fn) per plain function: the function is shipped to the
        # cluster once, and each attempt sends only its arguments.
        self._remotes: dict[Callable[..., Any], Any] = {}

    def __repr__(self) -> str:
        return f"Ray(address={self.address!r})"

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the Ray executor needs Ray: pip install 'fanflow[ray]'") from exc
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_options)
        if self._remote is None:
            self._remote = ray.remote(_call)
        return ray

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> asyncio.Future[Any]:
        """Start ``fn(*args, **kwargs)`` as a Ray task; cancelling the future stops it."""
        ray = self._ray()
        options = {**self.defaults, **self.resources.get(name, {})}
        if inspect.isfunction(fn):
            remote = self._remotes.get(fn)
            if remote is None:
                if len(self._remotes) >= _REMOTES_KEPT:
                    del self._remotes[next(iter(self._remotes))]
                remote = self._remotes[fn] = ray.remote(_as_remote_body(fn))
            if options:
                remote = remote.options(**options)
            ref = remote.remote(*args, **kwargs)
        else:
            remote = self._remote.options(**options) if options else self._remote
            ref = remote.remote(fn, args, dict(kwargs))
        waiting = asyncio.wrap_future(ref.future(), loop=loop)
        # A plain future, not a task awaiting `waiting`: one less task per attempt.
        out: asyncio.Future[Any] = loop.create_future()
        task_error = ray.exceptions.RayTaskError

        def settle(w: asyncio.Future[Any]) -> None:
            if out.done():
                return
            if w.cancelled():
                out.cancel()
                return
            exc = w.exception()
            if exc is None:
                out.set_result(w.result())
                return
            cause = getattr(exc, "cause", None)
            if isinstance(exc, task_error) and isinstance(cause, Exception):
                # The task's own exception, with Ray's report of the remote
                # traceback as its cause.
                cause.__cause__ = exc
                exc = cause
            out.set_exception(exc)

        def stop(o: asyncio.Future[Any]) -> None:
            if o.cancelled() and not waiting.done():
                waiting.cancel()
                _cancel(ray, ref)
                # ray.cancel can miss a task that is being handed to a worker
                # at that moment: ask again shortly, from a thread, so that it
                # also happens if this event loop has ended by then.
                for delay in (0.2, 1.0):
                    timer = threading.Timer(delay, _cancel, args=(ray, ref))
                    timer.daemon = True
                    timer.start()

        waiting.add_done_callback(settle)
        out.add_done_callback(stop)
        return out


_REMOTES_KEPT = 256


def _cancel(ray: Any, ref: Any) -> None:
    with contextlib.suppress(Exception):
        ray.cancel(ref, force=True)
