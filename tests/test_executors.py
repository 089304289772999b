"""One behaviour suite for every executor: coroutines, threads and worker processes."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff

from .conftest import running

EXECUTORS = ["coroutine", "thread", "process", "ray"]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A local Ray cluster for the whole session (2 CPUs), shut down at the end."""
    ray = pytest.importorskip("ray")
    # The tasks' functions live in this test module: ship them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # On loopback: left alone, Ray binds the machine's interface address.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.2")
    yield ray
    ray.shutdown()


def work_sync(delay: float, value: Any = None, fail: bool = False, mark: str = "") -> Any:
    time.sleep(delay)
    if fail:
        raise ValueError(f"failed after {delay}")
    if mark:
        Path(mark).write_text("done")  # a side effect after the wait
    return value


async def work_async(delay: float, value: Any = None, fail: bool = False, mark: str = "") -> Any:
    await asyncio.sleep(delay)
    if fail:
        raise ValueError(f"failed after {delay}")
    if mark:
        Path(mark).write_text("done")
    return value


def stuck(pidfile: str) -> None:
    Path(pidfile).write_text(str(os.getpid()))
    time.sleep(60)


def task(kind: str, name: str, *args: Any, **kwargs: Any) -> ff.Task:
    fn = work_async if kind == "coroutine" else work_sync
    return ff.Task(name, fn, args=args, **kwargs)


def executor(kind: str) -> Any:
    if kind == "ray":
        return ff.executors.Ray(num_cpus=0.25)
    return ff.executors.Process(workers=4) if kind == "process" else "async"


@pytest.fixture(params=EXECUTORS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


async def test_statuses_values_and_errors(kind: str) -> None:
    tasks = [
        task(kind, "ok", 0.0, 42),
        task(kind, "err", 0.0, None, True),
        task(kind, "slow", 5.0, timeout=0.2),
    ]
    result = await ff.fan_out(tasks, executor=executor(kind), raise_on_failure=False)
    assert [r.status.value for r in result.results] == ["ok", "error", "timeout"]
    assert result["ok"].value == 42
    error = result["err"].error
    assert isinstance(error, ValueError) and str(error) == "failed after 0.0"
    if kind in ("process", "ray"):
        assert "work_sync" in str(error.__cause__)  # the worker's traceback
    assert not (asyncio.all_tasks() - {asyncio.current_task()})


async def test_first_n_cancels_the_losers(kind: str, tmp_path: Path) -> None:
    tasks = [task(kind, f"fast{i}", 0.0, i) for i in range(2)]
    tasks += [task(kind, f"slow{i}", 1.0, i, False, str(tmp_path / f"slow{i}")) for i in range(2)]
    result = await ff.fan_out(tasks, strategy=ff.FirstN(2), executor=executor(kind))
    assert sorted(result.value) == [0, 1]
    assert {r.name for r in result.cancelled} == {"slow0", "slow1"}
    await asyncio.sleep(1.3)
    if kind != "thread":  # a thread cannot be stopped: documented
        assert not list(tmp_path.iterdir())  # the losers never reached their side effect


async def test_partial_failure_and_deadline(kind: str) -> None:
    tasks = [task(kind, f"t{i}", 0.0, i, i == 1) for i in range(3)]
    tasks.append(task(kind, "late", 10.0))
    # Cold worker processes (and Ray workers) boot inside the deadline: give them room.
    deadline = 4.0 if kind in ("process", "ray") else 2.0
    result = await ff.fan_out(tasks, executor=executor(kind), deadline=deadline, max_concurrency=4)
    assert result.ok and result.value == {"t0": 0, "t2": 2}
    assert result["t1"].status == "error" and result["late"].status == "timeout"


async def test_a_stuck_process_is_gone_within_a_second_of_its_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    result = await ff.fan_out(
        [ff.Task("stuck", stuck, args=(str(pidfile),), timeout=1.5)],  # a cold worker starts first
        executor="process",
        raise_on_failure=False,
    )
    assert result["stuck"].status == "timeout"
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 1.0
    while running(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not running(pid)


async def test_process_executor_runs_lambdas_and_coroutines() -> None:
    tasks = [
        ff.Task("lam", lambda: os.getpid()),
        ff.Task("coro", work_async, args=(0.0, "from a coroutine")),
    ]
    result = await ff.fan_out(tasks, executor="process")
    assert result["lam"].value != os.getpid()  # it ran elsewhere
    assert result["coro"].value == "from a coroutine"


async def test_unpicklable_arguments_name_the_task() -> None:
    class Unpicklable:
        def __reduce__(self) -> Any:
            raise TypeError("cannot pickle this")

    result = await ff.fan_out(
        [ff.Task("bad", work_sync, args=(0.0, Unpicklable()))],
        executor="process",
        raise_on_failure=False,
    )
    assert "task 'bad' cannot be sent to a worker process" in str(result["bad"].error)


async def test_process_concurrency_is_capped_at_the_workers() -> None:
    tasks = [ff.Task(f"t{i}", os.getpid) for i in range(6)]
    result = await ff.fan_out(tasks, executor=ff.executors.Process(workers=2))
    assert len(set(result.value.values())) <= 2  # two workers, reused


async def test_fan_map_on_processes() -> None:
    values = sorted([r.value async for r in ff.fan_map(abs, [-3, -2, -1], executor="process")])
    assert values == [1, 2, 3]


async def test_bad_executor_is_refused() -> None:
    with pytest.raises(ValueError, match="'gpu'"):
        await ff.fan_out([ff.Task("a", print)], executor="gpu")
    with pytest.raises(ValueError, match="workers"):
        ff.executors.Process(workers=0)


async def test_ray_per_task_resources(ray_cluster: Any) -> None:
    heavy = ff.executors.Ray(num_cpus=0.25, resources={"big": {"num_cpus": 2}})
    result = await ff.fan_out(
        [ff.Task("big", work_sync, args=(0.0, "b")), ff.Task("small", work_sync, args=(0.0, "s"))],
        executor=heavy,
    )
    assert result.value == {"big": "b", "small": "s"}


async def test_ray_runs_coroutines_partials_and_keyword_arguments(ray_cluster: Any) -> None:
    # Plain functions become Ray remote functions of their own (sent once);
    # other callables go through a generic wrapper. Both keep the contract.
    on_ray = ff.executors.Ray(num_cpus=0.25)
    tasks = [ff.Task(f"async{i}", work_async, args=(0.0,), kwargs={"value": i}) for i in range(3)]
    tasks.append(ff.Task("partial", functools.partial(work_sync, 0.0, value="p")))
    tasks.append(ff.Task("async-error", work_async, args=(0.0,), kwargs={"fail": True}))
    result = await ff.fan_out(tasks, executor=on_ray, raise_on_failure=False)
    assert result.value == {"async0": 0, "async1": 1, "async2": 2, "partial": "p"}
    error = result["async-error"].error
    assert isinstance(error, ValueError) and "work_async" in str(error.__cause__)
