"""Percentile hedging at scale: decisions cost O(log n), not a scan of the running attempts.

Virtual clock (looptime) throughout; the work is counted, never timed.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from typing import Any

import pytest

import fanflow as ff
from fanflow._core._hedging import HedgeController


def _mix(n: int, seed: int, stall: float = 1000.0) -> tuple[list[ff.Task], set[str]]:
    """``n`` tasks: 2 % stall on their first attempt, the rest take 0.5-1.5 s."""
    rng = random.Random(seed)
    delays: dict[str, list[float]] = {}
    stalled: set[str] = set()
    for i in range(n):
        name = f"t{i}"
        first = stall if rng.random() < 0.02 else rng.uniform(0.5, 1.5)
        delays[name] = [first, rng.uniform(0.5, 1.5)]
        if first == stall:
            stalled.add(name)
    tries: dict[str, int] = {}

    def task(name: str) -> ff.Task:
        async def run() -> str:
            k = tries.get(name, 0)
            tries[name] = k + 1
            await asyncio.sleep(delays[name][k])
            return f"{name}#{k}"

        return ff.Task(name, run)

    return [task(f"t{i}") for i in range(n)], stalled


class _Counter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decisions = 0
        self.timers = 0
        due_at = HedgeController._due_at
        schedule = HedgeController._schedule_head

        def counted_due_at(hedging: Any, attempt: Any) -> float | None:
            self.decisions += 1
            return due_at(hedging, attempt)

        def counted_schedule(hedging: Any) -> None:
            before = hedging._head_timer
            schedule(hedging)
            if hedging._head_timer is not None and hedging._head_timer is not before:
                self.timers += 1

        monkeypatch.setattr(HedgeController, "_due_at", counted_due_at)
        monkeypatch.setattr(HedgeController, "_schedule_head", counted_schedule)


@pytest.mark.looptime
@pytest.mark.parametrize("limit", [100, None])
async def test_percentile_decisions_are_bounded_by_events_not_running_attempts(
    monkeypatch: pytest.MonkeyPatch, limit: int | None
) -> None:
    counter = _Counter(monkeypatch)
    tasks, stalled = _mix(1000, seed=5)
    result = await ff.fan_out(
        tasks, hedge=ff.Hedge(after="p95", max_extra=0.1), max_concurrency=limit
    )
    attempts = sum(r.attempts for r in result.results)
    # A few O(log n) head decisions per start, end and timer firing; a scan of
    # the running attempts per check (the old way) is ~100-1,000 x that work.
    assert counter.decisions <= 6 * attempts
    assert counter.timers <= 2 * attempts
    assert all(result[name].hedged for name in stalled)
    assert attempts - len(tasks) <= 100  # floor(0.1 * 1000)


@pytest.mark.looptime
@pytest.mark.parametrize("limit", [100, None])
async def test_hedging_never_slows_the_typical_task(limit: int | None) -> None:
    def durations(result: ff.FanInResult[Any]) -> list[float]:
        return [r.duration or 0.0 for r in result.results]

    plain, _ = _mix(1000, seed=7)
    off = durations(await ff.fan_out(plain, max_concurrency=limit))
    hedged, stalled = _mix(1000, seed=7)
    result = await ff.fan_out(hedged, hedge=ff.Hedge(after="p95"), max_concurrency=limit)
    on = durations(result)
    assert statistics.median(on) <= statistics.median(off) + 1e-6
    # The stragglers end at about the p95 plus a retry, not at 1,000 s.
    assert max(on) < 5
    assert max(off) >= 1000
    extra = sum(r.attempts for r in result.results) - len(hedged)
    assert extra <= 0.06 * len(hedged) + len(stalled)


@pytest.mark.looptime
async def test_a_cold_start_with_all_attempts_tied_does_not_hedge_ordinary_tasks() -> None:
    # All 200 start at once: until most finished, every running attempt has run
    # as long as the head, so none is among the slowest 5 %.
    tasks, stalled = _mix(200, seed=11)
    result = await ff.fan_out(tasks, hedge=ff.Hedge(after="p95", max_extra=0.2))
    hedged = {r.name for r in result.results if r.attempts == 2}
    assert stalled <= hedged
    assert len(hedged - stalled) <= 0.05 * 200


@pytest.mark.looptime
async def test_a_percentile_hedge_without_enough_samples_warns_once() -> None:
    tasks, _ = _mix(30, seed=3)
    with pytest.warns(RuntimeWarning, match="min_samples=50") as caught:
        result = await ff.fan_out(tasks, hedge=ff.Hedge(after="p95", max_extra=0.1, min_samples=50))
    assert len(caught) == 1
    assert sum(r.attempts for r in result.results) == len(tasks)  # never hedged


@pytest.mark.looptime
async def test_no_warning_without_a_budget_or_once_armed() -> None:
    small, _ = _mix(5, seed=3)  # floor(0.1 * 5) = 0 hedges: nothing to say
    await ff.fan_out(small, hedge=ff.Hedge(after="p95"))
    enough, _ = _mix(40, seed=3)
    await ff.fan_out(enough, hedge=ff.Hedge(after="p95", max_extra=0.1, min_samples=20))
