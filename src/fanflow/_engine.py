"""The fan-out engine: launch attempts, watch them finish, stop when told.

Design notes (why it is shaped this way):

* Attempts are plain asyncio tasks (coroutine functions) or executor futures
  (plain callables) with a done-callback; there is no wrapper coroutine per
  task, so the per-task overhead stays close to bare ``asyncio.gather``.
* Bookkeeping happens *in* those done-callbacks: an attempt is settled, the
  strategy consulted and losers cancelled in the same loop iteration the
  attempt finished in, so a stop decision never waits for another task to be
  scheduled. The driver coroutine only wakes to deliver events and results,
  and to finish. An exception raised by user code called from a callback (a
  strategy, a key function) is stored and re-raised by the driver.
* Per-attempt timeouts and the deadline are ``loop.call_at`` timers that
  cancel the attempt; the driver then settles it as ``timeout``.
* The driver is an async generator: :func:`as_completed` yields from it,
  :func:`fan_out` drains it. Its ``finally`` cancels and awaits everything
  still running, so nothing outlives the fan-out — whether it returns,
  raises, or its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import copy
import functools
import inspect
import math
import time
import warnings
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

from ._audit import AuditMode, HiddenDependencyWarning, MutationWatch, check_before_run
from ._events import Event, FanOutFinished, TaskFinished, TaskHedged, TaskRetrying, TaskStarted
from ._exceptions import RateLimited
from ._hedge import Hedge, _LatencyWindow
from ._limits import AdaptiveConcurrency, RateLimit
from ._result import AttemptRecord, FanInResult, TaskResult, _strategy_failed
from ._retry import Retry, server_wait
from ._strategies import BestEffort, Strategy
from ._task import Task, _check_timeout
from ._threads import TaskExit, WorkerThreads
from ._types import Status
from ._usage import _ATTEMPT_KEY, _LEDGER, _Ledger
from .executors import Process, Ray
from .executors._process import ProcessPool

__all__ = ["as_completed", "fan_out", "run"]

EventHandler = Callable[[Event], Any]

_DEFAULT_CONCURRENCY = 100
# Worker threads for plain callables are created on demand, up to the
# concurrency limit; this caps them when the limit is unbounded.
_MAX_THREADS = 256


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _call_in_context(ctx: contextvars.Context, fn: Callable[..., Any], args: Any, kw: Any) -> Any:
    return ctx.run(fn, *args, **kw)


class _Upstream:
    """Placeholder in a task's kwargs: replaced by ``{need: TaskResult}`` at launch."""

    def __repr__(self) -> str:
        return "UPSTREAM"


UPSTREAM = _Upstream()


