"""The driver: a small loop over the engine's parts.

Design notes (why it is shaped this way):

* Attempts are plain asyncio tasks (coroutine functions) or executor futures
  with a done-callback; there is no wrapper coroutine per task, so the
  per-task overhead stays close to bare ``asyncio.gather``.
* Bookkeeping happens *in* those done-callbacks (the hot path: attempt done
  -> :meth:`Driver.settle` -> strategy -> stop): an attempt is settled, the
  strategy consulted and losers cancelled in the same loop iteration the
  attempt finished in, so a stop decision never waits for another task to be
  scheduled. The driver coroutine only wakes to deliver events and results,
  and to finish. An exception raised by user code called from a callback (a
  strategy, a key function) is stored and re-raised by the driver.
* Per-attempt timeouts and the deadline are ``loop.call_at`` timers that
  cancel the attempt; the driver then settles it as ``timeout``.
* Everything else is a part with one job: :class:`Admission` (queues,
  capacity, rate-limit reservations), :class:`HedgeController`,
  :class:`RetryTimers`, :class:`NeedsGraph`, a source of tasks and a sink of
  results (``_sources``). A task's state exists only from its first launch.
* :meth:`Driver.stream` is an async generator: ``as_completed`` and
  ``fan_map`` yield from it, ``fan_out`` drains it. Its ``finally`` cancels
  and awaits everything still running, so nothing outlives the fan-out —
  whether it returns, raises, or its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import math
import time
import warnings
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ..executors._base import Executor, ExecutorSession
from ._admission import Admission
from ._events import Event, FanOutFinished, TaskFinished, TaskHedged, TaskRetrying, TaskStarted
from ._graph import NeedsGraph
from ._hedging import HedgeController
from ._records import Attempt, TaskState
from ._result import AttemptRecord, FanInResult, TaskResult
from ._retrying import RetryTimers
from ._sources import AsyncSource, Collect, ListSource, Sink, Source
from ._task import Task, fill_refs
from ._threads import TaskExit
from ._types import Status
from ._usage import _ATTEMPT_KEY, _BUDGET, _LEDGER, _Ledger

__all__ = ["Driver", "Settings"]


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class Settings:
    """The validated options the driver runs with (see ``fanflow._options``)."""

    __slots__ = (
        "adaptive",
        "budget",
        "deadline",
        "executor",
        "hedge",
        "journal",
        "limit",
        "on_event",
        "rate_limit",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        *,
        limit: float,
        adaptive: Any,
        executor: Executor,
        timeout: float | None,
        deadline: float | None,
        retry: Any,
        hedge: Any,
        rate_limit: Any,
        on_event: Callable[[Event], Any] | None,
        budget: Any = None,
        journal: Any = None,
    ) -> None:
        self.limit = limit
        #: an ``ff.Budget`` (reserve before an attempt, settle after), or None
        self.budget = budget
        #: an open task journal (``_bulk._journal.Journal``), or None
        self.journal = journal
        self.adaptive = adaptive
        self.executor = executor
        self.timeout = timeout
        self.deadline = deadline
        self.retry = retry
        self.hedge = hedge
        self.rate_limit = rate_limit
        self.on_event = on_event


class Driver:
    """Runs one fan-out: create it with checked parts, then iterate :meth:`stream`."""

    def __init__(
        self,
        settings: Settings,
        source: Source,
        sink: Sink,
        strategy: Any,
        *,
        audit: Any = None,
        watch: Any = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.strategy = strategy
        self.audit = audit
        self._watch = watch
        self._streaming = not isinstance(source, ListSource)
        self._graph: NeedsGraph | None = None if self._streaming else source.graph  # type: ignore[union-attr]
        n = 0 if self._streaming else len(source.tasks)  # type: ignore[union-attr]
        self.results: list[TaskResult | None] = [None] * n
        self._unsettled = n
        self.result: FanInResult | None = None
        self.admission = Admission(
            settings.limit, settings.adaptive, settings.executor.workers, settings.rate_limit
        )
        self._events: list[Event] = []
        self._emitting = settings.on_event is not None
        self._wake: asyncio.Future[None] | None = None
        self.stopping = False
        self._stopped_by_strategy = False
        self._error: BaseException | None = None
        self.closed = False
        self._first_error: BaseException | None = None
        self._session: ExecutorSession | None = None
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._deadline_at = math.inf
        self._hedging: HedgeController | None = None
        self._retries: RetryTimers | None = None
        self._async_cache: dict[int, bool] = {}
        self._filling = False
        self._fill_soon = False
        self._taken = 0  # results the consumer has taken
        self._delivers = not isinstance(sink, Collect)
        self._plain = source if isinstance(source, ListSource) and source.graph is None else None
        # A durable fan-out (journal=): tasks are looked up before they start
        # (so each goes through _accept), and ok results wait in _held until
        # the loop turn's commit.
        self._journal = settings.journal
        self._commit_due = False
        self._held: list[tuple[TaskResult, Status, BaseException | None, float]] = []
        self._committing = False
        if self._journal is not None:
            self._plain = None
        self._last_fn: Any = None
        self._last_async = False
        timeout = settings.timeout
        self._timeout = None if timeout is not None and math.isinf(timeout) else timeout
        self._retry = settings.retry

    # -- helpers for the parts ------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """User code called from a callback raised: the driver re-raises it."""
        if self._error is None:
            self._error = exc

    def poke(self) -> None:
        """Wake the driver loop if it has something to do."""
        if (
            self.sink.streams
            or self._events
            or (self._unsettled == 0 and not self._source_open())
            or self._error is not None
        ):
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run engine bookkeeping from a loop callback; errors go to the driver."""
        if self.closed:
            return
        try:
            fn(*args)
        except BaseException as exc:
            self.fail(exc)
        self.poke()

    def _call_at(self, when: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self._loop.call_at(when, self._guard, fn, *args)

    def _source_open(self) -> bool:
        return self._streaming and self.source.open

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    async def _flush_events(self) -> None:
        handler = self.settings.on_event
        events, self._events = self._events, []
        if handler is None:
            return
        for event in events:
            out = handler(event)
            if inspect.isawaitable(out):
                await out

    # -- launching ------------------------------------------------------
    def _fill(self) -> None:
        if self.stopping or len(self.admission.running) >= self.admission.cap():
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
        admission = self.admission
        running = admission.running
        cap = admission.cap()
        urgent = admission.urgent
        source = self.source
        now = self._loop.time()
        # The common case, a list of tasks without needs, takes them by index.
        plain = self._plain
        tasks = plain.tasks if plain is not None else ()
        while len(running) < cap:
            if urgent:
                state, hedge = urgent.popleft()
                if state.result is not None:
                    continue
                if hedge and not any(a.fut is not None for a in state.live):
                    # The attempt it was to race has finished meanwhile.
                    if self._hedging is not None:
                        self._hedging.give_back()
                    continue
                self._launch(state, now, hedge)
                continue
            if plain is not None:
                i = plain._next
                if i >= len(tasks):
                    break
                plain._next = i + 1
                self._launch(self._make_state(tasks[i], i), now, False)
                continue
            item = source.take(self._taken)
            if item is None:
                break
            self._accept(item[0], item[1], now)

    def _accept(self, item: Task | TaskResult, index: int, now: float) -> None:
        if type(item) is TaskResult:  # replayed from a journal
            item.index = index
            self.sink.replay(item)
            return
        assert isinstance(item, Task)
        if self._journal is not None:
            replayed = self._journal.replay(item, index, self._value_of, self._offset + now)
            if replayed is not None:
                self._settled(replayed, Status.OK, None, now)
                return
            if self._journal.started(index):
                self._journal_due()
        if self._streaming:
            self._unsettled += 1
            if self._hedging is not None:
                self._hedging.add_tasks(1)
        self._launch(self._make_state(item, index), now, False)

    def _make_state(self, task: Task, index: int) -> TaskState:
        fn = task.fn
        if fn is self._last_fn:
            is_async = self._last_async
        else:
            fid = id(fn)
            is_async = self._async_cache.get(fid)  # type: ignore[assignment]
            if is_async is None:
                is_async = self._async_cache[fid] = _is_async_callable(fn)
            self._last_fn = fn
            self._last_async = is_async
        timeout = task.timeout
        if timeout is None:
            timeout = self._timeout
        elif math.isinf(timeout):
            timeout = None
        retry = task.retry if task.retry is not None else self._retry
        return TaskState(task, index, timeout, is_async, retry)

    def _launch(self, state: TaskState, now: float, hedge: bool) -> None:
        if self._budget is not None and state.task.tokens > 0:
            self._launch_held(state, now, hedge)
            return
        attempt = Attempt(self, state, hedge)
        if self._admit(attempt, state, now):
            self._start(attempt, now)

    def _admit(self, attempt: Attempt, state: TaskState, now: float) -> bool:
        """Count ``attempt`` as running; ``False``: the rate limit starts it later."""
        state.live.append(attempt)
        admission = self.admission
        admission.running.add(attempt)
        if admission.rate_limit is not None:
            start = admission.reserve(now, state.task.tokens)
            if start > now:
                attempt.reserve_handle = self._call_at(start, self._start_reserved, attempt)
                return False
        return True

    def _start_reserved(self, attempt: Attempt) -> None:
        attempt.reserve_handle = None
        if attempt.stop_status is None:
            if attempt.hold is None:
                self._base_ctx.run(self._start, attempt, self._loop.time())
            else:
                self._base_ctx.run(self._held_start, attempt, self._loop.time())
        elif attempt.hold is not None:
            self.release_hold(attempt)

    # -- spend budgets (budget=) ----------------------------------------
    def _launch_held(self, state: TaskState, now: float, hedge: bool) -> None:
        """:meth:`_launch` under a budget: reserve the attempt's estimate first."""
        hold = self._reserve(state, now, hedge)
        if hold is None:
            return  # refused: the task is settled, or the hedge is not launched
        attempt = Attempt(self, state, hedge)
        attempt.hold = hold
        # Its model requests find it by their ledger key: a thread's attempt
        # now, an asyncio task's future once it exists (_held_start).
        self._ledger.holds[attempt] = attempt
        if self._admit(attempt, state, now):
            self._held_start(attempt, now)

    def _reserve(self, state: TaskState, now: float, hedge: bool) -> Any:
        """Reserve an attempt's estimate; ``None`` if it does not fit (and then settle)."""
        budget = self._budget
        task = state.task
        # A prompt task says which model it asks and how its estimate splits;
        # anything else is priced as output of the dearest model (an upper bound).
        model, input_tokens, output_tokens = getattr(
            task.fn, "__fanflow_model__", (None, 0, task.tokens)
        )
        try:
            need = budget.cost(model, input_tokens, output_tokens, 1)
        except KeyError as exc:
            why: str | None = f"budget: {exc.args[0]}"
        else:
            why = budget.reserve(need)
            if why is None:
                return need
        if hedge:
            if self._hedging is not None:
                self._hedging.give_back()
        elif state.attempts == 0:
            self._finalize(state, Status.SKIPPED, None, None, f"never started: {why}", now, None)
        else:
            status, error = state.failure or (Status.ERROR, None)
            self._finalize(state, status, None, error, f"not retried ({why})", now, None)
        return None

    def _held_start(self, attempt: Attempt, now: float) -> None:
        """Start an attempt that holds a reservation, and let its requests find it."""
        self._start(attempt, now)
        if attempt.state.is_async and attempt.fut is not None:
            self._ledger.holds[attempt.fut] = attempt

    def release_hold(self, attempt: Attempt) -> None:
        """Give back what ``attempt`` still holds of the budget (nothing if a request took it)."""
        holds = self._ledger.holds
        holds.pop(attempt, None)
        if attempt.fut is not None:
            holds.pop(attempt.fut, None)
        hold, attempt.hold = attempt.hold, None
        if hold is not None:
            self._budget.release(hold)

    def _start(self, attempt: Attempt, now: float) -> None:
        loop = self._loop
        state = attempt.state
        state.attempts += 1
        attempt.number = state.attempts
        attempt.started = now
        if state.started is None:
            state.started = now
        task = state.task
        attempt.name = task.name
        attempt.fn = task.fn
        attempt.is_async = state.is_async
        attempt.timed = state.timeout is not None
        fut: asyncio.Future[Any]
        try:
            if task.has_refs:
                values = {name: self._value_of(name) for name in task.needs}
                attempt.args = fill_refs(task.args, values)
                attempt.kwargs = fill_refs(dict(task.kwargs), values)
            else:
                attempt.args = task.args
                attempt.kwargs = task.kwargs
            if not state.is_async:
                # A thread has no current task: its context names the attempt,
                # so that model calls it makes are booked to it.
                ctx = self._base_ctx.copy()
                ctx.run(_ATTEMPT_KEY.set, attempt)
                attempt.context = ctx
            elif self._watch is not None and self._watch.watches(task.name):
                attempt.fn = self._watched(task.name, task.fn)
            session = self._session
            if session is None:
                session = self._session = self.settings.executor.open(loop, self.admission.cap())
            fut = session.submit(attempt)
        except Exception as exc:  # e.g. a wrong call signature, a missing Ref key
            fut = loop.create_future()
            fut.set_exception(exc)
        attempt.fut = fut
        fut.add_done_callback(attempt)
        if attempt.timed:
            # A worker process or a Ray task may wait for a worker to boot or
            # for a slot in a queue: its future can say when the attempt
            # really starts running (``fanflow_started``), and the task's
            # timeout counts from then. The deadline still bounds the wait.
            started = getattr(fut, "fanflow_started", None)
            if started is None or started.done():
                attempt.timer = loop.call_at(now + state.timeout, attempt.on_timeout)  # type: ignore[operator]
            else:
                started.add_done_callback(functools.partial(self._arm_timeout, attempt))
        if self._hedging is not None:
            self._hedging.started(attempt)
        if self._emitting:
            at = self._offset + now
            self._emit(TaskStarted(at, task.name, attempt.number, attempt.hedge))
            if attempt.hedge:
                first = min(a.started for a in state.live if a.fut is not None)
                self._emit(TaskHedged(at, task.name, attempt.number, now - first))

    def _value_of(self, name: str) -> Any:
        assert self._graph is not None
        result = self.results[self._graph.index[name]]
        assert result is not None
        return result.value

    def _watched(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        watch = self._watch

        def run(*args: Any, **kwargs: Any) -> Any:
            return watch.wrap(name, fn(*args, **kwargs))

        return run

    def _arm_timeout(self, attempt: Attempt, started: asyncio.Future[None]) -> None:
        """The attempt began running in its worker: its timeout starts now."""
        timeout = attempt.state.timeout
        if attempt.fut is None or attempt.fut.done() or timeout is None:
            return  # settled (or being cancelled) meanwhile
        if attempt.stop_status is None and attempt.timer is None:
            attempt.timer = self._loop.call_at(self._loop.time() + timeout, attempt.on_timeout)

    def _hedge(self, attempt: Attempt) -> None:
        """The hedge controller picked ``attempt``: race a duplicate against it."""
        if self.stopping:
            return
        self.admission.urgent.append((attempt.state, True))
        self._fill()

    def _retry_due(self, state: TaskState) -> None:
        if not self.stopping and state.result is None:
            self.admission.urgent.append((state, False))
            self._fill()

    # -- settling (the hot path) ----------------------------------------
    def settle(self, attempt: Attempt) -> None:
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
                    if inspect.iscoroutine(value) and attempt.context is not None:
                        nxt: asyncio.Future[Any] = self._loop.create_task(
                            value, context=attempt.context
                        )
                    else:
                        nxt = asyncio.ensure_future(value)
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
        self.admission.running.discard(attempt)
        live = state.live
        if len(live) == 1:
            live.clear()
        else:
            live.remove(attempt)
        if self._hedging is not None:
            self._hedging.ended(attempt, state.result is not None)
        if attempt.timer is not None or attempt.hedge_timer is not None:
            attempt.cancel_timers()
        # attempt -> its task -> the task's context -> attempt is a reference
        # cycle: break it, so that a finished attempt is freed at once rather
        # than piling up for the cyclic garbage collector.
        attempt.context = None
        attempt.fut = None
        if self._ledger.used:
            wasted = status is Status.CANCELLED or status is Status.TIMEOUT
            self._ledger.settle(fut if state.is_async else attempt, wasted)
        if self._budget is not None:
            # Its requests were charged as they ended (and corrected just
            # above); what the attempt itself still holds goes back.
            state.failure = (status, error)
            holds = self._ledger.holds
            if holds:
                holds.pop(fut, None)
                holds.pop(attempt, None)
            if attempt.hold is not None:
                self._budget.release(attempt.hold)
                attempt.hold = None
        if state.result is not None:
            return  # lost a race, or stopped after its task was settled
        stopped = attempt.stop_status is not None
        if not stopped:
            if self.admission.feedback_needed:
                self.admission.feedback(attempt, status, error, end)
            if status is Status.OK and self._hedging is not None:
                self._hedging.succeeded(end - attempt.started)
        if status is Status.OK or stopped:
            self._finalize(state, status, value, error, reason, end, attempt)
        elif live:
            self._record(state, attempt, status, error, end)  # the other attempt decides
        elif status is Status.CANCELLED:
            self._finalize(state, status, value, error, reason, end, attempt)
        else:
            self._record(state, attempt, status, error, end)
            if not self._schedule_retry(state, status, error, end):
                self._finalize(state, status, value, error, reason, end, None)
        if not self._fill_soon and (self.admission.urgent or self.source.pending()):
            # One refill per loop turn, for every slot freed in it.
            self._fill_soon = True
            self._loop.call_soon(self._guard, self._refill)

    def _attempt_record(
        self, attempt: Attempt, status: Status, error: BaseException | None, end: float
    ) -> AttemptRecord:
        offset = self._offset
        return AttemptRecord(
            attempt.number,
            offset + attempt.started,
            offset + end,
            status,
            attempt.hedge,
            None if error is None else f"{type(error).__name__}: {error}",
        )

    def _record(
        self,
        state: TaskState,
        attempt: Attempt,
        status: Status,
        error: BaseException | None,
        end: float,
    ) -> None:
        if state.history is None:
            state.history = []
        state.history.append(self._attempt_record(attempt, status, error, end))

    def _refill(self) -> None:
        self._fill_soon = False
        self._fill()

    def _schedule_retry(
        self, state: TaskState, status: Status, error: BaseException | None, end: float
    ) -> bool:
        if state.retry is None or self.stopping:
            return False
        retries = self._retries
        if retries is None:
            retries = self._retries = RetryTimers(self._call_at, self._retry_due)
        delay = retries.schedule(state, status, error, end, self._deadline_at)
        if delay is None:
            return False
        if self._emitting:
            assert error is not None
            self._emit(
                TaskRetrying(self._offset + end, state.task.name, state.attempts, delay, error)
            )
        return True

    def _finalize(
        self,
        state: TaskState,
        status: Status,
        value: Any,
        error: BaseException | None,
        reason: str | None,
        end: float,
        last: Attempt | None,
    ) -> None:
        offset = self._offset
        history = state.history
        records: tuple[AttemptRecord, ...] | None
        if history is None and not state.live:
            # The common case: nothing raced it, nothing before it.
            if last is None:
                records = ()
            elif last.number == 1 and not last.hedge:
                records = None  # one attempt: TaskResult derives its record on demand
            else:
                records = (self._attempt_record(last, status, error, end),)
        else:
            if history is None:
                history = state.history = []
            if last is not None:
                history.append(self._attempt_record(last, status, error, end))
            for other in state.live:
                # Attempts still running lose the race: cancel them. Their
                # records are written now; their callbacks find the task settled.
                if other.stop_status is None:
                    other.stop_status = Status.CANCELLED
                    other.stop_reason = "another attempt of this task finished first"
                other.cancel_timers()
                if other.fut is not None:
                    other.fut.cancel(msg="fanflow: lost the race to another attempt")
                    history.append(
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
                    self.admission.running.discard(other)  # a reservation that never started
            records = tuple(history)
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
            last is not None and last.hedge and status is Status.OK,
            records,
            state.index,
        )
        state.result = result
        self._settled(result, status, error, end)

    def _skip(self, index: int, task: Task, why: str, end: float) -> None:
        """Settle a task that never started."""
        self._settled(
            TaskResult(
                task.name,
                Status.SKIPPED,
                None,
                None,
                0,
                None,
                self._offset + end,
                None,
                why,
                False,
                (),
                index,
            ),
            Status.SKIPPED,
            None,
            end,
        )

    def _settled(
        self, result: TaskResult, status: Status, error: BaseException | None, end: float
    ) -> None:
        if self._journal is not None and not result.replayed and not self._committing:
            # A model call's start record goes in the same transaction.
            due = result.index is not None and self._journal.ended(result.index)
            if status is Status.OK:
                # Durable: nothing sees an ok result before its record is
                # committed — one transaction for all that ended in this turn.
                if not self._held:
                    self._loop.call_soon(self._guard, self._commit)
                self._held.append((result, status, error, end))
                return
            if due:
                self._journal_due()
        if not self._streaming:
            self.results[result.index] = result  # type: ignore[index]
        self._unsettled -= 1
        if error is not None and self._first_error is None and status is not Status.CANCELLED:
            self._first_error = error
        if self._delivers:
            self.sink.deliver(result)
        if self._emitting:
            self._emit(TaskFinished(self._offset + end, result))
        graph = self._graph
        if graph is not None and graph.has_dependents(result.name):
            graph.settle(result.name, status, self._release, self._doom)
        if (
            (status is Status.OK or status is Status.ERROR or status is Status.TIMEOUT)
            and not self._stopped_by_strategy
            and self.strategy.observe(result)
            and not self.stopping
        ):
            self._stopped_by_strategy = True
            self._stop(
                Status.CANCELLED, f"{self.strategy.name} finished before this task did", None
            )

    def _journal_due(self) -> None:
        """Starts or ends of model calls wait: commit them this loop turn."""
        if not self._held and not self._commit_due:
            self._commit_due = True
            self._loop.call_soon(self._guard, self._commit)

    def _commit(self) -> None:
        """Commit the held ok results, then let everything see them."""
        held, self._held = self._held, []
        self._commit_due = False
        journal = self._journal
        if not held:
            if journal is not None and journal.pending() and not journal.journal.closed:
                journal.commit([])
            return
        rows = []
        unstorable: BaseException | None = None
        for result, _, _, _ in held:
            try:
                rows.append(journal.row(result))
            except Exception as exc:  # a value that cannot be stored
                unstorable = unstorable or exc
        journal.commit(rows)
        if unstorable is not None:
            raise unstorable
        self._committing = True
        try:
            for result, status, error, end in held:
                self._settled(result, status, error, end)
        finally:
            self._committing = False

    def _release(self, name: str) -> None:
        if self.stopping:
            return
        assert isinstance(self.source, ListSource)
        self.source.release(name)
        if not self._fill_soon:
            self._fill_soon = True
            self._loop.call_soon(self._guard, self._refill)

    def _doom(self, name: str, why: str) -> None:
        assert self._graph is not None
        index = self._graph.index[name]
        task = self.source.tasks[index]  # type: ignore[union-attr]
        self._skip(index, task, why, self._loop.time())

    def _stop(self, status: Status, reason: str, error: BaseException | None) -> None:
        """End the fan-out early: cancel running attempts, settle everything else."""
        self.stopping = True
        if self._hedging is not None:
            self._hedging.close()
        unstarted = self.source.unstarted()
        leftovers: list[TaskState] = []
        for attempt in list(self.admission.running):
            if attempt.stop_status is not None or attempt.timed_out:
                continue
            attempt.stop_status = status
            attempt.stop_reason = reason
            attempt.stop_error = error
            if attempt.fut is not None:
                attempt.fut.cancel(msg=f"fanflow: {reason}")
            else:  # waiting on the rate limit: it never starts
                attempt.cancel_timers()
                self.admission.running.discard(attempt)
                attempt.state.live.remove(attempt)
                leftovers.append(attempt.state)
        waiting = self._retries.cancel_all() if self._retries is not None else []
        urgent = [state for state, _ in self.admission.urgent]
        self.admission.urgent.clear()
        end = self._loop.time()
        why = "the deadline was reached" if status is Status.TIMEOUT else reason
        tasks = self.source.tasks if not self._streaming else ()  # type: ignore[union-attr]
        for index in unstarted:
            self._skip(index, tasks[index], f"never started: {why}", end)
        for state in [*waiting, *urgent, *leftovers]:
            if state.result is not None or state.live:
                continue
            if state.attempts == 0:
                self._finalize(
                    state, Status.SKIPPED, None, None, f"never started: {why}", end, None
                )
            else:
                self._finalize(
                    state, status, None, error, f"{reason} (between attempts)", end, None
                )

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        if self.stopping:
            return
        deadline = self.settings.deadline or 0.0
        self._stop(
            Status.TIMEOUT,
            f"the deadline of {deadline:g} s was reached",
            TimeoutError(f"fan-out deadline of {deadline:g} s reached"),
        )

    # -- the driver loop ------------------------------------------------
    async def stream(self) -> AsyncGenerator[TaskResult, None]:
        """Yield every result the sink lets out, as settled; then set :attr:`result`."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        settings = self.settings
        # Inside an attempt of an enclosing fan-out, spending is booked to it.
        parent_key = _ATTEMPT_KEY.get() or asyncio.current_task()
        self._ledger = _Ledger(_LEDGER.get(), parent_key)
        if self._journal is not None and self._journal.lost:
            self._ledger.book_lost(self._journal.lost)
        self._base_ctx = contextvars.copy_context()
        self._base_ctx.run(_LEDGER.set, self._ledger)
        # The spend budget: this fan-out's own, else the one in force where
        # it runs (an enclosing fan-out's), shared by every model call inside.
        self._budget: Any = settings.budget if settings.budget is not None else _BUDGET.get()
        if self._budget is not None:
            self._ledger.budget = self._budget
            self._base_ctx.run(_BUDGET.set, self._budget)
        self._t0 = loop.time()
        # Timestamps are taken on the loop's monotonic clock and reported as
        # wall-clock time: wall = loop time + offset.
        self._offset = time.time() - self._t0
        if settings.hedge is not None:
            self._hedging = HedgeController(
                settings.hedge, len(self.results), loop, self._call_at, self._hedge
            )
        if settings.deadline is not None:
            self._deadline_at = self._t0 + settings.deadline
            self._deadline_handle = self._call_at(self._deadline_at, self._on_deadline)
        sink = self.sink
        out = sink.out
        source = self.source
        try:
            self._fill()
            while True:
                if self._error is not None:
                    raise self._error
                if self._events:
                    await self._flush_events()
                    continue
                if out:
                    self._taken += 1
                    yield out.popleft()
                    if self._streaming and source.open and not out:
                        self._fill()  # the consumer caught up: take more input
                    continue
                if (
                    type(source) is AsyncSource
                    and not self.stopping
                    and len(self.admission.running) < self.admission.cap()
                    and source.room(self._taken)
                ):
                    item = await source.pull()
                    if item is not None and not self.stopping:
                        self._base_ctx.run(self._accept, item[0], item[1], loop.time())
                    continue
                if self._unsettled == 0 and not self._source_open() and sink.drained():
                    break
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
            if not self._streaming:
                self.result = self._conclude()
                if self._hedging is not None:
                    self._hedging.warn_if_never_armed(stacklevel=4)
                if self._watch is not None and self.audit is not None and self.audit.mutations:
                    from ._exceptions import HiddenDependencyWarning

                    warnings.warn(str(self.audit), HiddenDependencyWarning, stacklevel=2)
                if self._emitting:
                    self._emit(FanOutFinished(time.time(), self.result))
                    await self._flush_events()
        finally:
            await self._shutdown()

    def _conclude(self) -> FanInResult:
        results = self.results
        assert all(r is not None for r in results)
        final: list[TaskResult] = results  # type: ignore[assignment]
        verdict = self.strategy.finish(final)
        tasks = self.source.tasks  # type: ignore[union-attr]
        weights = {t.name: t.weight for t in tasks if t.weight != 1.0}
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
            _weights=weights,
            _first_error=self._first_error,
        )

    async def _shutdown(self) -> None:
        """Cancel and await whatever still runs; release timers and workers."""
        self.closed = True
        try:
            if self._held:
                self._flush_held()
            self.sink.close(self._error is not None)
        finally:
            await self._stop_everything()
            journal = self._journal
            if journal is not None and journal.pending() and not journal.journal.closed:
                # The calls stopped just now were booked (as wasted) by this
                # run: forget their start records, or a rerun books them again.
                with contextlib.suppress(Exception):
                    journal.commit([])

    def _flush_held(self) -> None:
        """Leaving early (an error, a cancellation): record the ok results still held.

        They finished, and a rerun must not pay for them again.
        """
        held, self._held = self._held, []
        rows = []
        for result, _, _, _ in held:
            try:
                rows.append(self._journal.row(result))
            except Exception:  # unstorable: already the fan-out's error
                continue
        self._journal.commit(rows)

    async def _stop_everything(self) -> None:
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        if self._hedging is not None:
            self._hedging.close()
        if self._retries is not None:
            self._retries.cancel_all()
        futures = []
        for attempt in self.admission.running:
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
        if self._session is not None:
            self._session.close()
            self._session = None
        if self.result is None and hasattr(self, "_ledger"):
            self._ledger.close()  # cancelled: still book the spending upstream
        if getattr(self, "_budget", None) is not None:
            # Attempts cancelled at the end are not settled: give back their holds.
            for attempt in self.admission.running:
                if attempt.hold is not None:
                    self._budget.release(attempt.hold)
                    attempt.hold = None
            self._ledger.holds.clear()
        if recancelled:
            raise asyncio.CancelledError
