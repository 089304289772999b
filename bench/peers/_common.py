"""The workloads every peer runs, and the record each measurement produces.

A peer module (``p_*.py``) defines ``PEER`` (its name in the table),
``VERSION()`` (what was measured), functions ``w1`` ... ``w7`` taking the
number of runs and returning a list of :class:`Cell`, and ``CANNOT``: the
workloads it cannot express, each with the reason the table prints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# -- W1: per-task overhead ---------------------------------------------------------
W1_N = 10_000

# -- W2: I/O concurrency -------------------------------------------------------------
W2_N, W2_DELAY, W2_LIMIT = 1000, 0.02, 100
W2_IDEAL = W2_N / W2_LIMIT * W2_DELAY

# -- W3: first 10 of 100 lognormal tasks -------------------------------------------
W3_N, W3_FIRST = 100, 10
_rng = random.Random(42)
W3_LATENCIES = [_rng.lognormvariate(math.log(0.1), 1.0) for _ in range(W3_N)]
W3_IDEAL = sorted(W3_LATENCIES)[W3_FIRST - 1]
W3_SLOWEST = max(W3_LATENCIES)

# -- W4: every 7th task fails ------------------------------------------------------
W4_N, W4_DELAY = 100, 0.01


def w4_fails(i: int) -> bool:
    """Task ``i`` of W4 raises: 14 of 100 (6, 13, ..., 97)."""
    return i % 7 == 6


W4_OK = sum(not w4_fails(i) for i in range(W4_N))

# -- W5: 5 of 100 tasks hang, 0.2 s per-task timeout --------------------------------
W5_N, W5_FAST, W5_HANG, W5_TIMEOUT = 100, 0.05, 10.0, 0.2
W5_IDEAL = W5_TIMEOUT


def w5_latency(i: int) -> float:
    """Task ``i`` of W5: every 20th hangs for 10 s, the rest take 50 ms."""
    return W5_HANG if i % 20 == 19 else W5_FAST


# -- W6: the heavy-tail mix that hedging is for -------------------------------------
W6_N, W6_LIMIT = 1000, 100
W6_STALL_P, W6_STALL = 0.02, 2.0
W6_MEDIAN, W6_SIGMA = 0.05, 0.25
# The 95th percentile of one ordinary attempt: where a hand-written hedge fires.
W6_P95 = math.exp(math.log(W6_MEDIAN) + 1.645 * W6_SIGMA)


def w6_draw(rng: random.Random) -> float:
    """One attempt's latency: 2 % stall for 2 s, the rest lognormal around 50 ms."""
    if rng.random() < W6_STALL_P:
        return W6_STALL
    return rng.lognormvariate(math.log(W6_MEDIAN), W6_SIGMA)


def p99(latencies: list[float]) -> float:
    data = sorted(latencies)
    return data[min(len(data) - 1, math.ceil(0.99 * len(data)) - 1)]


# -- W7: shell jobs ------------------------------------------------------------------
W7_N, W7_JOBS, W7_BODY = 2000, 8, "true"


@dataclasses.dataclass
class Cell:
    """One peer's way of running one workload, measured (or why it can't be).

    ``value`` is the headline figure in seconds: the median wall time (W6:
    the median p99 task latency). ``fields`` holds the rest, e.g.
    ``built_in`` (no hand-written wrapping needed), ``completed`` (losers
    that ran to completion), ``left_running`` (work still running when
    control came back), ``ok``/``failed``. ``cannot`` is set instead of
    ``value`` when the peer cannot express the workload. ``built_in`` may
    also be a word for the column, such as ``"no"`` for code that does not
    do what the workload asks at all.
    """

    w: str
    peer: str
    how: str
    value: float | None = None
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    cannot: str = ""


def timed(
    fn: Callable[[], Awaitable[Any]], runs: int, *, warmup: bool = True
) -> tuple[float, list[Any]]:
    """Median wall time of ``runs`` fresh runs of ``fn`` in one event loop.

    Returns the median and what each run returned.
    """

    async def main() -> tuple[list[float], list[Any]]:
        if warmup:
            await fn()
        walls, outs = [], []
        for _ in range(runs):
            gc.collect()
            t0 = time.perf_counter()
            out = await fn()
            walls.append(time.perf_counter() - t0)
            outs.append(out)
        return walls, outs

    walls, outs = asyncio.run(main())
    return statistics.median(walls), outs


def timed_sync(fn: Callable[[], Any], runs: int, *, warmup: bool = True) -> tuple[float, list[Any]]:
    """:func:`timed` for blocking code (Ray's driver API, subprocesses)."""
    if warmup:
        fn()
    walls, outs = [], []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        outs.append(fn())
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls), outs


def repeat(fn: Callable[[], Awaitable[T]], runs: int, *, warmup: bool = False) -> list[T]:
    """What ``runs`` runs of ``fn`` returned, in one event loop (for runs that time themselves)."""

    async def main() -> list[T]:
        if warmup:
            await fn()
        outs = []
        for _ in range(runs):
            gc.collect()
            outs.append(await fn())
        return outs

    return asyncio.run(main())


def spread(values: list[int]) -> str:
    """A count over runs: the median, with the range when runs differ."""
    med = statistics.median(values)
    text = f"{med:g}"
    if min(values) != max(values):
        text += f" ({min(values)}-{max(values)})"
    return text


