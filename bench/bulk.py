"""Bulk benchmarks: fanflow map vs GNU parallel and xargs -P; fan_map over 10^6 items."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

Row = tuple[str, str, str, str]


def _wall(cmd: list[str], stdin: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            cmd, input=stdin, text=True, stdout=subprocess.DEVNULL, check=True, env=_SAME_SHELL
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# fanflow map and GNU parallel run jobs under $SHELL; xargs is given sh -c.
# The same shell for all three, so that the rows compare the runners, not
# bash's start-up (about twice dash's) against sh's.
_SAME_SHELL = {**os.environ, "SHELL": "/bin/sh"}


def bench_shell(runs: int = 5) -> list[Row]:
    """Per-job wall time on the same jobs, side by side.

    Every runner starts a shell per job (fanflow and GNU parallel always do;
    xargs is given ``sh -c`` so that it does the same work), the same
    shell: ``SHELL=/bin/sh`` for all three.
    """
    rows: list[Row] = []
    parallel = shutil.which("parallel")
    for body, n in (("true", 2000), ("sleep 0.05", 200)):
        stdin = "".join(f"{i}\n" for i in range(n))
        template = f"{body}; : {{}}"
        runners = {
            "fanflow map -j 8": [sys.executable, "-m", "fanflow", "map", "-j", "8", template],
            "xargs -P 8 sh -c": ["xargs", "-P", "8", "-n", "1", "sh", "-c", f'{body}; : "$1"', "_"],
        }
        if parallel:
            runners["GNU parallel -j 8"] = [parallel, "-j", "8", template]
        took = {name: _wall(cmd, stdin, runs) for name, cmd in runners.items()}
        base = took["xargs -P 8 sh -c"]
        for name, t in took.items():
            note = f"{t / base:.2f}x xargs"
            if name.startswith("fanflow"):
                note += " (target <= 1.5x)"
                if parallel:
                    note += f", {t / took['GNU parallel -j 8']:.2f}x GNU parallel (target < 1x)"
            rows.append(("map", f"{name}: {n} x '{body}'", f"{t / n * 1e3:.2f} ms/job", note))
        if not parallel:
            rows.append(("map", "GNU parallel", "not installed", "apt-get install parallel"))
    return rows


CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    import fanflow as ff

    n, journal = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)

    async def inc(x):
        return x + 1

    async def main():
        count = 0
        t0 = time.perf_counter()
        async for r in ff.fan_map(inc, range(n), journal=journal, max_concurrency=64):
            count += r.ok
        took = time.perf_counter() - t0
        assert count == n
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child
        # of a big bench process would report its parent's peak.
        with open("/proc/self/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM:"))
        rss = int(hwm.split()[1]) / 1024
        print(f"{n / took:.0f} {rss:.1f}")

    asyncio.run(main())
    """
)


def bench_fan_map(n: int = 1_000_000) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as f:
            f.write(CHILD)
        for label, extra in (("no journal", []), ("journal", [os.path.join(tmp, "j.db")])):
            out = subprocess.run(
                [sys.executable, script, str(n), *extra], capture_output=True, text=True, check=True
            )
            rate, rss = out.stdout.split()
            rows.append(
                (
                    "fan_map",
                    f"{n:,} trivial items, {label}",
                    f"{float(rate):,.0f} items/s",
                    f"peak RSS {float(rss):.0f} MB (target <= 150 MB)",
                )
            )
    return rows


def _cpu(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def bench_process(tasks: int = 1000, work: int = 20_000, runs: int = 5) -> list[Row]:
    """1,000 CPU-bound tasks: fan_out(executor="process") vs ProcessPoolExecutor."""
    import asyncio
    import concurrent.futures

    import fanflow as ff

    workers = os.cpu_count() or 1

    def pool() -> float:
        t0 = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(workers) as executor:
            list(executor.map(_cpu, [work] * tasks, chunksize=1))
        return time.perf_counter() - t0

    def fanflow() -> float:
        async def go() -> None:
            jobs = [ff.Task(str(i), _cpu, args=(work,)) for i in range(tasks)]
            await ff.fan_out(jobs, executor=ff.executors.Process(workers=workers))

        t0 = time.perf_counter()
        asyncio.run(go())
        return time.perf_counter() - t0

    base = statistics.median(pool() for _ in range(runs))
    took = statistics.median(fanflow() for _ in range(runs))
    return [
        ("process", f"ProcessPoolExecutor({workers}), {tasks} CPU tasks", f"{base:.2f} s", "1.00x"),
        (
            "process",
            f"fan_out(executor=Process(workers={workers}))",
            f"{took:.2f} s",
            f"{took / base:.2f}x (each attempt killable; workers start fresh)",
        ),
    ]


def _noop(x: int) -> int:
    return x


def bench_ray(tasks: int = 1000, runs: int = 5) -> list[Row]:
    """Per-task overhead of fanflow on Ray vs bare ray.remote + ray.get."""
    import asyncio

    import ray

    import fanflow as ff

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(_noop)
        ray.get([remote.remote(i) for i in range(50)])  # warm the workers

        def bare() -> float:
            t0 = time.perf_counter()
            ray.get([remote.remote(i) for i in range(tasks)])
            return time.perf_counter() - t0

        def futures() -> float:
            # The floor for anything that settles each task on its own: one
            # ref.future() per task, awaited in asyncio, nothing else.
            async def go() -> None:
                loop = asyncio.get_running_loop()
                refs = [remote.remote(i) for i in range(tasks)]
                await asyncio.gather(*[asyncio.wrap_future(r.future(), loop=loop) for r in refs])

            t0 = time.perf_counter()
            asyncio.run(go())
            return time.perf_counter() - t0

        executor = ff.executors.Ray()

        def fanflow() -> float:
            async def go() -> None:
                jobs = [ff.Task(str(i), _noop, args=(i,)) for i in range(tasks)]
                await ff.fan_out(jobs, executor=executor, max_concurrency=None)

            t0 = time.perf_counter()
            asyncio.run(go())
            return time.perf_counter() - t0

        fanflow()  # warm-up
        base = statistics.median(bare() for _ in range(runs))
        floor = statistics.median(futures() for _ in range(runs))
        took = statistics.median(fanflow() for _ in range(runs))
    finally:
        ray.shutdown()
    return [
        (
            "ray",
            f"ray.remote + ray.get, {tasks} no-op tasks",
            f"{base / tasks * 1e3:.2f} ms/task",
            "1.00x",
        ),
        (
            "ray",
            "floor: ref.future() per task in asyncio",
            f"{floor / tasks * 1e3:.2f} ms/task",
            f"{floor / base:.2f}x",
        ),
        (
            "ray",
            "fan_out(executor=ff.executors.Ray())",
            f"{took / tasks * 1e3:.2f} ms/task",
            f"{took / base:.2f}x (target <= 1.2x)",
        ),
    ]
