"""SPEC §8.1 in the library: ``Task(needs=...)`` and ``ff.Ref``, in every verb."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff
import fanflow._core as core
from fanflow._workflow import build, load

from .conftest import Flaky

# a, then b, then c, each ending before the next starts.
A_B_C_IN_TURN = [
    ("start", "a"),
    ("end", "a"),
    ("start", "b"),
    ("end", "b"),
    ("start", "c"),
    ("end", "c"),
]


class Log:
    """Records ``start``/``end`` of every task, in the order they happen."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.called: list[str] = []

    def task(
        self, name: str, value: Any = None, *, delay: float = 0.0, fail: bool = False
    ) -> Callable[..., Awaitable[Any]]:
        async def fn(*args: Any, **kwargs: Any) -> Any:
            self.called.append(name)
            self.events.append(("start", name))
            await asyncio.sleep(delay)
            self.events.append(("end", name))
            if fail:
                raise RuntimeError(f"{name} failed")
            return name if value is None else value

        fn.__qualname__ = name
        return fn

    def at(self, kind: str, name: str) -> int:
        return self.events.index((kind, name))


async def echo(*args: Any, **kwargs: Any) -> Any:
    return (args, kwargs)


async def value_of(x: Any) -> Any:
    return x


async def noop() -> None:
    return None


