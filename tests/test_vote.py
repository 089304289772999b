"""Voting: normalisation, weights, quorum, ties, exact and statistical early stop."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fanflow as ff
from fanflow._policies._vote import betainc, default_key

from .conftest import run_isolated, ticks


def vote_tasks(answers: list[Any], weights: list[float] | None = None) -> list[ff.Task]:
    # Task i answers after i+1 loop turns: completion order = list order.
    return [
        ff.Task(f"v{i}", ticks, args=(i + 1, a), weight=(weights[i] if weights else 1.0))
        for i, a in enumerate(answers)
    ]


def test_default_key_normalises_strings() -> None:
    assert default_key("  The   Answer \n") == default_key("the answer") == "the answer"
    assert default_key(42) == 42
    assert default_key({"b": 1, "a": [1, 2]}) == default_key({"a": [1, 2], "b": 1})


async def test_majority_with_normalised_answers() -> None:
    result = await ff.fan_out(
        vote_tasks(["Paris", " paris ", "London", "PARIS", "Rome"]),
        strategy=ff.Vote(early_stop=False),
    )
    assert result.value == "Paris"  # the first raw value seen with the winning key
    assert result.votes == {"paris": 3.0, "london": 1.0, "rome": 1.0}
    assert result.confidence == pytest.approx(3 / 5)
    assert not result.stopped_early


async def test_custom_key_and_task_weights() -> None:
    result = await ff.fan_out(
        vote_tasks(["x=1", "x=2", "x=2"], weights=[5, 1, 1]),
        strategy=ff.Vote(key=lambda v: v.split("=")[1], early_stop=False),
    )
    assert result.value == "x=1" and result.votes == {"1": 5.0, "2": 2.0}


async def test_weights_mapping_overrides_task_weight() -> None:
    result = await ff.fan_out(
        vote_tasks(["a", "b", "b"]),
        strategy=ff.Vote(weights={"v0": 3}, early_stop=False),
    )
    assert result.value == "a" and result.votes == {"a": 3.0, "b": 2.0}


async def test_weights_naming_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="ghost"):
        await ff.fan_out(vote_tasks(["a"]), strategy=ff.Vote(weights={"ghost": 1}))


async def test_quorum_is_a_share_of_all_tasks_weight() -> None:
    # 3 of 5 say "a": a majority of all 5 tasks.
    result = await ff.fan_out(
        vote_tasks(["a", "a", "b", "a", "c"]), strategy=ff.Vote(quorum=0.5, early_stop=False)
    )
    assert result.ok and result.value == "a"
    # 2 of 5 say "a" (two tasks fail): a plurality but not a majority of all tasks.
    tasks = vote_tasks(["a", "a", "b", None, None])
    tasks[3] = ff.Task("v3", ticks, args=(4, None, True))
    tasks[4] = ff.Task("v4", ticks, args=(5, None, True))
    with pytest.raises(ff.StrategyFailed, match="quorum not met"):
        await ff.fan_out(tasks, strategy=ff.Vote(quorum=0.5))


async def test_tie_break_first_error_and_callable() -> None:
    answers = ["b", "a", "a", "b"]  # b reaches 2 after a does
    first = await ff.fan_out(vote_tasks(answers), strategy=ff.Vote(early_stop=False))
    assert first.value == "a"
    with pytest.raises(ff.StrategyFailed, match="tie between"):
        await ff.fan_out(vote_tasks(answers), strategy=ff.Vote(tie_break="error"))
    picked = await ff.fan_out(vote_tasks(answers), strategy=ff.Vote(tie_break=max))
    assert picked.value == "b"
    with pytest.raises(ff.StrategyFailed, match="not one of the tied"):
        await ff.fan_out(vote_tasks(answers), strategy=ff.Vote(tie_break=lambda keys: "zzz"))


async def test_no_votes_cast_fails() -> None:
    tasks = [ff.Task(f"v{i}", ticks, args=(1, None, True)) for i in range(3)]
    with pytest.raises(ff.StrategyFailed, match="no votes"):
        await ff.fan_out(tasks, strategy=ff.Vote())


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        pytest.param({"quorum": 0}, ValueError, id="quorum-zero"),
        pytest.param({"quorum": 1.5}, ValueError, id="quorum>1"),
        pytest.param({"tie_break": "random"}, ValueError, id="tie-break"),
        pytest.param({"early_stop": "yes"}, TypeError, id="early-stop"),
        pytest.param({"key": 3}, TypeError, id="key"),
        pytest.param({"weights": {"a": -1}}, ValueError, id="neg-weight"),
    ],
)
def test_vote_options_are_checked(kwargs: dict[str, Any], exc: type) -> None:
    with pytest.raises(exc):
        ff.Vote(**kwargs)


async def test_exact_early_stop_makes_fewer_calls() -> None:
    calls: list[int] = []

    async def answer(i: int) -> str:
        calls.append(i)
        await ticks(1)
        return "yes" if i % 5 else "no"

    tasks = [ff.Task(f"s{i}", answer, args=(i,)) for i in range(40)]
    full = await ff.fan_out(tasks, strategy=ff.Vote(early_stop=False), max_concurrency=4)
    n_full = len(calls)
    calls.clear()
    early = await ff.fan_out(tasks, strategy=ff.Vote(), max_concurrency=4)
    assert early.value == full.value == "yes"
    assert n_full == 40 and len(calls) < 40
    assert early.stopped_early and "exact" in early.reason
    assert len(early.skipped) > 0 and len(early.succeeded) < 40


async def test_beta_stop_stops_sooner_and_says_it_is_statistical() -> None:
    calls: list[int] = []

    async def answer(i: int) -> str:
        calls.append(i)
        await ticks(1)
        return "42"

    tasks = [ff.Task(f"s{i}", answer, args=(i,)) for i in range(40)]
    result = await ff.fan_out(
        tasks, strategy=ff.Vote(early_stop=ff.BetaStop(0.95)), max_concurrency=1
    )
    # Beta(5, 1): P(share > 1/2) = 1 - 1/32 > 0.95 after 4 unanimous votes.
    assert result.value == "42" and len(calls) == 4
    assert "BetaStop" in result.reason and "statistical" in result.reason


def test_betainc_matches_the_binomial_identity() -> None:
    # For integers: I_x(a, b) = P(Binomial(a + b - 1, x) >= a).
    for a in range(1, 12):
        for b in range(1, 12):
            n = a + b - 1
            exact = sum(math.comb(n, j) for j in range(a, n + 1)) / 2**n
            assert betainc(a, b, 0.5) == pytest.approx(exact, abs=1e-12)
    # A non-integer case against Simpson's rule on the beta density.
    a, b, x, n = 2.5, 1.5, 0.3, 20_000
    h = x / n

    def density(t: float) -> float:
        return t ** (a - 1) * (1 - t) ** (b - 1)

    simpson = density(0) + density(x)
    simpson += sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
    beta = math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    assert betainc(a, b, x) == pytest.approx(simpson * h / 3 / beta, rel=1e-9)


def test_beta_stop_validates_confidence() -> None:
    with pytest.raises(ValueError, match=r"1\.2"):
        ff.BetaStop(1.2)


def _tally_winner(vote: ff.Vote, results: list[ff.TaskResult], tasks: list[ff.Task]) -> Any:
    run = ff.Vote(key=vote.key, quorum=vote.quorum, early_stop=False, tie_break=vote.tie_break)
    run.start(tasks)
    for r in results:
        run.observe(r)
    verdict = run.finish(results)
    return verdict.ok, verdict.value


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(1, 3)),
        min_size=1,
        max_size=15,
    ),
    st.sampled_from(["first", "error"]),
    st.sampled_from([None, 0.3, 0.5, 0.75]),
    st.randoms(use_true_random=False),
)
def test_exact_early_stop_equals_the_full_count(
    votes: list[tuple[str | None, int]], tie_break: str, quorum: float | None, rnd: Any
) -> None:
    # votes: (answer, weight) in a random completion order; None = the task failed.
    tasks = [ff.Task(f"v{i}", ticks, weight=w) for i, (_, w) in enumerate(votes)]
    results = [
        ff.TaskResult(f"v{i}", ff.Status.OK, a)
        if a is not None
        else ff.TaskResult(f"v{i}", ff.Status.ERROR, None, RuntimeError("x"))
        for i, (a, _) in enumerate(votes)
    ]
    rnd.shuffle(results)
    early = ff.Vote(quorum=quorum, tie_break=tie_break)
    early.start(tasks)
    seen = []
    for r in results:
        seen.append(r)
        if early.observe(r):
            break
    verdict = early.finish(seen)
    assert (verdict.ok, verdict.value) == _tally_winner(early, results, tasks)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=12), st.integers(1, 4))
def test_early_stop_through_the_engine_matches_full_count(answers: list[str], limit: int) -> None:
    async def main() -> tuple[ff.FanInResult, ff.FanInResult]:
        tasks = vote_tasks(answers)
        kw: dict[str, Any] = {"max_concurrency": limit, "raise_on_failure": False}
        full = await ff.fan_out(tasks, strategy=ff.Vote(early_stop=False), **kw)
        early = await ff.fan_out(tasks, strategy=ff.Vote(), **kw)
        return full, early

    full, early = run_isolated(main())
    assert (early.ok, early.value) == (full.ok, full.value)
    assert len(early.succeeded) <= len(full.succeeded)