def check_graph(names: Sequence[str], needs: Mapping[str, Sequence[str]]) -> None:
    """Refuse unknown names and cycles in a ``needs`` graph.

    Raises:
        ValueError: a task needs an unknown task, or the needs form a cycle
            (the message spells the cycle out: ``a -> b -> a``).
    """
    known = set(names)
    for name, deps in needs.items():
        if name not in known:
            raise ValueError(f"needs names an unknown task {name!r}")
        for dep in deps:
            if dep not in known:
                raise ValueError(f"task {name!r} needs {dep!r}, which is not a task")
            if dep == name:
                raise ValueError(f"task {name!r} needs itself")
    # Kahn's counting: a task is ready once all its distinct needs are; linear
    # in tasks + needs, and no recursion or per-step copies for a long chain
    # or a wide fan-in to blow up.
    unmet: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    for name, deps in needs.items():
        distinct = set(deps)
        if distinct:
            unmet[name] = len(distinct)
            for dep in distinct:
                dependents.setdefault(dep, []).append(name)
    ready = [name for name in known if name not in unmet]
    while ready:
        for dependent in dependents.get(ready.pop(), ()):
            unmet[dependent] -= 1
            if not unmet[dependent]:
                ready.append(dependent)
    left = {name for name, count in unmet.items() if count}
    if not left:
        return
    # Each task left over waits on a need also left over, so following those
    # needs from the first one (in task order) must come back round: a cycle.
    node = next(name for name in names if name in left)
    path: list[str] = []
    seen: dict[str, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(dep for dep in needs[node] if dep in left)
    cycle = [*path[seen[node] :], node]
    raise ValueError(f"the needs form a cycle: {' -> '.join(cycle)}")


class _TaskState:
    """The engine's mutable record of one task."""

    __slots__ = (
        "attempts",
        "hedge_used",
        "history",
        "index",
        "is_async",
        "live",
        "result",
        "retry",
        "retry_handle",
        "started",
        "task",
        "timeout",
    )

    def __init__(
        self, task: Task, index: int, timeout: float | None, is_async: bool, retry: Retry | None
    ) -> None:
        self.task = task
        self.index = index
        self.timeout = timeout
        self.is_async = is_async
        self.retry = retry
        self.attempts = 0
        self.started: float | None = None
        self.result: TaskResult | None = None
        self.history: list[AttemptRecord] = []
        self.live: list[_Attempt] = []
        self.retry_handle: asyncio.TimerHandle | None = None
        self.hedge_used = False


class _Attempt:
    """One attempt of a task: reserved (waiting on the rate limit) or running."""

    __slots__ = (
        "ctx",
        "driver",
        "fut",
        "hedge",
        "hedge_timer",
        "number",
        "reserve_handle",
        "started",
        "state",
        "stop_error",
        "stop_reason",
        "stop_status",
        "timed_out",
        "timer",
    )

    def __init__(self, driver: _Driver, state: _TaskState, hedge: bool) -> None:
        self.driver = driver
        self.state = state
        self.hedge = hedge
        self.number = 0
        self.started = 0.0
        self.fut: asyncio.Future[Any] | None = None
        self.ctx: contextvars.Context | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.hedge_timer: asyncio.TimerHandle | None = None
        self.reserve_handle: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.stop_status: Status | None = None
        self.stop_reason: str | None = None
        self.stop_error: BaseException | None = None

    def __call__(self, fut: asyncio.Future[Any]) -> None:
        # The attempt is its own done-callback (cheaper than a bound method).
        if fut is self.fut:  # else: a future this attempt has moved on from
            driver = self.driver
            driver._guard(driver._settle, self)

    def on_timeout(self) -> None:
        self.timer = None
        self.timed_out = True
        if self.fut is not None:
            self.fut.cancel(msg="fanflow: attempt timed out")

    def cancel_timers(self) -> None:
        for handle in (self.timer, self.hedge_timer, self.reserve_handle):
            if handle is not None:
                handle.cancel()
        self.timer = self.hedge_timer = self.reserve_handle = None


class _Options:
    """Validated fan-out options (shared by fan_out and as_completed)."""

    __slots__ = (
        "adaptive",
        "audit",
        "deadline",
        "hedge",
        "limit",
        "on_event",
        "process",
        "progress",
        "raise_on_failure",
        "rate_limit",
        "ray",
        "retry",
        "strategy",
        "timeout",
    )

    def __init__(
        self,
        *,
        strategy: Strategy | None,
        max_concurrency: int | AdaptiveConcurrency | None,
        timeout: float | None,
        deadline: float | None,
        retry: Retry | None,
        hedge: Hedge | None,
        rate_limit: RateLimit | None,
        executor: str | Process | Ray,
        on_event: EventHandler | None,
        raise_on_failure: bool,
        audit: AuditMode = "error",
        progress: bool = False,
    ) -> None:
        if strategy is None:
            strategy = BestEffort()
        elif isinstance(strategy, type) and issubclass(strategy, Strategy):
            raise TypeError(
                f"strategy must be a strategy object, not the class {strategy.__name__}. "
                f"HINT: call it, e.g. strategy=ff.{strategy.__name__}()"
            )
        elif not isinstance(strategy, Strategy):
            raise TypeError(
                "strategy must be an ff.Strategy such as ff.AllOrNothing(), ff.BestEffort(), "
                f"ff.FirstN(n) or ff.Vote(); got {strategy!r}"
            )
        self.adaptive: AdaptiveConcurrency | None = None
        limit: float
        if max_concurrency is None:
            limit = math.inf
        elif isinstance(max_concurrency, AdaptiveConcurrency):
            self.adaptive = max_concurrency
            limit = max_concurrency.limit
        elif isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(
                "max_concurrency must be an int, an ff.AdaptiveConcurrency or None; "
                f"got {max_concurrency!r}"
            )
        elif max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1; got {max_concurrency!r}")
        else:
            limit = max_concurrency
        for value, kind, what in (
            (retry, Retry, "retry must be an ff.Retry"),
            (hedge, Hedge, "hedge must be an ff.Hedge"),
            (rate_limit, RateLimit, "rate_limit must be an ff.RateLimit"),
        ):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{what} or None; got {value!r}")
        from .executors import Process, Ray

        self.process: Process | None = None
        self.ray: Ray | None = None
        if isinstance(executor, Ray):
            self.ray = executor
        elif executor == "process":
            self.process = Process()
        elif isinstance(executor, Process):
            self.process = executor
        elif executor != "async":
            raise ValueError(
                "executor must be 'async', 'process', ff.executors.Process(...) or "
                "ff.executors.Ray(...); "
                f"got {executor!r}"
            )
        if self.process is not None:
            limit = min(limit, self.process.workers)
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be callable; got {on_event!r}")
        self.strategy = strategy
        self.limit = limit
        self.timeout = _check_timeout(timeout, "timeout")
        self.deadline = _check_timeout(deadline, "deadline")
        self.retry = retry
        self.hedge = hedge
        self.rate_limit = rate_limit
        self.on_event = on_event
        self.raise_on_failure = bool(raise_on_failure)
        self.audit = audit
        self.progress = bool(progress)


def _check_tasks(tasks: Iterable[Task]) -> list[Task]:
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


class _Driver:
    """Runs one fan-out. Create it (which validates), then iterate :meth:`stream`."""

    def __init__(
        self,
        tasks: Iterable[Task],
        options: _Options,
        needs: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.tasks = _check_tasks(tasks)
        self.opts = options
        if options.progress:
            from ._progress import ProgressBar

            options.on_event = ProgressBar(len(self.tasks), options.on_event)
        if needs:
            check_graph([t.name for t in self.tasks], needs)
        strategy = copy.copy(options.strategy)
        strategy.start(self.tasks)
        self.strategy = strategy
        self.audit = check_before_run(self.tasks, options.audit, needs)
        self._watch: MutationWatch | None = None
        if self.audit is not None and options.audit == "strict":
            watch = MutationWatch(self.tasks, self.audit)
            self._watch = watch if watch.has_objects else None
        self._async_cache: dict[int, bool] = {}
        states = [self._make_state(t, i) for i, t in enumerate(self.tasks)]
        self.states: list[_TaskState] = states
        self._init_runtime(options, states)
        if needs:
            self._setup_graph(needs)

    def _make_state(self, task: Task, index: int) -> _TaskState:
        opts = self.opts
        fid = id(task.fn)
        is_async = self._async_cache.get(fid)
        if is_async is None:
            is_async = self._async_cache[fid] = _is_async_callable(task.fn)
        timeout = task.timeout if task.timeout is not None else opts.timeout
        if timeout is not None and math.isinf(timeout):
            timeout = None
        retry = task.retry if task.retry is not None else opts.retry
        return _TaskState(task, index, timeout, is_async, retry)

    def _init_runtime(self, options: _Options, states: list[_TaskState]) -> None:
        self.result: FanInResult | None = None
        self._pending: deque[_TaskState] = deque(states)
        # Retries whose backoff is over, and hedges: launched before new tasks.
        self._urgent: deque[tuple[_TaskState, bool]] = deque()
        self._running: set[_Attempt] = set()
        self._waiting: set[_TaskState] = set()
        self._out: deque[TaskResult] = deque()
        self._events: list[Event] = []
        self._wake: asyncio.Future[None] | None = None
        self._unsettled = len(states)
        self._stopping = False
        self._stopped_by_strategy = False
        self._error: BaseException | None = None
        self._closed = False
        self._first_error: BaseException | None = None
        self._pool: WorkerThreads | None = None
        self._procs: ProcessPool | None = None
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._deadline_at = math.inf
        self._collect = True
        self._adaptive = options.adaptive
        self._rate_limit = options.rate_limit
        self._hedge = options.hedge
        self._hedges_left = options.hedge.budget(len(states)) if options.hedge else 0
        self._hedge_budget = self._hedges_left
        self._latencies = _LatencyWindow()
        self._hedge_after: float | None = options.hedge.after if options.hedge else None
        # Percentile hedging. An attempt's rank needs "how many running
        # attempts started no later than it": the start times of running
        # attempts are kept in a sorted list (bisect, O(log n) to count; the
        # insert/delete memmove is C-speed over at most max_concurrency floats,
        # cheaper in practice than a Fenwick tree over bucketed times and
        # exact). Only the oldest hedgeable attempt can cross the percentile
        # first (a younger one has run less and has more older attempts
        # ahead of it), so one timer for that head replaces a timer per
        # attempt and a scan of the running ones per check.
        self._starts: list[float] = []
        self._in_starts: set[_Attempt] = set()
        self._candidates: deque[_Attempt] = deque()  # hedgeable originals, oldest first
        self._head_timer: asyncio.TimerHandle | None = None
        self._needs_feedback = bool(self._adaptive or self._rate_limit or self._hedge)
        self._filling = False
        self._fill_soon = False
        self._taken = 0  # results the consumer has taken
        # The needs graph (empty without one): tasks waiting for their needs.
        self._needs: dict[str, tuple[str, ...]] = {}
        self._unmet: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        self._blocked: dict[str, _TaskState] = {}
        # Frames of _release_dependents while one runs (see there).
        self._releasing: list[tuple[str, Status, float, Iterator[str]]] | None = None
        self._by_name: dict[str, _TaskState] = {}
        self._source_open = False  # a streaming source may still give tasks
        self._async_source: AsyncIterator[Any] | None = None

    def _setup_graph(self, needs: Mapping[str, Sequence[str]]) -> None:
        """Hold back tasks with needs until every need has succeeded."""
        by_name = {s.task.name: s for s in self.states}
        self._by_name = by_name
        self._needs = {name: tuple(deps) for name, deps in needs.items() if deps}
        self._unmet = {name: len(set(deps)) for name, deps in self._needs.items()}
        for name, deps in self._needs.items():
            for dep in set(deps):
                self._dependents.setdefault(dep, []).append(name)
        self._pending = deque(s for s in self.states if s.task.name not in self._needs)
        self._blocked = {name: by_name[name] for name in self._needs}

    # -- events ---------------------------------------------------------
    def _emit(self, event: Event) -> None:
        self._events.append(event)

    async def _flush_events(self) -> None:
        handler = self.opts.on_event
        events, self._events = self._events, []
        if handler is None:
            return
        for event in events:
            out = handler(event)
            if inspect.isawaitable(out):
                await out

    def _wake_driver(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run engine bookkeeping from a loop callback; errors go to the driver."""
        if self._closed:
            return
        try:
            fn(*args)
        except BaseException as exc:  # re-raised by the driver, after cleanup
            if self._error is None:
                self._error = exc
        if (
            self._collect
            or self._events
            or (self._unsettled == 0 and not self._source_open)
            or self._error is not None
        ):
            self._wake_driver()

    # -- launching ------------------------------------------------------
    def _cap(self) -> float:
        adaptive = self._adaptive
        if adaptive is None:
            return self.opts.limit
        if self.opts.process is not None:
            return min(adaptive.limit, self.opts.process.workers)
        return adaptive.limit

    def _fill(self) -> None:
        if len(self._running) >= self._cap() or self._stopping:
            return
        if self._filling:
            self._fill_now()
            return
        # Attempts are created inside the fan-out's context, so that each
        # attempt's task inherits (a copy of) the usage ledger: one context
        # switch per batch of launches, not one per attempt.
        self._filling = True
        try:
            self._base_ctx.run(self._fill_now)
        finally:
            self._filling = False

    def _fill_now(self) -> None:
        running = self._running
        cap = self._cap()
        pending = self._pending
        urgent = self._urgent
        now = self._loop.time()
        while len(running) < cap:
            if urgent:
                state, hedge = urgent.popleft()
                if state.result is not None:
                    continue
                if hedge and not any(a.fut is not None for a in state.live):
                    # The attempt it was to race has finished meanwhile.
                    self._hedges_left += 1
                    continue
                self._launch(state, now, hedge)
            elif pending:
                self._launch(pending.popleft(), now, False)
            elif not (self._source_open and self._pull(now)):
                break

    def _pull(self, now: float) -> bool:
        """Take the next task from a streaming source; ``False`` when none can be taken."""
        return False

    def _thread_pool(self) -> WorkerThreads:
        # Daemon threads that nothing joins: a hung plain function never keeps
        # the fan-out, Ctrl-C or the interpreter's exit waiting (see _threads).
        if self._pool is None:
            limit = self.opts.limit
            workers = _MAX_THREADS if math.isinf(limit) else int(min(limit, 4 * _MAX_THREADS))
            self._pool = WorkerThreads(workers)
        return self._pool

    def _launch(self, state: _TaskState, now: float, hedge: bool) -> None:
        attempt = _Attempt(self, state, hedge)
        state.live.append(attempt)
        self._running.add(attempt)
        limiter = self._rate_limit
        if limiter is not None:
            start = limiter.reserve(now, state.task.tokens)
            if start > now:
                attempt.reserve_handle = self._loop.call_at(
                    start, self._guard, self._start_reserved, attempt
                )
                return
        self._start(attempt, now)

    def _start_reserved(self, attempt: _Attempt) -> None:
        attempt.reserve_handle = None
        if attempt.stop_status is None:
            self._start(attempt, self._loop.time())

    def _start(self, attempt: _Attempt, now: float) -> None:
        loop = self._loop
        state = attempt.state
        state.attempts += 1
        attempt.number = state.attempts
        attempt.started = now
        if state.started is None:
            state.started = now
        task = state.task
        fut: asyncio.Future[Any]
        try:
            kwargs = task.kwargs
            if self._needs and state.task.name in self._needs:
                upstream = {d: self._by_name[d].result for d in self._needs[state.task.name]}
                kwargs = {k: upstream if v is UPSTREAM else v for k, v in kwargs.items()}
            if self.opts.ray is not None:
                fut = self.opts.ray.submit(
                    loop, task.name, task.fn, task.args, kwargs, timed=state.timeout is not None
                )
            elif self.opts.process is not None:
                if self._procs is None:
                    self._procs = ProcessPool(self.opts.process, loop)
                fut = self._procs.submit(task.name, task.fn, task.args, kwargs)
            elif state.is_async:
                coro = task.fn(*task.args, **kwargs) if kwargs else task.fn(*task.args)
                if self._watch is not None and self._watch.watches(task.name):
                    coro = self._watch.wrap(task.name, coro)
                # The task copies the current context: the fan-out's (see _fill).
                fut = self._new_task(coro)
            else:
                # A thread has no current task: its context names the attempt,
                # so that model calls it makes are booked to it.
                ctx = self._base_ctx.copy()
                ctx.run(_ATTEMPT_KEY.set, attempt)
                attempt.ctx = ctx
                fut = loop.run_in_executor(
                    self._thread_pool(), _call_in_context, ctx, task.fn, task.args, kwargs
                )
        except Exception as exc:  # e.g. a wrong call signature
            fut = loop.create_future()
            fut.set_exception(exc)
        attempt.fut = fut
        fut.add_done_callback(attempt)
        if state.timeout is not None:
            # A worker process or a Ray task may wait for a worker to boot or
            # for a slot in Ray's queue: its future can say when the attempt
            # really starts running (``fanflow_started``), and the task's
            # timeout counts from then. The deadline still bounds the wait.
            started = (
                getattr(fut, "fanflow_started", None)
                if self.opts.ray is not None or self.opts.process is not None
                else None
            )
            if started is None or started.done():
                attempt.timer = loop.call_at(now + state.timeout, attempt.on_timeout)
            else:
                started.add_done_callback(functools.partial(self._arm_timeout, attempt))
        if self._hedge is not None:
            self._arm_hedge(attempt)
        if self.opts.on_event is not None:
            at = self._offset + now
            self._emit(TaskStarted(at, task.name, attempt.number, attempt.hedge))
            if attempt.hedge:
                first = min(a.started for a in state.live if a.fut is not None)
                self._emit(TaskHedged(at, task.name, attempt.number, now - first))

    def _arm_timeout(self, attempt: _Attempt, started: asyncio.Future[None]) -> None:
        """The attempt began running in its worker: its timeout starts now."""
        timeout = attempt.state.timeout
        if attempt.fut is None or attempt.fut.done() or timeout is None:
            return  # settled (or being cancelled) meanwhile
        if attempt.stop_status is None and attempt.timer is None:
            attempt.timer = self._loop.call_at(self._loop.time() + timeout, attempt.on_timeout)

    # -- hedging --------------------------------------------------------
    def _hedgeable(self, attempt: _Attempt) -> bool:
        state = attempt.state
        return (
            not attempt.hedge
            and not state.hedge_used
            and state.task.idempotent
            and self._hedges_left > 0
            and attempt.hedge_timer is None
        )

    def _arm_hedge(self, attempt: _Attempt) -> None:
        """An attempt started: arm its fixed-delay hedge, or rank it for the percentile."""
        hedge = self._hedge
        assert hedge is not None
        if hedge.percentile is None:
            after = self._hedge_after
            if after is not None and self._hedgeable(attempt):
                attempt.hedge_timer = self._loop.call_at(
                    attempt.started + after, self._guard, self._hedge_due, attempt
                )
            return
        bisect.insort(self._starts, attempt.started)
        self._in_starts.add(attempt)
        if self._hedgeable(attempt):
            # Starts come from the loop's monotonic clock: appending keeps age order.
            self._candidates.append(attempt)
        self._schedule_head()

    def _hedge_due(self, attempt: _Attempt) -> None:
        """A fixed ``after`` ran out for ``attempt``: hedge it if it still may be."""
        attempt.hedge_timer = None
        state = attempt.state
        if self._stopping or state.result is not None or attempt not in self._running:
            return
        if self._hedgeable(attempt):
            self._hedge_now(attempt)
            self._fill()

    def _hedge_now(self, attempt: _Attempt) -> None:
        state = attempt.state
        state.hedge_used = True
        self._hedges_left -= 1
        self._urgent.append((state, True))

    def _forget_start(self, attempt: _Attempt) -> None:
        """A started attempt ended: it no longer ranks among the running ones."""
        self._in_starts.discard(attempt)
        starts = self._starts
        del starts[bisect.bisect_left(starts, attempt.started)]
        if not attempt.hedge and attempt.state.result is not None:
            # An original that lost to its hedge ran at least this long: keep
            # that lower bound, as for running attempts. Dropping it would
            # leave only the fast attempts in the window, pull the percentile
            # down and hedge ordinary tasks (measured: 6.6 % extra attempts
            # instead of 5 % on the bench's 2 %-straggler mix). A lost hedge
            # says nothing about the tail: it was cut short by the original.
            self._latencies.add(self._loop.time() - attempt.started)
        self._schedule_head()

    def _head(self) -> _Attempt | None:
        """The oldest running attempt that may still be hedged (drops stale ones)."""
        candidates = self._candidates
        while candidates:
            attempt = candidates[0]
            state = attempt.state
            # Not _hedgeable: the budget can come back (a hedge that never
            # started), and the candidates must still be here then.
            if (
                attempt in self._in_starts
                and not state.hedge_used
                and state.result is None
                and attempt.stop_status is None
            ):
                return attempt
            candidates.popleft()
        return None

    def _head_due_at(self, attempt: _Attempt) -> float | None:
        """When ``attempt`` will have run longer than the percentile of all attempts.

        Finished attempts count by their duration, running ones by their time
        so far: every running attempt started no later than ``attempt`` has
        run at least as long. None: more of those than the percentile allows,
        so only a finishing attempt can change the answer. Never before the
        percentile of the finished attempts alone, so that a head far older
        than the rest is not hedged the moment it starts. O(log n).
        """
        hedge = self._hedge
        assert hedge is not None and hedge.percentile is not None
        window = self._latencies
        finished = len(window)
        total = finished + len(self._starts)
        allowed = max(1, math.floor((100.0 - hedge.percentile) / 100.0 * total + 1e-9))
        room = allowed - bisect.bisect_right(self._starts, attempt.started)
        if room < 0:
            return None
        due = attempt.started + window.percentile(hedge.percentile)
        if room < finished:
            # At most `room` finished durations may be >= its time so far: it
            # must outlast the (room + 1)-th longest one (1 µs: strictly).
            due = max(due, attempt.started + window.value_at(finished - room - 1) + 1e-6)
        return due

    def _schedule_head(self) -> None:
        """(Re)arm the one percentile timer, only if the head's time moved earlier."""
        hedge = self._hedge
        assert hedge is not None
        due: float | None = None
        if self._hedges_left > 0 and len(self._latencies) >= hedge.min_samples:
            head = self._head()
            if head is not None:
                due = self._head_due_at(head)
        timer = self._head_timer
        if due is None:
            if timer is not None:
                timer.cancel()
                self._head_timer = None
            return
        if timer is not None:
            if timer.when() <= due:
                return  # it fires first and looks again: no re-arming storm
            timer.cancel()
        self._head_timer = self._loop.call_at(due, self._guard, self._head_fire)

    def _head_fire(self) -> None:
        self._head_timer = None
        if self._stopping:
            return
        now = self._loop.time()
        hedged = False
        while self._hedges_left > 0:
            head = self._head()
            if head is None:
                break
            due = self._head_due_at(head)
            if due is None or due > now:
                break
            self._hedge_now(head)
            hedged = True
        self._schedule_head()
        if hedged:
            self._fill()

    def _warn_hedge_never_armed(self) -> None:
        """Say so once when a percentile hedge had too few samples to ever fire.

        Without this, a fan-out with a hedge budget but fewer successes than
        ``min_samples`` silently never hedges, and its stragglers look as if
        hedging did not help.
        """
        hedge = self._hedge
        if hedge is None or hedge.percentile is None or self._hedge_budget == 0:
            return
        if len(self._latencies) < hedge.min_samples:
            warnings.warn(
                f"{hedge!r} never hedged: only {len(self._latencies)} attempts succeeded, "
                f"fewer than min_samples={hedge.min_samples}; lower min_samples or use "
                "seconds for after",
                RuntimeWarning,
                stacklevel=4,
            )

    def _record_latency(self, seconds: float) -> None:
        hedge = self._hedge
        assert hedge is not None
        if hedge.percentile is None:
            return
        self._latencies.add(seconds)
        self._schedule_head()

    # -- settling -------------------------------------------------------
    def _settle(self, attempt: _Attempt) -> None:
        """Turn a finished attempt into its task's result, a retry, or a wait."""
        end = self._loop.time()
        state = attempt.state
        fut = attempt.fut
        assert fut is not None
        value: Any = None
        error: BaseException | None = None
        reason: str | None = None
        if attempt.stop_status is not None:
            status = attempt.stop_status
            error = attempt.stop_error
            reason = attempt.stop_reason
        elif attempt.timed_out:
            status = Status.TIMEOUT
            error = TimeoutError(
                f"task {state.task.name!r} timed out after {state.timeout:g} s "
                f"(attempt {attempt.number})"
            )
        elif fut.cancelled():
            status = Status.CANCELLED
            reason = "the task's own code raised CancelledError"
        else:
            error = fut.exception()
            if error is None:
                status = Status.OK
                value = fut.result()
                if not state.is_async and inspect.isawaitable(value):
                    # A plain callable returned an awaitable (``lambda: fetch(x)``):
                    # run it on the loop as the rest of the same attempt.
                    nxt = (
                        asyncio.ensure_future(value)
                        if attempt.ctx is None
                        else (
                            self._new_task(value, context=attempt.ctx)
                            if inspect.iscoroutine(value)
                            else asyncio.ensure_future(value)
                        )
                    )
                    attempt.fut = nxt
                    nxt.add_done_callback(attempt)
                    return
            elif isinstance(error, Exception):
                status = Status.ERROR
            elif isinstance(error, SystemExit):
                # sys.exit() in task code (a worker process or a Ray task sends
                # it back as it was): that task's error, not the program's end.
                status = Status.ERROR
                error = TaskExit(error.code)
            else:
                raise error  # KeyboardInterrupt: never swallowed
        if self._watch is not None and not state.is_async:
            # Threads cannot be stepped: check what they hold when they end.
            self._watch.check(state.task.name)
        self._running.discard(attempt)
        state.live.remove(attempt)
        if attempt in self._in_starts:
            self._forget_start(attempt)
        if attempt.timer is not None or attempt.hedge_timer is not None:
            attempt.cancel_timers()
        # attempt -> its task -> the task's context -> attempt is a reference
        # cycle: break it, so that a finished attempt is freed at once rather
        # than piling up for the cyclic garbage collector.
        attempt.ctx = None
        attempt.fut = None
        if self._ledger.used:
            wasted = status is Status.CANCELLED or status is Status.TIMEOUT
            self._ledger.settle(fut if state.is_async else attempt, wasted)
        if state.result is not None:
            return  # lost a race, or stopped after its task was settled
        offset = self._offset
        state.history.append(
            AttemptRecord(
                attempt.number,
                offset + attempt.started,
                offset + end,
                status,
                attempt.hedge,
                None if error is None else f"{type(error).__name__}: {error}",
            )
        )
        if self._needs_feedback and attempt.stop_status is None:
            self._feedback(attempt, status, error, end)
        if status is Status.OK or attempt.stop_status is not None:
            self._finalize(state, status, value, error, reason, end, attempt.hedge)
        elif state.live:
            pass  # a hedge or the original still runs: its outcome decides
        elif status is Status.CANCELLED or not self._schedule_retry(state, status, error, end):
            self._finalize(state, status, value, error, reason, end, attempt.hedge)
        if (self._pending or self._urgent or self._source_open) and not self._fill_soon:
            # One refill per loop turn, for every slot freed in it.
            self._fill_soon = True
            self._loop.call_soon(self._guard, self._refill)

    def _refill(self) -> None:
        self._fill_soon = False
        self._fill()

    def _feedback(
        self, attempt: _Attempt, status: Status, error: BaseException | None, end: float
    ) -> None:
        """Tell the adaptive limit, the hedge percentile and the rate limit what happened."""
        adaptive = self._adaptive
        if status is Status.OK:
            if adaptive is not None:
                adaptive.on_success()
            if self._hedge is not None:
                self._record_latency(end - attempt.started)
        elif isinstance(error, RateLimited) or status is Status.TIMEOUT:
            if adaptive is not None:
                adaptive.on_overload(attempt.started, end)
            retry_after = server_wait(error)
            if self._rate_limit is not None and retry_after:
                # The pause is no longer than the task itself would wait.
                policy = attempt.state.retry
                if policy is not None:
                    retry_after = min(retry_after, policy.max_backoff)
                self._rate_limit.pause(end, retry_after)

    def _schedule_retry(
        self, state: _TaskState, status: Status, error: BaseException | None, end: float
    ) -> bool:
        policy = state.retry
        if policy is None or self._stopping or not state.task.idempotent:
            return False
        if not policy.should_retry(error, status is Status.TIMEOUT, state.attempts):
            return False
        delay = policy.delay(state.attempts, error)
        if end + delay >= self._deadline_at:
            return False  # the retry could not start before the deadline
        state.retry_handle = self._loop.call_at(end + delay, self._guard, self._retry_due, state)
        self._waiting.add(state)
        if self.opts.on_event is not None:
            assert error is not None
            self._emit(
                TaskRetrying(self._offset + end, state.task.name, state.attempts, delay, error)
            )
        return True

    def _retry_due(self, state: _TaskState) -> None:
        state.retry_handle = None
        self._waiting.discard(state)
        if not self._stopping and state.result is None:
            self._urgent.append((state, False))
            self._fill()

    def _finalize(
        self,
        state: _TaskState,
        status: Status,
        value: Any,
        error: BaseException | None,
        reason: str | None,
        end: float,
        hedged: bool = False,
    ) -> None:
        offset = self._offset
        for other in state.live:
            # Attempts still running lose the race: cancel them. Their records
            # are written now; their callbacks find the task settled.
            if other.stop_status is None:
                other.stop_status = Status.CANCELLED
                other.stop_reason = "another attempt of this task finished first"
            other.cancel_timers()
            if other.fut is not None:
                other.fut.cancel(msg="fanflow: lost the race to another attempt")
                state.history.append(
                    AttemptRecord(
                        other.number,
                        offset + other.started,
                        offset + end,
                        other.stop_status,
                        other.hedge,
                        None,
                    )
                )
            else:
                self._running.discard(other)  # a reservation that never started
        started = state.started
        result = TaskResult(
            state.task.name,
            status,
            value,
            error,
            state.attempts,
            None if started is None else offset + started,
            offset + end,
            None if started is None else end - started,
            reason,
            hedged and status is Status.OK,
            tuple(state.history),
            state.index,
        )
        state.result = result
        self._unsettled -= 1
        if error is not None and self._first_error is None and status is not Status.CANCELLED:
            self._first_error = error
        self._output(result)
        if self.opts.on_event is not None:
            self._emit(TaskFinished(offset + end, result))
        if self._dependents.get(state.task.name):
            self._release_dependents(state.task.name, status, end)
        if (
            (status is Status.OK or status is Status.ERROR or status is Status.TIMEOUT)
            and not self._stopped_by_strategy
            and self.strategy.observe(result)
            and not self._stopping
        ):
            self._stopped_by_strategy = True
            self._stop(
                Status.CANCELLED,
                f"{self.strategy.name} finished before this task did",
                None,
            )

    def _release_dependents(self, name: str, status: Status, end: float) -> None:
        """A task with dependents settled: start those now ready, skip those now hopeless."""
        # Skipping a dependent settles it, which releases its own dependents:
        # done by recursion, a failure at the head of a long chain would
        # overflow the stack. Nested calls push a frame here instead, and the
        # outermost call works the stack in the same (depth-first) order.
        frames = self._releasing
        frame = (name, status, end, iter(self._dependents[name]))
        if frames is not None:
            frames.append(frame)
            return
        frames = self._releasing = [frame]
        try:
            while frames:
                name, status, end, todo = frames[-1]
                dependent = next(todo, None)
                if dependent is None:
                    frames.pop()
                    if not self._stopping and not self._fill_soon:
                        self._fill_soon = True
                        self._loop.call_soon(self._guard, self._refill)
                    continue
                state = self._blocked.get(dependent)
                if state is None:
                    continue
                if status is Status.OK:
                    self._unmet[dependent] -= 1
                    if self._unmet[dependent] == 0 and not self._stopping:
                        del self._blocked[dependent]
                        self._pending.append(state)
                else:
                    del self._blocked[dependent]
                    why = f"never started: it needs {name!r}, which ended {status.value}"
                    self._finalize(state, Status.SKIPPED, None, None, why, end)
        finally:
            self._releasing = None

    def _output(self, result: TaskResult) -> None:
        if self._collect:
            self._out.append(result)

    def _stop(self, status: Status, reason: str, error: BaseException | None) -> None:
        """End the fan-out early: cancel running attempts, settle everything else."""
        self._stopping = True
        self._source_open = False
        leftovers = [
            *self._pending,
            *self._waiting,
            *(state for state, _ in self._urgent),
            *self._blocked.values(),
        ]
        self._blocked.clear()
        for attempt in list(self._running):
            if attempt.stop_status is not None or attempt.timed_out:
                continue
            attempt.stop_status = status
            attempt.stop_reason = reason
            attempt.stop_error = error
            if attempt.fut is not None:
                attempt.fut.cancel(msg=f"fanflow: {reason}")
            else:  # waiting on the rate limit: it never starts
                attempt.cancel_timers()
                self._running.discard(attempt)
                attempt.state.live.remove(attempt)
                leftovers.append(attempt.state)
        for state in self._waiting:
            if state.retry_handle is not None:
                state.retry_handle.cancel()
                state.retry_handle = None
        self._waiting.clear()
        self._urgent.clear()
        self._pending.clear()
        end = self._loop.time()
        for state in leftovers:
            if state.result is not None or state.live:
                continue
            if state.attempts == 0:
                why = "the deadline was reached" if status is Status.TIMEOUT else reason
                self._finalize(state, Status.SKIPPED, None, None, f"never started: {why}", end)
            else:
                self._finalize(state, status, None, error, f"{reason} (between attempts)", end)

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        if self._stopping:
            return
        deadline = self.opts.deadline or 0.0
        self._stop(
            Status.TIMEOUT,
            f"the deadline of {deadline:g} s was reached",
            TimeoutError(f"fan-out deadline of {deadline:g} s reached"),
        )

    # -- the driver loop ------------------------------------------------
    async def stream(self, collect: bool = True) -> AsyncGenerator[TaskResult, None]:
        """Yield every task's result as it is settled; then set :attr:`result`.

        With ``collect=False`` nothing is yielded (``fan_out`` only needs
        :attr:`result`), which saves a generator round trip per task.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._collect = collect
        # asyncio.Task(...) is what BaseEventLoop.create_task does, minus a
        # Python-level wrapper; loops with their own create_task or a task
        # factory keep theirs.
        if (
            type(loop).create_task is asyncio.BaseEventLoop.create_task
            and loop.get_task_factory() is None
        ):
            self._new_task: Callable[..., asyncio.Future[Any]] = functools.partial(
                asyncio.Task, loop=loop
            )
        else:
            self._new_task = loop.create_task
        # Inside an attempt of an enclosing fan-out, spending is booked to it.
        parent_key = _ATTEMPT_KEY.get() or asyncio.current_task()
        self._ledger = _Ledger(_LEDGER.get(), parent_key)
        self._base_ctx = contextvars.copy_context()
        self._base_ctx.run(_LEDGER.set, self._ledger)
        self._t0 = loop.time()
        # Timestamps are taken on the loop's monotonic clock and reported as
        # wall-clock time: wall = loop time + offset.
        self._offset = time.time() - self._t0
        if self.opts.deadline is not None:
            self._deadline_at = self._t0 + self.opts.deadline
            self._deadline_handle = loop.call_at(self._deadline_at, self._guard, self._on_deadline)
        try:
            self._fill()
            while True:
                if self._error is not None:
                    raise self._error
                if self._events:
                    await self._flush_events()
                    continue
                if self._out:
                    self._taken += 1
                    yield self._out.popleft()
                    if self._source_open and not self._out:
                        self._fill()  # the consumer caught up: take more input
                    continue
                if self._async_source is not None and self._room():
                    await self._pull_async()
                    continue
                if self._unsettled == 0 and not self._source_open and self._drained():
                    break
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
            self.result = self._conclude()
            if self.result is not None:
                self._warn_hedge_never_armed()
            if (
                self.result is not None
                and self._watch is not None
                and self.audit is not None
                and self.audit.mutations
            ):
                warnings.warn(str(self.audit), HiddenDependencyWarning, stacklevel=2)
            if self.opts.on_event is not None and self.result is not None:
                self._emit(FanOutFinished(time.time(), self.result))
                await self._flush_events()
        finally:
            await self._shutdown()

    def _drained(self) -> bool:
        """Whether every settled result has been handed to the output."""
        return True

    def _room(self) -> bool:
        """Whether a streaming source may be asked for another task now."""
        return False

    async def _pull_async(self) -> None:
        """Take the next task from an async streaming source."""

    def _conclude(self) -> FanInResult | None:
        results = [s.result for s in self.states]
        assert all(r is not None for r in results)
        final: list[TaskResult] = results  # type: ignore[assignment]
        verdict = self.strategy.finish(final)
        return FanInResult(
            value=verdict.value,
            results=final,
            ok=verdict.ok,
            strategy=self.strategy.name,
            confidence=verdict.confidence,
            elapsed=self._loop.time() - self._t0,
            reason=verdict.reason,
            stopped_early=self._stopped_by_strategy,
            votes=verdict.votes,
            audit=self.audit,
            usage=self._ledger.close(),
            _weights={s.task.name: s.task.weight for s in self.states},
            _first_error=self._first_error,
        )

    async def _shutdown(self) -> None:
        """Cancel and await whatever still runs; release timers and threads."""
        self._closed = True
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        for state in self._waiting:
            if state.retry_handle is not None:
                state.retry_handle.cancel()
        futures = []
        for attempt in self._running:
            attempt.cancel_timers()
            if attempt.fut is not None:
                attempt.fut.cancel(msg="fanflow: fan-out ended")
                futures.append(attempt.fut)
        recancelled = False
        while futures:
            try:
                await asyncio.wait(futures)
                break
            except asyncio.CancelledError:
                # Cancelled while cleaning up: still wait for the attempts
                # (they are cancelled already), then pass the cancellation on.
                recancelled = True
        if self._procs is not None:
            self._procs.close()  # idle workers exit; a busy one was killed above
            self._procs = None
        if self._pool is not None:
            # Queued jobs are dropped; a job already running in a thread cannot
            # be interrupted, and its result is discarded.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self.result is None and hasattr(self, "_ledger"):
            self._ledger.close()  # cancelled: still book the spending upstream
        if recancelled:
            raise asyncio.CancelledError


async def fan_out(
    tasks: Iterable[Task],
    *,
    strategy: Strategy | None = None,
    max_concurrency: int | AdaptiveConcurrency | None = _DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    deadline: float | None = None,
    retry: Retry | None = None,
    hedge: Hedge | None = None,
    rate_limit: RateLimit | None = None,
    executor: str | Process | Ray = "async",
    on_event: EventHandler | None = None,
    raise_on_failure: bool = True,
    audit: AuditMode = "error",
    progress: bool = False,
) -> FanInResult:
    """Run independent tasks concurrently and fan their results in.

    Args:
        tasks: the :class:`Task` objects to run; names must be unique.
        strategy: the completion policy and aggregate; default
            :class:`BestEffort` ``()`` (at least one success, failures kept).
        max_concurrency: the most attempts in flight at once, hedges
            included (backpressure); default 100; ``None`` for no limit; an
            :class:`AdaptiveConcurrency` to find the limit as it goes.
        timeout: default per-attempt timeout in seconds (a task's own
            ``timeout`` overrides it); ``None`` for none.
        deadline: seconds for the whole fan-out. At the deadline running
            tasks end as ``timeout``, unstarted ones as ``skipped``, and the
            strategy decides on what it has.
        retry: the default :class:`Retry` policy (a task's own overrides it);
            ``None``: no retries.
        hedge: a :class:`Hedge` policy: race a duplicate against slow attempts.
        rate_limit: a :class:`RateLimit`, which may be shared between fan-outs.
        executor: where attempts run: ``"async"`` (coroutines on the loop,
            plain callables in threads), ``"process"`` or
            ``ff.executors.Process(workers=...)`` (worker processes, killed
            on timeout or cancellation; concurrency is capped at the workers),
            or ``ff.executors.Ray(...)`` (Ray remote tasks, stopped with
            ``ray.cancel``).
        on_event: called (sync or async) with each :class:`Event` in order.
        progress: show a progress bar on stderr while it runs (on a
            terminal only).
        raise_on_failure: raise :class:`StrategyFailed` when the strategy is
            not satisfied (default); ``False`` returns the result with
            ``ok == False``.
        audit: the independence audit (see :func:`audit`): ``"error"``
            (default) raises :class:`HiddenDependencyError` before anything
            starts; ``"warn"`` warns and runs; ``"off"`` skips it;
            ``"strict"`` raises on resource conflicts and, instead of refusing
            shared mutable arguments, watches them and reports (in
            ``result.audit`` and a :class:`HiddenDependencyWarning`) which
            task changed which.

    Returns:
        The :class:`FanInResult`: one :class:`TaskResult` per task in
        submission order, the strategy's value, coverage and confidence.

    Raises:
        StrategyFailed: the strategy's success condition was not met; its
            ``.result`` holds every task's result.
        HiddenDependencyError: the audit found tasks that are not
            independent; nothing was started.
        ValueError, TypeError: bad arguments, before any task starts.

    When ``fan_out`` returns or raises (its caller cancelled included), no
    attempt it started is still running: losers are cancelled and awaited.
    A plain callable already running in a worker thread cannot be
    interrupted; it finishes in the background and its result is discarded.
    """
    driver = _Driver(
        tasks,
        _Options(
            strategy=strategy,
            max_concurrency=max_concurrency,
            timeout=timeout,
            deadline=deadline,
            retry=retry,
            hedge=hedge,
            rate_limit=rate_limit,
            executor=executor,
            on_event=on_event,
            raise_on_failure=raise_on_failure,
            audit=audit,
            progress=progress,
        ),
    )
    return await _drive(driver, raise_on_failure)


async def _drive(driver: _Driver, raise_on_failure: bool) -> FanInResult:
    stream = driver.stream(collect=False)
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


async def run_graph(
    tasks: Iterable[Task],
    needs: Mapping[str, Sequence[str]],
    *,
    raise_on_failure: bool = True,
    **options: Any,
) -> FanInResult:
    """:func:`fan_out` over tasks with dependencies (the workflow ``needs:``).

    A task starts as soon as everything it needs has succeeded, independent
    ones in parallel; a task whose need failed is skipped, with the reason.
    Tasks that need a value get it where their kwargs hold :data:`UPSTREAM`:
    ``{need: TaskResult}``. Other options are those of :func:`fan_out`.

    Raises:
        ValueError: an unknown task in ``needs``, or a cycle (spelled out).
        StrategyFailed, HiddenDependencyError: as for :func:`fan_out`.
    """
    defaults: dict[str, Any] = {
        "strategy": None,
        "max_concurrency": _DEFAULT_CONCURRENCY,
        "timeout": None,
        "deadline": None,
        "retry": None,
        "hedge": None,
        "rate_limit": None,
        "executor": "async",
        "on_event": None,
        "audit": "error",
        "progress": False,
    }
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    merged = {**defaults, **options}
    driver = _Driver(
        tasks, _Options(raise_on_failure=raise_on_failure, **merged), needs=dict(needs)
    )
    return await _drive(driver, raise_on_failure)


def run(
    tasks: Iterable[Task],
    *,
    strategy: Strategy | None = None,
    max_concurrency: int | AdaptiveConcurrency | None = _DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    deadline: float | None = None,
    retry: Retry | None = None,
    hedge: Hedge | None = None,
    rate_limit: RateLimit | None = None,
    executor: str | Process | Ray = "async",
    on_event: EventHandler | None = None,
    raise_on_failure: bool = True,
    audit: AuditMode = "error",
    progress: bool = False,
) -> FanInResult:
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
    return asyncio.run(
        fan_out(
            tasks,
            strategy=strategy,
            max_concurrency=max_concurrency,
            timeout=timeout,
            deadline=deadline,
            retry=retry,
            hedge=hedge,
            rate_limit=rate_limit,
            executor=executor,
            on_event=on_event,
            raise_on_failure=raise_on_failure,
            audit=audit,
            progress=progress,
        )
    )


class as_completed(AsyncIterator[TaskResult]):
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

    def __init__(
        self,
        tasks: Iterable[Task],
        *,
        strategy: Strategy | None = None,
        max_concurrency: int | AdaptiveConcurrency | None = _DEFAULT_CONCURRENCY,
        timeout: float | None = None,
        deadline: float | None = None,
        retry: Retry | None = None,
        hedge: Hedge | None = None,
        rate_limit: RateLimit | None = None,
        executor: str | Process | Ray = "async",
        on_event: EventHandler | None = None,
        raise_on_failure: bool = True,
        audit: AuditMode = "error",
        progress: bool = False,
    ) -> None:
        self._driver = _Driver(
            tasks,
            _Options(
                strategy=strategy,
                max_concurrency=max_concurrency,
                timeout=timeout,
                deadline=deadline,
                retry=retry,
                hedge=hedge,
                rate_limit=rate_limit,
                executor=executor,
                on_event=on_event,
                raise_on_failure=raise_on_failure,
                audit=audit,
                progress=progress,
            ),
        )
        self._raise = raise_on_failure
        self._stream = self._driver.stream()

    @property
    def result(self) -> FanInResult | None:
        """The :class:`FanInResult`, once every result has been yielded."""
        return self._driver.result

    def __aiter__(self) -> as_completed:
        return self

    async def __anext__(self) -> TaskResult:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            result = self._driver.result
            if result is None or result.ok or not self._raise:
                raise
        # Raised outside the except block, so its __cause__ is the task error.
        raise _strategy_failed(result)

    async def aclose(self) -> None:
        """Cancel and await every task still running."""
        await self._stream.aclose()

    async def __aenter__(self) -> as_completed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
