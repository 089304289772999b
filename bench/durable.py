"""Durable fan-outs (``journal=``, SPEC §8.3, issue #18): resume after ``kill -9``, make-like
incremental reruns, and what the journal costs.

The model is the simulator, served from a thread of this process so that every request
is counted per task (each prompt starts with ``TASK <name>:``); the runs measured are
child processes, killed with SIGKILL by their PID.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fanflow as ff
from fanflow.testing import Latency, SimConfig, Simulator

Row = tuple[str, str, str, str]

_TASK = re.compile(r"(?m)^TASK ([\w-]+):")
_NONCE = re.compile(r"[0-9a-f]{16,}")


def _task_of(prompt: str) -> str:
    found = _TASK.search(prompt)
    return found.group(1) if found else "?"


class _CountingSim:
    """The simulator on a thread, counting requests started and answered, per task.

    Answers name their task and digest the prompt (nonces left out): a task's value
    changes exactly when its inputs do, as a real model's would.
    """

    def __init__(self, median: float, sigma: float = 0.3) -> None:
        self.config = SimConfig(latency=Latency(median, sigma), seed=18)
        self.started: list[str] = []
        self.answered: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._sim: Simulator | None = None

    def _main(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        sim = Simulator(self.config)
        loop.run_until_complete(sim.start())
        service = sim._service
        serve = service._serve

        async def counted(prompt: str, sample: object) -> tuple[int, str]:
            task = _task_of(prompt)
            with self._lock:
                self.started.append(task)
            status, text = await serve(prompt, sample)
            with self._lock:
                self.answered.append(task)
            if status == 200:
                digest = hashlib.sha256(_NONCE.sub("", prompt).encode()).hexdigest()[:12]
                text = f"answer of {task} #{digest}"
            return status, text

        service._serve = counted  # type: ignore[method-assign]
        self._sim = sim
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(sim.stop())
            loop.close()

    def __enter__(self) -> _CountingSim:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the simulator did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)

    def env(self) -> dict[str, str]:
        assert self._sim is not None
        return {**os.environ, "FANFLOW_SIM_URL": self._sim.url}

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.started), len(self.answered)

    def settle(self) -> int:
        """Wait until nothing is in flight and nothing new came for 0.2 s; requests started."""
        assert self._sim is not None
        last, quiet = (-1, -1), 0
        while quiet < 10:
            time.sleep(0.02)
            now = self.counts()
            quiet = quiet + 1 if now == last and self._sim._service.in_flight == 0 else 0
            last = now
        return last[0]


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err


def _recorded(journal: Path, scratch: Path) -> set[str]:
    """Names recorded ok by a dead process, read from a copy (the rerun recovers the WAL)."""
    import shutil
    import sqlite3

    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{journal}{suffix}")
        dst = scratch / f"copy.db{suffix}"
        if src.exists():
            shutil.copy(src, dst)
        elif dst.exists():
            dst.unlink()
    db = sqlite3.connect(scratch / "copy.db")
    try:
        return {key for (key,) in db.execute("SELECT key FROM items WHERE status = 'ok'")}
    finally:
        db.close()


# -- resume after kill -9 -------------------------------------------------------------------
_CHILD = """\
import asyncio, sys
import fanflow as ff

