"""The Ray executor: each attempt a Ray remote task, on a local or existing cluster.

The engine keeps owning strategies, timeouts and results: an attempt is a
Ray task whose ``ObjectRef`` the engine awaits; when the engine cancels it
(a timeout, the strategy finishing, a lost hedge, the fan-out ending) the
task is stopped with ``ray.cancel(ref, force=True)``, which kills the worker
running it, and the attempt ends once Ray says the task is over (at most
:data:`_CANCEL_WAIT` seconds later): the fan-out returns with no worker of
its still running. Nothing of a cluster is re-implemented here.

Four boundaries are guarded:

* connecting (``ray.init``) runs in a thread of its own, bounded by
  ``connect_timeout`` and the fan-out's deadline: an unreachable cluster
  fails every task with one error naming the address, never a blocked loop;
* an attempt says when it starts running in a worker (a call to a tiny
  async actor), so the per-task timeout does not count time in Ray's queue;
* a task asking for more resources than any node of the cluster has fails
  at once, naming the resource, instead of waiting forever;
* Ray's own retries are off (``max_retries=0``): a worker or node that dies
  under an attempt is an :class:`~fanflow.TransientError`, for ``ff.Retry``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from .._core._exceptions import PermanentError, TransientError
from ._base import Call, Executor, ExecutorSession

__all__ = ["Ray"]

# How long a cancelled attempt waits for Ray to report its task over (the
# worker killed) before the attempt ends anyway; and when it asks again,
# since ray.cancel can miss a task being handed to a worker at that moment.
_CANCEL_WAIT = 3.0
_RECANCEL_AFTER = 0.2
# How long a look at the cluster's nodes stays fresh for the resource check.
_NODES_TTL = 5.0
_REMOTES_KEPT = 256
# How often the thread that connected checks whether Ray was shut down.
_PARK_POLL = 2.0

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


def _signal_started(tracker: Any, token: str | None) -> None:
    # Runs in a Ray worker as the attempt begins: fire and forget.
    if tracker is not None and token is not None:
        with contextlib.suppress(Exception):
            tracker.started.remote(token)


def _call(
    tracker: Any,
    token: str | None,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    # Runs in a Ray worker, for callables that are not plain functions.
    _signal_started(tracker, token)
    if asyncio.iscoroutinefunction(fn):
        return _run_coroutine(fn(*args, **kwargs))
    return fn(*args, **kwargs)


def _as_remote_body(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What to register with ``ray.remote`` for the plain function ``fn``."""
    is_async = asyncio.iscoroutinefunction(fn)

    @functools.wraps(fn)
    def run(_ff_tracker: Any, _ff_token: str | None, *args: Any, **kwargs: Any) -> Any:
        _signal_started(_ff_tracker, _ff_token)
        if is_async:
            return _run_coroutine(fn(*args, **kwargs))
        return fn(*args, **kwargs)

    # functools.wraps sets __wrapped__, which makes Ray read fn's signature
    # (without the two leading arguments) when checking a call.
    del run.__wrapped__
    return run


class _Starts:
    """A tiny async actor: attempts report here when they begin running."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    async def wait(self, token: str) -> None:
        event = self._events.setdefault(token, asyncio.Event())
        try:
            await event.wait()
        finally:
            self._events.pop(token, None)

    async def started(self, token: str) -> None:
        self._events.setdefault(token, asyncio.Event()).set()


class _RayFuture(asyncio.Future[Any]):
    """An attempt's future: cancelling it stops the Ray task, then waits for it to end."""

    fanflow_started: asyncio.Future[None]
    _ray: Any = None
    _ref: Any = None
    _wait_ref: Any = None
    _stopping = False
    _msg: str | None = None
    _handles: tuple[asyncio.TimerHandle, ...] = ()

    def cancel(self, msg: Any | None = None) -> bool:
        if self.done():
            return False
        if self._ref is None:  # not submitted to Ray (yet): nothing runs
            self._forget_start()
            return super().cancel(msg)
        if not self._stopping:
            self._stopping = True
            self._msg = msg
            _cancel(self._ray, self._ref)
            loop = self.get_loop()
            self._handles = (
                loop.call_later(_RECANCEL_AFTER, self._recancel),
                loop.call_later(_CANCEL_WAIT, self._end),
            )
        return True

    def _recancel(self) -> None:
        if not self.done():
            _cancel(self._ray, self._ref)

    def _end(self) -> None:
        """The task is over (or took too long to say so): the attempt ends, cancelled."""
        for handle in self._handles:
            handle.cancel()
        self._forget_start()
        if not self.done():
            super().cancel(self._msg)

    def _forget_start(self) -> None:
        started = self.fanflow_started
        if not started.done():
            started.cancel()
            if self._wait_ref is not None:
                # The actor's wait for a start that will not come.
                _cancel(self._ray, self._wait_ref, force=False)


