"""Spend budgets (``budget=``, SPEC §8.4): reserve before an attempt, charge as requests end."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

import fanflow as ff
from fanflow.llm import OpenAIChat, from_uri, prompt_task
from fanflow.testing import Latency, ScriptedLLM, SimConfig, Simulator

# ScriptedLLM arithmetic used below: a prompt of 396 characters is estimated
# at 99 tokens (prompt_task) and reported as 100 (4 characters of message
# framing); the default answer of 40 characters is 10 tokens. A prompt task
# with max_tokens=50 therefore reserves 149 tokens and spends 110.
PROMPT = "x" * 396
ANSWER = "y" * 40
RESERVED = 99 + 50
SPENT = 100 + 10


def scripted(delay: float = 0.0) -> ScriptedLLM:
    return ScriptedLLM("m", default=ANSWER, delay=delay)


def prompts(llm: Any, n: int, prefix: str = "t") -> list[ff.Task]:
    return [prompt_task(f"{prefix}{i}", llm, PROMPT, max_tokens=50) for i in range(n)]


def no_holds(budget: ff.Budget) -> bool:
    return budget.held == ff.Spend()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(latency=Latency(median=0.02, sigma=0.1))) as server:
        yield server


# -- attempt-level reservation ----------------------------------------------------


async def test_100_concurrent_prompt_tasks_cannot_overshoot(sim: Simulator) -> None:
    llm = from_uri(f"sim:m@{sim.url}")
    assert isinstance(llm, OpenAIChat)
    try:
        tasks = [
            prompt_task(f"q{i}", llm, f"question {i}: " + "words " * 40, max_tokens=64)
            for i in range(100)
        ]
        total = sum(t.tokens for t in tasks)
        budget = ff.Budget(tokens=int(total * 0.3))
        result = await ff.fan_out(
            tasks, budget=budget, max_concurrency=100, strategy=ff.BestEffort()
        )
    finally:
        await llm.aclose()
    ok = [r for r in result.results if r.ok]
    skipped = [r for r in result.results if r.status is ff.Status.SKIPPED]
    assert ok and skipped and len(ok) + len(skipped) == 100
    assert all("budget" in (r.reason or "") for r in skipped)
    # Every attempt reserved its estimate first: all 100 at once would spend ~100 %.
    assert budget.spent.tokens <= budget.tokens
    assert sim.stats["requests"] == len(ok)
    # The strategy decided on what fit; spending is what the ledger saw.
    assert result.ok and result.value == {r.name: r.value for r in ok}
    assert result.usage is not None
    assert budget.spent.tokens == result.usage.input_tokens + result.usage.output_tokens
    assert budget.spent.requests == len(ok)
    assert budget.remaining.tokens == budget.tokens - budget.spent.tokens
    assert math.isinf(budget.remaining.dollars) and no_holds(budget)


async def test_reservation_is_replaced_by_real_usage() -> None:
    # One at a time: each attempt holds 149 and then spends 110, so a fifth fits
    # only if the reservations were not given back (they are: 4 run).
    budget = ff.Budget(tokens=500)
    result = await ff.fan_out(
        prompts(scripted(), 10), budget=budget, max_concurrency=1, strategy=ff.BestEffort()
    )
    assert [r.status.value for r in result.results].count("ok") == 4
    assert budget.spent.tokens == 4 * SPENT
    skipped = result.results[4]
    assert skipped.status is ff.Status.SKIPPED and skipped.attempts == 0
    assert "budget" in (skipped.reason or "") and "149" in (skipped.reason or "")


async def test_concurrent_attempts_are_limited_by_their_reservations() -> None:
    budget = ff.Budget(tokens=500)
    result = await ff.fan_out(
        prompts(scripted(0.01), 10), budget=budget, max_concurrency=100, strategy=ff.BestEffort()
    )
    assert [r.ok for r in result.results].count(True) == 500 // RESERVED  # 3 held at once
    assert budget.spent.tokens == 3 * SPENT and no_holds(budget)


async def test_the_strategy_decides_on_what_fit_and_partial_results_are_kept() -> None:
    budget = ff.Budget(tokens=2 * RESERVED)
    result = await ff.fan_out(
        prompts(scripted(), 5),
        budget=budget,
        strategy=ff.AllOrNothing(),
        raise_on_failure=False,
    )
    assert not result.ok  # all or nothing: some never started
    assert [r.ok for r in result.results].count(True) == 2
    assert all(r.value == ANSWER for r in result.results if r.ok)


async def test_one_budget_shared_by_two_fan_outs() -> None:
    budget = ff.Budget(tokens=500)
    llm = scripted(0.01)
    first = await ff.fan_out(prompts(llm, 5), budget=budget, strategy=ff.BestEffort())
    second = await ff.fan_out(prompts(llm, 5, "u"), budget=budget, strategy=ff.BestEffort())
    assert [r.ok for r in first.results].count(True) == 3  # 3 x 149 held at once
    assert [r.ok for r in second.results].count(True) == 1  # 170 left: one more
    assert budget.spent.tokens == 4 * SPENT


async def test_nested_fan_out_inherits_the_budget_and_is_charged_once() -> None:
    budget = ff.Budget(tokens=500)
    llm = scripted()

    async def inner() -> int:
        done = await ff.fan_out(prompts(llm, 5), strategy=ff.BestEffort(), max_concurrency=1)
        return sum(r.ok for r in done.results)

    result = await ff.fan_out([ff.Task("outer", inner)], budget=budget)
    ran = result.value["outer"]
    assert ran == 4  # one at a time: 149 held, 110 spent, until 149 no longer fits
    assert result.usage is not None and result.usage.requests == ran
    # The inner fan-out's totals reach the outer ledger, but not the budget again.
    assert (
        budget.spent.tokens == ran * SPENT == result.usage.input_tokens + result.usage.output_tokens
    )


async def test_a_nested_fan_out_with_its_own_budget_uses_it() -> None:
    outer, own = ff.Budget(tokens=10_000), ff.Budget(tokens=RESERVED)
    llm = scripted()

    async def inner() -> int:
        done = await ff.fan_out(prompts(llm, 3), budget=own, strategy=ff.BestEffort())
        return sum(r.ok for r in done.results)

    result = await ff.fan_out([ff.Task("outer", inner)], budget=outer)
    assert result.value == {"outer": 1}
    assert own.spent.tokens == SPENT


# -- retries and hedges ----------------------------------------------------------


async def test_a_retry_reserves_and_is_not_retried_when_it_does_not_fit() -> None:
    llm = scripted().enqueue(ff.TransientError("flaky"))
    budget = ff.Budget(requests=1)
    task = prompt_task("t", llm, PROMPT, max_tokens=50, retry=ff.Retry(attempts=3, backoff=0))
    result = await ff.fan_out([task], budget=budget, raise_on_failure=False)
    r = result.results[0]
    assert r.status is ff.Status.ERROR and isinstance(r.error, ff.TransientError)
    assert r.attempts == 1 and "not retried" in (r.reason or "") and "budget" in (r.reason or "")
    assert budget.spent.requests == 1 and budget.spent.tokens == 0  # refused: no tokens
    assert len(llm.history) == 1


async def test_a_retry_that_fits_runs() -> None:
    llm = scripted().enqueue(ff.TransientError("flaky"))
    budget = ff.Budget(requests=2)
    task = prompt_task("t", llm, PROMPT, max_tokens=50, retry=ff.Retry(attempts=3, backoff=0))
    result = await ff.fan_out([task], budget=budget)
    assert result.results[0].ok and result.results[0].attempts == 2
    assert budget.spent.requests == 2 and budget.spent.tokens == SPENT


@pytest.mark.parametrize(("limit", "attempts"), [(RESERVED + 10, 1), (10 * RESERVED, 2)])
async def test_a_hedge_reserves_and_is_not_launched_when_it_does_not_fit(
    limit: int, attempts: int
) -> None:
    llm = scripted(0.2)
    budget = ff.Budget(tokens=limit)
    result = await ff.fan_out(
        prompts(llm, 1), budget=budget, hedge=ff.Hedge(after=0.01, max_extra=1.0)
    )
    assert result.results[0].ok and result.results[0].attempts == attempts
    assert len(llm.history) == attempts
    assert no_holds(budget)


# -- request-level accounting ----------------------------------------------------


async def test_a_request_without_a_reservation_is_refused_before_it_is_sent(
    sim: Simulator,
) -> None:
    llm = from_uri(f"sim:m@{sim.url}")
    budget = ff.Budget(tokens=5)

    async def agent() -> str:  # no tokens= estimate: nothing reserved at attempt level
        return (await llm.complete("a prompt much longer than five tokens, surely")).text

    try:
        result = await ff.fan_out([ff.Task("agent", agent)], budget=budget, raise_on_failure=False)
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
    error = result.results[0].error
    assert isinstance(error, ff.BudgetExceeded) and isinstance(error, ff.PermanentError)
    assert "budget" in str(error) and "5" in str(error)
    assert sim.stats["requests"] == 0 and budget.spent == ff.Spend() and no_holds(budget)


async def test_an_agents_later_calls_reserve_their_own() -> None:
    llm = scripted()
    budget = ff.Budget(requests=2)

    async def agent() -> int:
        calls = 0
        while True:
            try:
                await llm.complete("step", max_tokens=10)
            except ff.BudgetExceeded:
                return calls
            calls += 1

    result = await ff.fan_out([ff.Task("agent", agent, tokens=20)], budget=budget)
    # The first used the attempt's reservation, the second its own.
    assert result.value == {"agent": 2}
    assert budget.spent.requests == 2 and no_holds(budget)


async def test_spending_is_visible_as_each_request_ends() -> None:
    llm = scripted()
    budget = ff.Budget(tokens=10_000)
    seen: list[float] = []

    async def agent() -> None:
        for _ in range(3):
            await llm.complete(PROMPT)
            seen.append(budget.spent.tokens)

    await ff.fan_out([ff.Task("agent", agent)], budget=budget)
    assert seen == [SPENT, 2 * SPENT, 3 * SPENT]


async def test_dollars_with_prices() -> None:
    prices = {"m": (2.0, 8.0)}
    budget = ff.Budget(dollars=1.0, prices=prices)
    result = await ff.fan_out(prompts(scripted(), 4), budget=budget, strategy=ff.BestEffort())
    assert result.usage is not None
    assert budget.spent.dollars == pytest.approx(result.usage.cost(prices))
    assert budget.spent.dollars == pytest.approx(4 * (100 * 2.0 + 10 * 8.0) / 1e6)
    tight = ff.Budget(dollars=(99 * 2.0 + 50 * 8.0) / 1e6 * 1.5, prices=prices)
    result = await ff.fan_out(prompts(scripted(0.01), 4), budget=tight, strategy=ff.BestEffort())
    assert [r.ok for r in result.results].count(True) == 1
    assert "dollars" in (result.results[1].reason or "")


async def test_a_model_without_a_price_under_a_dollar_limit() -> None:
    budget = ff.Budget(dollars=1.0, prices={"other": (1.0, 1.0)})
    llm = scripted()
    result = await ff.fan_out(prompts(llm, 1), budget=budget, raise_on_failure=False)
    r = result.results[0]
    assert r.status is ff.Status.SKIPPED and "budget" in (r.reason or "")
    assert "no price for model 'm'" in (r.reason or "")

    async def direct() -> str:
        return (await llm.complete("hi")).text

    result = await ff.fan_out([ff.Task("d", direct)], budget=budget, raise_on_failure=False)
    error = result.results[0].error
    assert isinstance(error, ff.BudgetExceeded) and "'m'" in str(error)
    assert llm.history == []  # refused before anything was sent
    assert budget.spent == ff.Spend()


async def test_a_plain_function_calling_a_model_from_a_worker_thread() -> None:
    llm = scripted()
    budget = ff.Budget(requests=1)

    def work() -> str:  # runs in a worker thread, with its own event loop
        return asyncio.run(llm.complete("hello")).text

    result = await ff.fan_out(
        [ff.Task("a", work), ff.Task("b", work)],
        budget=budget,
        executor="thread",
        max_concurrency=1,
        raise_on_failure=False,
    )
    assert result.results[0].ok
    assert isinstance(result.results[1].error, ff.BudgetExceeded)
    assert budget.spent.requests == 1 and no_holds(budget)


async def test_cut_off_attempts_give_back_their_holds_and_pay_their_prompt() -> None:
    budget = ff.Budget(tokens=100_000)
    result = await ff.fan_out(
        prompts(scripted(5.0), 3), budget=budget, deadline=0.05, raise_on_failure=False
    )
    assert all(r.status is ff.Status.TIMEOUT for r in result.results)
    assert no_holds(budget)
    assert budget.spent.tokens == 3 * 100 and budget.spent.requests == 3  # estimated prompts


async def test_attempts_waiting_on_the_rate_limit_give_back_their_holds() -> None:
    budget = ff.Budget(tokens=100_000)
    result = await ff.fan_out(
        prompts(scripted(), 5),
        budget=budget,
        rate_limit=ff.RateLimit(per_second=1),
        deadline=0.2,
        raise_on_failure=False,
    )
    assert [r.ok for r in result.results].count(True) == 1
    assert no_holds(budget) and budget.spent.tokens == SPENT


# -- the verbs -------------------------------------------------------------------


async def test_fan_out_then_synthesize_share_a_budget() -> None:
    llm = scripted()
    budget = ff.Budget(tokens=2 * RESERVED + 20)
    result = await ff.fan_out(prompts(llm, 2), budget=budget)
    assert budget.spent.tokens == 2 * SPENT
    with pytest.raises(ff.BudgetExceeded, match="budget"):
        await ff.synthesize(result, llm, budget=budget)
    roomy = ff.Budget(tokens=100_000)
    await ff.synthesize(result, llm, budget=roomy)
    assert roomy.spent.requests == 1 and roomy.spent.tokens > 0 and no_holds(roomy)


async def test_plan_is_charged_and_refused() -> None:
    llm = scripted()
    llm.enqueue('{"tasks": [{"name": "a", "prompt": "say hi"}]}')
    budget = ff.Budget(tokens=100_000)
    await ff.plan("greet", llm, budget=budget)
    assert budget.spent.requests == 1
    with pytest.raises(ff.BudgetExceeded):
        await ff.plan("greet", llm, budget=ff.Budget(tokens=3))
    with pytest.raises(TypeError, match="budget"):
        await ff.plan("greet", llm, budget=5)  # type: ignore[arg-type]


async def test_ensemble_and_as_completed_take_a_budget() -> None:
    llm = scripted()
    budget = ff.Budget(requests=2)
    result = await ff.ensemble(
        "6 x 7?", llm, samples=5, budget=budget, early_stop=False, raise_on_failure=False
    )
    assert sum(r.ok for r in result.results) == 2 and budget.spent.requests == 2
    streamed = ff.Budget(requests=1)
    seen = [r async for r in ff.as_completed(prompts(llm, 3), budget=streamed)]
    assert sorted(r.status.value for r in seen) == ["ok", "skipped", "skipped"]


async def test_without_a_budget_nothing_changes() -> None:
    result = await ff.fan_out(prompts(scripted(), 3))
    assert result.ok and result.usage is not None and result.usage.requests == 3


def test_budget_exceeded_is_public_and_permanent() -> None:
    assert issubclass(ff.BudgetExceeded, ff.PermanentError)
    assert "BudgetExceeded" in ff.__all__
    from fanflow._core import _exceptions

    assert "BudgetExceeded" in (_exceptions.__doc__ or "")


async def test_fan_map_and_plan_run_take_a_budget() -> None:
    llm = scripted()
    budget = ff.Budget(requests=3)

    async def ask(x: int) -> str:
        return (await llm.complete(f"q{x}")).text

    out = [r async for r in ff.fan_map(ask, range(6), budget=budget, max_concurrency=1)]
    assert [r.ok for r in out] == [True, True, True, False, False, False]
    assert all(isinstance(r.error, ff.BudgetExceeded) for r in out[3:])
    plan = await ff.plan(
        "g",
        llm.enqueue('{"tasks": [{"name": "a", "prompt": "hi"}, {"name": "b", "prompt": "ho"}]}'),
    )
    one = ff.Budget(requests=1)
    result = await plan.run(budget=one, raise_on_failure=False, max_concurrency=1)
    assert [r.ok for r in result.results] == [True, False] and one.spent.requests == 1


@pytest.mark.parametrize("journaled", [False, True])
async def test_ask_charges_planning_subtasks_and_synthesis_to_one_budget(
    tmp_path: Any, journaled: bool
) -> None:
    # ff.ask(budget=) covers all three steps: the plan, its two subtasks, the
    # synthesis (a journaled ask plans inside a fan-out of its own).
    llm = scripted()
    llm.enqueue('{"tasks": [{"name": "a", "prompt": "hi"}, {"name": "b", "prompt": "ho"}]}')
    budget = ff.Budget(tokens=100_000)
    journal = tmp_path / "ask.db" if journaled else None
    await ff.ask("greet", llm, budget=budget, journal=journal)
    assert budget.spent.requests == 4 and no_holds(budget)