async def main(journal, n, limit):
    llm = ff.llm.from_uri("sim:m")
    tasks = [ff.llm.prompt_task(f"p{i}", llm, f"TASK p{i}: what is {i} squared?")
             for i in range(n)]
    try:
        result = await ff.fan_out(tasks, journal=journal, max_concurrency=limit,
                                  raise_on_failure=False)
    finally:
        await llm.aclose()
    bad = [r.name for r in result.results if not r.ok]
    replayed = sorted(r.name for r in result.results if r.replayed)
    print(" ".join(replayed))
    sys.exit(1 if bad else 0)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def bench_resume(points: int = 20, n: int = 200, limit: int = 16) -> list[Row]:
    rng = random.Random(1818)
    kills: list[int] = []
    points_at: list[int] = []
    lost = paid_twice = wrong_rerun = answered_lost = cut_off = recorded_total = 0
    with tempfile.TemporaryDirectory() as tmp, _CountingSim(0.05) as sim:
        folder = Path(tmp)
        script = folder / "child.py"
        script.write_text(_CHILD)
        names = {f"p{i}" for i in range(n)}
        for point in range(points):
            journal = folder / f"j{point}.db"
            args = [sys.executable, str(script), str(journal), str(n), str(limit)]
            start, answered0 = sim.counts()
            at = rng.randint(120, 180)  # about 150 prompts answered, then a random instant
            points_at.append(at)
            proc = subprocess.Popen(
                args, env=sim.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            while sim.counts()[1] - answered0 < at:
                if proc.poll() is not None:
                    raise RuntimeError(f"the run ended before the kill: {proc.communicate()}")
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.05))
            os.kill(proc.pid, signal.SIGKILL)
            code, _ = _finish(proc)
            if code != -signal.SIGKILL:
                raise RuntimeError(f"the run ended ({code}) before the kill")
            done = _recorded(journal, folder)
            mid = sim.settle()
            with sim._lock:
                killed_started = Counter(sim.started[start:])
                killed_answered = Counter(sim.answered[answered0:])
            kills.append(len(done))
            recorded_total += len(done)
            rerun = subprocess.Popen(
                args, env=sim.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            out, err = rerun.communicate(timeout=120)
            if rerun.returncode != 0:
                raise RuntimeError(f"the rerun failed ({rerun.returncode}): {err[-2000:]}")
            sim.settle()
            with sim._lock:
                again = Counter(sim.started[mid:])
            replayed = set(out.split())
            lost += len(done - replayed)  # recorded, yet not replayed
            paid_twice += sum(again[name] for name in done)
            wrong_rerun += again != Counter(dict.fromkeys(names - done, 1))
            unrecorded = set(killed_started) - done
            answered_lost += sum(1 for name in unrecorded if killed_answered[name])
            cut_off += sum(1 for name in unrecorded if not killed_answered[name])
    return [
        (
            "durable",
            f"kill -9 of a {n}-prompt fan_out, {points} points",
            f"{recorded_total / points:.0f} recorded/kill",
            f"killed {min(points_at)}..{max(points_at)} answers in (+0..50 ms, seeded); "
            f"{min(kills)}..{max(kills)} recorded",
        ),
        (
            "durable",
            "rerun: recorded but not replayed (lost)",
            f"{lost}",
            "target 0",
        ),
        (
            "durable",
            "rerun: recorded ok and asked again (paid twice)",
            f"{paid_twice}",
            f"target 0; reruns asking other than the missing prompts: {wrong_rerun}",
        ),
        (
            "durable",
            "in flight at the kill, not recorded",
            f"{answered_lost + cut_off} calls",
            f"{answered_lost} answered (paid, lost), {cut_off} cut off; "
            f"{(answered_lost + cut_off) / points:.1f}/kill at max_concurrency={limit}",
        ),
    ]


# -- incremental rerun ------------------------------------------------------------------
_TEN = {
    "t0": ((), "what is zero?"),
    "t1": ((), "what is one?"),
    "t2": ((), "what is two?"),
    "t3": (("t0",), "extend"),
    "t4": (("t0", "t1"), "join"),
    "t5": (("t3",), "extend"),
    "t6": (("t2",), "extend"),
    "t7": (("t4", "t5"), "join"),
    "t8": (("t6",), "extend"),
    "t9": ((), "what is nine?"),
}


def _ten(edited: str | None) -> str:
    lines = ["name: ten", "llm: 'sim:m'", "max_concurrency: 4", "tasks:"]
    for name, (needs, words) in _TEN.items():
        if name == edited:
            words = "what, on second thought, is it?"
        uses = " ".join(f"{{{{ tasks.{need}.value }}}}" for need in needs)
        lines.append(f"  {name}:")
        if needs:
            lines.append(f"    needs: [{', '.join(needs)}]")
        lines.append(f"    prompt: 'TASK {name}: {words} {uses}'")
    return "\n".join(lines) + "\n"


def _dependents(name: str) -> set[str]:
    out: set[str] = set()
    for other, (needs, _) in _TEN.items():
        if name in needs:
            out |= {other} | _dependents(other)
    return out


def bench_incremental(edited: str = "t0") -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, _CountingSim(0.01) as sim:
        folder = Path(tmp)
        wf = folder / "wf.yaml"
        cmd = [sys.executable, "-m", "fanflow", "run", "wf.yaml", "--journal", "j.db"]
        cmd += ["--json", "out.json"]
        for text in (_ten(None), _ten(edited)):
            wf.write_text(text)
            before = sim.settle()
            done = subprocess.run(cmd, cwd=folder, env=sim.env(), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"fanflow run failed: {done.stderr[-2000:]}")
            asked = sim.settle() - before
        results = json.loads((folder / "out.json").read_text())["result"]["results"]
        ran = sum(1 for r in results if not r["replayed"])
    dependents = len(_dependents(edited))
    return [
        (
            "durable",
            f"10-task workflow, prompt of {edited} edited",
            f"{asked} asked, {ran} not replayed",
            f"expected 1 + {dependents} dependents = {1 + dependents}; {len(_TEN) - ran} replayed",
        )
    ]


# -- what the journal costs --------------------------------------------------------------
async def _noop() -> None:
    return None


def bench_cost(runs: int = 5, n: int = 10_000) -> list[Row]:
    tasks = [ff.Task(str(i), _noop) for i in range(n)]

    def median(make_journal: Any) -> float:
        async def main() -> list[float]:
            await ff.fan_out(tasks, journal=make_journal(-1))  # warm-up
            times = []
            for i in range(runs):
                journal = make_journal(i)
                gc.collect()
                t0 = time.perf_counter()
                result = await ff.fan_out(tasks, journal=journal)
                times.append(time.perf_counter() - t0)
                assert result.ok
            return times

        return statistics.median(asyncio.run(main()))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bare = median(lambda i: None)
        fresh = median(lambda i: folder / f"fresh{i + 1}.db")
        full = folder / "full.db"
        asyncio.run(ff.fan_out(tasks, journal=full))
        replayed = median(lambda i: full)
    return [
        ("durable", f"fan_out of {n:,} no-ops, no journal", f"{bare * 1e3:.0f} ms", "1.00x"),
        (
            "durable",
            "  with journal= (a fresh file each run)",
            f"{fresh * 1e3:.0f} ms",
            f"{fresh / bare:.2f}x (target <= 3x)",
        ),
        (
            "durable",
            f"  rerun, all {n:,} replayed from the journal",
            f"{replayed * 1e3:.0f} ms",
            f"{replayed / bare:.2f}x no journal",
        ),
    ]


def bench_durable(runs: int = 5) -> list[Row]:
    return [*bench_resume(), *bench_incremental(), *bench_cost(runs)]


if __name__ == "__main__":
    for row in bench_durable(3):
        print(f"{row[0]:<9} {row[1]:<46} {row[2]:<22} {row[3]}", flush=True)