def _when_done(
    loop: asyncio.AbstractEventLoop,
    cfut: concurrent.futures.Future[Any],
    callback: Callable[[concurrent.futures.Future[Any]], None],
) -> None:
    """Call ``callback(cfut)`` on ``loop`` when ``cfut`` is done; never cancel ``cfut``.

    Cancelling the future Ray hands out makes Ray's own thread fail to set
    it (``InvalidStateError: CANCELLED``, over ``ray://``), and a loop that
    has ended refuses calls: both are Ray's or the past's business, not noise.
    """

    def relay(f: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(callback, f)

    cfut.add_done_callback(relay)


class Ray(Executor):
    """Run attempts as Ray remote tasks (``pip install 'fanflow[ray]'``).

    Args:
        address: an existing cluster (``"ray://host:10001"``, ``"host:6379"``,
            ``"auto"``); ``None`` starts a local one on first use (or uses the
            one this process already started with ``ray.init``).
        num_cpus, num_gpus, memory: the default resources of each attempt.
        resources: per-task overrides, ``{task name: {"num_gpus": 1, ...}}``
            (any ``.options()`` of a Ray task, e.g. ``max_retries``).
        connect_timeout: seconds to wait for ``ray.init`` (run in a thread,
            also bounded by the fan-out's deadline) before failing every
            waiting task with a ``ConnectionError`` naming the address.
        check_resources: fail a task up front (``ff.PermanentError`` naming
            the resource) when no live node of the cluster has what it asks
            for; turn off on an autoscaling cluster that adds such nodes.
        track_starts: have each attempt report when it starts running (an
            async actor call, about 2 ms per attempt on a small machine), so
            the per-task timeout excludes time in Ray's queue; ``False``
            counts the timeout from submission.
        init_options: passed to ``ray.init`` when fanflow starts Ray.

    Ray's own task retries are off (``max_retries=0``): a worker or node
    that dies under an attempt ends it with an ``ff.TransientError``, which
    ``ff.Retry`` retries. The per-task timeout counts from when the attempt
    starts running in a worker, not from its submission. The cluster is left
    running when a fan-out ends (it is the process's, not the fan-out's);
    call ``ray.shutdown()`` when you are done with it.

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
        connect_timeout: float = 60.0,
        check_resources: bool = True,
        track_starts: bool = True,
        **init_options: Any,
    ) -> None:
        self.address = address
        self.defaults = {
            k: v
            for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("memory", memory))
            if v is not None
        }
        self.resources = {name: dict(opts) for name, opts in (resources or {}).items()}
        self.connect_timeout = connect_timeout
        self.check_resources = check_resources
        self.track_starts = track_starts
        self.init_options = init_options
        self._lock = threading.Lock()
        self._connecting: concurrent.futures.Future[Any] | None = None
        self._remote: Any = None
        # ray.remote(fn) per plain function: the function is shipped to the
        # cluster once, and each attempt sends only its arguments.
        self._remotes: dict[Callable[..., Any], Any] = {}
        self._session: Any = None  # the Ray session the handles above belong to
        self._tracker: Any = None
        self._nodes: list[dict[str, float]] = []
        self._nodes_at = -_NODES_TTL

    def __repr__(self) -> str:
        return f"Ray(address={self.address!r})"

    def open(self, loop: asyncio.AbstractEventLoop, limit: float) -> _RaySession:
        """A session for one fan-out (Ray connects on the first attempt)."""
        return _RaySession(self, loop)

    # -- connecting -----------------------------------------------------
    def _where(self) -> str:
        return "a new local Ray cluster" if self.address is None else repr(self.address)

    def _import(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the Ray executor needs Ray: pip install 'fanflow[ray]'") from exc
        return ray

    def _ready(self) -> Any:
        """The ``ray`` module if this process is connected, with fanflow's handles set up."""
        ray = self._import()
        if not ray.is_initialized():
            return None
        session = _session_of(ray)
        if session != self._session:
            # A new Ray session (the user shut Ray down and started it again):
            # handles of the old one are useless.
            self._session = session
            self._remote = None
            self._remotes.clear()
            self._tracker = None
            self._nodes_at = -_NODES_TTL
        if self._remote is None:
            self._remote = ray.remote(max_retries=0)(_call)
        return ray

    def _connect(self) -> concurrent.futures.Future[Any]:
        """One ``ray.init`` at a time, in a daemon thread: it may block for minutes."""
        with self._lock:
            pending = self._connecting
            if pending is not None and not pending.done():
                return pending
            self._connecting = pending = concurrent.futures.Future()
        ray = self._import()
        address, options = self.address, self.init_options

        def connect() -> None:
            try:
                if not ray.is_initialized():
                    ray.init(address=address, **options)
            except BaseException as exc:  # handed to the waiting tasks
                pending.set_exception(exc)
                return
            pending.set_result(ray)
            # A local cluster's processes die with the thread that started
            # them (Ray sets PR_SET_PDEATHSIG, which follows the thread): this
            # thread stays until Ray is shut down.
            while ray.is_initialized():
                time.sleep(_PARK_POLL)

        threading.Thread(target=connect, name="fanflow-ray-connect", daemon=True).start()
        return pending

    # -- submitting -----------------------------------------------------
    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        timed: bool = True,
    ) -> asyncio.Future[Any]:
        """Start ``fn(*args, **kwargs)`` as a Ray task; cancelling the future stops it.

        The future carries ``fanflow_started``, done when the task begins
        running in a worker (the engine's timeout counts from then). Only
        a ``timed`` attempt (one with a timeout) pays for telling its start
        (a call to a small actor, about 2 ms); for the others it is done at once.

        Raises:
            ImportError: Ray is not installed.
        """
        out = _RayFuture(loop=loop)
        started: asyncio.Future[None] = loop.create_future()
        out.fanflow_started = started  # the engine's hook
        ray = self._ready()
        if ray is not None:
            self._launch(ray, out, name, fn, args, dict(kwargs), timed)
            return out
        pending = self._connect()
        where = self._where()
        limit = self.connect_timeout

        def give_up() -> None:
            out._forget_start()
            if not out.done():
                out.set_exception(
                    ConnectionError(f"could not connect to Ray at {where} within {limit:g} s")
                )

        timer = loop.call_later(limit, give_up)
        out.add_done_callback(lambda _: timer.cancel())  # e.g. cancelled at the deadline

        def connected(f: concurrent.futures.Future[Any]) -> None:
            timer.cancel()
            if out.done():
                return
            exc = f.exception()
            if exc is not None:
                out._forget_start()
                error = ConnectionError(f"could not connect to Ray at {where}: {exc}")
                error.__cause__ = exc
                out.set_exception(error)
                return
            try:
                ready = self._ready()
                if ready is None:
                    raise ConnectionError(f"Ray at {where} was shut down meanwhile")
                self._launch(ready, out, name, fn, args, dict(kwargs), timed)
            except Exception as error:  # the attempt's error
                out._forget_start()
                if not out.done():
                    out.set_exception(error)

        _when_done(loop, pending, connected)
        return out

    def _launch(
        self,
        ray: Any,
        out: _RayFuture,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timed: bool = True,
    ) -> None:
        loop = out.get_loop()
        started = out.fanflow_started
        options = {**self.defaults, **self.resources.get(name, {})}
        if self.check_resources:
            problem = self._unschedulable(ray, options)
            if problem is not None:
                started.cancel()
                out.set_exception(PermanentError(f"task {name!r} cannot be scheduled: {problem}"))
                return
        tracker = self._start_tracker(ray) if self.track_starts and timed else None
        token = uuid.uuid4().hex if tracker is not None else None
        if tracker is not None:
            out._wait_ref = tracker.wait.remote(token)
        if inspect.isfunction(fn):
            remote = self._remotes.get(fn)
            if remote is None:
                if len(self._remotes) >= _REMOTES_KEPT:
                    del self._remotes[next(iter(self._remotes))]
                remote = self._remotes[fn] = ray.remote(max_retries=0)(_as_remote_body(fn))
            if options:
                remote = remote.options(**options)
            ref = remote.remote(tracker, token, *args, **kwargs)
        else:
            remote = self._remote.options(**options) if options else self._remote
            ref = remote.remote(tracker, token, fn, args, kwargs)
        out._ray = ray
        out._ref = ref
        task_error = ray.exceptions.RayTaskError
        crashes = _crash_errors(ray)
        actor_died = ray.exceptions.RayActorError

        def settle(f: concurrent.futures.Future[Any]) -> None:
            if out.done():
                return
            if out._stopping:
                out._end()
                return
            out._forget_start()
            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
                return
            cause = getattr(exc, "cause", None)
            if isinstance(exc, task_error) and isinstance(cause, Exception):
                # The task's own exception, with Ray's report of the remote
                # traceback as its cause.
                cause.__cause__ = exc
                exc = cause
            elif isinstance(exc, crashes):
                # Ray's retries are off: fanflow's Retry decides.
                error = TransientError(f"task {name!r}: the Ray worker running it died: {exc}")
                error.__cause__ = exc
                exc = error
            out.set_exception(exc)

        def began(f: concurrent.futures.Future[Any]) -> None:
            if isinstance(f.exception(), actor_died):
                # Its actor died (its node, say): the next attempt makes another.
                # (A wait fanflow cancelled itself ends in TaskCancelledError.)
                self._tracker = None
                _trackers.pop(self._session, None)
            if not started.done():
                started.set_result(None)

        if out._wait_ref is not None:
            _when_done(loop, out._wait_ref.future(), began)
        else:
            started.set_result(None)
        _when_done(loop, ref.future(), settle)

    def _start_tracker(self, ray: Any) -> Any:
        """The actor attempts report their start to (``None`` if it cannot be made)."""
        if self._tracker is None:
            self._tracker = _shared_tracker(ray, self._session)
        return self._tracker

    # -- resources ------------------------------------------------------
    def _unschedulable(self, ray: Any, options: Mapping[str, Any]) -> str | None:
        """Why no live node can ever run a task with ``options`` (``None``: some can)."""
        if "scheduling_strategy" in options or "placement_group" in options:
            return None  # placed by the user's own rules
        wanted: dict[str, float] = {"CPU": float(options.get("num_cpus", 1) or 0)}
        for key, resource in (("num_gpus", "GPU"), ("memory", "memory")):
            if options.get(key):
                wanted[resource] = float(options[key])
        for resource, amount in (options.get("resources") or {}).items():
            wanted[str(resource)] = float(amount)
        wanted = {k: v for k, v in wanted.items() if v > 0}
        if not wanted:
            return None
        now = time.monotonic()
        if now - self._nodes_at > _NODES_TTL:
            try:
                self._nodes = [
                    {k: float(v) for k, v in node.get("Resources", {}).items()}
                    for node in ray.nodes()
                    if node.get("Alive")
                ]
            except Exception:  # no check rather than no task
                return None
            self._nodes_at = now
        nodes = self._nodes
        if not nodes or any(
            all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in nodes
        ):
            return None
        names = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
        for resource, amount in wanted.items():
            most = max(node.get(resource, 0.0) for node in nodes)
            if most < amount:
                return (
                    f"it asks for {names.get(resource, resource)}={amount:g} and no node of "
                    f"the Ray cluster has more than {most:g}"
                )
        return f"no node of the Ray cluster has all of {wanted} at once"


