"""W2-W5 and W7 as shell jobs, for command runners (GNU parallel, fanflow map, xargs).

A runner is an argv prefix that reads one argument per line on standard
input and takes ``-j N``, ``--timeout S``, ``--joblog FILE`` and a command
template with ``{}`` (the argument) and ``{#}`` (the job number), as GNU
parallel and ``fanflow map`` both do. Every run sets a fresh
``FANFLOW_BENCH_TAG`` in the jobs' environment so that processes left
behind can be counted after the runner exits.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence

from _common import (
    W2_DELAY,
    W2_LIMIT,
    W2_N,
    W3_FIRST,
    W3_LATENCIES,
    W3_SLOWEST,
    W4_DELAY,
    W4_N,
    W5_N,
    W5_TIMEOUT,
    W7_BODY,
    W7_JOBS,
    W7_N,
    Cell,
    tagged_processes,
    timed_sync,
    w3_cell,
    w4_cell,
    w4_fails,
    w5_cell,
    w5_latency,
)


def run_lines(argv: Sequence[str], lines: Sequence[str], tag: str = "") -> int:
    """Run ``argv`` with ``lines`` on standard input and ``tag`` in its environment."""
    env = dict(os.environ, FANFLOW_BENCH_TAG=tag or uuid.uuid4().hex)
    proc = subprocess.run(
        list(argv),
        input="".join(f"{line}\n" for line in lines),
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return proc.returncode


def _joblog_status(path: str) -> tuple[int, int]:
    """``(ok, failed)`` from a GNU-parallel-style job log (Exitval and Signal columns)."""
    ok = failed = 0
    with open(path) as f:
        next(f)  # the header
        for line in f:
            cols = line.split("\t")
            if int(cols[6]) == 0 and int(cols[7]) == 0:
                ok += 1
            else:
                failed += 1
    return ok, failed


def w2(peer: str, runner: Sequence[str], runs: int) -> Cell:
    argv = [*runner, "-j", str(W2_LIMIT), f"sleep {W2_DELAY}; : {{}}"]
    wall, _ = timed_sync(lambda: run_lines(argv, [str(i) for i in range(W2_N)]), runs)
    return Cell("W2", peer, f"{W2_N:,} `sleep {W2_DELAY}` commands, -j {W2_LIMIT}", wall)


def w3(peer: str, runner: Sequence[str], first: Sequence[str], runs: int) -> Cell:
    """``first``: the runner's options for "stop after 10 jobs succeed"."""

    def once() -> tuple[float, int, int]:
        with tempfile.TemporaryDirectory() as tmp:
            argv = [*runner, "-j", "100", *first, f"sleep {{}} && touch {shlex.quote(tmp)}/{{#}}"]
            tag = uuid.uuid4().hex
            t0 = time.perf_counter()
            run_lines(argv, [f"{x:.4f}" for x in W3_LATENCIES], tag)
            wall, left = time.perf_counter() - t0, tagged_processes(tag)
            time.sleep(max(0.0, t0 + W3_SLOWEST + 0.1 - time.perf_counter()))
            return wall, len(os.listdir(tmp)) - W3_FIRST, left

    return w3_cell(
        peer, f"100 `sleep` commands, {' '.join(first)}", [once() for _ in range(runs)], True
    )


def w4(peer: str, runner: Sequence[str], runs: int) -> Cell:
    def once() -> tuple[int, int]:
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "joblog")
            argv = [*runner, "-j", "100", "--joblog", log, f"sleep {W4_DELAY}; test {{}} = ok"]
            run_lines(argv, ["fail" if w4_fails(i) else "ok" for i in range(W4_N)])
            return _joblog_status(log)

    wall, outs = timed_sync(once, runs)
    return w4_cell(peer, "100 commands, every 7th exits 1; --joblog", wall, outs, True)


def w5(peer: str, runner: Sequence[str], runs: int) -> Cell:
    def once() -> tuple[float, int, int, int, int]:
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "joblog")
            argv = [*runner, "-j", "100", "--timeout", str(W5_TIMEOUT), "--joblog", log, "sleep {}"]
            tag = uuid.uuid4().hex
            t0 = time.perf_counter()
            run_lines(argv, [str(w5_latency(i)) for i in range(W5_N)], tag)
            wall, left = time.perf_counter() - t0, tagged_processes(tag)
            time.sleep(0.5)
            ok, failed = _joblog_status(log)
            return wall, ok, failed, left, tagged_processes(tag)

    outs = [once() for _ in range(runs)]
    return w5_cell(peer, f"100 `sleep` commands, --timeout {W5_TIMEOUT}", outs, True)


def w7(peer: str, how: str, runner: Sequence[str], runs: int, *, baseline: bool = False) -> Cell:
    argv = [*runner, "-j", str(W7_JOBS), f"{W7_BODY}; : {{}}"]
    wall, _ = timed_sync(lambda: run_lines(argv, [str(i) for i in range(W7_N)]), runs)
    return Cell("W7", peer, how, wall, {"baseline": True} if baseline else {})
