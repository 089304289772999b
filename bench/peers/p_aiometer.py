"""aiometer: run_all / amap with max_at_once, on anyio's asyncio backend."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata

import aiometer
import anyio
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
    Cell,
    Tally,
    first_n_run,
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
)

PEER = "aiometer"
CANNOT = {
    "W6": "no hedging: the race per task is hand-written (as in the asyncio row)",
    "W7": "no shell layer: subprocesses are hand-written (as in the asyncio row)",
}


def VERSION() -> str:
    return f"aiometer {importlib.metadata.version('aiometer')}"


async def noop() -> None:
    return None


def w1(runs: int) -> list[Cell]:
    async def run_all() -> None:
        await aiometer.run_all([noop for _ in range(W1_N)])

    async def amap() -> None:
        async with aiometer.amap(lambda _: noop(), range(W1_N)) as results:
            async for _ in results:
                pass

    return [
        Cell("W1", PEER, "run_all", timed(run_all, runs)[0]),
        Cell("W1", PEER, "amap", timed(amap, runs)[0]),
    ]


def w2(runs: int) -> list[Cell]:
    async def run_all() -> None:
        sleeps = [functools.partial(asyncio.sleep, W2_DELAY) for _ in range(W2_N)]
        await aiometer.run_all(sleeps, max_at_once=W2_LIMIT)

    return [Cell("W2", PEER, "run_all(max_at_once=100)", timed(run_all, runs)[0])]


def w3(runs: int) -> list[Cell]:
    tally = Tally()
    job = tallied(tally, w3_latency)

    async def amap_break() -> None:
        # What the docs suggest: leaving the block waits for every task.
        first: list[int] = []
        async with aiometer.amap(job, range(W3_N)) as results:
            async for i in results:
                first.append(i)
                if len(first) == W3_FIRST:
                    break

    async def amap_cancel() -> None:
        first: list[int] = []
        with anyio.CancelScope() as scope:
            async with aiometer.amap(job, range(W3_N)) as results:
                async for i in results:
                    first.append(i)
                    if len(first) == W3_FIRST:
                        scope.cancel()
                        break

    return [
        w3_cell(
            PEER, "amap + break (waits for all)", repeat(first_n_run(tally, amap_break), runs), "no"
        ),
        w3_cell(
            PEER,
            "amap + CancelScope.cancel() (hand-written)",
            repeat(first_n_run(tally, amap_cancel), runs),
            False,
        ),
    ]


def w4(runs: int) -> list[Cell]:
    # Without the wrapper run_all raises the first failure (in an
    # ExceptionGroup) and cancels the rest: nothing that succeeded comes back.
    async def wrapped(i: int) -> bool:
        try:
            await w4_job(i)
            return True
        except Exception:
            return False

    async def run_all() -> tuple[int, int]:
        out = await aiometer.run_all([functools.partial(wrapped, i) for i in range(W4_N)])
        return sum(out), W4_N - sum(out)

    wall, outs = timed(run_all, runs)
    return [w4_cell(PEER, "run_all + try/except wrapper", wall, outs, False)]


def w5(runs: int) -> list[Cell]:
    tally = Tally()
    job = tallied(tally, w5_latency)

    async def bounded(i: int) -> bool:
        try:
            with anyio.fail_after(W5_TIMEOUT):
                await job(i)
            return True
        except TimeoutError:
            return False

    async def run_all() -> tuple[int, int]:
        out = await aiometer.run_all([functools.partial(bounded, i) for i in range(W5_N)])
        return sum(out), W5_N - sum(out)

    return [
        w5_cell(
            PEER,
            "run_all + anyio.fail_after (hand-written)",
            repeat(timeout_run(tally, run_all), runs),
            False,
        )
    ]
