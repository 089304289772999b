"""fanflow: each workload through the public API with the option made for it.

W2-W5 and W7 also run through ``fanflow map`` as shell commands, beside
GNU parallel.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable, Callable

import _shellwork
from _common import (
    W1_N,
    W2_DELAY,
    W2_LIMIT,
    W2_N,
    W3_FIRST,
    W3_N,
    W4_N,
    W5_N,
    W5_TIMEOUT,
    W6_LIMIT,
    W6_N,
    Cell,
    Tally,
    first_n_run,
    p99,
    repeat,
    tallied,
    timed,
    timeout_run,
    w3_cell,
    w3_latency,
    w4_cell,
    w4_job,
    w5_cell,
    w5_latency,
    w6_cell,
    w6_draw,
)

import fanflow as ff

PEER = "fanflow"
CANNOT: dict[str, str] = {}
MAP = [sys.executable, "-m", "fanflow", "map"]


def VERSION() -> str:
    return f"fanflow {ff.__version__}"


async def noop() -> None:
    return None


def w1(runs: int) -> list[Cell]:
    async def fan() -> None:
        await ff.fan_out([ff.Task(str(i), noop) for i in range(W1_N)])

    return [Cell("W1", PEER, "fan_out (defaults)", timed(fan, runs)[0])]


def w2(runs: int) -> list[Cell]:
    async def fan() -> None:
        tasks = [ff.Task(str(i), asyncio.sleep, args=(W2_DELAY,)) for i in range(W2_N)]
        await ff.fan_out(tasks, max_concurrency=W2_LIMIT)

    return [
        Cell("W2", PEER, "fan_out(max_concurrency=100)", timed(fan, runs)[0]),
        _shellwork.w2("fanflow map", MAP, runs),
    ]


def w3(runs: int) -> list[Cell]:
    tally = Tally()
    job = tallied(tally, w3_latency)

    async def first() -> None:
        tasks = [ff.Task(str(i), job, args=(i,)) for i in range(W3_N)]
        await ff.fan_out(tasks, strategy=ff.FirstN(W3_FIRST))

    return [
        w3_cell(
            PEER, "fan_out(strategy=FirstN(10))", repeat(first_n_run(tally, first), runs), True
        ),
        _shellwork.w3("fanflow map", MAP, ["--first", "10"], runs),
    ]


def w4(runs: int) -> list[Cell]:
    async def fan() -> tuple[int, int]:
        # The default strategy, BestEffort(), keeps both lists.
        result = await ff.fan_out([ff.Task(str(i), w4_job, args=(i,)) for i in range(W4_N)])
        return len(result.succeeded), len(result.failed)

    wall, outs = timed(fan, runs)
    return [
        w4_cell(PEER, "fan_out (default BestEffort)", wall, outs, True),
        _shellwork.w4("fanflow map", MAP, runs),
    ]


def w5(runs: int) -> list[Cell]:
    tally = Tally()
    job = tallied(tally, w5_latency)

    async def fan() -> tuple[int, int]:
        tasks = [ff.Task(str(i), job, args=(i,)) for i in range(W5_N)]
        result = await ff.fan_out(tasks, timeout=W5_TIMEOUT)
        return len(result.succeeded), len(result.timed_out)

    return [
        w5_cell(PEER, "fan_out(timeout=0.2)", repeat(timeout_run(tally, fan), runs), True),
        _shellwork.w5("fanflow map", MAP, runs),
    ]


def w6(runs: int) -> list[Cell]:
    async def attempt(rng: random.Random) -> None:
        await asyncio.sleep(w6_draw(rng))

    def run(hedge: ff.Hedge | None) -> Callable[[], Awaitable[tuple[float, float]]]:
        seeds = iter(range(runs))

        async def fan() -> tuple[float, float]:
            rng = random.Random(next(seeds))
            tasks = [ff.Task(str(i), attempt, args=(rng,)) for i in range(W6_N)]
            result = await ff.fan_out(tasks, hedge=hedge, max_concurrency=W6_LIMIT)
            latencies = [r.duration or 0.0 for r in result.results]
            return p99(latencies), sum(r.attempts for r in result.results) / W6_N - 1

        return fan

    return [
        w6_cell(
            PEER,
            'fan_out(hedge=Hedge(after="p95"))',
            repeat(run(ff.Hedge(after="p95")), runs),
            True,
        )
    ]


def w7(runs: int) -> list[Cell]:
    return [_shellwork.w7("fanflow map", "fanflow map -j 8", MAP, runs)]
