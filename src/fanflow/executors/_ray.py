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
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Ray"]


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Runs in a Ray worker. Coroutine functions get an event loop of their own.
    if asyncio.iscoroutinefunction(fn):
        return asyncio.run(fn(*args, **kwargs))
    return fn(*args, **kwargs)


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
        remote = self._remote.options(**options) if options else self._remote
        ref = remote.remote(fn, args, dict(kwargs))
        waiting = asyncio.wrap_future(ref.future(), loop=loop)

        def stop(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                _cancel(ray, ref)
                # ray.cancel can miss a task that is being handed to a worker
                # at that moment: ask again shortly, from a thread, so that it
                # also happens if this event loop has ended by then.
                for delay in (0.2, 1.0):
                    timer = threading.Timer(delay, _cancel, args=(ray, ref))
                    timer.daemon = True
                    timer.start()

        waiting.add_done_callback(stop)
        return asyncio.ensure_future(_unwrap(waiting, ray), loop=loop)


def _cancel(ray: Any, ref: Any) -> None:
    with contextlib.suppress(Exception):
        ray.cancel(ref, force=True)


async def _unwrap(waiting: asyncio.Future[Any], ray: Any) -> Any:
    try:
        return await waiting
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            # The task's own exception, with Ray's report of the remote
            # traceback as its cause.
            raise cause from exc
        raise
