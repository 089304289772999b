"""Bare asyncio: gather, TaskGroup, and what users write by hand around them.

This peer also provides the baselines the table divides by (marked
``baseline``): ``gather`` for W1, Semaphore + ``gather`` for W2,
``gather(return_exceptions=True)`` for W4, the unhedged run for W6.
"""

from __future__ import annotations

import asyncio
import platform
import random
import time
from collections.abc import Awaitable, Callable

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
    W6_P95,
    W7_BODY,
    W7_JOBS,
    W7_N,
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

Row6 = tuple[float, float]
PEER = "asyncio"
CANNOT: dict[str, str] = {}


def VERSION() -> str:
    return f"asyncio (CPython {platform.python_version()})"


async def noop() -> None:
    return None


def w1(runs: int) -> list[Cell]:
    async def gather() -> None:
        await asyncio.gather(*[noop() for _ in range(W1_N)])

    async def task_group() -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(W1_N):
                tg.create_task(noop())

    return [
        Cell("W1", PEER, "gather", timed(gather, runs)[0], {"baseline": True}),
        Cell("W1", PEER, "TaskGroup", timed(task_group, runs)[0]),
    ]


def w2(runs: int) -> list[Cell]:
    async def semaphore_gather() -> None:
        sem = asyncio.Semaphore(W2_LIMIT)

        async def one() -> None:
            async with sem:
                await asyncio.sleep(W2_DELAY)

        await asyncio.gather(*[one() for _ in range(W2_N)])

    wall, _ = timed(semaphore_gather, runs)
    return [Cell("W2", PEER, "Semaphore(100) + gather", wall, {"baseline": True})]


def w3(runs: int) -> list[Cell]:
    tally = Tally()
    job = tallied(tally, w3_latency)

    async def gather_all() -> None:
        # All 100 come back, in input order: which 10 finished first is lost.
        await asyncio.gather(*[job(i) for i in range(W3_N)])

    async def as_completed_cancel() -> None:
        tasks = [asyncio.create_task(job(i)) for i in range(W3_N)]
        first: list[int] = []
        for fut in asyncio.as_completed(tasks):
            first.append(await fut)
            if len(first) == W3_FIRST:
                break
        for t in tasks:
            t.cancel()
        # Hand-written code usually returns here, before the cancellations
        # have run: the losers are still pending tasks at this point.

    return [
        w3_cell(PEER, "gather (waits for all)", repeat(first_n_run(tally, gather_all), runs), "no"),
        w3_cell(
            PEER,
            "as_completed + cancel (hand-written)",
            repeat(first_n_run(tally, as_completed_cancel), runs),
            False,
        ),
    ]


def w4(runs: int) -> list[Cell]:
    async def gather() -> tuple[int, int]:
        out = await asyncio.gather(*[w4_job(i) for i in range(W4_N)], return_exceptions=True)
        failed = sum(isinstance(r, BaseException) for r in out)
        return len(out) - failed, failed

    async def task_group() -> tuple[int, int]:
        # Without the wrapper the first failure cancels every sibling and the
        # group raises an ExceptionGroup: nothing that succeeded comes back.
        async def wrapped(i: int) -> tuple[bool, object]:
            try:
                return True, await w4_job(i)
            except Exception as exc:
                return False, exc

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(wrapped(i)) for i in range(W4_N)]
        ok = sum(t.result()[0] for t in tasks)
        return ok, W4_N - ok

    wall, outs = timed(gather, runs)
    base = w4_cell(PEER, "gather(return_exceptions=True)", wall, outs, True)
    base.fields["baseline"] = True
    wall, outs = timed(task_group, runs)
    return [base, w4_cell(PEER, "TaskGroup + try/except wrapper", wall, outs, False)]


def w5(runs: int) -> list[Cell]:
    tally = Tally()
    job = tallied(tally, w5_latency)

    async def gather_wait_for() -> tuple[int, int]:
        out = await asyncio.gather(
            *[asyncio.wait_for(job(i), W5_TIMEOUT) for i in range(W5_N)], return_exceptions=True
        )
        failed = sum(isinstance(r, TimeoutError) for r in out)
        return W5_N - failed, failed

    async def task_group_timeout() -> tuple[int, int]:
        async def bounded(i: int) -> bool:
            try:
                async with asyncio.timeout(W5_TIMEOUT):
                    await job(i)
                return True
            except TimeoutError:
                return False

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(bounded(i)) for i in range(W5_N)]
        ok = sum(t.result() for t in tasks)
        return ok, W5_N - ok

    return [
        w5_cell(
            PEER,
            "gather + wait_for (hand-written)",
            repeat(timeout_run(tally, gather_wait_for), runs),
            False,
        ),
        w5_cell(
            PEER,
            "TaskGroup + asyncio.timeout (hand-written)",
            repeat(timeout_run(tally, task_group_timeout), runs),
            False,
        ),
    ]


def w6(runs: int) -> list[Cell]:
    async def attempt(rng: random.Random) -> None:
        await asyncio.sleep(w6_draw(rng))

    async def plain(rng: random.Random) -> int:
        await attempt(rng)
        return 1

    async def hedged(rng: random.Random) -> int:
        # The race users write by hand: a duplicate after a fixed delay (the
        # 95th percentile, which they must know in advance), first one wins,
        # the loser is cancelled and awaited.
        first = asyncio.create_task(attempt(rng))
        done, _ = await asyncio.wait({first}, timeout=W6_P95)
        if done:
            return 1
        second = asyncio.create_task(attempt(rng))
        done, pending = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return 2

    def run(body: Callable[[random.Random], Awaitable[int]]) -> Callable[[], Awaitable[Row6]]:
        seeds = iter(range(runs))  # the same draws for every variant

        async def fan() -> Row6:
            rng = random.Random(next(seeds))
            sem = asyncio.Semaphore(W6_LIMIT)
            latencies: list[float] = []
            attempts = 0

            async def one() -> None:
                nonlocal attempts
                async with sem:
                    t0 = time.perf_counter()
                    made = await body(rng)
                    attempts += made
                    latencies.append(time.perf_counter() - t0)

            await asyncio.gather(*[one() for _ in range(W6_N)])
            return p99(latencies), attempts / W6_N - 1

        return fan

    base = w6_cell(PEER, "Semaphore + gather, no hedging", repeat(run(plain), runs), None)
    base.fields["baseline"] = True
    return [
        base,
        w6_cell(PEER, "hand-written hedge at a fixed p95", repeat(run(hedged), runs), False),
    ]


def w7(runs: int) -> list[Cell]:
    async def shell() -> None:
        sem = asyncio.Semaphore(W7_JOBS)

        async def one(i: int) -> None:
            async with sem:
                proc = await asyncio.create_subprocess_shell(
                    f"{W7_BODY}; : {i}",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                await proc.communicate()

        await asyncio.gather(*[one(i) for i in range(W7_N)])

    wall, _ = timed(shell, runs)
    return [Cell("W7", PEER, "create_subprocess_shell + Semaphore(8) (hand-written)", wall)]
