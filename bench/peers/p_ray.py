"""Ray: remote tasks for W1, an async actor (max_concurrency=100) for the I/O workloads.

A local cluster of 2 CPUs is started once. Sleeping in 100 concurrent Ray
*tasks* would need 100 worker processes; an async actor is what Ray's docs
suggest for I/O-bound concurrency, so W2-W5 run as its methods.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import _common
import ray
from _common import (
    W1_N,
    W2_DELAY,
    W2_LIMIT,
    W2_N,
    W3_FIRST,
    W3_N,
    W3_SLOWEST,
    W4_N,
    W5_N,
    W5_TIMEOUT,
    Cell,
    Tally,
    tallied,
    timed_sync,
    w3_cell,
    w3_latency,
    w4_cell,
    w4_job,
    w5_cell,
    w5_latency,
)

import fanflow as ff

PEER = "Ray"
CANNOT = {
    "W6": "no hedging: the duplicate and ray.cancel of the loser are hand-written",
    "W7": "no shell layer: subprocess.run inside a task is hand-written",
}


def _start() -> None:
    if not ray.is_initialized():
        # Ship this module's functions and classes to the workers by value:
        # they cannot import the bench's modules (and must not start Ray).
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.cloudpickle.register_pickle_by_value(_common)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def VERSION() -> str:
    _start()
    return f"ray {ray.__version__} (local cluster, num_cpus=2)"


def shutdown() -> None:
    ray.shutdown()


def noop() -> None:
    return None


remote_noop = ray.remote(noop)


@ray.remote(max_concurrency=W2_LIMIT)
class Worker:
    """Runs the tasks' bodies on its event loop and counts them."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.w3 = tallied(self.tally, w3_latency)
        self.w5 = tallied(self.tally, w5_latency)

    async def reset(self) -> None:
        self.tally.reset()

    async def counts(self) -> tuple[int, int]:
        return self.tally.completed, self.tally.running

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def run(self, workload: str, i: int) -> int:
        if workload == "w3":
            return await self.w3(i)
        if workload == "w4":
            return await w4_job(i)
        return await self.w5(i)


def _worker() -> Any:
    worker = Worker.remote()  # type: ignore[attr-defined]
    ray.get(worker.reset.remote())
    return worker


def w1(runs: int) -> list[Cell]:
    def tasks() -> None:
        ray.get([remote_noop.remote() for _ in range(W1_N)])

    async def fanflow() -> None:
        # The same plain function as the bare row (Ray tasks run sync code).
        tasks = [ff.Task(str(i), noop) for i in range(W1_N)]
        await ff.fan_out(tasks, executor=ff.executors.Ray(), max_concurrency=None)

    base = timed_sync(tasks, runs)[0]
    wall = timed_sync(lambda: asyncio.run(fanflow()), runs)[0]
    return [
        Cell("W1", PEER, "remote tasks + ray.get", base),
        Cell(
            "W1",
            "fanflow on Ray",
            "fan_out(executor=Ray())",
            wall,
            {"note": f"{wall / base:.2f}x bare Ray"},
        ),
    ]


def w2(runs: int) -> list[Cell]:
    worker = _worker()

    def actor() -> None:
        ray.get([worker.sleep.remote(W2_DELAY) for _ in range(W2_N)])

    wall, _ = timed_sync(actor, runs)
    ray.kill(worker)
    return [Cell("W2", PEER, "async actor(max_concurrency=100)", wall)]


def w3(runs: int) -> list[Cell]:
    worker = _worker()

    def once() -> tuple[float, int, int]:
        ray.get(worker.reset.remote())
        t0 = time.perf_counter()
        refs = [worker.run.remote("w3", i) for i in range(W3_N)]
        _, rest = ray.wait(refs, num_returns=W3_FIRST)
        for ref in rest:
            ray.cancel(ref)
        wall = time.perf_counter() - t0
        _, left = ray.get(worker.counts.remote())
        time.sleep(max(0.0, t0 + W3_SLOWEST + 0.1 - time.perf_counter()))
        completed, _ = ray.get(worker.counts.remote())
        return wall, completed - W3_FIRST, left

    outs = [once() for _ in range(runs)]
    ray.kill(worker)
    return [w3_cell(PEER, "actor: wait(num_returns=10) + cancel", outs, False)]


def w4(runs: int) -> list[Cell]:
    worker = _worker()

    def once() -> tuple[int, int]:
        # ray.get on the list raises the first failure; each ref is got alone.
        refs = [worker.run.remote("w4", i) for i in range(W4_N)]
        ok = 0
        for ref in refs:
            try:
                ray.get(ref)
                ok += 1
            except ray.exceptions.RayTaskError:
                pass
        return ok, W4_N - ok

    wall, outs = timed_sync(once, runs)
    ray.kill(worker)
    return [w4_cell(PEER, "actor: try/except around each ray.get", wall, outs, False)]


def w5(runs: int) -> list[Cell]:
    worker = _worker()

    def once() -> tuple[float, int, int, int, int]:
        ray.get(worker.reset.remote())
        t0 = time.perf_counter()
        refs = [worker.run.remote("w5", i) for i in range(W5_N)]
        # A deadline over the whole wait, not a per-task timeout: the same
        # here only because all 100 start together.
        ready, rest = ray.wait(refs, num_returns=W5_N, timeout=W5_TIMEOUT)
        for ref in rest:
            ray.cancel(ref)
        wall = time.perf_counter() - t0
        _, left = ray.get(worker.counts.remote())
        time.sleep(0.5)
        _, later = ray.get(worker.counts.remote())
        return wall, len(ready), len(rest), left, later

    outs = [once() for _ in range(runs)]
    ray.kill(worker)
    return [w5_cell(PEER, "actor: wait(timeout=0.2) + cancel", outs, "deadline only")]
