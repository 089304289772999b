"""The Ray executor at its boundaries, on a real two-node cluster (127.0.0.2 and 127.0.0.3).

Each test runs its fan-out in a driver program of its own (a Ray driver
connects to one cluster per process, and the tests of test_executors.py
keep a local one in this process); the driver prints a JSON report.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._raycluster import WORKER_IP, Cluster, free_port, last_json, run_driver
from tests.conftest import running

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

_PRELUDE = """
import asyncio, json, os, sys, time
import fanflow as ff
import ray

def report(obj):
    print(json.dumps(obj), flush=True)

def summary(result):
    return {
        r.name: {
            "status": r.status.value,
            "value": r.value,
            "attempts": r.attempts,
            "error": None if r.error is None else f"{type(r.error).__name__}: {r.error}",
            "cause": None if r.error is None or r.error.__cause__ is None
            else f"{type(r.error.__cause__).__name__}: {r.error.__cause__}",
        }
        for r in result.results
    }
"""


def driver(body: str, timeout: float = 90, **env: str) -> Any:
    code = _PRELUDE + textwrap.dedent(body)
    out = run_driver(code, timeout=timeout, **env)
    assert out.returncode == 0, f"rc={out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return last_json(out), out.stderr


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and a worker node, 1 CPU each, for the whole module."""
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_an_unreachable_cluster_fails_every_task_without_blocking() -> None:
    # Nothing listens there: ray.init would wait for minutes on the event loop.
    address = f"127.0.0.2:{free_port('127.0.0.2')}"
    report, _ = driver(
        f"""
        def work():
            return 1

        async def main():
            tasks = [ff.Task(f"t{{i}}", work) for i in range(3)]
            t0 = time.monotonic()
            bounded = await ff.fan_out(
                tasks, executor=ff.executors.Ray({address!r}),
                timeout=2, deadline=5, raise_on_failure=False,
            )
            took = time.monotonic() - t0
            quick = await ff.fan_out(
                tasks, executor=ff.executors.Ray({address!r}, connect_timeout=1),
                deadline=30, raise_on_failure=False,
            )
            report({{"took": took, "bounded": summary(bounded), "quick": summary(quick)}})

        asyncio.run(main())
        """,
        timeout=60,
    )
    assert report["took"] < 20  # the deadline (5 s) bounded the wait, not ray.init
    assert {r["status"] for r in report["bounded"].values()} == {"timeout"}
    for r in report["quick"].values():
        assert r["status"] == "error"
        assert r["error"] == f"ConnectionError: could not connect to Ray at {address!r} within 1 s"


def test_ray_client_without_its_extra_is_one_error_naming_the_address() -> None:
    report, _ = driver(
        """
        def work():
            return 1

        result = ff.run(
            [ff.Task(f"t{i}", work) for i in range(3)],
            executor=ff.executors.Ray("ray://127.0.0.2:1"), deadline=30, raise_on_failure=False,
        )
        report(summary(result))
        """,
        timeout=60,
    )
    for r in report.values():
        assert r["status"] == "error"
        assert r["error"].startswith(
            "ConnectionError: could not connect to Ray at 'ray://127.0.0.2:1'"
        )
        assert "ray[client]" in r["error"]


def test_a_local_cluster_started_by_the_executor_outlives_its_connect_thread() -> None:
    # ray.init runs in a thread now; Ray's local processes die with the thread
    # that started them (PR_SET_PDEATHSIG), so that thread must stay.
    report, _ = driver(
        """
        def work(i):
            return i

        ex = ff.executors.Ray(num_cpus=0.5, include_dashboard=False,
                              _node_ip_address="127.0.0.2")
        first = ff.run([ff.Task("a", work, args=(1,))], executor=ex, deadline=60,
                       raise_on_failure=False)
        time.sleep(1)
        second = ff.run([ff.Task("b", work, args=(2,))], executor=ex, deadline=30,
                        raise_on_failure=False)
        ray.shutdown()
        report({**summary(first), **summary(second)})
        """,
        timeout=120,
        RAY_ADDRESS="",
    )
    assert {n: (r["status"], r["value"]) for n, r in report.items()} == {
        "a": ("ok", 1),
        "b": ("ok", 2),
    }


def test_the_timeout_counts_from_when_the_task_runs_not_from_the_queue(cluster: Cluster) -> None:
    # Two CPUs, six 0.6-s tasks: the last wait in Ray's queue longer than 1.5 s.
    report, _ = driver(
        f"""
        ray.init(address={cluster.address!r}, include_dashboard=False, log_to_driver=False)

        def work(i):
            time.sleep(0.6)
            return i

        result = ff.run(
            [ff.Task(f"t{{i}}", work, args=(i,)) for i in range(6)],
            executor=ff.executors.Ray(num_cpus=1), timeout=1.5, deadline=120,
            raise_on_failure=False,
        )
        report(summary(result))
        """,
        timeout=150,
    )
    assert {n: r["status"] for n, r in report.items()} == {f"t{i}": "ok" for i in range(6)}


