"""The engine: statuses, ordering, timeouts, deadline, backpressure, cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import sys
import threading
import time
from typing import Any

import pytest

import fanflow as ff

from .conftest import Spy, ticks


async def value_after(delay: float, value: Any) -> Any:
    await asyncio.sleep(delay)
    return value


async def fail_after(delay: float, message: str = "boom") -> Any:
    await asyncio.sleep(delay)
    raise ValueError(message)


def others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


@pytest.mark.looptime
async def test_one_result_per_task_in_submission_order_with_statuses_and_timings() -> None:
    tasks = [
        ff.Task("slow-ok", value_after, args=(3, "s")),
        ff.Task("err", fail_after, args=(1,)),
        ff.Task("hang", value_after, args=(100, "never"), timeout=2),
        ff.Task("fast-ok", value_after, args=(0.5, "f")),
    ]
    result = await ff.fan_out(tasks)
    assert [r.name for r in result.results] == ["slow-ok", "err", "hang", "fast-ok"]
    by = {r.name: r for r in result.results}
    assert by["slow-ok"].status == ff.Status.OK and by["slow-ok"].value == "s"
    assert by["slow-ok"].duration == pytest.approx(3)
    assert by["err"].status == "error" and isinstance(by["err"].error, ValueError)
    assert by["err"].duration == pytest.approx(1)
    assert by["hang"].status == "timeout" and isinstance(by["hang"].error, TimeoutError)
    assert "timed out after 2 s" in str(by["hang"].error)
    assert by["hang"].duration == pytest.approx(2)
    assert by["fast-ok"].ok and by["fast-ok"].attempts == 1
    for r in result.results:
        assert r.started_at is not None and r.finished_at is not None
        assert r.finished_at - r.started_at == pytest.approx(r.duration)
        assert len(r.history) == 1 and r.history[0].status == r.status
    assert result.ok and result.value == {"slow-ok": "s", "fast-ok": "f"}
    assert result.coverage == pytest.approx(0.5)
    assert result.elapsed == pytest.approx(3)
    assert [r.name for r in result.failed] == ["err", "hang"]
    assert [r.name for r in result.timed_out] == ["hang"]


@pytest.mark.looptime
async def test_cancelled_and_skipped_when_strategy_finishes_early(spy: Spy) -> None:
    tasks = [ff.Task(f"t{i}", spy.wrap(f"t{i}", delay=[1, 5, 9, 9, 9][i])) for i in range(5)]
    result = await ff.fan_out(tasks, strategy=ff.FirstN(1), max_concurrency=2)
    statuses = [r.status.value for r in result.results]
    assert statuses == ["ok", "cancelled", "skipped", "skipped", "skipped"]
    assert result["t1"].reason and "FirstN(1)" in result["t1"].reason
    assert result["t2"].started_at is None and result["t2"].duration is None
    assert result["t2"].attempts == 0
    assert spy.finished == ["t0"]  # the cancelled task never ran past its await
    assert result.stopped_early


@pytest.mark.looptime
async def test_all_or_nothing_first_failure_cancels_rest_and_raises(spy: Spy) -> None:
    tasks = [
        ff.Task("a", spy.wrap("a", delay=5)),
        ff.Task("b", fail_after, args=(1, "b broke")),
        ff.Task("c", spy.wrap("c", delay=5)),
        ff.Task("d", spy.wrap("d", delay=0.5)),
    ]
    with pytest.raises(ff.StrategyFailed) as info:
        await ff.fan_out(tasks, strategy=ff.AllOrNothing())
    exc = info.value
    assert isinstance(exc, ff.FanOutError)
    assert isinstance(exc.__cause__, ValueError) and str(exc.__cause__) == "b broke"
    assert "'b'" in str(exc) and "b broke" in str(exc)
    statuses = {r.name: r.status.value for r in exc.result.results}
    assert statuses == {"a": "cancelled", "b": "error", "c": "cancelled", "d": "ok"}
    assert spy.finished == ["d"]
    assert exc.result.value == {"d": "d"} and not exc.result.ok
    assert exc.result.elapsed == pytest.approx(1)
    assert not others()


@pytest.mark.looptime
async def test_all_or_nothing_ok_returns_every_value_in_submission_order() -> None:
    tasks = [ff.Task(n, value_after, args=(d, n)) for n, d in [("x", 3), ("y", 1), ("z", 2)]]
    result = await ff.fan_out(tasks, strategy=ff.AllOrNothing())
    assert list(result.value.items()) == [("x", "x"), ("y", "y"), ("z", "z")]
    assert result.confidence == 1.0 and result.confidence_level == "high"


@pytest.mark.looptime
async def test_raise_on_failure_false_returns_the_failed_result() -> None:
    result = await ff.fan_out(
        [ff.Task("a", fail_after, args=(1,))], strategy=ff.AllOrNothing(), raise_on_failure=False
    )
    assert not result.ok and result.failed[0].name == "a"
    with pytest.raises(ff.StrategyFailed) as info:
        result.raise_for_status()
    assert info.value.result is result and isinstance(info.value.__cause__, ValueError)


@pytest.mark.looptime
async def test_deadline_returns_partial_result_for_best_effort() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = [ff.Task(f"t{i}", value_after, args=(d, i)) for i, d in enumerate([1, 2, 50, 60, 70])]
    result = await ff.fan_out(tasks, deadline=10, max_concurrency=2)
    assert loop.time() - start == pytest.approx(10)
    statuses = [r.status.value for r in result.results]
    assert statuses == ["ok", "ok", "timeout", "timeout", "skipped"]
    assert "deadline of 10 s" in str(result["t2"].error)
    assert result["t4"].reason == "never started: the deadline was reached"
    assert result.ok and result.value == {"t0": 0, "t1": 1}
    assert result.coverage == pytest.approx(0.4)


@pytest.mark.looptime
async def test_deadline_failure_with_first_n() -> None:
    tasks = [ff.Task(f"t{i}", value_after, args=(d, i)) for i, d in enumerate([1, 50, 60])]
    with pytest.raises(ff.StrategyFailed) as info:
        await ff.fan_out(tasks, strategy=ff.FirstN(2), deadline=5)
    assert [r.status.value for r in info.value.result.results] == ["ok", "timeout", "timeout"]
    assert info.value.result.value == [0]


@pytest.mark.looptime
async def test_task_timeout_overrides_fan_out_default_and_inf_disables() -> None:
    tasks = [
        ff.Task("default", value_after, args=(5, 1)),
        ff.Task("own", value_after, args=(5, 2), timeout=10),
        ff.Task("none", value_after, args=(30, 3), timeout=float("inf")),
    ]
    result = await ff.fan_out(tasks, timeout=3)
    assert [r.status.value for r in result.results] == ["timeout", "ok", "ok"]
    assert result["default"].duration == pytest.approx(3)


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_max_concurrency_is_never_exceeded(spy: Spy, limit: int) -> None:
    tasks = [ff.Task(f"t{i}", spy.wrap(f"t{i}", delay=0.001 * (i % 3))) for i in range(25)]
    result = await ff.fan_out(tasks, max_concurrency=limit)
    assert spy.peak == limit
    assert len(result.succeeded) == 25


async def test_cancelling_the_caller_cancels_every_task(spy: Spy) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(100)
        spy.finished.append("slow")

    tasks = [ff.Task(f"t{i}", slow) for i in range(10)]
    runner = asyncio.create_task(ff.fan_out(tasks))
    await started.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert not others()
    assert spy.finished == []


async def test_no_task_is_left_after_return_or_raise() -> None:
    tasks = [ff.Task(f"t{i}", ticks, args=(i * 3, i, i == 4)) for i in range(10)]
    await ff.fan_out(tasks, strategy=ff.FirstN(3))
    assert not others()
    with pytest.raises(ff.StrategyFailed):
        await ff.fan_out(tasks, strategy=ff.AllOrNothing())
    assert not others()


async def test_plain_callables_run_off_the_event_loop() -> None:
    # The blocking task waits for an event that only the coroutine task sets:
    # if the blocking task ran on the loop, the coroutine could never run.
    ready = threading.Event()

    def blocking() -> bool:
        return ready.wait(timeout=10)

    async def setter() -> str:
        await asyncio.sleep(0.01)
        ready.set()
        return "set"

    result = await ff.fan_out([ff.Task("block", blocking), ff.Task("set", setter)])
    assert result.value == {"block": True, "set": "set"}


async def test_sync_callable_returning_a_coroutine_is_awaited() -> None:
    result = await ff.fan_out([ff.Task("lam", lambda: value_after(0, 42))])
    assert result.value == {"lam": 42}


async def test_context_variables_reach_thread_tasks() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    result = await ff.fan_out([ff.Task("read", var.get)])
    assert result.value == {"read": "caller"}


async def test_sync_task_timeout_discards_the_thread_result() -> None:
    release = threading.Event()

    def stuck() -> str:
        release.wait(timeout=5)
        return "late"

    try:
        result = await ff.fan_out([ff.Task("stuck", stuck, timeout=0.05)], raise_on_failure=False)
    finally:
        release.set()
    assert result["stuck"].status == "timeout" and result["stuck"].value is None


@pytest.mark.looptime
async def test_events_arrive_in_order() -> None:
    seen: list[tuple[str, str]] = []

    def handler(event: ff.Event) -> None:
        if isinstance(event, ff.TaskStarted):
            seen.append(("started", event.name))
        elif isinstance(event, ff.TaskFinished):
            seen.append(("finished", event.result.name))
        elif isinstance(event, ff.FanOutFinished):
            seen.append(("done", str(event.result.ok)))

    tasks = [ff.Task("a", value_after, args=(2, 1)), ff.Task("b", value_after, args=(1, 2))]
    await ff.fan_out(tasks, on_event=handler)
    assert seen == [
        ("started", "a"),
        ("started", "b"),
        ("finished", "b"),
        ("finished", "a"),
        ("done", "True"),
    ]


async def test_async_event_handler_is_awaited() -> None:
    seen: list[str] = []

    async def handler(event: ff.Event) -> None:
        await asyncio.sleep(0)
        seen.append(type(event).__name__)

    await ff.fan_out([ff.Task("a", ticks, args=(1,))], on_event=handler)
    assert seen == ["TaskStarted", "TaskFinished", "FanOutFinished"]


async def test_event_handler_error_propagates_and_leaves_nothing_running() -> None:
    def handler(event: ff.Event) -> None:
        if isinstance(event, ff.TaskFinished):
            raise RuntimeError("handler bug")

    tasks = [ff.Task("fast", ticks, args=(1,)), ff.Task("slow", asyncio.sleep, args=(100,))]
    with pytest.raises(RuntimeError, match="handler bug"):
        await ff.fan_out(tasks, on_event=handler)
    assert not others()


async def test_as_completed_yields_in_completion_order() -> None:
    tasks = [ff.Task(f"t{n}", ticks, args=(n, n)) for n in (5, 1, 3)]
    stream = ff.as_completed(tasks)
    names = [r.name async for r in stream]
    assert names == ["t1", "t3", "t5"]
    assert stream.result is not None and stream.result.ok


async def test_as_completed_break_cancels_the_rest(spy: Spy) -> None:
    tasks = [ff.Task(f"t{i}", spy.wrap(f"t{i}", delay=0.001 if i == 0 else 100)) for i in range(4)]
    async with ff.as_completed(tasks) as results:
        async for r in results:
            assert r.name == "t0"
            break
    assert not others()
    assert spy.finished == ["t0"]


async def test_as_completed_break_without_context_manager_still_cancels(spy: Spy) -> None:
    tasks = [ff.Task(f"t{i}", spy.wrap(f"t{i}", delay=0.001 if i == 0 else 100)) for i in range(4)]
    async for _ in ff.as_completed(tasks):
        break
    for _ in range(5):  # the discarded iterator is closed on a later loop turn
        await asyncio.sleep(0)
    assert not others()
    assert spy.finished == ["t0"]


async def test_as_completed_yields_cancelled_and_raises_strategy_failure() -> None:
    tasks = [ff.Task("bad", ticks, args=(1, None, True)), ff.Task("slow", asyncio.sleep, args=(9,))]
    seen = []

    async def consume() -> None:
        async for r in ff.as_completed(tasks, strategy=ff.AllOrNothing()):
            seen.append((r.name, r.status.value))

    with pytest.raises(ff.StrategyFailed) as info:
        await consume()
    assert seen == [("bad", "error"), ("slow", "cancelled")]
    assert isinstance(info.value.__cause__, RuntimeError)


def test_run_is_the_sync_twin() -> None:
    # In a thread of its own: ff.run's asyncio.run must not reset the loop
    # pytest-asyncio keeps for this (main) thread.
    tasks = [ff.Task("a", time.sleep, args=(0,)), ff.Task("b", ticks, args=(1, "b"))]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(ff.run, tasks).result()
    assert result.value == {"a": None, "b": "b"}


async def test_run_inside_a_running_loop_explains_itself() -> None:
    with pytest.raises(RuntimeError, match=r"await ff\.fan_out"):
        ff.run([ff.Task("a", ticks, args=(1,))])


class TestBadArguments:
    """Misuse is refused with a message naming the value, before any task starts."""

    @pytest.fixture
    def started(self) -> list[str]:
        return []

    def tasks(self, started: list[str], n: int = 2) -> list[ff.Task]:
        async def record(name: str) -> None:
            started.append(name)

        return [ff.Task(f"t{i}", record, args=(f"t{i}",)) for i in range(n)]

    @pytest.mark.parametrize(
        ("options", "exc", "text"),
        [
            pytest.param({"timeout": -1}, ValueError, "-1", id="negative-timeout"),
            pytest.param({"deadline": -0.5}, ValueError, "-0.5", id="negative-deadline"),
            pytest.param({"max_concurrency": 0}, ValueError, "0", id="zero-concurrency"),
            pytest.param({"max_concurrency": 2.5}, TypeError, "2.5", id="float-concurrency"),
            pytest.param({"strategy": ff.FirstN(3)}, ValueError, "n=3", id="first-n-too-big"),
            pytest.param(
                {"strategy": ff.BestEffort(min_success=5)}, ValueError, "5", id="min-success"
            ),
            pytest.param({"strategy": ff.FirstN}, TypeError, "HINT", id="strategy-class"),
            pytest.param({"strategy": "vote"}, TypeError, "'vote'", id="strategy-string"),
            pytest.param({"executor": "gpu"}, ValueError, "'gpu'", id="unknown-executor"),
            pytest.param({"on_event": 5}, TypeError, "5", id="handler-not-callable"),
            pytest.param({"strategy_": 1}, TypeError, "strategy_", id="unknown-option"),
        ],
    )
    async def test_rejected_before_start(
        self, started: list[str], options: dict[str, Any], exc: type, text: str
    ) -> None:
        with pytest.raises(exc) as info:
            await ff.fan_out(self.tasks(started), **options)
        assert text in str(info.value)
        await asyncio.sleep(0)
        assert started == []

    async def test_duplicate_names(self, started: list[str]) -> None:
        tasks = self.tasks(started) + self.tasks(started)
        with pytest.raises(ValueError, match="duplicate task name 't0'"):
            await ff.fan_out(tasks)
        assert started == []

    @pytest.mark.parametrize(
        "strategy",
        [ff.BestEffort(), ff.FirstN(1), ff.Vote()],
        ids=["best-effort", "first-n", "vote"],
    )
    async def test_empty_task_list_where_strategy_needs_tasks(self, strategy: ff.Strategy) -> None:
        with pytest.raises(ValueError, match="task"):
            await ff.fan_out([], strategy=strategy)

    async def test_empty_task_list_is_vacuously_ok_for_all_or_nothing(self) -> None:
        result = await ff.fan_out([], strategy=ff.AllOrNothing())
        assert result.ok and result.value == {} and result.results == []

    async def test_coroutine_in_task_list_gets_a_hint(self) -> None:
        with pytest.raises(TypeError, match=r"tasks\[0\].*HINT"):
            await ff.fan_out([ticks(1)])  # type: ignore[list-item]

    async def test_single_task_instead_of_list(self, started: list[str]) -> None:
        with pytest.raises(TypeError, match="pass \\[task\\]"):
            await ff.fan_out(self.tasks(started)[0])  # type: ignore[arg-type]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_bar_on_a_terminal_and_silence_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = [ff.Task(f"t{i}", ticks, args=(i, i, i == 2)) for i in range(3)]
    seen: list[str] = []
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    result = await ff.fan_out(
        tasks, progress=True, on_event=lambda e: seen.append(type(e).__name__)
    )
    assert "fanflow" in terminal.getvalue()  # the bar was drawn
    assert seen[-1] == "FanOutFinished" and len(result.results) == 3  # events still delivered
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    await ff.fan_out(tasks, progress=True)
    assert pipe.getvalue() == ""