class Tally:
    """Counts task bodies started, finished and still running (W3, W5).

    A body calls :meth:`start` first and :meth:`end` in ``finally``;
    ``completed`` counts bodies that ran their work to the end.
    """

    def __init__(self) -> None:
        self.started = self.ended = self.completed = 0

    def reset(self) -> None:
        self.started = self.ended = self.completed = 0

    def start(self) -> None:
        self.started += 1

    def end(self, completed: bool) -> None:
        self.ended += 1
        self.completed += completed

    @property
    def running(self) -> int:
        return self.started - self.ended


async def sleep_until(t0: float, seconds: float) -> None:
    """Sleep until ``seconds`` after ``t0`` (``time.perf_counter``)."""
    await asyncio.sleep(max(0.0, t0 + seconds - time.perf_counter()))


def tagged_processes(tag: str) -> int:
    """How many live processes carry ``FANFLOW_BENCH_TAG=tag`` in their environment.

    Shell peers start their jobs with the tag set, so this counts every
    process a run left behind, however deep, after the runner itself exited.
    """
    needle = f"FANFLOW_BENCH_TAG={tag}".encode()
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    with open(f"/proc/{pid}/stat", "rb") as s:
                        if s.read().split(b") ", 1)[1][:1] != b"Z":
                            count += 1
        except OSError:
            continue
    return count


def w3_cell(peer: str, how: str, outs: list[tuple[float, int, int]], built_in: bool | str) -> Cell:
    """W3 from runs of ``(control back after, losers completed, left running at return)``."""
    return Cell(
        "W3",
        peer,
        how,
        statistics.median(o[0] for o in outs),
        {
            "built_in": built_in,
            "completed": spread([o[1] for o in outs]),
            "left_running": spread([o[2] for o in outs]),
        },
    )


def w4_cell(peer: str, how: str, wall: float, outs: list[tuple[int, int]], built_in: bool) -> Cell:
    """W4 from the median wall and each run's ``(ok, failed)`` counts."""
    return Cell(
        "W4",
        peer,
        how,
        wall,
        {
            "built_in": built_in,
            "ok": spread([o[0] for o in outs]),
            "failed": spread([o[1] for o in outs]),
        },
    )


def w5_cell(
    peer: str, how: str, outs: list[tuple[float, int, int, int, int]], built_in: bool
) -> Cell:
    """W5 from runs of ``(wall, ok, timed out, left running at return, left 0.5 s later)``."""
    return Cell(
        "W5",
        peer,
        how,
        statistics.median(o[0] for o in outs),
        {
            "built_in": built_in,
            "ok": spread([o[1] for o in outs]),
            "failed": spread([o[2] for o in outs]),
            "left_running": spread([o[3] for o in outs]),
            "left_later": spread([o[4] for o in outs]),
        },
    )


def w6_cell(peer: str, how: str, outs: list[tuple[float, float]], built_in: bool | None) -> Cell:
    """W6 from runs of ``(p99 task latency, extra attempts per task)``.

    ``built_in`` is whether the hedging was (``None``: no hedging at all).
    """
    fields: dict[str, Any] = {"extra": statistics.median(o[1] for o in outs)}
    if built_in is not None:
        fields["built_in"] = built_in
    return Cell("W6", peer, how, statistics.median(o[0] for o in outs), fields)


def tallied(tally: Tally, latency: Callable[[int], float]) -> Callable[[int], Awaitable[int]]:
    """An async task body ``job(i)`` that sleeps ``latency(i)``, counted by ``tally``."""

    async def job(i: int) -> int:
        tally.start()
        done = False
        try:
            await asyncio.sleep(latency(i))
            done = True
            return i
        finally:
            tally.end(done)

    return job


def w3_latency(i: int) -> float:
    return W3_LATENCIES[i]


class W4Error(Exception):
    """What W4's failing tasks raise."""


async def w4_job(i: int) -> int:
    """W4's task body: 10 ms, then every 7th raises :class:`W4Error`."""
    await asyncio.sleep(W4_DELAY)
    if w4_fails(i):
        raise W4Error(i)
    return i


def first_n_run(
    tally: Tally, body: Callable[[], Awaitable[object]]
) -> Callable[[], Awaitable[tuple[float, int, int]]]:
    """One W3 run: ``body`` starts the 100 tasks and gives control back after the 10th.

    The run returns the time until control came back, the losers whose work
    ran to completion (waiting out the slowest task to see them all), and
    the tasks still running when control came back.
    """

    async def run() -> tuple[float, int, int]:
        tally.reset()
        t0 = time.perf_counter()
        await body()
        wall, left = time.perf_counter() - t0, tally.running
        await sleep_until(t0, W3_SLOWEST + 0.05)
        return wall, tally.completed - W3_FIRST, left

    return run


def timeout_run(
    tally: Tally, body: Callable[[], Awaitable[tuple[int, int]]]
) -> Callable[[], Awaitable[tuple[float, int, int, int, int]]]:
    """One W5 run: ``body`` runs the 100 tasks and returns ``(ok, timed out)``.

    The run adds the wall time and the hung tasks still running when control
    came back and 0.5 s later.
    """

    async def run() -> tuple[float, int, int, int, int]:
        tally.reset()
        t0 = time.perf_counter()
        ok, failed = await body()
        wall, left = time.perf_counter() - t0, tally.running
        await asyncio.sleep(0.5)
        return wall, ok, failed, left, tally.running

    return run