def run_sync(tasks: list[ff.Task], **options: Any) -> ff.FanInResult:
    """``ff.run`` in a thread of its own: its ``asyncio.run`` must not reset the
    loop pytest-asyncio keeps for the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(ff.run, tasks, **options).result()


async def start(verb: str, tasks: list[ff.Task], **options: Any) -> Any:
    """Start ``tasks`` with ``verb``: ``fan_out``, ``run`` or ``as_completed``."""
    if verb == "fan_out":
        return await ff.fan_out(tasks, **options)
    if verb == "run":
        return run_sync(tasks, **options)
    return [r async for r in ff.as_completed(tasks, **options)]


def by_name(result: ff.FanInResult) -> dict[str, ff.TaskResult]:
    return {r.name: r for r in result.results}


# -- ordering ------------------------------------------------------------------


async def test_a_task_starts_only_after_all_its_needs_succeeded() -> None:
    log = Log()
    tasks = [
        ff.Task("c", log.task("c"), needs=("a", "b")),  # listed first on purpose
        ff.Task("a", log.task("a", delay=0.02)),
        ff.Task("b", log.task("b", delay=0.01)),
    ]
    result = await ff.fan_out(tasks)
    assert result.ok
    assert [r.status for r in result.results] == ["ok", "ok", "ok"]
    assert log.at("start", "c") > log.at("end", "a")
    assert log.at("start", "c") > log.at("end", "b")
    assert result.value == {"a": "a", "b": "b", "c": "c"}


async def test_independent_tasks_still_run_concurrently() -> None:
    log = Log()
    tasks = [
        ff.Task("r1", log.task("r1", delay=0.02)),
        ff.Task("r2", log.task("r2", delay=0.02)),
        ff.Task("child", log.task("child"), needs=["r1"]),
    ]
    result = await ff.fan_out(tasks)
    assert result.ok
    # Both roots started before either finished.
    assert max(log.at("start", "r1"), log.at("start", "r2")) < min(
        log.at("end", "r1"), log.at("end", "r2")
    )
    assert log.at("start", "child") > log.at("end", "r1")


async def test_needs_as_a_single_string_and_repeated_names() -> None:
    log = Log()
    tasks = [
        ff.Task("a", log.task("a", delay=0.01)),
        ff.Task("b", log.task("b"), needs="a"),
        ff.Task("c", log.task("c"), needs=["a", "a", "b"]),
    ]
    assert tasks[1].needs == ("a",)
    assert tasks[2].needs == ("a", "b")
    result = await ff.fan_out(tasks)
    assert result.ok
    assert log.events == A_B_C_IN_TURN


async def test_a_diamond_runs_each_task_once_in_order() -> None:
    log = Log()
    tasks = [
        ff.Task("top", log.task("top")),
        ff.Task("left", log.task("left"), needs="top"),
        ff.Task("right", log.task("right"), needs="top"),
        ff.Task("bottom", log.task("bottom"), needs=("left", "right")),
    ]
    result = await ff.fan_out(tasks)
    assert result.ok
    assert sorted(log.called) == ["bottom", "left", "right", "top"]
    assert log.called[0] == "top" and log.called[-1] == "bottom"


# -- a need that did not succeed -------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("task", "ended"),
    [
        pytest.param(ff.Task("a", Log().task("a", fail=True)), "error", id="error"),
        pytest.param(ff.Task("a", Log().task("a", delay=10), timeout=1), "timeout", id="timeout"),
    ],
)
async def test_a_failed_need_skips_its_dependents_transitively(task: ff.Task, ended: str) -> None:
    log = Log()
    tasks = [
        task,
        ff.Task("b", log.task("b"), needs="a"),
        ff.Task("c", log.task("c"), needs="b"),
        ff.Task("free", log.task("free")),
    ]
    result = await ff.fan_out(tasks, raise_on_failure=False)
    by = by_name(result)
    assert by["a"].status == ended
    assert by["b"].status == "skipped"
    assert by["b"].reason == f"never started: it needs 'a', which ended {ended}"
    assert by["c"].status == "skipped"
    assert by["c"].reason == "never started: it needs 'b', which ended skipped"
    assert by["b"].attempts == by["c"].attempts == 0
    assert by["b"].error is None and by["b"].value is None
    assert by["free"].ok
    assert log.called == ["free"]  # b and c never ran
    assert [r.name for r in result.results] == ["a", "b", "c", "free"]  # submission order


async def test_the_reason_names_the_need_that_failed_not_one_that_succeeded() -> None:
    log = Log()
    tasks = [
        ff.Task("good", log.task("good")),
        ff.Task("bad", log.task("bad", fail=True)),
        ff.Task("both", log.task("both"), needs=("good", "bad")),
    ]
    result = await ff.fan_out(tasks, raise_on_failure=False)
    assert by_name(result)["both"].reason == "never started: it needs 'bad', which ended error"
    assert "both" not in log.called


async def test_a_skipped_need_is_named_as_skipped() -> None:
    log = Log()
    tasks = [
        ff.Task("x", log.task("x", fail=True)),
        ff.Task("a", log.task("a"), needs="x"),
        ff.Task("b", log.task("b"), needs="a"),
    ]
    result = await ff.fan_out(tasks, raise_on_failure=False)
    assert by_name(result)["b"].reason == "never started: it needs 'a', which ended skipped"


# -- checks before anything starts -----------------------------------------------


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        pytest.param({"a": "b", "b": "a"}, r"^the needs form a cycle: a -> b -> a$", id="two"),
        pytest.param(
            {"a": "c", "b": "a", "c": "b"},
            r"^the needs form a cycle: a -> c -> b -> a$",
            id="three",
        ),
        pytest.param({"a": "a"}, r"^task 'a' needs itself$", id="self"),
        pytest.param({"a": "nope"}, r"^task 'a' needs 'nope', which is not a task$", id="unknown"),
    ],
)
@pytest.mark.parametrize("verb", ["fan_out", "run", "as_completed"])
async def test_cycles_and_unknown_names_are_value_errors_before_anything_starts(
    verb: str, needs: dict[str, str], message: str
) -> None:
    log = Log()
    tasks = [ff.Task(n, log.task(n), needs=needs.get(n, ())) for n in ("a", "b", "c")]
    with pytest.raises(ValueError, match=message):
        await start(verb, tasks)
    assert log.called == []


def test_a_self_cycle_through_ref_is_refused() -> None:
    log = Log()
    with pytest.raises(ValueError, match=r"^task 'a' needs itself$"):
        run_sync([ff.Task("a", log.task("a"), args=(ff.Ref("a"),))])
    assert log.called == []


def test_a_cycle_found_by_refs_is_spelled_out() -> None:
    log = Log()
    tasks = [
        ff.Task("a", log.task("a"), kwargs={"x": ff.Ref("b")}),
        ff.Task("b", log.task("b"), args=([ff.Ref("a")],)),
        ff.Task("free", log.task("free")),
    ]
    with pytest.raises(ValueError, match=r"^the needs form a cycle: a -> b -> a$"):
        run_sync(tasks)
    assert log.called == []


def test_needs_must_be_names() -> None:
    with pytest.raises(TypeError, match=r"task 'x': needs must be task names .*got 3"):
        ff.Task("x", noop, needs=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"needs must be task names .*got ''"):
        ff.Task("x", noop, needs=[""])


# -- ff.Ref ----------------------------------------------------------------------


async def test_refs_in_args_kwargs_and_nested_containers_are_filled_in() -> None:
    tasks = [
        ff.Task("a", value_of, args=(1,)),
        ff.Task("b", value_of, args=("two",)),
        ff.Task(
            "user",
            echo,
            args=(ff.Ref("a"), [ff.Ref("b"), 0], (ff.Ref("a"), (ff.Ref("b"),))),
            kwargs={"k": ff.Ref("b"), "deep": {"x": [ff.Ref("a")], "y": "plain"}},
        ),
    ]
    assert tasks[2].needs == ("a", "b")  # no explicit needs=
    result = await ff.fan_out(tasks)
    args, kwargs = result["user"].value
    assert args == (1, ["two", 0], (1, ("two",)))
    assert kwargs == {"k": "two", "deep": {"x": [1], "y": "plain"}}
    # The task's own arguments are untouched (containers are copied).
    assert tasks[2].args[0] == ff.Ref("a")
    assert tasks[2].kwargs["deep"]["x"] == [ff.Ref("a")]


async def test_a_ref_makes_its_task_a_need() -> None:
    log = Log()
    tasks = [
        ff.Task("user", log.task("user"), args=(ff.Ref("a"),)),
        ff.Task("a", log.task("a", delay=0.01)),
    ]
    assert tasks[0].needs == ("a",)
    await ff.fan_out(tasks)
    assert log.at("start", "user") > log.at("end", "a")


async def test_explicit_needs_come_before_ref_needs_without_duplicates() -> None:
    task = ff.Task("t", echo, args=(ff.Ref("b"), ff.Ref("a")), needs=("a", "c"))
    assert task.needs == ("a", "c", "b")


async def test_ref_paths_index_into_the_value() -> None:
    tasks = [
        ff.Task("a", value_of, args=({"key": "K", "rows": [["r0"], ["r1"]]},)),
        ff.Task(
            "user",
            echo,
            args=(ff.Ref("a", "key"), ff.Ref("a", "rows", 0), ff.Ref("a", "rows", 1, 0)),
        ),
    ]
    result = await ff.fan_out(tasks)
    assert result["user"].value == (("K", ["r0"], "r1"), {})


@pytest.mark.parametrize(
    ("ref", "step"),
    [
        pytest.param(ff.Ref("a", "missing"), "'missing'", id="key"),
        pytest.param(ff.Ref("a", "rows", 5), "5", id="index"),
        pytest.param(ff.Ref("a", "key", "sub"), "'sub'", id="not-a-container"),
    ],
)
async def test_a_missing_ref_key_ends_the_task_in_error(ref: ff.Ref, step: str) -> None:
    log = Log()
    tasks = [
        ff.Task("a", value_of, args=({"key": 1, "rows": [0]},)),
        ff.Task("user", log.task("user"), args=(ref,)),
        ff.Task("after", log.task("after"), needs="user"),
        ff.Task("free", log.task("free")),
    ]
    result = await ff.fan_out(tasks, raise_on_failure=False)
    by = by_name(result)
    assert by["a"].ok and by["free"].ok
    assert by["user"].status == "error"
    assert isinstance(by["user"].error, LookupError)
    message = str(by["user"].error)
    assert message.startswith(f"{ref!r}: the value of task 'a' has no [{step}]")
    assert by["after"].reason == "never started: it needs 'user', which ended error"
    assert "user" not in log.called and "after" not in log.called


def test_ref_equality_hash_and_repr() -> None:
    assert ff.Ref("a") == ff.Ref("a")
    assert ff.Ref("a", "k", 0) == ff.Ref("a", "k", 0)
    assert ff.Ref("a") != ff.Ref("b")
    assert ff.Ref("a", "k") != ff.Ref("a")
    assert ff.Ref("a", 0) != ff.Ref("a", "0")
    assert ff.Ref("a") != "a"
    assert hash(ff.Ref("a", "k")) == hash(ff.Ref("a", "k"))
    assert len({ff.Ref("a"), ff.Ref("a"), ff.Ref("a", "k")}) == 2
    assert repr(ff.Ref("a")) == "Ref('a')"
    assert repr(ff.Ref("a", "rows", 0)) == "Ref('a', 'rows', 0)"
    ref = ff.Ref("a", "rows", 0)
    assert ref.task == "a" and ref.path == ("rows", 0)


@pytest.mark.parametrize("bad", [3, "", None, b"a"])
def test_ref_needs_a_task_name(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"ff.Ref needs a task name \(a non-empty string\)"):
        ff.Ref(bad)


# -- every verb ------------------------------------------------------------------


def test_run_fills_refs_and_orders_needs() -> None:
    log = Log()
    tasks = [
        ff.Task("a", log.task("a", 20)),
        ff.Task("b", value_of, args=(ff.Ref("a"),)),
        ff.Task("c", log.task("c"), needs="b"),
    ]
    result = run_sync(tasks)
    assert result.value == {"a": 20, "b": 20, "c": "c"}
    assert log.at("start", "c") > log.at("end", "a")


async def test_as_completed_yields_dependents_after_their_needs() -> None:
    log = Log()
    tasks = [
        ff.Task("c", value_of, args=(ff.Ref("b"),)),
        ff.Task("b", value_of, args=(ff.Ref("a"),)),
        ff.Task("a", log.task("a", "A", delay=0.01)),
        ff.Task("bad", log.task("bad", fail=True, delay=0.02)),
        ff.Task("never", log.task("never"), needs="bad"),
    ]
    seen: list[tuple[str, str, Any]] = []
    stream = ff.as_completed(tasks, raise_on_failure=False)
    async for r in stream:
        seen.append((r.name, r.status, r.value))
    names = [name for name, _, _ in seen]
    assert names.index("a") < names.index("b") < names.index("c")
    assert names.index("bad") < names.index("never")
    assert sorted(names) == sorted(t.name for t in tasks)
    assert dict((n, v) for n, _, v in seen)["c"] == "A"
    assert stream.result is not None
    assert stream.result["never"].status == "skipped"


async def test_first_n_stopping_early_skips_blocked_tasks_with_a_reason() -> None:
    log = Log()
    gate = asyncio.Event()

    async def held() -> str:
        await gate.wait()
        return "held"

    tasks = [
        ff.Task("fast", log.task("fast")),
        ff.Task("slow", held),
        ff.Task("after-slow", log.task("after-slow"), needs="slow"),
        ff.Task("after-after", log.task("after-after"), needs="after-slow"),
    ]
    result = await ff.fan_out(tasks, strategy=ff.FirstN(1))
    by = by_name(result)
    assert result.ok and result.stopped_early
    assert by["fast"].ok
    assert by["slow"].status == "cancelled"
    for name in ("after-slow", "after-after"):
        assert by[name].status == "skipped"
        assert by[name].reason == "never started: FirstN(1) finished before this task did"
    assert log.called == ["fast"]


@pytest.mark.looptime
async def test_the_deadline_skips_blocked_tasks() -> None:
    log = Log()
    tasks = [
        ff.Task("slow", log.task("slow", delay=100)),
        ff.Task("quick", log.task("quick", delay=1)),
        ff.Task("after-slow", log.task("after-slow"), needs="slow"),
        ff.Task("chain", log.task("chain"), needs="after-slow"),
        ff.Task("after-quick", log.task("after-quick"), needs="quick"),
    ]
    result = await ff.fan_out(tasks, deadline=5, raise_on_failure=False)
    by = by_name(result)
    assert by["slow"].status == "timeout"
    assert by["quick"].ok and by["after-quick"].ok
    for name in ("after-slow", "chain"):
        assert by[name].status == "skipped"
        assert by[name].reason == "never started: the deadline was reached"
    assert "after-slow" not in log.called and "chain" not in log.called
    assert result.elapsed == pytest.approx(5)


@pytest.mark.looptime
async def test_a_need_that_fails_once_then_succeeds_releases_its_dependent() -> None:
    flaky = Flaky(1, ff.TransientError("blip"), value={"n": 7})
    log = Log()
    tasks = [
        ff.Task("a", flaky),
        ff.Task("b", value_of, args=(ff.Ref("a", "n"),)),
        ff.Task("c", log.task("c"), needs="b"),
    ]
    result = await ff.fan_out(tasks, retry=ff.Retry(attempts=2, backoff=0.5))
    by = by_name(result)
    assert by["a"].ok and by["a"].attempts == 2
    assert by["b"].value == 7 and by["b"].attempts == 1
    assert by["c"].ok
    assert len(flaky.calls) == 2


# Regression: the list source's scan used to launch a task its needs had
# released before the scan reached it, and `ready` launched it again (a
# task run twice, another never; any needs graph wider than max_concurrency).


async def test_needs_with_max_concurrency_one() -> None:
    log = Log()
    started: list[str] = []
    tasks = [
        ff.Task("a", log.task("a")),
        ff.Task("b", log.task("b"), needs="a"),
        ff.Task("d", log.task("d"), needs=("b", "c")),
        ff.Task("c", log.task("c")),
    ]

    def record(event: ff.Event) -> None:
        if isinstance(event, ff.TaskStarted):
            started.append(event.name)

    result = await ff.fan_out(tasks, max_concurrency=1, on_event=record)
    assert result.ok
    assert sorted(started) == ["a", "b", "c", "d"]  # each started once
    # One at a time: every start follows the previous end.
    for i in range(0, len(log.events), 2):
        assert log.events[i][0] == "start" and log.events[i + 1] == ("end", log.events[i][1])
    assert log.at("start", "b") > log.at("end", "a")
    assert log.at("start", "d") > max(log.at("end", "b"), log.at("end", "c"))


async def test_a_chain_with_max_concurrency_one() -> None:
    log = Log()
    tasks = [
        ff.Task("c", log.task("c"), needs="b"),
        ff.Task("b", log.task("b"), needs="a"),
        ff.Task("a", log.task("a")),
    ]
    result = await ff.fan_out(tasks, max_concurrency=1)
    assert result.ok
    assert log.events == A_B_C_IN_TURN


async def test_a_pipeline_wider_than_max_concurrency_runs_each_task_once() -> None:
    calls: list[str] = []

    async def step(name: str, upstream: Any = None) -> str:
        calls.append(name)
        return name

    tasks: list[ff.Task] = []
    for i in range(30):
        tasks.append(ff.Task(f"r{i}", step, args=(f"r{i}",)))
        tasks.append(ff.Task(f"d{i}", step, args=(f"d{i}", ff.Ref(f"r{i}"))))
    result = await ff.fan_out(tasks, max_concurrency=10)
    assert result.ok
    assert sorted(calls) == sorted(t.name for t in tasks)


@pytest.mark.parametrize("executor", ["thread", "async"])
async def test_refs_reach_plain_callables(executor: str) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    tasks = [
        ff.Task("a", value_of, args=(2,)),
        ff.Task("b", add, args=(ff.Ref("a"), 3)),
    ]
    result = await ff.fan_out(tasks, executor=executor)
    assert result["b"].value == 5


# -- the audit -------------------------------------------------------------------


async def test_two_writers_conflict_unless_one_needs_the_other() -> None:
    log = Log()
    unordered = [
        ff.Task("w1", log.task("w1"), writes="f"),
        ff.Task("w2", log.task("w2"), writes="f"),
    ]
    with pytest.raises(ff.HiddenDependencyError, match="'f'"):
        await ff.fan_out(unordered)
    assert log.called == []
    ordered = [
        ff.Task("w1", log.task("w1"), writes="f"),
        ff.Task("w2", log.task("w2"), writes="f", needs="w1"),
    ]
    result = await ff.fan_out(ordered)
    assert result.ok and log.called == ["w1", "w2"]


async def test_a_ref_orders_writers_too() -> None:
    tasks = [
        ff.Task("w1", value_of, args=(1,), writes="f"),
        ff.Task("w2", value_of, args=(ff.Ref("w1"),), writes="f"),
    ]
    assert (await ff.fan_out(tasks)).ok


async def test_writers_ordered_transitively_do_not_conflict() -> None:
    tasks = [
        ff.Task("w1", noop, writes="f"),
        ff.Task("mid", noop, needs="w1"),
        ff.Task("w2", noop, writes="f", needs="mid"),
    ]
    assert (await ff.fan_out(tasks)).ok


# -- workflows and plans use the same mechanism ----------------------------------


async def test_a_workflow_with_needs_and_a_task_value(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: needs
            tasks:
              a:
                run: "echo alpha"
              b:
                needs: [a]
                run: "echo {{ tasks.a.value }}-beta"
              c:
                needs: [b]
                run: "echo never"
              broken:
                run: "exit 3"
              after-broken:
                needs: [broken]
                run: "echo never"
            """
        )
    )
    plan = build(load(path))
    assert {t.name: t.needs for t in plan.tasks}["b"] == ("a",)
    result = await ff.fan_out(plan.tasks, **{**plan.options, "raise_on_failure": False})
    by = by_name(result)
    assert by["a"].value == "alpha"
    assert by["b"].value == "alpha-beta"
    assert by["broken"].status == "error"
    assert by["after-broken"].status == "skipped"
    assert by["after-broken"].reason == "never started: it needs 'broken', which ended error"


async def test_a_plan_runs_its_subtasks_through_needs() -> None:
    seen: list[Any] = []

    def double(x: int) -> int:
        seen.append(x)
        return 2 * x

    subtasks = [
        ff.Subtask("second", None, "double", {"x": "{{ tasks.first.value }}"}, ("first",), (), ()),
        ff.Subtask("first", None, "double", {"x": 5}, (), (), ()),
    ]
    plan = ff.Plan("goal", subtasks, llm=None, tools={"double": double})
    tasks, needs = plan.tasks()
    assert needs == {"second": ["first"]}
    assert {t.name: t.needs for t in tasks} == {"second": ("first",), "first": ()}
    result = await plan.run()
    assert result.value == {"first": 10, "second": 20}
    assert seen == [5, 10]


def test_the_old_graph_engine_is_gone() -> None:
    assert not hasattr(core, "run_graph")
    assert not hasattr(core, "UPSTREAM")
    assert not hasattr(ff, "run_graph")
    assert "run_graph" not in ff.__all__
    for module in [m for name, m in sys.modules.items() if name.startswith("fanflow")]:
        assert not hasattr(module, "run_graph"), module.__name__
