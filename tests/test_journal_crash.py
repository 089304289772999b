"""Durable fan-outs under real crashes (SPEC §8.3): ``kill -9`` at random points, two
processes on one journal, make-like incremental reruns, and journals this fanflow
cannot use (older, newer, another job's, not SQLite, nowhere).

The model is the simulator, served from a thread of the test process so that every
request can be counted per task (each prompt starts its own line with ``TASK <name>:``);
the runs under test are child processes, killed with SIGKILL by their PID.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff
from fanflow.testing import Latency, Script, SimConfig, Simulator

from .conftest import run_isolated, running

_TASK = re.compile(r"(?m)^TASK ([\w-]+):")
_NONCE = re.compile(r"[0-9a-f]{16,}")


def task_of(prompt: str) -> str:
    """The task a request is for: the first ``TASK name:`` line of its prompt."""
    found = _TASK.search(prompt)
    return found.group(1) if found else "?"


class CountingSim:
    """The simulator on a thread of its own, counting the requests it receives per task.

    With ``derived=True`` each answer names its task and digests the prompt (the data
    markers' nonces left out), so a task's value changes exactly when its inputs do.
    """

    def __init__(
        self,
        median: float,
        sigma: float = 0.3,
        scripts: Sequence[Script] = (),
        derived: bool = True,
    ) -> None:
        self.config = SimConfig(latency=Latency(median, sigma), scripts=scripts, seed=7)
        self.derived = derived
        self.prompts: list[str] = []
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
            with self._lock:
                self.prompts.append(prompt)
            status, text = await serve(prompt, sample)
            if status == 200 and self.derived:
                digest = hashlib.sha256(_NONCE.sub("", prompt).encode()).hexdigest()[:12]
                text = f"answer of {task_of(prompt)} #{digest}"
            return status, text

        service._serve = counted  # type: ignore[method-assign]
        self._sim = sim
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(sim.stop())
            loop.close()

    def __enter__(self) -> CountingSim:
        self._thread.start()
        assert self._ready.wait(15), "the simulator did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)

    @property
    def url(self) -> str:
        assert self._sim is not None
        return self._sim.url

    def env(self) -> dict[str, str]:
        return {**os.environ, "FANFLOW_SIM_URL": self.url}

    def count(self) -> int:
        with self._lock:
            return len(self.prompts)

    def per_task(self, since: int = 0) -> Counter[str]:
        with self._lock:
            return Counter(task_of(p) for p in self.prompts[since:])

    def settle(self) -> int:
        """Wait until nothing is in flight and no request came for a while; the count."""
        assert self._sim is not None
        last, quiet = -1, 0
        while quiet < 10:
            time.sleep(0.02)
            now = self.count()
            quiet = quiet + 1 if now == last and self._sim._service.in_flight == 0 else 0
            last = now
        return last


def spawn(args: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    # A session of its own: whatever the run starts shares its process group.
    return subprocess.Popen(
        list(args),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def group_alive(pgid: int) -> list[int]:
    """Live processes (not zombies) of a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def finish(proc: subprocess.Popen[str], timeout: float = 50) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert not running(proc.pid) and group_alive(proc.pid) == []
    return proc.returncode, out, err


def kill_when(
    proc: subprocess.Popen[str], sim: CountingSim, requests: int, extra: float
) -> tuple[int, str, str]:
    """SIGKILL ``proc`` ``extra`` seconds after the simulator got its ``requests``-th request."""
    while sim.count() < requests:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    time.sleep(extra)
    os.kill(proc.pid, signal.SIGKILL)
    return finish(proc)


def recorded(journal: Path, tmp: Path) -> dict[str, Any]:
    """The tasks a (dead) process recorded ok: name -> value, read from a copy of the files.

    A copy, so that this reader's WAL recovery and checkpoint leave the rerun to recover
    the journal exactly as the killed process left it.
    """
    copy = tmp / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    for suffix in ("", "-wal", "-shm", "-journal"):
        if Path(f"{journal}{suffix}").exists():
            shutil.copy(f"{journal}{suffix}", copy / f"j.db{suffix}")
    db = sqlite3.connect(copy / "j.db")
    try:
        rows = db.execute("SELECT key, status, value FROM items").fetchall()
    finally:
        db.close()
    assert {status for _, status, _ in rows} <= {"ok"}
    names = [key for key, _, _ in rows]
    assert len(names) == len(set(names)), names
    return {key: json.loads(value) for key, _, value in rows}


def check_resume(
    names: Sequence[str],
    killed_requests: Counter[str],
    done: dict[str, Any],
    rerun_requests: Counter[str],
    rerun: dict[str, dict[str, Any]],
    reference: dict[str, Any],
) -> None:
    """What a kill -9 and a rerun must give (SPEC §8.3)."""
    assert set(killed_requests) <= set(names) and set(rerun_requests) <= set(names)
    # Every task ran once in the killed run at most (no retries), and what it recorded
    # it had asked for.
    assert max(killed_requests.values(), default=0) <= 1
    assert set(done) <= set(killed_requests)
    # The rerun: everything ok; exactly the recorded tasks replayed, with their values.
    assert set(rerun) == set(names)
    assert all(r["status"] == "ok" for r in rerun.values()), rerun
    assert {n for n, r in rerun.items() if r["replayed"]} == set(done)
    for name in done:
        assert rerun[name]["attempts"] == 0 and rerun[name]["value"] == done[name]
    # The same values as a run that was never interrupted.
    assert {n: r["value"] for n, r in rerun.items()} == reference
    # Paid twice: never for a recorded task; exactly once for each task not recorded.
    assert rerun_requests == Counter({n: 1 for n in names if n not in done})
    total = sum(killed_requests.values()) + sum(rerun_requests.values())
    in_flight = len(set(killed_requests) - set(done))
    assert total == len(names) + in_flight


# -- a 30-task workflow of prompts, some using others' values -------------------------------
def workflow(n: int = 30, roots: int = 10, seed: int = 1, concurrency: int = 3) -> str:
    rng = random.Random(seed)
    lines = ["name: crash", "llm: 'sim:m'", f"max_concurrency: {concurrency}", "tasks:"]
    for i in range(n):
        name = f"t{i:02d}"
        if i < roots:
            lines += [f"  {name}:", f"    prompt: 'TASK {name}: what is {i} squared?'"]
            continue
        needs = sorted(rng.sample([f"t{j:02d}" for j in range(i)], rng.choice((1, 2))))
        uses = " and ".join(f"{{{{ tasks.{need}.value }}}}" for need in needs)
        lines += [
            f"  {name}:",
            f"    needs: [{', '.join(needs)}]",
            f"    prompt: 'TASK {name}: combine {uses}'",
        ]
    return "\n".join(lines) + "\n"


def fanflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "fanflow", *args]


