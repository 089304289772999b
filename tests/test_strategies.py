"""AllOrNothing, BestEffort, FirstN and the public Strategy protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fanflow as ff

from .conftest import Spy, run_isolated, ticks


async def after(delay: float, value: Any = None, fail: bool = False) -> Any:
    await asyncio.sleep(delay)
    if fail:
        raise RuntimeError(f"fail@{delay}")
    return value


@pytest.mark.looptime
async def test_first_n_values_in_completion_order_and_losers_cancelled(spy: Spy) -> None:
    delays = [7, 3, 9, 1, 5, 8]
    tasks = [ff.Task(f"t{i}", spy.wrap(f"t{i}", delay=d, value=d)) for i, d in enumerate(delays)]
    result = await ff.fan_out(tasks, strategy=ff.FirstN(3))
    assert result.value == [1, 3, 5]
    assert sorted(spy.finished) == ["t1", "t3", "t4"]
    assert {r.name for r in result.cancelled} == {"t0", "t2", "t5"}
    assert result.confidence == 1.0 and result.elapsed == pytest.approx(5)


@pytest.mark.looptime
async def test_first_n_fails_as_soon_as_n_is_out_of_reach() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = [
        ff.Task("a", after, args=(1, None, True)),
        ff.Task("b", after, args=(2, None, True)),
        ff.Task("c", after, args=(100, "c")),
        ff.Task("d", after, args=(100, "d")),
    ]
    with pytest.raises(ff.StrategyFailed) as info:
        await ff.fan_out(tasks, strategy=ff.FirstN(3))
    assert loop.time() - start == pytest.approx(2)  # not 100: no waiting for the hopeless
    result = info.value.result
    assert [r.status.value for r in result.results] == ["error", "error", "cancelled", "cancelled"]
    assert result.confidence == 0.0
    assert "0 of the 3" in result.reason


@pytest.mark.looptime
async def test_best_effort_default_keeps_going_and_succeeds_on_one() -> None:
    tasks = [ff.Task("a", after, args=(1, None, True)), ff.Task("b", after, args=(3, "b"))]
    result = await ff.fan_out(tasks)
    assert result.ok and result.strategy == "BestEffort(min_success=1)"
    assert result.value == {"b": "b"} and result.confidence == pytest.approx(0.5)


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("budget", "stops_after"),
    [pytest.param(1, 1, id="count"), pytest.param(0.25, 3, id="fraction")],
)
async def test_best_effort_error_budget_stops_and_fails(budget: float, stops_after: int) -> None:
    # 12 tasks; task i fails at time i for i < 5, the rest succeed at t=50.
    # A budget of 1 is exceeded by the 2nd failure (t=1); 0.25 of 12 tasks
    # is 3, exceeded by the 4th failure (t=3).
    tasks = [ff.Task(f"t{i}", after, args=(i, i, True) if i < 5 else (50, i)) for i in range(12)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ff.StrategyFailed, match="error budget") as info:
        await ff.fan_out(tasks, strategy=ff.BestEffort(max_failures=budget))
    assert loop.time() - start == pytest.approx(stops_after)
    assert len(info.value.result.failed) == stops_after + 1
    assert len(info.value.result.cancelled) == 12 - stops_after - 1


@pytest.mark.looptime
async def test_best_effort_min_success_unreachable_stops_early() -> None:
    tasks = [ff.Task(f"t{i}", after, args=(i + 1, i, i < 2)) for i in range(3)]
    with pytest.raises(ff.StrategyFailed, match="min_success=2"):
        await ff.fan_out(tasks, strategy=ff.BestEffort(min_success=2))


@pytest.mark.parametrize(
    ("make", "exc"),
    [
        pytest.param(lambda: ff.FirstN(0), ValueError, id="first-n-zero"),
        pytest.param(lambda: ff.FirstN(2.0), TypeError, id="first-n-float"),
        pytest.param(lambda: ff.BestEffort(min_success=-1), ValueError, id="neg-min"),
        pytest.param(lambda: ff.BestEffort(max_failures=1.5), ValueError, id="fraction>1"),
        pytest.param(lambda: ff.BestEffort(max_failures=-1), ValueError, id="neg-budget"),
        pytest.param(lambda: ff.BestEffort(max_failures="2"), TypeError, id="str-budget"),
        pytest.param(lambda: ff.BestEffort(min_sucess=2), TypeError, id="misspelt-option"),
    ],
)
def test_strategy_options_are_checked(make: Any, exc: type) -> None:
    with pytest.raises(exc):
        make()


class Majority(ff.Strategy):
    """A custom strategy: stop once more than half the tasks succeeded."""

    def start(self, tasks: Sequence[ff.Task]) -> None:
        super().start(tasks)
        self.good = 0

    def observe(self, result: ff.TaskResult) -> bool:
        self.good += result.ok
        return self.good * 2 > len(self.tasks)

    def finish(self, results: Sequence[ff.TaskResult]) -> ff.Verdict:
        ok = self.good * 2 > len(self.tasks)
        return ff.Verdict(ok, sorted(r.value for r in results if r.ok), 1.0 if ok else 0.0, "m")


async def test_custom_strategy_protocol_and_shared_instance() -> None:
    strategy = Majority()
    tasks = [ff.Task(f"t{i}", ticks, args=(i * 2, i)) for i in range(5)]
    # The same strategy object serves two concurrent fan-outs.
    first, second = await asyncio.gather(
        ff.fan_out(tasks, strategy=strategy), ff.fan_out(tasks, strategy=strategy)
    )
    for result in (first, second):
        assert result.ok and result.value == [0, 1, 2]
        assert result.strategy == "Majority()" and result.reason == "m"
        assert [r.status.value for r in result.results] == ["ok"] * 3 + ["cancelled"] * 2


outcomes = st.lists(
    st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=12
)  # (ticks until done, fails?)


@settings(max_examples=60, deadline=None)
@given(
    outcomes,
    st.sampled_from(["all", "best", "first"]),
    st.one_of(st.none(), st.integers(1, 4)),
)
def test_every_task_gets_exactly_one_result(
    plan: list[tuple[int, bool]], kind: str, limit: int | None
) -> None:
    tasks = [ff.Task(f"t{i}", ticks, args=(n, i, fail)) for i, (n, fail) in enumerate(plan)]
    strategy: ff.Strategy = {
        "all": ff.AllOrNothing(),
        "best": ff.BestEffort(min_success=0),
        "first": ff.FirstN(max(1, len(plan) // 2)),
    }[kind]

    async def main() -> ff.FanInResult:
        result = await ff.fan_out(
            tasks, strategy=strategy, max_concurrency=limit, raise_on_failure=False
        )
        assert not (asyncio.all_tasks() - {asyncio.current_task()})
        return result

    result = run_isolated(main())
    assert [r.name for r in result.results] == [t.name for t in tasks]
    by_status = sum(
        len(x) for x in (result.succeeded, result.failed, result.cancelled, result.skipped)
    )
    assert by_status == len(tasks)
    for r, (_, fail) in zip(result.results, plan, strict=True):
        if r.status == "ok":
            assert not fail and r.value == int(r.name[1:])
        if r.status == "error":
            assert fail
        if r.status == "skipped":
            assert r.attempts == 0 and r.started_at is None
    if kind == "first" and result.ok:
        assert len(result.value) == max(1, len(plan) // 2)
