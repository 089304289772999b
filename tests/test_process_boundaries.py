"""The process executor at its boundaries: what crosses the pipe, and what outlives the parent.

* An exception or a return value that cannot make the trip back (it does not
  pickle in the worker, or does not unpickle in the parent) is the task's
  error, with the remote type, message and traceback — never a hang.
* Worker processes, and what their jobs started, die with the parent:
  SIGTERM, SIGHUP and kill -9 alike.
* A timed-out job never keeps the interpreter from exiting.
* A task's timeout counts from when its attempt starts running in the
  worker, not while a fresh worker interpreter boots.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff
from fanflow.executors._process import RemoteError

from .conftest import left_running, wait_for_pids

HERE = __name__  # "tests.test_process_boundaries": how the worker imports this module
#: Bounds every fan-out here: the old code hung forever on these.
BOUND = 20.0


class TwoArgs(Exception):
    """An exception that pickles but cannot unpickle: ``__init__`` wants two arguments."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b} went wrong")
        self.a, self.b = a, b


class HoldsALock(Exception):
    """An exception that cannot pickle at all: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def _only_in_the_worker(text: str) -> str:
    # Unpickles in the worker (which checks its reply round-trips) and fails
    # in the parent, whose pid the tests put in the environment.
    if os.environ.get("FANFLOW_TEST_PARENT") == str(os.getpid()):
        raise RuntimeError("this object cannot be rebuilt in the parent")
    return text


class ParentCannotLoad(Exception):
    def __reduce__(self) -> Any:
        return (_rebuild_error, (str(self),))


def _rebuild_error(text: str) -> ParentCannotLoad:
    return ParentCannotLoad(_only_in_the_worker(text))


class ValueParentCannotLoad:
    def __reduce__(self) -> Any:
        return (_only_in_the_worker, ("a value",))


def raise_two_args() -> None:
    raise TwoArgs("disk", "network")


def raise_holds_a_lock() -> None:
    raise HoldsALock("the lock was busy")


def raise_parent_cannot_load() -> None:
    raise ParentCannotLoad("only the worker knows")


def return_two_args() -> TwoArgs:
    return TwoArgs("disk", "network")


def return_a_lock() -> Any:
    return threading.Lock()


def return_parent_cannot_load() -> ValueParentCannotLoad:
    return ValueParentCannotLoad()


async def _fan_out(*tasks: ff.Task) -> ff.FanInResult:
    return await asyncio.wait_for(
        ff.fan_out(list(tasks), executor=ff.executors.Process(workers=2), raise_on_failure=False),
        BOUND,
    )


@pytest.fixture
def parent_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANFLOW_TEST_PARENT", str(os.getpid()))


async def test_an_exception_that_cannot_unpickle_is_the_tasks_error() -> None:
    result = await _fan_out(ff.Task("bad", raise_two_args), ff.Task("fine", abs, args=(-3,)))
    assert result["fine"].status == "ok" and result["fine"].value == 3
    bad = result["bad"]
    assert bad.status == "error"
    error = bad.error
    assert isinstance(error, RemoteError) and isinstance(error, RuntimeError)
    assert error.type_name == f"{HERE}.TwoArgs"
    assert error.message == "disk and network went wrong"
    assert str(error).startswith(f"{HERE}.TwoArgs: disk and network went wrong")
    assert 'raise TwoArgs("disk", "network")' in error.traceback
    assert "in raise_two_args" in error.traceback


async def test_an_exception_that_cannot_pickle_keeps_its_type_and_message() -> None:
    result = await _fan_out(ff.Task("locked", raise_holds_a_lock))
    error = result["locked"].error
    assert result["locked"].status == "error"
    assert isinstance(error, RemoteError)
    assert error.type_name == f"{HERE}.HoldsALock"
    assert error.message == "the lock was busy"
    assert "in raise_holds_a_lock" in error.traceback


async def test_an_exception_the_parent_cannot_unpickle_is_the_tasks_error(parent_pid: None) -> None:
    result = await _fan_out(ff.Task("odd", raise_parent_cannot_load))
    error = result["odd"].error
    assert result["odd"].status == "error"
    assert isinstance(error, RemoteError)
    assert error.type_name == f"{HERE}.ParentCannotLoad"
    assert error.message == "only the worker knows"
    assert "in raise_parent_cannot_load" in error.traceback


async def test_a_faithful_exception_still_comes_back_as_itself() -> None:
    result = await _fan_out(ff.Task("err", int, args=("x",)))
    error = result["err"].error
    assert type(error) is ValueError and "invalid literal" in str(error)
    # The worker's traceback, as its cause.
    assert "raise ValueError" not in str(error.__cause__)
    assert "Traceback (most recent call last)" in str(error.__cause__)


@pytest.mark.parametrize(
    ("fn", "type_name"),
    [
        (return_two_args, f"{HERE}.TwoArgs"),
        (return_a_lock, "_thread.lock"),
        (return_parent_cannot_load, f"{HERE}.ValueParentCannotLoad"),
    ],
)
async def test_a_return_value_that_cannot_come_back_is_the_tasks_error(
    parent_pid: None, fn: Any, type_name: str
) -> None:
    result = await _fan_out(ff.Task("val", fn), ff.Task("fine", abs, args=(-1,)))
    assert result["fine"].value == 1
    assert result["val"].status == "error"
    error = result["val"].error
    assert isinstance(error, TypeError)
    assert f"the value returned by task 'val' ({type_name}) cannot be sent back" in str(error)


# -- the parent dies -------------------------------------------------------

PARENT = """
import asyncio, os, subprocess, sys, time
import fanflow as ff

