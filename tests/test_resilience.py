"""Retries, hedged requests, shared rate limits and adaptive concurrency."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fanflow as ff

from .conftest import Flaky

# -- Retry -------------------------------------------------------------------


@given(st.integers(1, 12), st.floats(0.01, 5), st.floats(0.1, 60))
def test_backoff_stays_within_full_jitter_bounds(attempt: int, base: float, cap: float) -> None:
    policy = ff.Retry(attempts=20, backoff=base, max_backoff=cap)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    for _ in range(20):
        assert 0 <= policy.delay(attempt) <= ceiling
    exact = ff.Retry(attempts=20, backoff=base, max_backoff=cap, jitter=False)
    assert exact.delay(attempt) == pytest.approx(ceiling)


def test_jitter_spreads_delays() -> None:
    policy = ff.Retry(backoff=1.0)
    delays = {round(policy.delay(3), 6) for _ in range(50)}
    assert len(delays) > 40  # not in lockstep


def test_retry_after_is_a_floor() -> None:
    policy = ff.Retry(backoff=0.1, max_backoff=10.0)
    assert policy.delay(1, ff.RateLimited(retry_after=7.5)) >= 7.5


@pytest.mark.looptime
async def test_transient_errors_are_retried_until_success() -> None:
    flaky = Flaky(2, ff.TransientError("503"))
    events: list[ff.Event] = []
    result = await ff.fan_out(
        [ff.Task("f", flaky)], retry=ff.Retry(attempts=3, backoff=1.0), on_event=events.append
    )
    r = result["f"]
    assert r.ok and r.value == "ok" and r.attempts == 3
    assert [a.status.value for a in r.history] == ["error", "error", "ok"]
    retries = [e for e in events if isinstance(e, ff.TaskRetrying)]
    assert [(e.name, e.attempt) for e in retries] == [("f", 1), ("f", 2)]
    gaps = [b - a for a, b in itertools.pairwise(flaky.calls)]
    for gap, event in zip(gaps, retries, strict=True):
        assert gap == pytest.approx(event.delay, abs=1e-5)
        assert 0 <= event.delay <= 2.0


@pytest.mark.looptime
async def test_retry_after_is_honoured() -> None:
    flaky = Flaky(1, ff.RateLimited("429", retry_after=30))
    result = await ff.fan_out([ff.Task("f", flaky)], retry=ff.Retry(backoff=0.01))
    assert result["f"].ok
    assert flaky.calls[1] - flaky.calls[0] >= 30


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("task_kwargs", "error"),
    [
        pytest.param({}, ff.PermanentError("400 bad request"), id="permanent-error"),
        pytest.param({"idempotent": False}, ff.TransientError("503"), id="non-idempotent"),
    ],
)
async def test_run_once(task_kwargs: dict[str, Any], error: Exception) -> None:
    flaky = Flaky(5, error)
    result = await ff.fan_out(
        [ff.Task("f", flaky, **task_kwargs)], retry=ff.Retry(attempts=5), raise_on_failure=False
    )
    assert len(flaky.calls) == 1 and result["f"].attempts == 1
    assert result["f"].status == "error" and result["f"].error is error


@pytest.mark.looptime
async def test_permanent_error_not_retried_even_when_listed() -> None:
    flaky = Flaky(5, ff.PermanentError("no"))
    await ff.fan_out(
        [ff.Task("f", flaky)], retry=ff.Retry(on=ff.PermanentError), raise_on_failure=False
    )
    assert len(flaky.calls) == 1


@pytest.mark.looptime
async def test_only_listed_errors_are_retried() -> None:
    flaky = Flaky(5, KeyError("k"))
    await ff.fan_out(
        [ff.Task("f", flaky)], retry=ff.Retry(on=(ValueError,)), raise_on_failure=False
    )
    assert len(flaky.calls) == 1


@pytest.mark.looptime
@pytest.mark.parametrize(("retry_timeouts", "calls"), [(True, 3), (False, 1)])
async def test_timeouts_retried_only_when_asked(retry_timeouts: bool, calls: int) -> None:
    count = []

    async def hang() -> None:
        count.append(1)
        await asyncio.sleep(100)

    result = await ff.fan_out(
        [ff.Task("h", hang, timeout=1)],
        retry=ff.Retry(attempts=3, retry_timeouts=retry_timeouts),
        raise_on_failure=False,
    )
    assert len(count) == calls and result["h"].status == "timeout"
    assert result["h"].attempts == calls


@pytest.mark.looptime
async def test_task_retry_overrides_fan_out_retry() -> None:
    a, b = Flaky(1, ff.TransientError()), Flaky(1, ff.TransientError())
    result = await ff.fan_out(
        [ff.Task("a", a, retry=ff.Retry(attempts=1)), ff.Task("b", b)],
        retry=ff.Retry(attempts=2),
        raise_on_failure=False,
    )
    assert [r.status.value for r in result.results] == ["error", "ok"]


@pytest.mark.looptime
async def test_no_retry_that_would_start_after_the_deadline() -> None:
    flaky = Flaky(1, ff.RateLimited(retry_after=100))
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await ff.fan_out(
        [ff.Task("f", flaky)], retry=ff.Retry(), deadline=10, raise_on_failure=False
    )
    assert len(flaky.calls) == 1 and result["f"].status == "error"
    assert loop.time() - start < 1  # did not sit out the backoff


@pytest.mark.looptime
async def test_task_waiting_to_retry_is_cancelled_when_strategy_stops() -> None:
    flaky = Flaky(5, ff.TransientError())

    async def fast() -> str:
        await asyncio.sleep(5)
        return "fast"

    result = await ff.fan_out(
        [ff.Task("flaky", flaky), ff.Task("fast", fast)],
        strategy=ff.FirstN(1),
        retry=ff.Retry(attempts=5, backoff=100, jitter=False),
    )
    assert result.value == ["fast"]
    assert result["flaky"].status == "cancelled" and len(flaky.calls) == 1
    assert not (asyncio.all_tasks() - {asyncio.current_task()})


# -- Hedge -------------------------------------------------------------------


class Stragglers:
    """Attempts of task i take ``delays[i][k]`` seconds on their k-th try; records side effects."""

    def __init__(self, delays: dict[str, list[float]]) -> None:
        self.delays = delays
        self.tries: dict[str, int] = {}
        self.completed: list[tuple[str, int]] = []

    def task(self, name: str, **kwargs: Any) -> ff.Task:
        async def run() -> str:
            k = self.tries.get(name, 0)
            self.tries[name] = k + 1
            await asyncio.sleep(self.delays[name][k])
            self.completed.append((name, k))  # the side effect after the await
            return f"{name}#{k}"

        return ff.Task(name, run, **kwargs)


@pytest.mark.looptime
async def test_hedge_fires_after_delay_and_wins_against_a_straggler() -> None:
    s = Stragglers({"slow": [100, 1], "fast": [0.5]})
    events: list[ff.Event] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await ff.fan_out(
        [s.task("slow"), s.task("fast")],
        hedge=ff.Hedge(after=2, max_extra=1.0),
        on_event=events.append,
    )
    assert loop.time() - start == pytest.approx(3)  # 2 s + the hedge's 1 s
    slow = result["slow"]
    assert slow.value == "slow#1" and slow.hedged and slow.attempts == 2
    assert [(a.number, a.hedge, a.status.value) for a in slow.history] == [
        (2, True, "ok"),
        (1, False, "cancelled"),
    ]
    assert not result["fast"].hedged and result["fast"].attempts == 1
    assert ("slow", 0) not in s.completed  # the loser never ran past its await
    hedged = [e for e in events if isinstance(e, ff.TaskHedged)]
    assert [(e.name, e.attempt) for e in hedged] == [("slow", 2)]
    assert hedged[0].after == pytest.approx(2)


@pytest.mark.looptime
async def test_original_winning_cancels_the_hedge() -> None:
    s = Stragglers({"t": [3, 100]})
    result = await ff.fan_out([s.task("t")], hedge=ff.Hedge(after=2, max_extra=1.0))
    assert result["t"].value == "t#0" and not result["t"].hedged
    assert s.completed == [("t", 0)]
    assert [a.status.value for a in result["t"].history] == ["ok", "cancelled"]


@pytest.mark.looptime
async def test_hedge_does_not_fire_before_after() -> None:
    s = Stragglers({"t": [1.99]})
    result = await ff.fan_out([s.task("t")], hedge=ff.Hedge(after=2, max_extra=1.0))
    assert result["t"].attempts == 1 and s.tries == {"t": 1}


@pytest.mark.looptime
async def test_hedge_cap_and_non_idempotent_tasks() -> None:
    delays = {f"t{i}": [100, 1] for i in range(10)}
    s = Stragglers(delays)
    tasks = [s.task(f"t{i}", idempotent=i != 0) for i in range(10)]
    result = await ff.fan_out(
        tasks, hedge=ff.Hedge(after=1, max_extra=0.3), timeout=50, raise_on_failure=False
    )
    hedged = [r.name for r in result.results if r.attempts == 2]
    assert len(hedged) == 3  # floor(0.3 * 10)
    assert "t0" not in hedged and result["t0"].attempts == 1


@pytest.mark.looptime
async def test_hedges_count_against_max_concurrency() -> None:
    in_flight = 0
    peak = 0

    async def slow_once(name: str, tries: dict[str, int]) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        tries[name] = tries.get(name, 0) + 1
        try:
            await asyncio.sleep(10 if tries[name] == 1 else 1)
        finally:
            in_flight -= 1
        return name

    tries: dict[str, int] = {}
    tasks = [ff.Task(f"t{i}", slow_once, args=(f"t{i}", tries)) for i in range(6)]
    # `tries` is shared on purpose (it counts attempts across tasks).
    result = await ff.fan_out(
        tasks, hedge=ff.Hedge(after=1, max_extra=1.0), max_concurrency=4, audit="off"
    )
    assert peak <= 4 and result.ok


@pytest.mark.looptime
async def test_percentile_hedge_waits_for_samples_then_arms_running_attempts() -> None:
    rng = random.Random(3)
    delays = {f"t{i}": [rng.uniform(0.5, 1.5), 0.5] for i in range(40)}
    delays["straggler"] = [1000, 1]
    s = Stragglers(delays)
    tasks = [s.task("straggler")] + [s.task(f"t{i}") for i in range(40)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await ff.fan_out(
        tasks, hedge=ff.Hedge(after="p95", max_extra=0.1, min_samples=20), max_concurrency=None
    )
    straggler = result["straggler"]
    assert straggler.hedged and straggler.value == "straggler#1"
    # Hedged once 20 samples were in (about 1 s), at the p95 (<= 1.5 s): not 1000 s.
    assert loop.time() - start < 5
    assert len([r for r in result.results if r.attempts == 2]) <= 4  # floor(0.1 * 41)


# -- RateLimit ---------------------------------------------------------------


@pytest.mark.looptime
async def test_shared_rate_limit_bounds_two_fan_outs_together() -> None:
    limiter = ff.RateLimit(per_second=20)
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def job() -> None:
        starts.append(loop.time())

    def batch(prefix: str) -> list[ff.Task]:
        return [ff.Task(f"{prefix}{i}", job) for i in range(60)]

    t0 = loop.time()
    await asyncio.gather(
        ff.fan_out(batch("a"), rate_limit=limiter, deadline=2),
        ff.fan_out(batch("b"), rate_limit=limiter, deadline=2),
        return_exceptions=True,
    )
    within = [t - t0 for t in starts if t - t0 <= 2.0 + 1e-9]
    # The documented burst (one second's worth, 20) plus 20 per second.
    assert len(within) <= 20 + 20 * 2
    assert len(within) >= 55  # and it does let that many through
    # Any window of 1 s holds at most burst + rate = 40 starts.
    for t in within:
        assert sum(1 for u in within if t <= u < t + 1.0) <= 40


@pytest.mark.looptime
async def test_tokens_per_minute_is_enforced() -> None:
    limiter = ff.RateLimit(tokens_per_minute=6000)  # 100 tokens/s
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def job() -> None:
        starts.append(loop.time())

    tasks = [ff.Task(f"t{i}", job, tokens=500) for i in range(10)]
    await ff.fan_out(tasks, rate_limit=limiter)
    # Spending 500 tokens each at 100 tokens/s: one start every 5 s.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g == pytest.approx(5.0) for g in gaps[1:])
    assert starts[-1] - starts[0] == pytest.approx(45.0, abs=5.0)


@pytest.mark.looptime
async def test_rate_limited_retry_after_pauses_the_shared_limit() -> None:
    limiter = ff.RateLimit(per_second=100)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    flaky = Flaky(1, ff.RateLimited(retry_after=10))
    await ff.fan_out([ff.Task("f", flaky)], rate_limit=limiter, retry=ff.Retry(backoff=0.01))
    starts: list[float] = []

    async def job() -> None:
        starts.append(loop.time())

    # A second fan-out on the same limit waits out the pause too.
    await ff.fan_out([ff.Task("g", job)], rate_limit=limiter)
    assert starts[0] - t0 >= 10


def test_rate_limit_needs_a_limit() -> None:
    with pytest.raises(ValueError, match="per_second"):
        ff.RateLimit()
    with pytest.raises(ValueError, match="-5"):
        ff.RateLimit(per_minute=-5)


# -- AdaptiveConcurrency -------------------------------------------------------


@pytest.mark.looptime
async def test_adaptive_concurrency_settles_near_capacity() -> None:
    capacity = 6
    in_flight = 0
    over = 0

    async def service() -> str:
        nonlocal in_flight, over
        in_flight += 1
        try:
            if in_flight > capacity:
                over += 1
                raise ff.RateLimited("too many", retry_after=0.1)
            await asyncio.sleep(0.2)
            return "ok"
        finally:
            in_flight -= 1

    limit = ff.AdaptiveConcurrency(initial=24, min=1, max=64)
    tasks = [ff.Task(f"t{i}", service) for i in range(400)]
    result = await ff.fan_out(
        tasks, max_concurrency=limit, retry=ff.Retry(attempts=20, backoff=0.05)
    )
    assert len(result.succeeded) == 400
    late = limit.history[len(limit.history) // 2 :]
    assert max(late) <= 2 * capacity and min(late) >= capacity // 2
    assert 3 <= limit.limit <= 2 * capacity


def test_adaptive_concurrency_bounds() -> None:
    with pytest.raises(ValueError, match="min <= initial <= max"):
        ff.AdaptiveConcurrency(initial=10, min=1, max=5)
    limit = ff.AdaptiveConcurrency(initial=4, min=2, max=8)
    for _ in range(100):
        limit.on_success()
    assert limit.limit == 8
    for i in range(10):
        limit.on_overload(float(i + 1), float(i + 1))
    assert limit.limit == 2


def test_adaptive_concurrency_cuts_once_per_round() -> None:
    limit = ff.AdaptiveConcurrency(initial=16)
    limit.on_overload(attempt_started=0.0, now=1.0)
    limit.on_overload(attempt_started=0.5, now=1.1)  # launched before the cut
    assert limit.limit == 8
    limit.on_overload(attempt_started=1.2, now=2.0)
    assert limit.limit == 4


@pytest.mark.parametrize(
    ("make", "exc"),
    [
        pytest.param(lambda: ff.Retry(attempts=0), ValueError, id="attempts-0"),
        pytest.param(lambda: ff.Retry(backoff=-1), ValueError, id="neg-backoff"),
        pytest.param(lambda: ff.Retry(on="ValueError"), TypeError, id="on-str"),
        pytest.param(lambda: ff.Hedge(after="p100"), ValueError, id="p100"),
        pytest.param(lambda: ff.Hedge(after="fast"), ValueError, id="after-str"),
        pytest.param(lambda: ff.Hedge(after=0), ValueError, id="after-0"),
        pytest.param(lambda: ff.Hedge(max_extra=2), ValueError, id="max-extra"),
        pytest.param(lambda: ff.Task("a", print, retry=3), TypeError, id="task-retry-int"),
    ],
)
def test_policy_options_are_checked(make: Any, exc: type) -> None:
    with pytest.raises(exc):
        make()


async def test_fan_out_rejects_wrong_policy_objects() -> None:
    with pytest.raises(TypeError, match=r"ff\.Retry"):
        await ff.fan_out([ff.Task("a", print)], retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AdaptiveConcurrency"):
        await ff.fan_out([ff.Task("a", print)], max_concurrency="8")  # type: ignore[arg-type]
