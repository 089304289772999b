"""journal= on fan_out, run, as_completed, Plan.run and ask (SPEC §8.3)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff
from fanflow.llm import prompt_task
from fanflow.testing import ScriptedLLM

from .conftest import run_isolated

CALLS: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


async def double(x: int) -> int:
    CALLS.append(("double", x))
    return 2 * x


async def add(a: int, b: int) -> int:
    CALLS.append(("add", a, b))
    return a + b


async def broken(x: int) -> int:
    CALLS.append(("broken", x))
    raise ValueError("no")


def run(tasks: list[ff.Task], **options: Any) -> ff.FanInResult:
    """ff.run, in a private loop (ff.run's asyncio.run would unsettle pytest-asyncio)."""
    return run_isolated(ff.fan_out(tasks, **options))


def chain(x: int = 3) -> list[ff.Task]:
    return [
        ff.Task("a", double, (1,)),
        ff.Task("b", double, (x,)),
        ff.Task("c", add, (ff.Ref("a"), ff.Ref("b"))),
        ff.Task("d", double, (ff.Ref("a"),)),
    ]


def rows(db: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    try:
        return sorted(con.execute("SELECT key, status FROM items").fetchall())
    finally:
        con.close()


# -- replay -------------------------------------------------------------------


def test_a_rerun_replays_every_ok_task_without_calling_it(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    first = run(chain(), journal=db)
    assert [r.value for r in first.results] == [2, 6, 8, 4]
    assert not any(r.replayed for r in first.results)
    assert len(CALLS) == 4
    assert rows(db) == [("a", "ok"), ("b", "ok"), ("c", "ok"), ("d", "ok")]
    CALLS.clear()
    again = run(chain(), journal=str(db))
    assert CALLS == []
    assert [r.value for r in again.results] == [2, 6, 8, 4]
    assert all(r.replayed and r.ok and r.attempts == 0 for r in again.results)
    assert "replayed from the journal" in (again.results[0].reason or "")
    assert again.value == first.value


def test_ff_run_takes_a_journal(tmp_path: Path) -> None:
    import concurrent.futures

    db = tmp_path / "run.db"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # asyncio.run off this thread
        pool.submit(ff.run, chain(), journal=db).result()
        again = pool.submit(ff.run, chain(), journal=db).result()
    assert all(r.replayed for r in again.results) and len(CALLS) == 4


def test_a_changed_input_reruns_that_task_and_what_depends_on_it(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    run(chain(3), journal=db)
    CALLS.clear()
    again = run(chain(4), journal=db)
    # b's argument changed: b runs, and c (which uses b) runs; a and d are replayed.
    assert sorted(CALLS) == [("add", 2, 8), ("double", 4)]
    assert {r.name: r.replayed for r in again.results} == {
        "a": True,
        "b": False,
        "c": False,
        "d": True,
    }


def test_a_dependent_whose_inputs_come_back_the_same_is_replayed(tmp_path: Path) -> None:
    db = tmp_path / "run.db"

    async def parity(x: int) -> int:
        CALLS.append(("parity", x))
        return x % 2

    def tasks(x: int) -> list[ff.Task]:
        return [ff.Task("p", parity, (x,)), ff.Task("q", double, (ff.Ref("p"),))]

    run(tasks(3), journal=db)
    CALLS.clear()
    again = run(tasks(5), journal=db)  # p runs again, gives 1 again: q is replayed
    assert CALLS == [("parity", 5)]
    assert [r.replayed for r in again.results] == [False, True]


def test_failed_tasks_are_not_recorded_and_run_again(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    tasks = [ff.Task("ok", double, (1,)), ff.Task("bad", broken, (1,))]
    run(tasks, journal=db)
    assert rows(db) == [("ok", "ok")]
    CALLS.clear()
    again = run(tasks, journal=db)
    assert CALLS == [("broken", 1)]
    assert [r.status.value for r in again.results] == ["ok", "error"]


def test_editing_the_function_or_what_it_captured_reruns_it(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    factor = 2

    async def scaled(x: int) -> int:
        CALLS.append(("scaled", x))
        return x * factor

    def make_other() -> Any:
        async def scaled(x: int) -> int:  # same name and qualname, other code
            CALLS.append(("scaled", x))
            return x * 3

        return scaled

    run([ff.Task("s", scaled, (1,))], journal=db)
    run([ff.Task("s", scaled, (1,))], journal=db)
    assert len(CALLS) == 1
    factor = 5  # a captured value changed
    assert run([ff.Task("s", scaled, (1,))], journal=db).value == {"s": 5}
    assert len(CALLS) == 2
    other = make_other()
    other.__qualname__ = scaled.__qualname__
    assert run([ff.Task("s", other, (1,))], journal=db).value == {"s": 3}
    assert len(CALLS) == 3


def test_arguments_are_compared_by_value_and_type(tmp_path: Path) -> None:
    db = tmp_path / "run.db"

    async def echo(x: Any) -> Any:
        CALLS.append(x)
        return repr(x)

    @dataclasses.dataclass
    class Query:
        text: str
        limit: int

    values: list[Any] = [
        {"b": 1, "a": [1, 2]},
        Query("cats", 3),
        (1, 2),
        1,
        1.0,
        True,
        "1",
        b"1",
        Path("/tmp/x"),
        {3, 1, 2},
    ]
    for v in values:
        run([ff.Task("e", echo, (v,))], journal=db)
    assert len(CALLS) == len(values)  # no two of them are the same input
    CALLS.clear()
    # The same values again, rebuilt (dict order and set order do not matter).
    for v in [{"a": [1, 2], "b": 1}, Query("cats", 3), (1, 2), 1, {2, 3, 1}]:
        run([ff.Task("e", echo, (v,))], journal=db)
    assert CALLS == []


# -- errors name the task ---------------------------------------------------------------


def test_an_argument_without_identity_is_an_error_before_anything_runs(tmp_path: Path) -> None:
    lock = asyncio.Lock()

    async def guarded(lock: asyncio.Lock, x: int) -> int:
        CALLS.append(x)
        return x

    tasks = [ff.Task("fine", double, (1,)), ff.Task("locked", guarded, (lock, 2))]
    with pytest.raises(ff.JournalError, match=r"task 'locked': args\[0\] is an asyncio.*Lock"):
        run(tasks, journal=tmp_path / "run.db")
    assert CALLS == []


def test_an_object_may_say_what_identifies_it(tmp_path: Path) -> None:
    class Client:
        def __init__(self, region: str) -> None:
            self.region = region

        def __fanflow_fingerprint__(self) -> Any:
            return {"region": self.region}

    async def fetch(client: Client, x: int) -> int:
        CALLS.append((client.region, x))
        return x

    db = tmp_path / "run.db"
    run([ff.Task("f", fetch, (Client("eu"), 1))], journal=db)
    run([ff.Task("f", fetch, (Client("eu"), 1))], journal=db)
    run([ff.Task("f", fetch, (Client("us"), 1))], journal=db)
    assert CALLS == [("eu", 1), ("us", 1)]


def test_a_value_that_cannot_be_stored_names_the_task_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    async def thing() -> object:
        return object()

    db = tmp_path / "run.db"
    tasks = [ff.Task("fine", double, (1,)), ff.Task("odd", thing)]
    with pytest.raises(ff.JournalError, match=r"value of task 'odd' cannot be stored.*serialize"):
        run(tasks, journal=db)
    assert rows(db) == [("fine", "ok")]


def test_serialize_and_deserialize_hooks(tmp_path: Path) -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    async def point(x: int) -> Point:
        CALLS.append(x)
        return Point(x, x + 1)

    def journal() -> ff.Journal:
        return ff.Journal(
            tmp_path / "run.db",
            serialize=dataclasses.asdict,
            deserialize=lambda data: Point(**data),
        )

    j = journal()
    try:
        first = run([ff.Task("p", point, (1,))], journal=j)
    finally:
        j.close()
    j = journal()
    try:
        again = run([ff.Task("p", point, (1,))], journal=j)
    finally:
        j.close()
    assert CALLS == [1]
    assert again.results[0].replayed and again.results[0].value == first.results[0].value
    assert isinstance(again.results[0].value, Point)


@pytest.mark.parametrize(
    ("value", "kind", "match"),
    [
        (123, TypeError, "journal must be a file path, an ff.Journal or None; got 123"),
        ("", ValueError, "journal must be a file path; got an empty string"),
    ],
)
def test_a_bad_journal_option_is_named(value: Any, kind: type[Exception], match: str) -> None:
    with pytest.raises(kind, match=match):
        run([ff.Task("a", double, (1,))], journal=value)
    assert CALLS == []


# -- commit before visible ---------------------------------------------------------------


async def test_a_result_is_committed_before_the_strategy_or_caller_sees_it(
    tmp_path: Path,
) -> None:
    journal = ff.Journal(tmp_path / "run.db")
    seen: list[tuple[str, int]] = []

    class Watching(ff.BestEffort):
        def observe(self, result: ff.TaskResult) -> bool:
            seen.append((result.name, journal.counts().get("ok", 0)))
            return super().observe(result)

    async def slow(x: int) -> int:
        await asyncio.sleep(0.01 * x)
        return x

    tasks = [ff.Task(f"t{i}", slow, (i,)) for i in range(5)]
    try:
        async with ff.as_completed(tasks, journal=journal, strategy=Watching()) as stream:
            async for result in stream:
                recorded = journal.recorded_ok([])  # the connection is usable
                assert recorded == {}
                assert journal.counts().get("ok", 0) >= int(result.name[1:]) + 1
    finally:
        journal.close()
    # When the strategy saw the k-th result, at least k results were committed.
    assert [count >= k + 1 for k, (_, count) in enumerate(seen)] == [True] * 5


async def test_cancelled_fan_out_keeps_what_finished(tmp_path: Path) -> None:
    db = tmp_path / "run.db"

    async def sleepy(x: int) -> int:
        CALLS.append(x)
        await asyncio.sleep(0 if x < 3 else 30)
        return x

    tasks = [ff.Task(f"t{i}", sleepy, (i,)) for i in range(5)]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await ff.fan_out(tasks, journal=db)
    assert rows(db) == [("t0", "ok"), ("t1", "ok"), ("t2", "ok")]
    CALLS.clear()
    result = await ff.fan_out(tasks, journal=db, deadline=0.2, raise_on_failure=False)
    assert sorted(CALLS) == [3, 4]
    assert [r.replayed for r in result.results] == [True, True, True, False, False]


async def test_events_and_strategies_see_replayed_results(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    await ff.fan_out([ff.Task("a", double, (1,)), ff.Task("b", double, (2,))], journal=db)
    events: list[str] = []

    def on_event(event: ff.Event) -> None:
        if isinstance(event, ff.TaskFinished):
            events.append(f"{event.result.name}:{event.result.replayed}")
        elif isinstance(event, ff.TaskStarted):
            events.append(f"start {event.name}")

    result = await ff.fan_out(
        [ff.Task("a", double, (1,)), ff.Task("b", double, (2,)), ff.Task("c", double, (3,))],
        journal=db,
        strategy=ff.FirstN(2),
        on_event=on_event,
    )
    assert result.ok and sorted(result.value) == [2, 4]
    assert "a:True" in events and "b:True" in events


# -- who may use a journal ---------------------------------------------------------------


def test_a_second_open_journal_on_the_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    first = ff.Journal(db)
    try:
        with pytest.raises(ff.JournalError, match="in use by another fanflow process"):
            ff.Journal(db)
        with pytest.raises(ff.JournalError, match="in use"):
            run([ff.Task("a", double, (1,))], journal=db)
    finally:
        first.close()
    assert CALLS == []
    run([ff.Task("a", double, (1,))], journal=db)  # free again once closed
    assert CALLS == [("double", 1)]


async def test_one_journal_object_serves_concurrent_fan_outs(tmp_path: Path) -> None:
    journal = ff.Journal(tmp_path / "run.db")
    try:
        one, two = await asyncio.gather(
            ff.fan_out([ff.Task("a", double, (1,))], journal=journal),
            ff.fan_out([ff.Task("b", double, (2,))], journal=journal),
        )
        again = await ff.fan_out(
            [ff.Task("a", double, (1,)), ff.Task("b", double, (2,))], journal=journal
        )
    finally:
        journal.close()
    assert one.ok and two.ok and all(r.replayed for r in again.results)


async def test_a_fan_map_journal_and_a_task_journal_are_not_mixed(tmp_path: Path) -> None:
    db = tmp_path / "map.db"
    [r async for r in ff.fan_map(double, [1, 2], journal=db)]
    with pytest.raises(ff.JournalError, match=r"journal of another job .*not of tasks"):
        await ff.fan_out([ff.Task("a", double, (1,))], journal=db)
    tasks_db = tmp_path / "tasks.db"
    await ff.fan_out([ff.Task("a", double, (1,))], journal=tasks_db)
    with pytest.raises(ff.JournalError, match="is a journal of tasks"):
        ff.fan_map(double, [1], journal=tasks_db)


def test_journals_of_other_fanflow_versions_are_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute(
        "CREATE TABLE items (key TEXT PRIMARY KEY, status TEXT NOT NULL, value TEXT, "
        "error TEXT, attempts INTEGER NOT NULL, started_at REAL, finished_at REAL, "
        "duration REAL)"
    )
    con.commit()
    con.close()
    before = old.read_bytes()
    with pytest.raises(ff.JournalError, match="older fanflow"):
        run([ff.Task("a", double, (1,))], journal=old)
    assert old.read_bytes() == before  # refused untouched
    users = tmp_path / "app.db"
    con = sqlite3.connect(users)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    before = users.read_bytes()
    with pytest.raises(
        ff.JournalError, match=r"not a fanflow journal \(a database with tables users"
    ):
        run([ff.Task("a", double, (1,))], journal=users)
    assert users.read_bytes() == before
    newer = tmp_path / "newer.db"
    run([ff.Task("a", double, (1,))], journal=newer)
    con = sqlite3.connect(newer)
    con.execute("UPDATE meta SET value = '99' WHERE name = 'format'")
    con.commit()
    con.close()
    with pytest.raises(ff.JournalError, match=r"newer fanflow \(journal format 99"):
        run([ff.Task("a", double, (1,))], journal=newer)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ff.JournalError, match="not a fanflow journal"):
        run([ff.Task("a", double, (1,))], journal=junk)
    with pytest.raises(ff.JournalError, match="does not exist"):
        run([ff.Task("a", double, (1,))], journal=tmp_path / "nowhere" / "j.db")
    assert CALLS == [("double", 1)]


def test_a_previous_fan_map_journal_without_a_format_is_read_and_marked(tmp_path: Path) -> None:
    db = tmp_path / "map.db"

    async def upper(s: str) -> str:
        CALLS.append(s)
        return s.upper()

    async def first() -> None:
        [r async for r in ff.fan_map(upper, ["x", "y"], journal=db)]

    run_isolated(first())
    con = sqlite3.connect(db)
    con.execute("DELETE FROM meta WHERE name = 'format'")  # as the previous release wrote it
    con.commit()
    con.close()
    CALLS.clear()
    run_isolated(first())
    assert CALLS == []
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE name = 'format'").fetchone() == ("2",)
    con.close()


# -- prompt tasks, plans, ask ---------------------------------------------------------------


def test_prompt_tasks_are_keyed_by_prompt_model_and_parameters(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    llm = ScriptedLLM("m1", default="answer")

    def one(prompt: str, model: ScriptedLLM = llm, **params: Any) -> ff.FanInResult:
        return run([ff.llm.prompt_task("q", model, prompt, **params)], journal=db)

    one("What is 2+2?")
    one("What is 2+2?")
    assert len(llm.history) == 1
    one("What is 2+3?")
    assert len(llm.history) == 2
    one("What is 2+3?", temperature=0.5)
    assert len(llm.history) == 3
    other = ScriptedLLM("m2", default="answer")
    result = one("What is 2+3?", model=other)
    assert len(other.history) == 1 and not result.results[0].replayed
    assert one("What is 2+3?", temperature=0.5).results[0].replayed


GOOD_PLAN = json.dumps(
    {
        "tasks": [
            {"name": "a", "prompt": "Say hello"},
            {"name": "b", "prompt": "Say bye"},
            {"name": "c", "prompt": "Join {{ tasks.a.value }}", "needs": ["a"]},
        ]
    }
)


async def test_ask_replays_its_plan_and_subtasks(tmp_path: Path) -> None:
    db = tmp_path / "ask.db"
    llm = ScriptedLLM("planner", default="done").enqueue(GOOD_PLAN)
    first = await ff.ask("greet", llm, journal=db)
    calls = len(llm.history)
    assert calls == 5  # plan, a, b, c, synthesis
    # A model that would now plan differently: the recorded plan is replayed.
    llm.enqueue(json.dumps({"tasks": [{"name": "z", "prompt": "other"}]}))
    again = await ff.ask("greet", llm, journal=db)
    assert len(llm.history) == calls + 1  # only the synthesis ran again
    assert [g.task for g in again.gaps] == [g.task for g in first.gaps] == []


async def test_plan_run_takes_a_journal(tmp_path: Path) -> None:
    db = tmp_path / "plan.db"
    llm = ScriptedLLM("planner", default="x").enqueue(GOOD_PLAN)
    the_plan = await ff.plan("greet", llm)
    await the_plan.run(journal=db)
    before = len(llm.history)
    result = await the_plan.run(journal=db)
    assert len(llm.history) == before and all(r.replayed for r in result.results)


# -- with the other options ----------------------------------------------------------------


def square(x: int) -> int:
    return x * x


# Module-level, not captured: a closure's captured values are part of its
# fingerprint, and a counter that changes would make every run a new input.
TRIES: dict[str, int] = {}


async def flaky(name: str) -> str:
    TRIES[name] = TRIES.get(name, 0) + 1
    if TRIES[name] < 2:
        raise ff.TransientError("try again")
    return name


@pytest.mark.parametrize("executor", ["async", "thread", "process"])
def test_plain_functions_on_every_executor_are_replayed(tmp_path: Path, executor: str) -> None:
    db = tmp_path / "run.db"
    tasks = [ff.Task(f"s{i}", square, (i,)) for i in range(4)]
    first = run(tasks, journal=db, executor=executor)
    again = run(tasks, journal=db, executor=executor)
    assert [r.value for r in again.results] == [r.value for r in first.results] == [0, 1, 4, 9]
    assert all(r.replayed for r in again.results)


async def test_retried_tasks_are_recorded_once_ok(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    TRIES.clear()
    tries = TRIES

    tasks = [ff.Task(n, flaky, (n,)) for n in "abc"]
    first = await ff.fan_out(tasks, journal=db, retry=ff.Retry(attempts=3, backoff=0))
    assert [r.attempts for r in first.results] == [2, 2, 2]
    assert rows(db) == [("a", "ok"), ("b", "ok"), ("c", "ok")]
    again = await ff.fan_out(tasks, journal=db, retry=ff.Retry(attempts=3, backoff=0))
    assert all(r.replayed for r in again.results) and tries == {"a": 2, "b": 2, "c": 2}


async def test_leaving_as_completed_early_closes_the_journal_it_opened(tmp_path: Path) -> None:
    db = tmp_path / "run.db"

    async def wait(x: int) -> int:
        await asyncio.sleep(0 if x == 0 else 30)
        return x

    tasks = [ff.Task(f"w{i}", wait, (i,)) for i in range(3)]
    async with ff.as_completed(tasks, journal=db) as stream:
        async for result in stream:
            assert result.name == "w0"
            break
    # Closed: another journal may open the file, and w0 was committed.
    again = await ff.fan_out(tasks[:1], journal=db)
    assert again.results[0].replayed


async def test_a_skipped_dependent_runs_once_its_need_succeeds(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    fail = True

    async def maybe() -> int:
        if fail:
            raise ValueError("not yet")
        return 5

    def tasks() -> list[ff.Task]:
        return [ff.Task("m", maybe), ff.Task("n", double, (ff.Ref("m"),))]

    first = await ff.fan_out(tasks(), journal=db, raise_on_failure=False)
    assert [r.status.value for r in first.results] == ["error", "skipped"]
    fail = False
    second = await ff.fan_out(tasks(), journal=db)
    assert second.value == {"m": 5, "n": 10} and CALLS == [("double", 5)]
    third = await ff.fan_out(tasks(), journal=db)
    assert all(r.replayed for r in third.results)


# -- calls in flight when a run dies: booked as wasted by the rerun ----------------------

_DIES = """
import asyncio, os, sys, threading
import fanflow as ff
from fanflow.llm import prompt_task
from fanflow.testing import ScriptedLLM

llm = ScriptedLLM("m", default="answer", delay=30.0)
tasks = [ff.llm.prompt_task(f"t{i}", llm, "x" * 396, max_tokens=10) for i in range(5)]
threading.Timer(1.0, lambda: os._exit(9)).start()
asyncio.run(ff.fan_out(tasks, journal=sys.argv[1]))
"""


def _started_rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        (count,) = con.execute("SELECT COUNT(*) FROM started").fetchone()
    finally:
        con.close()
    return int(count)


def test_calls_in_flight_when_a_run_dies_are_wasted_in_the_rerun(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "j.db"
    died = subprocess.run(
        [sys.executable, "-c", _DIES, str(db)], capture_output=True, timeout=60, check=False
    )
    assert died.returncode == 9, died.stderr
    assert _started_rows(db) == 5

    async def rerun() -> ff.FanInResult:
        llm = ScriptedLLM("m", default="answer")
        tasks = [prompt_task(f"t{i}", llm, "x" * 396, max_tokens=10) for i in range(5)]
        return await ff.fan_out(tasks, journal=db)

    result = run_isolated(rerun())
    assert result.usage is not None
    # The 5 lost calls (their prompt's estimate each), then the 5 made again.
    assert result.usage.wasted["m"].requests == 5
    assert result.usage.wasted["m"].input_tokens == 5 * 99
    assert result.usage.by_model["m"].requests == 10
    assert _started_rows(db) == 0
    again = run_isolated(rerun())
    assert all(r.replayed for r in again.results)
    assert again.usage is None or not again.usage.wasted


def test_a_run_that_ends_leaves_no_start_records(tmp_path: Path) -> None:
    db = tmp_path / "j.db"

    async def main() -> None:
        llm = ScriptedLLM("m", default="a", delay=0.05).enqueue(RuntimeError("boom"))
        tasks = [prompt_task(f"t{i}", llm, f"p{i}") for i in range(4)]
        await ff.fan_out(tasks, journal=db, raise_on_failure=False, max_concurrency=1)
        slow = ScriptedLLM("s", default="b", delay=5.0)
        fast = ScriptedLLM("f", default="c")
        race = [prompt_task("fast", fast, "q"), prompt_task("slow", slow, "q")]
        await ff.fan_out(race, journal=db, strategy=ff.FirstN(1))

    run_isolated(main())
    assert _started_rows(db) == 0
