"""LangGraph: map-reduce with ``Send``, one graph per workload.

Each graph fans out from START with one ``Send("work", {"i": i})`` per task
and reduces into list channels with ``operator.add``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import operator
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

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
from langgraph.errors import NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

PEER = "LangGraph"
CANNOT = {
    "W6": "no hedging: the race per task is hand-written inside the node",
    "W7": "no shell layer",
}


def VERSION() -> str:
    return f"langgraph {importlib.metadata.version('langgraph')}"


class State(TypedDict):
    n: int
    done: Annotated[list[int], operator.add]
    failed: Annotated[list[str], operator.add]


class Item(TypedDict):
    i: int


def fan(state: State) -> list[Send]:
    return [Send("work", {"i": i}) for i in range(state["n"])]


def on_error(state: Item, error: NodeError) -> dict[str, list[str]]:
    return {"failed": [type(error.error).__name__]}


def graph(body: Callable[[int], Awaitable[Any]], **node: Any) -> Any:
    async def work(item: Item) -> dict[str, list[int]]:
        await body(item["i"])
        return {"done": [item["i"]]}

    g = StateGraph(State)
    g.add_node("work", work, input_schema=Item, **node)
    g.add_conditional_edges(START, fan, ["work"])
    g.add_edge("work", END)
    return g.compile()


def start(n: int) -> State:
    return {"n": n, "done": [], "failed": []}


async def noop(_: int) -> None:
    return None


async def sleep(_: int) -> None:
    await asyncio.sleep(W2_DELAY)


def w1(runs: int) -> list[Cell]:
    g = graph(noop)

    async def invoke() -> None:
        await g.ainvoke(start(W1_N))

    return [Cell("W1", PEER, "Send x 10,000", timed(invoke, runs)[0])]


def w2(runs: int) -> list[Cell]:
    g = graph(sleep)

    async def invoke() -> None:
        await g.ainvoke(start(W2_N), config={"max_concurrency": W2_LIMIT})

    return [Cell("W2", PEER, "Send + config max_concurrency=100", timed(invoke, runs)[0])]


def w3(runs: int) -> list[Cell]:
    tally = Tally()
    g = graph(tallied(tally, w3_latency))

    async def stream_break() -> None:
        first = 0
        stream = g.astream(start(W3_N), stream_mode="updates")
        async for update in stream:
            first += "work" in update
            if first == W3_FIRST:
                break
        await stream.aclose()

    outs = repeat(first_n_run(tally, stream_break), runs)
    return [w3_cell(PEER, "astream(updates) + break + aclose", outs, False)]


def w4(runs: int) -> list[Cell]:
    g = graph(w4_job, error_handler=on_error)

    async def invoke() -> tuple[int, int]:
        out = await g.ainvoke(start(W4_N))
        return len(out["done"]), len(out["failed"])

    wall, outs = timed(invoke, runs)
    return [w4_cell(PEER, "add_node(error_handler=...)", wall, outs, True)]


def w5(runs: int) -> list[Cell]:
    tally = Tally()
    g = graph(tallied(tally, w5_latency), timeout=W5_TIMEOUT, error_handler=on_error)

    async def invoke() -> tuple[int, int]:
        out = await g.ainvoke(start(W5_N))
        return len(out["done"]), len(out["failed"])

    outs = repeat(timeout_run(tally, invoke), runs)
    return [w5_cell(PEER, "add_node(timeout=0.2, error_handler=...)", outs, True)]