def report(path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(path.read_text())
    return {r["name"]: r for r in data["result"]["results"]}


@pytest.mark.slow
def test_kill_9_of_fanflow_run_at_random_points(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(workflow())
    names = [f"t{i:02d}" for i in range(30)]
    rng = random.Random(18)
    kills = 5
    with CountingSim(0.05) as sim:
        env = sim.env()
        clean = spawn(fanflow("run", "wf.yaml", "--json", "clean.json"), tmp_path, env)
        assert finish(clean)[0] == 0
        reference = {n: r["value"] for n, r in report(tmp_path / "clean.json").items()}
        assert sim.settle() == 30 and len(set(reference.values())) == 30
        for point in range(kills):
            journal = tmp_path / f"j{point}.db"
            before = sim.count()
            run = fanflow("run", "wf.yaml", "--journal", journal.name, "--json", "out.json")
            proc = spawn(run, tmp_path, env)
            code, _, _ = kill_when(proc, sim, before + rng.randint(1, 25), rng.uniform(0, 0.03))
            assert code == -signal.SIGKILL, "the run ended before the kill"
            done = recorded(journal, tmp_path)
            mid = sim.settle()
            killed_requests = sim.per_task(before)
            (tmp_path / "out.json").unlink(missing_ok=True)
            rerun = spawn(run, tmp_path, env)
            code, _, err = finish(rerun)
            assert code == 0, err[-2000:]
            sim.settle()
            check_resume(
                names,
                killed_requests,
                done,
                sim.per_task(mid),
                report(tmp_path / "out.json"),
                reference,
            )


# -- the library: fan_out of prompt tasks and Ref-using tasks in a child process ------------
LIBRARY_RUN = """\
import asyncio, json, sys
import fanflow as ff

async def combine(llm, name, left, right):
    return (await llm.complete(f"TASK {name}: combine {left} with {right}")).text

async def main(journal, out, n, limit):
    llm = ff.llm.from_uri("sim:m")
    tasks = [ff.llm.prompt_task(f"p{i}", llm, f"TASK p{i}: what is {i} squared?")
             for i in range(n)]
    tasks += [ff.Task(f"d{i}", combine, args=(llm, f"d{i}", ff.Ref(f"p{i}"), ff.Ref(f"p{i + 1}")))
              for i in range(0, n - 1, 3)]
    try:
        result = await ff.fan_out(tasks, journal=journal or None, max_concurrency=limit,
                                  raise_on_failure=False)
    except ff.JournalError as exc:
        print(f"JournalError: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        await llm.aclose()
    rows = {r.name: {"status": r.status.value, "value": r.value, "attempts": r.attempts,
                     "replayed": r.replayed} for r in result.results}
    with open(out, "w") as f:
        json.dump(rows, f)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def library_run(tmp_path: Path, journal: str, out: str, n: int, limit: int) -> list[str]:
    """The command running LIBRARY_RUN: ``n`` prompts, ``limit`` at a time."""
    script = tmp_path / "fan.py"
    script.write_text(LIBRARY_RUN)
    return [sys.executable, str(script), journal, out, str(n), str(limit)]


def library_names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)] + [f"d{i}" for i in range(0, n - 1, 3)]


@pytest.mark.slow
def test_kill_9_of_a_library_fan_out_at_random_points(tmp_path: Path) -> None:
    n = 24
    names = library_names(n)
    rng = random.Random(1818)
    with CountingSim(0.05) as sim:
        env = sim.env()
        clean = spawn(library_run(tmp_path, "", "clean.json", n, 4), tmp_path, env)
        assert finish(clean)[0] == 0
        reference = {
            k: v["value"] for k, v in json.loads((tmp_path / "clean.json").read_text()).items()
        }
        assert sim.settle() == len(names) == len(set(reference.values()))
        for point in range(3):
            journal = tmp_path / f"lib{point}.db"
            before = sim.count()
            args = library_run(tmp_path, str(journal), "out.json", n, 4)
            proc = spawn(args, tmp_path, env)
            limit = before + rng.randint(1, len(names) - 5)
            code, _, _ = kill_when(proc, sim, limit, rng.uniform(0, 0.03))
            assert code == -signal.SIGKILL, "the run ended before the kill"
            done = recorded(journal, tmp_path)
            mid = sim.settle()
            killed_requests = sim.per_task(before)
            (tmp_path / "out.json").unlink(missing_ok=True)
            code, _, err = finish(spawn(args, tmp_path, env))
            assert code == 0, err[-2000:]
            sim.settle()
            rerun = json.loads((tmp_path / "out.json").read_text())
            check_resume(names, killed_requests, done, sim.per_task(mid), rerun, reference)


# -- two processes, one journal ------------------------------------------------------------
@pytest.mark.slow
def test_a_second_fanflow_run_on_a_journal_in_use_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(workflow(n=16, roots=6, concurrency=2))
    run = fanflow("run", "wf.yaml", "--journal", "j.db", "--json", "first.json")
    with CountingSim(0.06) as sim:
        first = spawn(run, tmp_path, sim.env())
        while sim.count() < 2:  # the first holds the journal (and is under way)
            assert first.poll() is None
            time.sleep(0.005)
        second = spawn(
            fanflow("run", "wf.yaml", "--journal", "j.db", "--json", "second.json"),
            tmp_path,
            sim.env(),
        )
        code, out, err = finish(second)
        assert code == 2, (out, err)
        assert "in use by another fanflow process" in err and "Traceback" not in err
        assert not (tmp_path / "second.json").exists()
        assert first.poll() is None, "the test needs the first run still running"
        code, _, err = finish(first)
        assert code == 0, err[-2000:]
        sim.settle()
        # The first was unharmed: every task ran once, ok, and is recorded.
        assert sim.per_task() == Counter({f"t{i:02d}": 1 for i in range(16)})
        results = report(tmp_path / "first.json")
        assert all(r["status"] == "ok" and not r["replayed"] for r in results.values())
        assert set(recorded(tmp_path / "j.db", tmp_path)) == set(results)


@pytest.mark.slow
def test_a_second_library_fan_out_on_a_journal_in_use_is_refused(tmp_path: Path) -> None:
    n = 16
    journal = tmp_path / "j.db"
    names = library_names(n)
    with CountingSim(0.06) as sim:
        env = sim.env()
        first = spawn(library_run(tmp_path, str(journal), "first.json", n, 2), tmp_path, env)
        while sim.count() < 2:
            assert first.poll() is None
            time.sleep(0.005)
        # Another process...
        second = spawn(library_run(tmp_path, str(journal), "second.json", n, 2), tmp_path, env)
        code, _, err = finish(second)
        assert code == 2 and "in use by another fanflow process" in err, err
        # ... and this one, by path and as an ff.Journal.
        task = ff.Task("x", lambda: 1)
        with pytest.raises(ff.JournalError, match="in use by another fanflow process"):
            run_isolated(ff.fan_out([task], journal=journal))
        with pytest.raises(ff.JournalError, match="in use"):
            ff.Journal(journal)
        assert first.poll() is None, "the test needs the first run still running"
        code, _, err = finish(first)
        assert code == 0, err[-2000:]
        sim.settle()
        assert sim.per_task() == Counter(dict.fromkeys(names, 1))
        rows = json.loads((tmp_path / "first.json").read_text())
        assert all(r["status"] == "ok" and not r["replayed"] for r in rows.values())
        assert set(recorded(journal, tmp_path)) == set(names)
    # Once the first is gone, the journal is free again.
    result = run_isolated(ff.fan_out([task], journal=journal))
    assert result.results[0].value == 1 and not result.results[0].replayed


def test_two_journals_open_in_one_process_are_refused(tmp_path: Path) -> None:
    journal = ff.Journal(tmp_path / "j.db")
    try:
        with pytest.raises(ff.JournalError, match="in use"):
            ff.Journal(tmp_path / "j.db")
        # The one open is unharmed, and shared by two fan-outs in turn.
        first = run_isolated(ff.fan_out([ff.Task("a", _one)], journal=journal))
        again = run_isolated(ff.fan_out([ff.Task("a", _one)], journal=journal))
        assert not first.results[0].replayed and again.results[0].replayed
    finally:
        journal.close()


def _one() -> int:
    return 1


# -- make-like incremental reruns ---------------------------------------------------------
TEN = {
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


def ten_tasks(edit: dict[str, str] | None = None) -> str:
    lines = ["name: ten", "llm: 'sim:m'", "max_concurrency: 4", "tasks:"]
    for name, (needs, words) in TEN.items():
        words = (edit or {}).get(name, words)
        uses = " ".join(f"{{{{ tasks.{need}.value }}}}" for need in needs)
        lines.append(f"  {name}:")
        if needs:
            lines.append(f"    needs: [{', '.join(needs)}]")
        lines.append(f"    prompt: 'TASK {name}: {words} {uses}'")
    return "\n".join(lines) + "\n"


def downstream(name: str) -> set[str]:
    out = {name}
    for other, (needs, _) in TEN.items():
        if name in needs:
            out |= downstream(other)
    return out


@pytest.mark.slow
def test_editing_one_prompt_reruns_it_and_its_dependents_only(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    run = fanflow("run", "wf.yaml", "--journal", "j.db", "--json", "out.json")
    new = "what, on second thought, is it?"
    steps: list[tuple[dict[str, str], set[str]]] = [
        ({}, set(TEN)),  # the first run: everything
        ({"t0": new}, downstream("t0")),  # t0, t3, t4, t5, t7
        ({"t0": new, "t2": new}, downstream("t2")),  # t2, t6, t8
        ({"t0": new, "t2": new, "t9": new}, {"t9"}),
        ({"t0": new, "t2": new, "t9": new}, set()),  # unchanged: nothing
        ({}, set()),  # back to the first prompts: all still recorded
    ]
    assert [len(ran) for _, ran in steps] == [10, 5, 3, 1, 0, 0]
    values: dict[str, dict[str, Any]] = {}  # by prompt
    with CountingSim(0.005) as sim:
        for edits, expected in steps:
            wf.write_text(ten_tasks(edits))
            before = sim.count()
            code, _, err = finish(spawn(run, tmp_path, sim.env()))
            assert code == 0, err[-2000:]
            sim.settle()
            results = report(tmp_path / "out.json")
            assert all(r["status"] == "ok" for r in results.values())
            # Asked at the model, once each, and not replayed: exactly these.
            assert sim.per_task(before) == Counter(dict.fromkeys(expected, 1)), edits
            assert {n for n, r in results.items() if not r["replayed"]} == expected, edits
            for name, r in results.items():
                prompt = f"{edits.get(name)}, after " + ",".join(
                    f"{edits.get(n)}" for n in sorted(upstream(name))
                )
                if name in expected:  # new inputs, new answer
                    assert r["value"] not in values.get(name, {}).values()
                else:  # the answer given to these inputs before
                    assert r["value"] == values[name][prompt]
                values.setdefault(name, {})[prompt] = r["value"]


def upstream(name: str) -> set[str]:
    """The tasks whose values ``name``'s inputs are made of (its needs, theirs...)."""
    out: set[str] = set()
    for need in TEN[name][0]:
        out |= {need} | upstream(need)
    return out


# -- fanflow ask --journal ----------------------------------------------------------------
PLAN = json.dumps(
    {
        "tasks": [
            {"name": "a", "tool": "lookup", "args": {"source": "arxiv"}},
            {"name": "b", "tool": "lookup", "args": {"source": "pubmed"}},
            {
                "name": "d",
                "prompt": "TASK d: Combine {{ tasks.a.value }} and {{ tasks.b.value }}",
                "needs": ["a", "b"],
            },
        ]
    }
)
ASK_SCRIPTS = (
    Script(r"(?s)^You are the planner", {PLAN: 1}),
    Script(r"^You have received results", {"Synthesis: sources agree.": 1}),
    Script(r"TASK d", {"combined": 1}),
)


@pytest.mark.slow
def test_fanflow_ask_journal_replays_the_plan_and_the_subtasks(tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text(
        "def lookup(source: str) -> str:\n"
        '    """Look a topic up in one source."""\n'
        "    with open('calls.txt', 'a') as f:\n"
        "        f.write(source + '\\n')\n"
        '    return f"{source} says caffeine delays sleep"\n'
    )

    def kinds(prompts: list[str]) -> Counter[str]:
        return Counter(
            "plan"
            if p.startswith("You are the planner")
            else "synthesis"
            if p.startswith("You have received results")
            else task_of(p)
            for p in prompts
        )

    with CountingSim(0.002, scripts=ASK_SCRIPTS, derived=False) as sim:
        ask = fanflow(
            "ask", "GOAL: what do sources say?", "--llm", "sim:planner", "--tools",
            "mytools:lookup", "--journal", "j.db", "--json", "ask.json",
        )  # fmt: skip
        code, out, err = finish(spawn(ask, tmp_path, sim.env()))
        assert code == 0, err[-2000:]
        assert "Synthesis: sources agree." in out
        first = sim.settle()
        assert kinds(sim.prompts) == Counter({"plan": 1, "d": 1, "synthesis": 1})
        # The two tool subtasks run at once: either may write first.
        assert sorted((tmp_path / "calls.txt").read_text().split()) == ["arxiv", "pubmed"]

        code, out, err = finish(spawn(ask, tmp_path, sim.env()))
        assert code == 0, err[-2000:]
        assert "Synthesis: sources agree." in out
        sim.settle()
        # No plan and no subtask asked again; no tool called again.
        assert set(kinds(sim.prompts[first:])) <= {"synthesis"}
        assert sorted((tmp_path / "calls.txt").read_text().split()) == ["arxiv", "pubmed"]
        results = report(tmp_path / "ask.json")
        assert set(results) == {"a", "b", "d"}
        assert all(r["replayed"] and r["status"] == "ok" for r in results.values())


# -- journals this fanflow cannot use ----------------------------------------------------
def _version_1(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE items (key TEXT PRIMARY KEY, status TEXT NOT NULL, value TEXT, "
        "error TEXT, attempts INTEGER NOT NULL, started_at REAL, finished_at REAL, duration REAL)"
    )
    db.execute("INSERT INTO items VALUES ('a', 'ok', '1', NULL, 1, 0, 0, 0)")
    db.commit()
    db.close()


def _format_99(path: Path) -> None:
    ff.Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE name = 'format'")
    db.commit()
    db.close()


def _fan_map(path: Path) -> None:
    run_isolated(_drain(ff.fan_map(_double, [1, 2, 3], journal=path)))


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


def _double(x: int) -> int:
    return 2 * x


def _not_sqlite(path: Path) -> None:
    path.write_text("these are my notes, not a database\n" * 100)


BAD_JOURNALS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "version-1": (_version_1, "j.db", "written by an older fanflow"),
    "format-99": (_format_99, "j.db", "written by a newer fanflow (journal format 99"),
    "fan_map": (_fan_map, "j.db", "not of tasks"),
    "not-sqlite": (_not_sqlite, "j.db", "not a fanflow journal"),
    "missing-folder": (lambda path: None, "nowhere/j.db", "does not exist"),
}


@pytest.mark.parametrize("kind", sorted(BAD_JOURNALS))
@pytest.mark.parametrize("verb", ["run", "ask"])
def test_a_journal_this_fanflow_cannot_use_is_a_clear_cli_error(
    tmp_path: Path, kind: str, verb: str
) -> None:
    make, name, message = BAD_JOURNALS[kind]
    folder = tmp_path / "here"
    folder.mkdir()
    if "/" not in name:
        make(folder / name)
    (folder.parent / "wf.yaml").write_text("tasks:\n  a: {run: 'echo ran >> ../RAN'}\n")
    if verb == "run":
        args = fanflow("run", "../wf.yaml", "--journal", name, "--json", "../out.json")
    else:  # fails before the model is asked: no simulator needed
        args = fanflow("ask", "goal", "--llm", "sim:m", "--journal", name)
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and "--journal" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (folder.parent / "RAN").exists()  # nothing ran
    assert not (folder.parent / "out.json").exists()


@pytest.mark.parametrize("kind", sorted(BAD_JOURNALS))
def test_a_journal_this_fanflow_cannot_use_is_a_journal_error(tmp_path: Path, kind: str) -> None:
    make, name, message = BAD_JOURNALS[kind]
    path = tmp_path / name
    if "/" not in name:
        make(path)
    calls: list[int] = []
    with pytest.raises(ff.JournalError, match=re.escape(message)):
        run_isolated(ff.fan_out([ff.Task("a", calls.append, args=(1,))], journal=path))
    assert calls == []


# -- found while writing these tests (src/fanflow/_bulk/_journal.py, Journal._open) ------
# Regression: the journal used to create its tables and switch to WAL before checking.
def test_a_refused_older_journal_is_left_untouched(tmp_path: Path) -> None:
    _version_1(tmp_path / "j.db")
    before = (tmp_path / "j.db").read_bytes()
    with pytest.raises(ff.JournalError, match="older fanflow"):
        ff.Journal(tmp_path / "j.db")
    assert (tmp_path / "j.db").read_bytes() == before


# Regression: a database of the user's own used to be adopted as a journal.
def test_an_sqlite_database_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "app.db")
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    calls: list[int] = []
    with pytest.raises(ff.JournalError, match="not a fanflow journal"):
        run_isolated(
            ff.fan_out([ff.Task("a", calls.append, args=(1,))], journal=tmp_path / "app.db")
        )
    assert calls == []
