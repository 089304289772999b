"""Shell commands as tasks: output captured whole, groups killed, nothing left behind.

Every test runs on both ways of watching a child: the event loop watching a
pidfd and the pipes directly (Linux >= 5.3), and asyncio's subprocesses
(elsewhere).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import tracemalloc
from pathlib import Path

import pytest

from fanflow._shell import _run as _shell
from fanflow._shell._run import ShellError, ShellTimeoutError, run_shell

from .conftest import running


@pytest.fixture(params=["pidfd", "asyncio"], autouse=True)
def watcher(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pidfd" and not _shell._pidfd_works():
        pytest.skip("no pidfd_open on this platform")
    monkeypatch.setattr(_shell, "_HAVE_PIDFD", request.param == "pidfd")
    return str(request.param)


async def wait_gone(pid: int) -> bool:
    for _ in range(50):
        if not running(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_output_is_captured_whole() -> None:
    # More than a pipe's buffer on stdout, and something on stderr.
    out = await run_shell("head -c 300000 /dev/zero; echo oops >&2")
    assert out.exit_code == 0
    assert out.stdout == b"\0" * 300000 and out.stderr == b"oops\n"


async def test_a_failing_command_raises_with_what_it_printed() -> None:
    with pytest.raises(ShellError, match="exited with status 3") as caught:
        await run_shell("echo partial; exit 3")
    assert caught.value.output.stdout == b"partial\n" and caught.value.output.exit_code == 3


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0.3 s: sleep 30 &"):
        await run_shell(f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.3)
    assert time.monotonic() - started < 10
    assert await wait_gone(int(pidfile.read_text()))


async def test_cancellation_kills_and_reaps(tmp_path: Path) -> None:
    pidfile = tmp_path / "shell.pid"
    job = asyncio.ensure_future(run_shell(f"echo $$ > {pidfile}; sleep 30"))
    while not pidfile.exists() or not pidfile.read_text().strip():
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    pid = int(pidfile.read_text())
    assert not running(pid)  # killed and reaped before the cancellation returned


async def test_background_children_are_killed_when_the_command_ends(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    out = await run_shell(f"sleep 30 >/dev/null 2>&1 & echo $! > {pidfile}; echo done")
    assert out.stdout == b"done\n"
    assert await wait_gone(int(pidfile.read_text()))


async def test_a_missing_directory_is_an_error_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_shell("echo hi", cwd=str(tmp_path / "nowhere"))


async def test_no_file_descriptors_leak() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        await run_shell(f"echo {i}")
    with pytest.raises(ShellError):
        await run_shell("exit 1")
    with pytest.raises(TimeoutError):
        await run_shell("sleep 5", timeout=0.05)
    assert len(os.listdir("/proc/self/fd")) == before


async def test_many_at_once_each_get_their_own_output() -> None:
    outs = await asyncio.gather(*[run_shell(f"echo {i}; echo e{i} >&2") for i in range(50)])
    assert [o.stdout for o in outs] == [f"{i}\n".encode() for i in range(50)]
    assert [o.stderr for o in outs] == [f"e{i}\n".encode() for i in range(50)]


async def test_a_large_output_waits_in_a_temporary_file_not_in_memory() -> None:
    # 8 MB on stdout: past SPILL_AT it goes to an unlinked temporary file;
    # Python's own allocations stay near SPILL_AT, not near the output's size.
    size = 8_000_000
    tracemalloc.start()
    try:
        out = await run_shell(f"head -c {size} /dev/zero; echo err >&2")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.spilled and out.stdout_size == size and out.stderr == b"err\n"
    assert peak < 3 * _shell.SPILL_AT, peak
    sink = io.BytesIO()
    out.write_stdout(sink)
    assert sink.getvalue() == b"\0" * size and out.stdout == b"\0" * size
    out.close()
    assert out.stdout == b""


async def test_a_timed_out_command_keeps_what_it_printed() -> None:
    with pytest.raises(ShellTimeoutError, match=r"timed out after 0\.3 s") as caught:
        await run_shell("printf partial; echo e >&2; sleep 30", timeout=0.3)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.output.stdout == b"partial" and caught.value.output.stderr == b"e\n"


async def test_a_job_does_not_inherit_pythons_ignored_sigpipe() -> None:
    # Python ignores SIGPIPE; a job that inherited that would spin on EPIPE
    # in pipelines (`yes | head`). Popen resets it; so must the spawn path.
    out = await run_shell("grep '^SigIgn' /proc/$$/status")
    mask = int(out.stdout.decode().split()[1], 16)
    assert not mask & (1 << (signal.SIGPIPE - 1)), hex(mask)
    assert not mask & (1 << (signal.SIGXFSZ - 1)), hex(mask)


async def test_a_job_sees_the_environment_as_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    # The spawn path reads os.environ's own data: a change made after import
    # (and one made between two jobs) reaches the next job.
    monkeypatch.setenv("FANFLOW_TEST_VALUE", "one")
    assert (await run_shell("echo $FANFLOW_TEST_VALUE")).stdout == b"one\n"
    monkeypatch.setenv("FANFLOW_TEST_VALUE", "two")
    monkeypatch.delenv("HOME", raising=False)
    out = await run_shell("echo $FANFLOW_TEST_VALUE ${HOME:-none}")
    assert out.stdout == b"two none\n"
