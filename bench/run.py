"""fanflow benchmarks: every figure is a ratio against a baseline measured in the same run.

Run with ``make bench`` (or ``python bench/run.py [--runs N]``). Prints one
table; docs/benchmarks.md records a run and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fanflow as ff

sys.path.insert(0, str(Path(__file__).parent))
import budget
import bulk
import durable
import llm
import structured

Row = tuple[str, str, str, str]


def median_time(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    """Median wall time of ``runs`` fresh executions of ``fn`` (after one warm-up)."""

    async def main() -> list[float]:
        await fn()
        out = []
        for _ in range(runs):
            gc.collect()
            t0 = time.perf_counter()
            await fn()
            out.append(time.perf_counter() - t0)
        return out

    return statistics.median(asyncio.run(main()))


# -- W1: per-task overhead ---------------------------------------------------
async def noop() -> None:
    return None


def bench_overhead(runs: int, n: int = 10_000) -> list[Row]:
    async def gather() -> None:
        await asyncio.gather(*[noop() for _ in range(n)])

    async def fanflow_default() -> None:
        await ff.fan_out([ff.Task(str(i), noop) for i in range(n)])

    async def fanflow_unbounded() -> None:
        await ff.fan_out([ff.Task(str(i), noop) for i in range(n)], max_concurrency=None)

    async def floor() -> None:
        # The least an engine returning per-task results can do on asyncio:
        # one task, one done-callback and one small named record per item.
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        results: list[Any] = [None] * n
        left = [n]

        def record(i: int) -> Callable[[asyncio.Future[None]], None]:
            def done(fut: asyncio.Future[None]) -> None:
                results[i] = (str(i), "ok", fut.result())
                left[0] -= 1
                if not left[0]:
                    finished.set_result(None)

            return done

        for i in range(n):
            asyncio.Task(noop(), loop=loop).add_done_callback(record(i))
        await finished

    base = median_time(gather, runs)
    rows = [("overhead", f"asyncio.gather, {n:,} no-ops", f"{base * 1e3:.1f} ms", "1.00x")]
    t = median_time(floor, runs)
    rows.append(
        ("overhead", "floor: task+callback+record", f"{t * 1e3:.1f} ms", f"{t / base:.2f}x")
    )
    for label, fn in [
        ("fan_out (defaults: cap 100)", fanflow_default),
        ("fan_out (max_concurrency=None)", fanflow_unbounded),
    ]:
        t = median_time(fn, runs)
        rows.append(("overhead", label, f"{t * 1e3:.1f} ms", f"{t / base:.2f}x (target <= 1.3x)"))
    return rows


def bench_scale(runs: int) -> list[Row]:
    """Per-task cost of fan_out at 10^4, 10^5 and 10^6 no-ops: it must stay flat.

    Timed from the call to its return, on tasks built beforehand: building
    a million ``ff.Task`` objects (or a million coroutines for gather) costs
    more per item as the heap grows, for reasons of the garbage collector
    and not of the engine; gather's own rows show that effect.
    """
    rows: list[Row] = []
    first = 0.0

    def timed(n: int, reps: int, build: Callable[[int], Any], run: Callable[[Any], Any]) -> float:
        async def main() -> list[float]:
            out = []
            for _ in range(reps):
                items = build(n)
                gc.collect()
                t0 = time.perf_counter()
                await run(items)
                out.append(time.perf_counter() - t0)
                del items
            return out

        return statistics.median(asyncio.run(main())) / n

    for n, reps in ((10_000, runs), (100_000, 3), (1_000_000, 1)):
        base = timed(n, reps, lambda n: [noop() for _ in range(n)], lambda c: asyncio.gather(*c))
        per = timed(
            n, reps, lambda n: [ff.Task(str(i), noop) for i in range(n)], lambda t: ff.fan_out(t)
        )
        first = first or per
        rows.append(
            ("scale", f"asyncio.gather, {n:,} no-ops, per task", f"{base * 1e6:.2f} us", "")
        )
        rows.append(
            (
                "scale",
                f"fan_out, {n:,} no-ops, per task",
                f"{per * 1e6:.2f} us",
                f"{per / first:.2f}x of 10^4 (target <= 1.25x)",
            )
        )
    return rows


def bench_memory(n: int = 200_000) -> list[Row]:
    """Peak memory of a whole fan-out (tasks built, run, results held), per task."""
    import tracemalloc

    def peak(fn: Callable[[], Awaitable[Any]]) -> float:
        async def main() -> None:
            gc.collect()
            tracemalloc.start()
            held = await fn()
            _, top = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            peaks.append(top)
            del held

        peaks: list[int] = []
        asyncio.run(main())
        return peaks[0] / n

    async def gather() -> Any:
        return await asyncio.gather(*[noop() for _ in range(n)])

    async def fanflow() -> Any:
        return await ff.fan_out([ff.Task(str(i), noop) for i in range(n)])

    base = peak(gather)
    mine = peak(fanflow)
    return [
        ("memory", f"asyncio.gather, {n:,} no-ops, peak per task", f"{base:.0f} B", "1.00x"),
        (
            "memory",
            f"fan_out, {n:,} no-ops, peak per task",
            f"{mine:.0f} B",
            f"{mine / base:.2f}x (target <= 1.5x)",
        ),
    ]


# -- the independence audit's cost ----------------------------------------------
async def noop_with(*args: Any) -> None:
    return None


def bench_audit(runs: int, n: int = 10_000) -> list[Row]:
    shared = {"model": "m", "temperature": 0.0}

    def plain() -> list[ff.Task]:
        return [ff.Task(str(i), noop_with, args=(i, "prompt")) for i in range(n)]

    def sharing() -> list[ff.Task]:
        return [ff.Task(str(i), noop_with, args=(i, shared)) for i in range(n)]

    async def off() -> None:
        await ff.fan_out(plain(), audit="off")

    async def error() -> None:
        await ff.fan_out(plain(), audit="error")

    async def strict_off() -> None:
        await ff.fan_out(sharing(), audit="off")

    async def strict() -> None:
        await ff.fan_out(sharing(), audit="strict")

    base = median_time(off, runs)
    t = median_time(error, runs)
    s_base = median_time(strict_off, runs)
    s = median_time(strict, runs)
    return [
        ("audit", f"fan_out audit='off', {n:,} tasks", f"{base * 1e3:.1f} ms", "1.00x"),
        (
            "audit",
            "fan_out audit='error' (default)",
            f"{t * 1e3:.1f} ms",
            f"{t / base:.3f}x (target <= 1.10x)",
        ),
        (
            "audit",
            "audit='strict', one dict shared by all",
            f"{s * 1e3:.1f} ms",
            f"{s / s_base:.2f}x audit='off' on the same tasks",
        ),
    ]


def bench_needs(runs: int, n: int = 100_000) -> list[Row]:
    # The needs path must stay linear: a chain and a 3-stage pipeline of n
    # no-ops cost a small constant times a plain fan-out of n no-ops.
    names = [str(i) for i in range(n)]
    chain = {names[i]: [names[i - 1]] for i in range(1, n)}
    third = n // 3
    stages = [names[:third], names[third : 2 * third], names[2 * third :]]
    # Each task of a stage needs one of the stage before (round-robin).
    pipeline = {
        name: [stages[s - 1][i % len(stages[s - 1])]]
        for s in (1, 2)
        for i, name in enumerate(stages[s])
    }

    def tasks(needs: dict[str, list[str]]) -> list[ff.Task]:
        return [ff.Task(name, noop, needs=needs.get(name, ())) for name in names]

    async def plain() -> None:
        await ff.fan_out(tasks({}))

    async def linear() -> None:
        await ff.fan_out(tasks(chain))

    async def staged() -> None:
        await ff.fan_out(tasks(pipeline))

    base = median_time(plain, runs)
    c = median_time(linear, runs)
    p = median_time(staged, runs)
    return [
        ("needs", f"fan_out, {n:,} no-ops (no needs)", f"{base * 1e3:.1f} ms", "1.00x"),
        (
            "needs",
            f"needs=, a {n:,}-task chain",
            f"{c * 1e3:.1f} ms",
            f"{c / base:.2f}x (target <= 3x)",
        ),
        (
            "needs",
            f"needs=, a {n:,}-task 3-stage pipeline",
            f"{p * 1e3:.1f} ms",
            f"{p / base:.2f}x (target <= 3x)",
        ),
    ]


# -- W2: I/O efficiency --------------------------------------------------------
def bench_io(runs: int, n: int = 1000, delay: float = 0.02, limit: int = 100) -> list[Row]:
    async def sleeper() -> None:
        await asyncio.sleep(delay)

    async def semaphore_gather() -> None:
        sem = asyncio.Semaphore(limit)

        async def one() -> None:
            async with sem:
                await sleeper()

        await asyncio.gather(*[one() for _ in range(n)])

    async def fanflow() -> None:
        await ff.fan_out([ff.Task(str(i), sleeper) for i in range(n)], max_concurrency=limit)

    ideal = n / limit * delay
    base = median_time(semaphore_gather, runs)
    t = median_time(fanflow, runs)
    return [
        ("io", "Semaphore(100)+gather", f"{base * 1e3:.1f} ms", f"eff {ideal / base:.3f}"),
        (
            "io",
            "fan_out(max_concurrency=100)",
            f"{t * 1e3:.1f} ms",
            f"{t / base:.3f}x (target <= 1.03x), eff {ideal / t:.3f}",
        ),
    ]


# -- W3: first-N -------------------------------------------------------------
def bench_first_n(runs: int, n: int = 100, first: int = 10) -> list[Row]:
    rng = random.Random(42)
    latencies = [rng.lognormvariate(math.log(0.1), 1.0) for _ in range(n)]
    tenth = sorted(latencies)[first - 1]
    finished: list[int] = []

    async def job(i: int) -> int:
        await asyncio.sleep(latencies[i])
        finished.append(i)
        return i

    walls = []
    after_return = 0  # tasks whose code ran on after fan_out returned: must be 0
    same_tick = 0  # ok results beyond the n-th, finished in the same loop tick

    async def timed() -> None:
        nonlocal after_return, same_tick
        finished.clear()
        t0 = time.perf_counter()
        tasks = [ff.Task(str(i), job, args=(i,)) for i in range(n)]
        result = await ff.fan_out(tasks, strategy=ff.FirstN(first))
        walls.append(time.perf_counter() - t0)
        done_at_return = len(finished)
        await asyncio.sleep(0.05)  # would-be orphans get time to show they still run
        after_return = max(after_return, len(finished) - done_at_return)
        same_tick = max(same_tick, len(result.succeeded) - first)

    async def main() -> None:
        for _ in range(runs):
            await timed()

    asyncio.run(main())
    wall = statistics.median(walls)
    target = 1.05 * tenth + 0.005
    return [
        ("first-n", f"10th smallest of {n} lognormal latencies", f"{tenth * 1e3:.1f} ms", "ideal"),
        (
            "first-n",
            f"fan_out FirstN({first})",
            f"{wall * 1e3:.1f} ms",
            f"{wall / tenth:.3f}x ideal (target <= {target * 1e3:.1f} ms); "
            f"losers still running after return: {after_return}; "
            f"extra successes in the n-th's loop tick: {same_tick}",
        ),
    ]


# -- timer accuracy ------------------------------------------------------------
def bench_timeouts(runs: int, n: int = 50, timeout: float = 0.05) -> list[Row]:
    overshoots: list[float] = []

    async def main() -> None:
        for _ in range(runs):
            tasks = [ff.Task(str(i), asyncio.sleep, args=(10,), timeout=timeout) for i in range(n)]
            result = await ff.fan_out(tasks, raise_on_failure=False)
            overshoots.extend((r.duration or 0) - timeout for r in result.results)

    asyncio.run(main())
    p50 = statistics.median(overshoots)
    p99 = sorted(overshoots)[int(0.99 * (len(overshoots) - 1))]
    return [
        (
            "timer",
            f"timeout={timeout}s on hung tasks",
            f"+{p50 * 1e3:.2f} ms p50",
            f"+{p99 * 1e3:.2f} ms p99 overshoot",
        )
    ]


# -- hedging: the heavy-tail mix ---------------------------------------------
def bench_hedge(runs: int, n: int = 1000, limits: tuple[int, ...] = (100, 1000)) -> list[Row]:
    """98 % of attempts ~lognormal around 50 ms, 2 % stall for 2 s; p50/p99 per task.

    At 100 and at 1,000 in flight: hedging must not slow the typical task
    (hedged p50 / unhedged p50 <= 1.05x) while it cuts the p99 >= 10x for
    <= 6 % extra attempts.
    """

    async def attempt(rng: random.Random) -> None:
        if rng.random() < 0.02:
            await asyncio.sleep(2.0)
        else:
            await asyncio.sleep(rng.lognormvariate(math.log(0.05), 0.25))

    def quantile(data: list[float], q: float) -> float:
        data = sorted(data)
        return data[min(len(data) - 1, math.ceil(q * len(data)) - 1)]

    async def one(hedge: ff.Hedge | None, seed: int, limit: int) -> tuple[float, float, float]:
        rng = random.Random(seed)
        tasks = [ff.Task(str(i), attempt, args=(rng,)) for i in range(n)]
        result = await ff.fan_out(tasks, hedge=hedge, max_concurrency=limit)
        durations = [r.duration or 0.0 for r in result.results]
        extra = sum(r.attempts for r in result.results) - n
        return quantile(durations, 0.5), quantile(durations, 0.99), extra / n

    async def main(limit: int) -> dict[str, list[tuple[float, float, float]]]:
        out: dict[str, list[tuple[float, float, float]]] = {"off": [], "p95": []}
        for seed in range(runs):
            out["off"].append(await one(None, seed, limit))
            out["p95"].append(await one(ff.Hedge(after="p95"), seed, limit))
        return out

    rows: list[Row] = []
    for limit in limits:
        data = asyncio.run(main(limit))
        med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in data.items()}
        off, on = med["off"], med["p95"]
        rows += [
            (
                "hedge",
                f"no hedging, {limit} in flight",
                f"p50 {off[0] * 1e3:.0f} ms",
                f"p99 {off[1] * 1e3:.0f} ms",
            ),
            (
                "hedge",
                f'Hedge(after="p95"), {limit} in flight',
                f"p50 {on[0] * 1e3:.0f} ms: {on[0] / off[0]:.2f}x (target <= 1.05x)",
                f"p99 {on[1] * 1e3:.0f} ms: {off[1] / on[1]:.1f}x cut (target >= 10x) "
                f"for {on[2]:.1%} extra attempts (target <= 6 %)",
            ),
        ]
    return rows


# -- rate limit accuracy -----------------------------------------------------------
def bench_rate_limit(rate: float = 50.0, seconds: float = 10.0) -> list[Row]:
    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        starts: list[float] = []

        async def job() -> None:
            starts.append(loop.time())

        limiter = ff.RateLimit(per_second=rate, burst=1)
        tasks = [ff.Task(str(i), job) for i in range(int(rate * seconds) + 1)]
        await ff.fan_out(tasks, rate_limit=limiter)
        return starts[-1] - starts[0], len(starts)

    span, count = asyncio.run(main())
    achieved = (count - 1) / span
    return [
        (
            "rate",
            f"RateLimit(per_second={rate:g}), {seconds:g} s",
            f"{achieved:.2f}/s",
            f"{achieved / rate:.4f}x configured (target within 2 %)",
        )
    ]


# -- vote early stop -------------------------------------------------------------
def bench_vote(questions: int = 200, samples: int = 40, limit: int = 4) -> list[Row]:
    """A 70 %-accurate simulated model: calls made and accuracy, full vs early stop."""

    async def sample(answer: int, turns: int) -> int:
        for _ in range(turns):  # completion order from event-loop turns: no wall time
            await asyncio.sleep(0)
        return answer

    async def main() -> dict[str, tuple[int, int, int]]:
        rng = random.Random(1)
        stats = {"full": [0, 0, 0], "exact": [0, 0, 0], "beta": [0, 0, 0]}
        for _ in range(questions):
            answers = [
                42 if rng.random() < 0.7 else rng.choice([41, 43, 44]) for _ in range(samples)
            ]
            turns = [rng.randint(1, 20) for _ in range(samples)]
            tasks = [ff.Task(f"s{i}", sample, args=(answers[i], turns[i])) for i in range(samples)]
            full_value = None
            for label, rule in [("full", False), ("exact", True), ("beta", ff.BetaStop(0.95))]:
                result = await ff.fan_out(
                    tasks,
                    strategy=ff.Vote(early_stop=rule),
                    max_concurrency=limit,
                    raise_on_failure=False,
                )
                calls = samples - len(result.skipped)
                if label == "full":
                    full_value = result.value
                stats[label][0] += calls
                stats[label][1] += result.value == 42
                stats[label][2] += result.value == full_value
        return {k: (v[0], v[1], v[2]) for k, v in stats.items()}

    stats = asyncio.run(main())
    full_calls = stats["full"][0]
    rows = []
    for label, name, target in [
        ("full", "Vote(early_stop=False)", ""),
        ("exact", "Vote() exact early stop", " (target >= 1.3x, ideal ~1.36x)"),
        ("beta", "Vote(early_stop=BetaStop(0.95))", " (target >= 2.8x, ideal ~3.2x)"),
    ]:
        calls, correct, same = stats[label]
        rows.append(
            (
                "vote",
                name,
                f"{calls / questions:.1f} calls/question",
                f"{full_calls / calls:.2f}x fewer{target}; accuracy {correct / questions:.1%}, "
                f"same answer as full count {same / questions:.1%}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="repetitions per figure (median)")
    parser.add_argument("--only", nargs="*", help="run only these groups (by name)")
    args = parser.parse_args()
    print(
        f"fanflow {ff.__version__} benchmarks - Python {platform.python_version()} on "
        f"{platform.machine()}, {sys.platform}; median of {args.runs} runs",
        flush=True,
    )
    runs = args.runs
    groups: dict[str, Callable[[], list[Row]]] = {
        "overhead": lambda: bench_overhead(runs),
        "scale": lambda: bench_scale(runs),
        "memory": bench_memory,
        "audit": lambda: bench_audit(runs),
        "needs": lambda: bench_needs(runs),
        "io": lambda: bench_io(runs),
        "first-n": lambda: bench_first_n(runs),
        "timer": lambda: bench_timeouts(runs),
        "hedge": lambda: bench_hedge(runs),
        "rate": bench_rate_limit,
        "vote": bench_vote,
        "map": bulk.bench_shell,
        "fan_map": bulk.bench_fan_map,
        "process": bulk.bench_process,
        "ray": bulk.bench_ray,
        "ensemble": llm.bench_ensemble,
        "provider": llm.bench_provider_throughput,
        "plan": llm.bench_plan,
        "durable": lambda: durable.bench_durable(runs),
        "budget": budget.bench_budget,
        "structured": lambda: structured.bench_structured(min(runs, 3)),
    }
    for name, bench in groups.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        for row in bench():
            print(f"{row[0]:<9} {row[1]:<46} {row[2]:<22} {row[3]}", flush=True)
        print(f"  [{name}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