# One start-tracking actor per Ray session, shared by every Ray executor of
# this process: an actor is a worker process of its own, slow to start.
_trackers: dict[Any, Any] = {}


def _shared_tracker(ray: Any, session: Any) -> Any:
    tracker = _trackers.get(session)
    if tracker is None:
        with contextlib.suppress(Exception):
            tracker = _trackers[session] = (
                ray.remote(_Starts)
                .options(num_cpus=0, max_concurrency=1000, max_restarts=0)
                .remote()
            )
    return tracker


def _session_of(ray: Any) -> Any:
    with contextlib.suppress(Exception):
        return ray.get_runtime_context().get_job_id()
    return None


def _crash_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker, node or actor that died under a task."""
    names = (
        "WorkerCrashedError",
        "NodeDiedError",
        "LocalRayletDiedError",
        "OutOfMemoryError",
        "ObjectLostError",
        "RayActorError",
        "ActorUnavailableError",
    )
    found = (getattr(ray.exceptions, n, None) for n in names)
    return tuple(t for t in found if isinstance(t, type))


def _cancel(ray: Any, ref: Any, force: bool = True) -> None:
    # Never after Ray was shut down: ray.cancel would start a new Ray.
    with contextlib.suppress(Exception):
        if ray is not None and ray.is_initialized():
            ray.cancel(ref, force=force)


class _RaySession(ExecutorSession):
    __slots__ = ("_loop", "_ray")

    def __init__(self, ray: Ray, loop: asyncio.AbstractEventLoop) -> None:
        self._ray = ray
        self._loop = loop

    def submit(self, call: Call) -> asyncio.Future[Any]:
        return self._ray.submit(
            self._loop, call.name, call.fn, call.args, call.kwargs, timed=call.timed
        )
