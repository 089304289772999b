"""LangChain: a RunnableLambda's abatch / abatch_as_completed with max_concurrency."""

from __future__ import annotations

import asyncio
import importlib.metadata

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
from langchain_core.runnables import RunnableLambda

PEER = "LangChain"
CANNOT = {
    "W6": "no hedging: the race per task is hand-written (as in the asyncio row)",
    "W7": "no shell layer",
}


def VERSION() -> str:
    return f"langchain-core {importlib.metadata.version('langchain-core')}"


async def noop(_: int) -> None:
    return None


async def sleep(_: int) -> None:
    await asyncio.sleep(W2_DELAY)


def w1(runs: int) -> list[Cell]:
    runnable = RunnableLambda(noop)

    async def abatch() -> None:
        await runnable.abatch(list(range(W1_N)))

    return [Cell("W1", PEER, "RunnableLambda.abatch", timed(abatch, runs)[0])]


def w2(runs: int) -> list[Cell]:
    runnable = RunnableLambda(sleep)

    async def abatch() -> None:
        await runnable.abatch(list(range(W2_N)), config={"max_concurrency": W2_LIMIT})

    return [Cell("W2", PEER, "abatch(max_concurrency=100)", timed(abatch, runs)[0])]


def w3(runs: int) -> list[Cell]:
    tally = Tally()
    runnable = RunnableLambda(tallied(tally, w3_latency))

    async def as_completed_break() -> None:
        first = []
        async for _, i in runnable.abatch_as_completed(list(range(W3_N))):
            first.append(i)
            if len(first) == W3_FIRST:
                break

    outs = repeat(first_n_run(tally, as_completed_break), runs)
    return [w3_cell(PEER, "abatch_as_completed + break", outs, False)]


def w4(runs: int) -> list[Cell]:
    runnable = RunnableLambda(w4_job)

    async def abatch() -> tuple[int, int]:
        out = await runnable.abatch(list(range(W4_N)), return_exceptions=True)
        failed = sum(isinstance(r, Exception) for r in out)
        return W4_N - failed, failed

    wall, outs = timed(abatch, runs)
    return [w4_cell(PEER, "abatch(return_exceptions=True)", wall, outs, True)]


def w5(runs: int) -> list[Cell]:
    tally = Tally()
    job = tallied(tally, w5_latency)

    async def bounded(i: int) -> int:
        return await asyncio.wait_for(job(i), W5_TIMEOUT)

    runnable = RunnableLambda(bounded)

    async def abatch() -> tuple[int, int]:
        out = await runnable.abatch(list(range(W5_N)), return_exceptions=True)
        failed = sum(isinstance(r, TimeoutError) for r in out)
        return W5_N - failed, failed

    return [
        w5_cell(
            PEER,
            "abatch + wait_for wrapper (hand-written)",
            repeat(timeout_run(tally, abatch), runs),
            False,
        )
    ]