def test_a_task_no_node_can_hold_fails_at_once_naming_the_resource(cluster: Cluster) -> None:
    report, _ = driver(
        f"""
        ray.init(address={cluster.address!r}, include_dashboard=False, log_to_driver=False)

        def work():
            return "ran"

        ex = ff.executors.Ray(num_cpus=1, resources={{"big": {{"num_cpus": 4}},
                                                     "gpu": {{"num_gpus": 1}}}})
        t0 = time.monotonic()
        result = ff.run(
            [ff.Task("small", work), ff.Task("big", work), ff.Task("gpu", work)],
            executor=ex, deadline=20, raise_on_failure=False,
        )
        report({{"took": time.monotonic() - t0, "tasks": summary(result)}})
        """,
    )
    tasks = report["tasks"]
    assert tasks["small"]["status"] == "ok"
    assert tasks["big"]["status"] == "error" and tasks["gpu"]["status"] == "error"
    assert tasks["big"]["error"] == (
        "PermanentError: task 'big' cannot be scheduled: it asks for num_cpus=4 and no node "
        "of the Ray cluster has more than 1"
    )
    assert "num_gpus=1" in tasks["gpu"]["error"]
    assert tasks["big"]["attempts"] == 1  # a PermanentError: never retried
    assert report["took"] < 15  # failed up front, not at the deadline


def test_losers_are_gone_when_fan_out_returns_quietly_and_ray_stays_shut(
    cluster: Cluster, tmp_path: Path
) -> None:
    report, stderr = driver(
        f"""
        ray.init(address={cluster.address!r}, include_dashboard=False, log_to_driver=False)
        cancels = []
        _cancel = ray.cancel

        def spy_cancel(*args, **kwargs):
            cancels.append(time.monotonic())
            return _cancel(*args, **kwargs)

        ray.cancel = spy_cancel

        def work(name, delay):
            with open(os.path.join({str(tmp_path)!r}, name), "w") as f:
                f.write(str(os.getpid()))
            # The winner waits for the loser to be running (workers start slowly).
            end = time.monotonic() + 60
            while name == "fast" and time.monotonic() < end:
                if os.path.exists(os.path.join({str(tmp_path)!r}, "slow")):
                    break
                time.sleep(0.02)
            time.sleep(delay)
            return name

        async def main():
            tasks = [ff.Task("fast", work, args=("fast", 0.5)),
                     ff.Task("slow", work, args=("slow", 60))]
            result = await ff.fan_out(
                tasks, strategy=ff.FirstN(1), executor=ff.executors.Ray(num_cpus=1),
                deadline=60,
            )
            pid = int(open(os.path.join({str(tmp_path)!r}, "slow")).read())
            # Whether the loser's worker process still runs as fan_out returns,
            # and (a figure for the record) how long after that it is gone.
            returned = time.monotonic()
            at_return = None
            while time.monotonic() - returned < 5:
                try:
                    state = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
                except FileNotFoundError:
                    state = "gone"
                at_return = state not in ("gone", "Z") if at_return is None else at_return
                if state in ("gone", "Z"):
                    break
                time.sleep(0.005)
            return summary(result), pid, at_return, time.monotonic() - returned, returned

        tasks, pid, at_return, gone_after, returned = asyncio.run(main())
        ray.shutdown()
        time.sleep(1.5)  # the old re-cancels came 0.2 s and 1.0 s later
        report({{"tasks": tasks, "pid": pid, "gone_after": gone_after, "at_return": at_return,
                "late_cancels": sum(t > returned for t in cancels),
                "ray_back": ray.is_initialized()}})
        """,
    )
    print(f"loser's worker gone {report['gone_after']:.3f} s after fan_out returned")
    noise = [n for n in ("InvalidStateError", "Exception in thread", "Traceback") if n in stderr]
    seen = {
        "slow": report["tasks"]["slow"]["status"],
        "loser running when fan_out returned": report["at_return"],
        "ray.cancel calls after fan_out returned": report["late_cancels"],
        "Ray started again after ray.shutdown()": report["ray_back"],
        "noise on stderr": noise,
    }
    assert seen == {
        "slow": "cancelled",
        "loser running when fan_out returned": False,
        "ray.cancel calls after fan_out returned": 0,
        "Ray started again after ray.shutdown()": False,
        "noise on stderr": [],
    }
    assert not running(report["pid"])


def test_a_dead_node_is_a_transient_error_that_retry_retries(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Last in the module: it kills the worker node's raylet (by PID).
    body = f"""
        ray.init(address={cluster.address!r}, include_dashboard=False, log_to_driver=False)

        def work(i):
            ip = ray.util.get_node_ip_address()
            open(os.path.join({str(tmp_path)!r}, f"{{ip}}-{{i}}-{{os.getpid()}}"), "w").close()
            time.sleep(3)
            return i

        events = []
        result = ff.run(
            [ff.Task(f"t{{i}}", work, args=(i,)) for i in range(2)],
            executor=ff.executors.Ray(num_cpus=1), retry=ff.Retry(attempts=3, backoff=0.1),
            deadline=120, raise_on_failure=False,
            on_event=lambda e: events.append(type(e).__name__),
        )
        report({{"tasks": summary(result), "retries": events.count("TaskRetrying")}})
    """
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(out=driver(body, timeout=180)))
    thread.start()
    raylet = cluster.worker.pid_of("raylet") if cluster.worker else None
    assert raylet is not None
    end = time.monotonic() + 90
    while time.monotonic() < end and not any(
        p.name.startswith(WORKER_IP + "-") for p in tmp_path.iterdir()
    ):
        time.sleep(0.05)
    import os
    import signal

    os.kill(raylet, signal.SIGKILL)
    thread.join(200)
    report, _ = box["out"]
    tasks = report["tasks"]
    assert {n: r["status"] for n, r in tasks.items()} == {"t0": "ok", "t1": "ok"}
    assert sorted(r["attempts"] for r in tasks.values()) == [1, 2]
    assert report["retries"] == 1
