"""Plain callables: threads that never hold the program, and sys.exit() as a task's error."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fanflow as ff
from fanflow._core._threads import WorkerThreads


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_a_timed_out_plain_function_does_not_hold_the_interpreter_at_exit() -> None:
    # Before: ThreadPoolExecutor's threads are joined at exit, so the program
    # lived until time.sleep(1000) returned (subprocess.run timed out).
    done = _python(
        """
        import time, fanflow as ff
        r = ff.run([ff.Task("hung", time.sleep, args=(1000,))], timeout=0.2,
                   raise_on_failure=False)
        print(r.results[0].status.value)
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "timeout"


async def test_sys_exit_in_a_plain_function_is_that_tasks_error() -> None:
    def quits() -> None:
        sys.exit(3)

    result = await ff.fan_out(
        [ff.Task("quits", quits), ff.Task("fine", lambda: 1)], raise_on_failure=False
    )
    bad, good = result.results
    assert bad.status is ff.Status.ERROR
    assert isinstance(bad.error, ff.TaskExit)
    assert bad.error.code == 3
    assert str(bad.error) == "the task called sys.exit(3)"
    assert isinstance(bad.error.__cause__, SystemExit)
    assert good.ok and good.value == 1


def _quits_in_a_worker() -> None:
    sys.exit(4)


@pytest.mark.slow
async def test_sys_exit_in_a_worker_process_is_that_tasks_error() -> None:
    result = await ff.fan_out(
        [ff.Task("quits", _quits_in_a_worker), ff.Task("fine", abs, args=(-2,))],
        executor="process",
        raise_on_failure=False,
    )
    bad, good = result.results
    assert isinstance(bad.error, ff.TaskExit) and bad.error.code == 4
    assert good.value == 2


def test_worker_threads_are_daemons_and_shutdown_never_waits() -> None:
    pool = WorkerThreads(1)
    started = []
    blocker = pool.submit(lambda: started.append(1) or time.sleep(5))
    queued = pool.submit(lambda: "never")
    while not started:
        time.sleep(0.001)
    pool.shutdown(wait=True)
    assert queued.cancelled()
    assert not blocker.done()  # abandoned, not waited for
    import threading

    workers = [t for t in threading.enumerate() if t.name.startswith("fanflow-")]
    assert workers and all(t.daemon for t in workers)


@pytest.mark.slow
def test_ctrl_c_ends_fanflow_run_of_a_hung_plain_function_at_once(tmp_path: Path) -> None:
    (tmp_path / "hangs.py").write_text(
        "import time\n\ndef forever():\n    time.sleep(1000)\n\ndef quick():\n    return 1\n"
    )
    spec = tmp_path / "wf.yaml"
    spec.write_text("tasks:\n  hung:\n    call: hangs:forever\n  quick:\n    call: hangs:quick\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanflow", "run", str(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    time.sleep(2.0)  # loaded and running (a slow import on a loaded machine)
    proc.send_signal(signal.SIGINT)
    # Before: one Ctrl-C did nothing until the function returned (1000 s).
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "the threads of hung were abandoned" in err


def test_sys_exit_in_a_workflow_task_is_that_tasks_error(tmp_path: Path) -> None:
    (tmp_path / "quitter.py").write_text(
        "import sys\n\ndef quit3():\n    sys.exit(3)\n\n"
        "async def aquit():\n    sys.exit(5)\n\ndef fine():\n    return 'ok'\n"
    )
    spec = tmp_path / "wf.yaml"
    spec.write_text(
        "tasks:\n  q:\n    call: quitter:quit3\n  aq:\n    call: quitter:aquit\n"
        "  f:\n    call: quitter:fine\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "fanflow", "run", str(spec)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    # Before: the process exited 3 with no table; now the run goes on and the
    # table says which task called sys.exit.
    assert done.returncode == 0, done.stderr
    assert "the task called sys.exit(3)" in done.stdout
    assert "the task called sys.exit(5)" in done.stdout
    assert "f  " in done.stdout or "│ f " in done.stdout
