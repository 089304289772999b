"""The executor protocol: the engine imports no executor, and a user's own executor works."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff
from fanflow.executors import Call, Executor, ExecutorSession

CORE = Path(ff.__file__).resolve().parent / "_core"
CORE_MODULES = sorted(CORE.glob("*.py"))

#: What the engine must not load: executor implementations, the progress bar.
FORBIDDEN = (
    "fanflow.executors._process",
    "fanflow.executors._ray",
    "fanflow.executors._async",
    "fanflow.executors._worker",
    "fanflow._progress",
    "rich",
    "ray",
)


def _module_name(path: Path) -> str:
    return "fanflow._core" if path.stem == "__init__" else f"fanflow._core.{path.stem}"


# -- the engine imports no executor ----------------------------------------------

# ``import fanflow._core._driver`` runs ``fanflow/__init__.py`` first, which
# (rightly) exports every verb and ``ff.executors``. To see what the engine
# itself pulls in, the two package ``__init__`` modules are replaced by bare
# namespace stand-ins, then every ``_core`` module is imported for real.
ISOLATED = """
import importlib, json, sys, types
src, names = sys.argv[1], json.loads(sys.argv[2])
for name, path in (("fanflow", src), ("fanflow.executors", src + "/executors")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
for name in names:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def test_the_engine_modules_import_no_executor_at_runtime() -> None:
    import json

    names = [_module_name(p) for p in CORE_MODULES]
    assert "fanflow._core._driver" in names and len(names) >= 8
    out = subprocess.run(
        [sys.executable, "-c", ISOLATED, str(CORE.parent), json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(json.loads(out.stdout))
    assert set(names) <= loaded
    assert "fanflow.executors._base" in loaded  # the protocol, and only it
    assert sorted(loaded & set(FORBIDDEN)) == []
    assert sorted(m for m in loaded if m.startswith("fanflow.executors.")) == [
        "fanflow.executors._base"
    ]


def test_importing_fanflow_loads_no_progress_bar_and_no_ray() -> None:
    code = (
        "import sys, fanflow._core._driver, fanflow\n"
        "print(sorted(m for m in ('fanflow._progress', 'rich', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, resolved to absolute ``fanflow...`` names."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["fanflow", "_core"]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append(module)
            # ``from ..executors import _process`` imports a submodule by name.
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_the_engine_modules_import_no_executor_statically(path: Path) -> None:
    imports = _imports(path)
    bad = [
        name
        for name in imports
        for forbidden in (
            "fanflow.executors._process",
            "fanflow.executors._ray",
            "fanflow.executors._async",
            "fanflow.executors._worker",
            "fanflow._progress",
        )
        if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert bad == []
    # Nor the package itself, whose __init__ loads every executor.
    assert "fanflow.executors" not in [n for n in imports if n.count(".") == 1]


def test_the_static_check_sees_relative_imports() -> None:
    imports = _imports(CORE / "_driver.py")
    assert "fanflow.executors._base" in imports
    assert "fanflow._core._graph" in imports


# -- a fifth executor, written by a user -----------------------------------------


class Recording(Executor):
    """Runs each call as an asyncio task after recording it; ``workers`` at once."""

    def __init__(self, workers: int | None = None, refuse: str | None = None) -> None:
        self.workers = workers
        self.refuse = refuse
        self.sessions: list[RecordingSession] = []

    def open(self, loop: asyncio.AbstractEventLoop, limit: float) -> RecordingSession:
        session = RecordingSession(self, loop, limit)
        self.sessions.append(session)
        return session

    @property
    def calls(self) -> list[str]:
        return [name for s in self.sessions for name in s.calls]


class RecordingSession(ExecutorSession):
    def __init__(self, owner: Recording, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self.owner = owner
        self.loop = loop
        self.limit = limit
        self.calls: list[str] = []
        self.futures: dict[str, list[asyncio.Future[Any]]] = {}
        self.closes = 0
        self.all_done_at_close: bool | None = None
        self.in_flight = 0
        self.peak = 0

    def submit(self, call: Call) -> asyncio.Future[Any]:
        assert isinstance(call, Call)
        if call.name == self.owner.refuse:
            raise TypeError("nope")
        self.calls.append(call.name)

        async def run() -> Any:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                if call.is_async:
                    return await call.fn(*call.args, **call.kwargs)
                return call.fn(*call.args, **call.kwargs)
            finally:
                self.in_flight -= 1

        future = self.loop.create_task(run())
        self.futures.setdefault(call.name, []).append(future)
        return future

    def close(self) -> None:
        self.closes += 1
        self.all_done_at_close = all(f.done() for fs in self.futures.values() for f in fs)


async def value_after(delay: float, value: Any) -> Any:
    await asyncio.sleep(delay)
    return value


def plain(value: Any) -> Any:
    return value


async def test_a_user_executor_runs_every_call_and_returns_values() -> None:
    executor = Recording()
    tasks = [
        ff.Task("a", value_after, args=(0, 1)),
        ff.Task("b", value_after, args=(0.01,), kwargs={"value": "two"}),
        ff.Task("c", plain, args=([3],)),
        ff.Task("d", value_after, args=(0, ff.Ref("a"))),
    ]
    result = await ff.fan_out(tasks, executor=executor)
    assert result.value == {"a": 1, "b": "two", "c": [3], "d": 1}
    assert sorted(executor.calls) == ["a", "b", "c", "d"]
    [session] = executor.sessions
    assert session.closes == 1 and session.all_done_at_close is True


@pytest.mark.looptime
async def test_a_timeout_cancels_the_user_executors_future() -> None:
    executor = Recording()
    tasks = [
        ff.Task("slow", value_after, args=(100, "never"), timeout=1),
        ff.Task("quick", value_after, args=(0.5, "q")),
    ]
    result = await ff.fan_out(tasks, executor=executor)
    slow = result["slow"]
    assert slow.status == "timeout"
    assert isinstance(slow.error, TimeoutError)
    assert "timed out after 1 s" in str(slow.error)
    assert slow.duration == pytest.approx(1)
    assert result["quick"].value == "q"
    [session] = executor.sessions
    [future] = session.futures["slow"]
    assert future.cancelled()
    assert session.closes == 1 and session.all_done_at_close is True


@pytest.mark.looptime
async def test_a_deadline_and_a_retry_go_through_the_user_executor() -> None:
    executor = Recording()
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ff.TransientError("blip")
        return "ok"

    tasks = [ff.Task("flaky", flaky), ff.Task("stuck", value_after, args=(100, None))]
    result = await ff.fan_out(
        tasks, executor=executor, retry=ff.Retry(attempts=2, backoff=0.1), deadline=5
    )
    assert result["flaky"].value == "ok" and result["flaky"].attempts == 2
    assert result["stuck"].status == "timeout"
    assert executor.calls.count("flaky") == 2
    [session] = executor.sessions
    assert session.futures["stuck"][0].cancelled()
    assert session.closes == 1 and session.all_done_at_close is True


async def test_a_user_executor_is_closed_once_even_when_the_fan_out_fails() -> None:
    executor = Recording()

    async def boom() -> None:
        raise RuntimeError("boom")

    tasks = [ff.Task("boom", boom), ff.Task("slow", value_after, args=(10, None))]
    with pytest.raises(ff.StrategyFailed):
        await ff.fan_out(tasks, executor=executor, strategy=ff.AllOrNothing())
    [session] = executor.sessions
    assert session.futures["slow"][0].cancelled()
    assert session.closes == 1 and session.all_done_at_close is True


async def test_each_fan_out_opens_its_own_session() -> None:
    executor = Recording()
    for i in range(2):
        await ff.fan_out([ff.Task(f"t{i}", value_after, args=(0, i))], executor=executor)
    assert [s.calls for s in executor.sessions] == [["t0"], ["t1"]]
    assert [s.closes for s in executor.sessions] == [1, 1]


async def test_workers_cap_the_concurrency() -> None:
    executor = Recording(workers=2)
    peak = 0
    in_flight = 0

    async def work(i: int) -> int:
        nonlocal peak, in_flight
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return i

    tasks = [ff.Task(f"t{i}", work, args=(i,)) for i in range(8)]
    result = await ff.fan_out(tasks, executor=executor, max_concurrency=100)
    assert result.value == {f"t{i}": i for i in range(8)}
    [session] = executor.sessions
    assert peak == 2 and session.peak == 2
    assert session.limit == 2  # opened with the capped limit
    assert sorted(session.calls) == sorted(t.name for t in tasks)


async def test_max_concurrency_below_workers_wins() -> None:
    executor = Recording(workers=4)
    tasks = [ff.Task(f"t{i}", value_after, args=(0.005, i)) for i in range(6)]
    await ff.fan_out(tasks, executor=executor, max_concurrency=1)
    [session] = executor.sessions
    assert session.peak == 1 and session.limit == 1


async def test_a_submit_that_raises_fails_only_that_attempt() -> None:
    executor = Recording(refuse="bad")
    tasks = [
        ff.Task("good", value_after, args=(0, "g")),
        ff.Task("bad", value_after, args=(0, "b")),
        ff.Task("after-bad", value_after, args=(0, ff.Ref("bad"))),
        ff.Task("other", plain, args=("o",)),
    ]
    result = await ff.fan_out(tasks, executor=executor, raise_on_failure=False)
    bad = result["bad"]
    assert bad.status == "error"
    assert type(bad.error) is TypeError and str(bad.error) == "nope"
    assert bad.attempts == 1
    assert result["good"].value == "g" and result["other"].value == "o"
    assert result["after-bad"].status == "skipped"
    assert result["after-bad"].reason == "never started: it needs 'bad', which ended error"
    assert sorted(executor.calls) == ["good", "other"]
    assert executor.sessions[0].closes == 1


async def test_a_submit_that_raises_fails_that_attempt_and_a_retry_submits_again() -> None:
    executor = Recording(refuse="bad")
    result = await ff.fan_out(
        [ff.Task("bad", value_after, args=(0, 1)), ff.Task("ok", value_after, args=(0, 2))],
        executor=executor,
        raise_on_failure=False,
        retry=ff.Retry(attempts=3, backoff=0),
    )
    bad = result["bad"]
    assert bad.status == "error" and bad.attempts == 3
    assert [h.error for h in bad.history] == ["TypeError: nope"] * 3
    assert result["ok"].value == 2


def test_the_protocol_is_abstract() -> None:
    with pytest.raises(TypeError):
        Executor()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        ExecutorSession()  # type: ignore[abstract]
    assert Executor.workers is None


# -- built-in names --------------------------------------------------------------


async def test_thread_executor_runs_plain_callables_and_coroutine_functions() -> None:
    main_thread = threading.get_ident()
    test_loop = asyncio.get_running_loop()

    def sync_work(x: int) -> tuple[int, int]:
        return x * 2, threading.get_ident()

    async def async_work(x: int) -> tuple[int, int, bool]:
        await asyncio.sleep(0)
        return x + 1, threading.get_ident(), asyncio.get_running_loop() is test_loop

    tasks = [ff.Task("s", sync_work, args=(4,)), ff.Task("a", async_work, args=(4,))]
    result = await ff.fan_out(tasks, executor="thread")
    value, thread = result["s"].value
    assert value == 8 and thread != main_thread
    value, thread, same_loop = result["a"].value
    assert value == 5 and thread != main_thread
    assert same_loop is False  # its own asyncio.run in the worker thread


async def test_thread_executor_with_refs() -> None:
    tasks = [
        ff.Task("a", plain, args=({"k": 7},)),
        ff.Task("b", value_after, args=(0, ff.Ref("a", "k"))),
    ]
    result = await ff.fan_out(tasks, executor=ff.executors.Threads(workers=2))
    assert result["b"].value == 7


async def test_an_unknown_executor_name_is_a_value_error_naming_it() -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("x")

    with pytest.raises(ValueError, match=r"executor must be .*got 'bogus'"):
        await ff.fan_out([ff.Task("x", work)], executor="bogus")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"executor must be .*got 3"):
        await ff.fan_out([ff.Task("x", work)], executor=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"executor must be .*got <class"):
        await ff.fan_out([ff.Task("x", work)], executor=Recording)  # type: ignore[arg-type]
    assert ran == []
