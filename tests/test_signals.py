"""No orphans: signals to fanflow (CLI and library) stop every job and its children.

Each job records its shell's pid and two background children's pids in a
file; the test waits until every job is running, sends the signal, and
counts the processes still alive afterwards: zero, every time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import left_running, wait_for_pids

pytestmark = pytest.mark.slow

# A job with grandchildren: two background sleeps, then the shell waits.
JOB = "sleep 100 & echo $! >> {pids}; sleep 100 & echo $! >> {pids}; echo $$ >> {pids}; wait"
EXPECTED_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def _fanflow(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fanflow", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_fanflow_map_signal_stops_every_job_and_grandchild(tmp_path: Path, sig: int) -> None:
    pids = tmp_path / "pids"
    journal = tmp_path / "j.db"
    joblog = tmp_path / "joblog"
    proc = _fanflow(
        "map",
        "-j",
        "3",
        "--journal",
        str(journal),
        "--joblog",
        str(joblog),
        JOB.format(pids=pids) + "; true {}",
        ":::",
        "a",
        "b",
        "c",
        "d",
    )
    started = wait_for_pids(pids, 9, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXPECTED_EXIT[sig], err
    assert f"stopped by {signal.Signals(sig).name}" in err
    assert "fanflow map: interrupted: 0 jobs done, 0 failed, the running ones stopped" in err
    assert "Traceback" not in err
    assert left_running(started, within=0.5) == []
    # The joblog has its header, and the journal is a usable SQLite file.
    assert joblog.read_text().startswith("Seq\t")
    import sqlite3

    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_fanflow_run_signal_stops_every_job_and_grandchild(tmp_path: Path, sig: int) -> None:
    pids = tmp_path / "pids"
    spec = tmp_path / "wf.yaml"
    job = JOB.format(pids=pids).replace("'", "''")
    spec.write_text(
        "name: sig\ntasks:\n"
        + "".join(f"  t{i}:\n    run: '{job}'\n" for i in range(3))
        + "  after:\n    run: 'echo never'\n    needs: [t0]\n"
    )
    proc = _fanflow("run", str(spec))
    started = wait_for_pids(pids, 9, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXPECTED_EXIT[sig], err
    assert "Traceback" not in err
    assert "interrupted: 0 of 4 tasks finished, 3 stopped (t0, t1, t2), 1 never started" in err
    assert left_running(started, within=0.5) == []


LIBRARY = """
import asyncio, functools, sys
import fanflow as ff
from fanflow._shell._run import run_shell

async def main():
    tasks = [ff.Task(f"t{{i}}", functools.partial(run_shell, {job!r})) for i in range(3)]
    await ff.fan_out(tasks)

asyncio.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_library_fan_out_signal_stops_every_job_and_grandchild(tmp_path: Path, sig: int) -> None:
    pids = tmp_path / "pids"
    script = tmp_path / "lib.py"
    script.write_text(textwrap.dedent(LIBRARY.format(job=JOB.format(pids=pids))))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = wait_for_pids(pids, 9, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err  # the program's own Ctrl-C, as asyncio.run gives it
    else:
        # The program dies of the signal as it would have: same status.
        assert proc.returncode == -sig, err
    assert left_running(started, within=0.5) == []


def test_kill_9_of_fanflow_map_the_watchdog_stops_the_jobs(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    proc = _fanflow("map", "-j", "3", JOB.format(pids=pids) + "; true {}", ":::", "a", "b", "c")
    started = wait_for_pids(pids, 9, proc)
    proc.kill()
    proc.communicate(timeout=30)
    # Nothing in fanflow can run after SIGKILL: the watchdog process saw its
    # pipe close and stopped the groups (TERM, then KILL after its grace).
    assert left_running(started, within=10.0) == []


def test_timed_out_job_gets_sigterm_before_sigkill(tmp_path: Path) -> None:
    # A job that cleans up on SIGTERM gets the chance (GNU parallel's --termseq).
    marker = tmp_path / "cleaned"
    job = f"trap 'echo cleaned > {marker}; exit 1' TERM; sleep 100 & wait"
    proc = _fanflow("map", "--timeout", "0.5", job + "; true {}", ":::", "a")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert marker.read_text() == "cleaned\n"