def job(path):
    child = subprocess.Popen(["sleep", "60"])  # a grandchild, in the worker's group
    with open(path, "a") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}\\n")
    time.sleep(60)

async def main():
    tasks = [ff.Task(f"t{{i}}", job, args=({pids!r},)) for i in range(2)]
    await ff.fan_out(tasks, executor=ff.executors.Process(workers=2))

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_workers_and_their_children_die_with_the_parent(tmp_path: Path, sig: int) -> None:
    pids = tmp_path / "pids"
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT.format(pids=str(pids))))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = wait_for_pids(pids, 4, proc)  # two workers, a grandchild each
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -sig, err  # it died of the signal, as it would have
    # kill -9: the workers die at once (parent-death signal), their children
    # when the watchdog has stopped the groups (SIGTERM, then SIGKILL).
    assert left_running(started, within=5.0) == []


EXITS = """
import time
import fanflow as ff

def hang():
    time.sleep(60)

result = ff.run(
    [ff.Task("hung", hang, timeout=0.3), ff.Task("fine", abs, args=(-1,))],
    executor="process",
    raise_on_failure=False,
)
print([r.status.value for r in result.results])
"""


@pytest.mark.slow
def test_a_timed_out_process_task_never_holds_the_interpreter_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "exits.py"
    script.write_text(EXITS)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['timeout', 'ok']"


# -- the timeout starts when the attempt runs ----------------------------------

SLOW_BOOT = """
import os, time
if os.environ.get("FANFLOW_TEST_SLOW_BOOT", str(os.getpid())) != str(os.getpid()):
    time.sleep(1.5)  # a worker interpreter that takes its time to start
"""


@pytest.fixture
def slow_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers (not this process) sleep 1.5 s at startup, in a ``sitecustomize``."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_BOOT)
    monkeypatch.setenv("FANFLOW_TEST_SLOW_BOOT", str(os.getpid()))
    monkeypatch.syspath_prepend(str(site))


def sleep_and_return(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.slow
async def test_the_timeout_does_not_count_a_cold_workers_boot(slow_boot: None) -> None:
    result = await _fan_out(
        ff.Task("quick", sleep_and_return, args=(0.05,), timeout=0.5),
        ff.Task("stuck", sleep_and_return, args=(60,), timeout=0.5),
    )
    assert result["quick"].status == "ok" and result["quick"].value == 0.05
    # The timeout still stops a job that runs too long once it has started.
    assert result["stuck"].status == "timeout"


# -- what else crosses the pipe ------------------------------------------------


def exit_hard(code: int) -> None:
    os._exit(code)  # no reply: the worker is gone


def echo_size(data: bytes) -> bytes:
    return data[::-1]


async def test_a_worker_that_dies_mid_job_says_how_and_the_pool_goes_on() -> None:
    result = await _fan_out(
        ff.Task("dies", exit_hard, args=(3,)),
        *[ff.Task(f"fine{i}", abs, args=(-i,)) for i in range(4)],
    )
    assert result["dies"].status == "error"
    assert str(result["dies"].error) == "task 'dies': the worker process died (exit code 3)"
    assert [result[f"fine{i}"].value for i in range(4)] == [0, 1, 2, 3]


async def test_arguments_and_values_larger_than_a_pipe_travel_whole() -> None:
    big = os.urandom(4 << 20)  # far beyond a pipe's buffer, sent while the worker boots
    result = await _fan_out(ff.Task("big", echo_size, args=(big,)))
    assert result["big"].status == "ok" and result["big"].value == big[::-1]
