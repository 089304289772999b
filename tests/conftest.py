"""Shared helpers for fanflow's tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

# litellm fetches its model cost map from GitHub when it is imported (test
# modules import it at collection, before fanflow's provider could say
# otherwise): nothing may leave 127.0.0.0/8, so it uses its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

T = TypeVar("T")


class Spy:
    """Counts calls, tracks peak concurrency, and records what ran to the end."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.calls: list[str] = []
        self.finished: list[str] = []

    def wrap(
        self, name: str, delay: float = 0.0, value: Any = None
    ) -> Callable[[], Awaitable[Any]]:
        async def fn() -> Any:
            self.calls.append(name)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await asyncio.sleep(delay)
            finally:
                self.in_flight -= 1
            self.finished.append(name)  # never reached by a cancelled task
            return name if value is None else value

        return fn


def run_isolated(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a private event loop, as ``asyncio.run`` would.

    ``asyncio.run`` also resets the thread's current loop, which makes
    pytest-asyncio leak the loop it manages; a private loop leaves it alone.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but unreaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def spy() -> Spy:
    return Spy()


async def ticks(n: int, value: Any = None, fail: bool = False) -> Any:
    """Finish after ``n`` event-loop iterations: a deterministic completion order."""
    for _ in range(n):
        await asyncio.sleep(0)
    if fail:
        raise RuntimeError(f"failed after {n} ticks")
    return value


def wait_for_pids(path: Path, count: int, proc: subprocess.Popen[str]) -> list[int]:
    """The pids a test's jobs wrote to ``path``, once ``count`` are there (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= count:
            time.sleep(0.1)  # let the shells reach `wait`
            return [int(x) for x in path.read_text().split()]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"only {path.read_text() if path.exists() else ''!r} started")


def left_running(pids: list[int], within: float = 5.0) -> list[int]:
    """Which of ``pids`` still run after ``within`` seconds (then killed, for the next test)."""
    deadline = time.monotonic() + within
    alive = [p for p in pids if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in pids if running(p)]
    for pid in alive:  # never leave them behind for the next test
        os.kill(pid, signal.SIGKILL)
    return alive


class Flaky:
    """Fails the first ``failures`` calls with ``error``, then returns ``value``."""

    def __init__(self, failures: int, error: BaseException, value: Any = "ok") -> None:
        self.failures = failures
        self.error = error
        self.value = value
        self.calls: list[float] = []

    async def __call__(self) -> Any:
        self.calls.append(asyncio.get_running_loop().time())
        if len(self.calls) <= self.failures:
            raise self.error
        return self.value
