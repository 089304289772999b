"""The independence audit: hidden dependencies found before anything starts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import types
import warnings
from typing import Any

import pytest

import fanflow as ff


async def use(*args: Any, **kwargs: Any) -> None:
    await asyncio.sleep(0)


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: int


@dataclasses.dataclass
class Loose:
    x: int


def test_write_write_conflict_names_both_tasks() -> None:
    report = ff.audit(
        [ff.Task("a", use, writes="db"), ff.Task("b", use, writes=["db"]), ff.Task("c", use)]
    )
    (conflict,) = report.conflicts
    assert conflict.kind == "write/write" and conflict.tasks == ("a", "b")
    assert "'a'" in str(conflict) and "'b'" in str(conflict) and "'db'" in str(conflict)


def test_read_write_conflict_names_writer_and_reader() -> None:
    report = ff.audit([ff.Task("w", use, writes="cache"), ff.Task("r", use, reads="cache")])
    (conflict,) = report.conflicts
    assert conflict.kind == "read/write" and conflict.tasks == ("w", "r")
    assert "'w' writes 'cache'" in conflict.detail and "'r'" in conflict.detail


def test_readers_only_and_a_task_reading_what_it_writes_are_fine() -> None:
    report = ff.audit(
        [
            ff.Task("r1", use, reads="db"),
            ff.Task("r2", use, reads=["db", "cache"]),
            ff.Task("self", use, reads="log", writes="log"),
        ]
    )
    assert report.ok and report.conflicts == []


@pytest.mark.parametrize(
    ("make_args", "where"),
    [
        pytest.param(lambda shared: ((shared,), {}), "args[0]", id="positional"),
        pytest.param(lambda shared: ((), {"cache": shared}), "kwargs['cache']", id="keyword"),
        pytest.param(lambda shared: (([shared],), {}), "args[0][0]", id="nested-in-list"),
        pytest.param(lambda shared: (({"k": shared},), {}), "args[0]['k']", id="nested-in-dict"),
        pytest.param(lambda shared: (((1, shared),), {}), "args[0][1]", id="nested-in-tuple"),
    ],
)
def test_shared_mutable_argument_is_found(make_args: Any, where: str) -> None:
    shared: list[int] = []
    tasks = []
    for name in ("a", "b"):
        args, kwargs = make_args(shared)
        tasks.append(ff.Task(name, use, args=args, kwargs=kwargs))
    (conflict,) = ff.audit(tasks).conflicts
    assert conflict.kind == "shared argument" and conflict.tasks == ("a", "b")
    assert f"'a' ({where})" in conflict.detail and "'b'" in conflict.detail
    assert "HINT" in conflict.detail and "copy" in conflict.detail


@pytest.mark.parametrize(
    "value",
    [
        "text",
        b"bytes",
        42,
        3.5,
        None,
        (1, "two", (3,)),
        frozenset({1, 2}),
        Frozen(1),
        types.MappingProxyType({"a": 1}),
        range(3),
    ],
    ids=lambda v: type(v).__name__,
)
def test_shared_immutable_arguments_are_fine(value: Any) -> None:
    tasks = [ff.Task(n, use, args=(value,), kwargs={"v": value}) for n in ("a", "b", "c")]
    assert ff.audit(tasks).ok


def test_shared_service_objects_are_not_flagged() -> None:
    class Client:
        """Stands for an HTTP client: shared by design."""

    client, lock = Client(), asyncio.Lock()
    tasks = [ff.Task(n, use, args=(client, lock)) for n in ("a", "b")]
    assert ff.audit(tasks).ok


def test_non_frozen_dataclass_counts_as_mutable() -> None:
    shared = Loose(1)
    tasks = [ff.Task(n, use, args=(shared,)) for n in ("a", "b")]
    assert [c.kind for c in ff.audit(tasks).conflicts] == ["shared argument"]


async def test_error_mode_refuses_before_anything_starts() -> None:
    started: list[str] = []

    async def record(name: str, store: list[str]) -> None:
        started.append(name)

    shared: list[str] = []
    tasks = [ff.Task(n, record, args=(n, shared)) for n in ("a", "b")]
    with pytest.raises(ff.HiddenDependencyError) as info:
        await ff.fan_out(tasks)
    await asyncio.sleep(0.01)
    assert started == []
    assert isinstance(info.value, ff.FanOutError)
    assert "'a'" in str(info.value) and "'b'" in str(info.value)
    assert "nothing was started" in str(info.value)
    assert info.value.report.conflicts[0].kind == "shared argument"


async def test_warn_mode_warns_and_runs() -> None:
    tasks = [ff.Task("w", use, writes="db"), ff.Task("x", use, writes="db")]
    with pytest.warns(ff.HiddenDependencyWarning, match="write/write"):
        result = await ff.fan_out(tasks, audit="warn")
    assert result.ok and result.audit is not None
    assert result.audit.conflicts[0].tasks == ("w", "x")


async def test_off_mode_skips_the_audit() -> None:
    tasks = [ff.Task("w", use, writes="db"), ff.Task("x", use, writes="db")]
    result = await ff.fan_out(tasks, audit="off")
    assert result.ok and result.audit is None


async def test_unknown_audit_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="'loose'"):
        await ff.fan_out([ff.Task("a", use)], audit="loose")  # type: ignore[arg-type]


async def test_strict_blames_only_the_task_that_appended() -> None:
    shared: list[str] = []

    async def reader(items: list[str]) -> int:
        for _ in range(5):
            await asyncio.sleep(0)
        return len(items)

    async def appender(items: list[str]) -> None:
        await asyncio.sleep(0)
        items.append("x")  # a hidden write, while the readers are still running
        for _ in range(10):
            await asyncio.sleep(0)

    tasks = [
        ff.Task("reader1", reader, args=(shared,)),
        ff.Task("appender", appender, args=(shared,)),
        ff.Task("reader2", reader, args=(shared,)),
    ]
    with pytest.warns(ff.HiddenDependencyWarning, match="'appender' mutated"):
        result = await ff.fan_out(tasks, audit="strict")
    assert result.audit is not None
    assert [m.task for m in result.audit.mutations] == ["appender"]
    assert "list" in result.audit.mutations[0].subject


async def test_strict_without_mutation_reports_nothing_and_still_refuses_resource_conflicts() -> (
    None
):
    shared = {"k": 1}

    async def read(d: dict[str, int]) -> int:
        await asyncio.sleep(0)
        return d["k"]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = await ff.fan_out(
            [ff.Task(n, read, args=(shared,)) for n in ("a", "b")], audit="strict"
        )
    assert result.audit is not None and result.audit.mutations == []
    assert result.value == {"a": 1, "b": 1}
    with pytest.raises(ff.HiddenDependencyError):
        await ff.fan_out(
            [ff.Task("w", use, writes="db"), ff.Task("r", use, reads="db")], audit="strict"
        )


async def test_strict_checks_thread_tasks_when_they_end() -> None:
    shared: dict[str, int] = {}

    def write(d: dict[str, int]) -> None:
        d["touched"] = 1

    def look(d: dict[str, int]) -> int:
        return 0

    with pytest.warns(ff.HiddenDependencyWarning):
        result = await ff.fan_out(
            [ff.Task("writer", write, args=(shared,)), ff.Task("looker", look, args=(shared,))],
            audit="strict",
            max_concurrency=1,
        )
    assert result.audit is not None
    assert [m.task for m in result.audit.mutations] == ["writer"]


async def test_audit_report_in_to_dict() -> None:
    tasks = [ff.Task("w", use, writes="db"), ff.Task("x", use, writes="db")]
    with pytest.warns(ff.HiddenDependencyWarning):
        result = await ff.fan_out(tasks, audit="warn")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["audit"]["conflicts"][0]["tasks"] == ["w", "x"]
    assert data["audit"]["mode"] == "warn" and data["audit"]["ok"] is False


def test_audit_rejects_non_tasks() -> None:
    with pytest.raises(TypeError, match=r"tasks\[1\]"):
        ff.audit([ff.Task("a", use), "b"])  # type: ignore[list-item]
