"""GNU parallel (Debian's ``parallel``), and ``xargs -P`` for the shell-job workload.

Python callables are out of their reach, so W2-W5 run as shell commands
whose ``sleep`` stands in for the task's latency: what a GNU parallel user
would write. Every job starts a shell, so these rows also pay for a process
per task, which the Python peers do not.
"""

from __future__ import annotations

import shutil
import subprocess

import _shellwork
from _common import W7_BODY, W7_JOBS, W7_N, Cell, timed_sync

PEER = "GNU parallel"
_PARALLEL = shutil.which("parallel")
_MISSING = "not installed: apt-get install parallel (make bench-peers does, as root)"
CANNOT: dict[str, str] = {
    "W1": "runs shell commands, not Python callables (its per-job cost is W7)",
    "W6": "no hedging: --timeout 200% kills a slow job and --retries restarts it; nothing races",
}
if _PARALLEL is None:
    CANNOT.update({w: _MISSING for w in ("W2", "W3", "W4", "W5")})
RUNNER = [_PARALLEL or "parallel", "--will-cite"]


def VERSION() -> str:
    if _PARALLEL is None:
        return "GNU parallel: not installed"
    out = subprocess.run([_PARALLEL, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0]


def w2(runs: int) -> list[Cell]:
    return [_shellwork.w2(PEER, RUNNER, runs)]


def w3(runs: int) -> list[Cell]:
    return [_shellwork.w3(PEER, RUNNER, ["--halt", "now,success=10"], runs)]


def w4(runs: int) -> list[Cell]:
    return [_shellwork.w4(PEER, RUNNER, runs)]


def w5(runs: int) -> list[Cell]:
    return [_shellwork.w5(PEER, RUNNER, runs)]


def w7(runs: int) -> list[Cell]:
    if _PARALLEL is None:
        cells = [Cell("W7", PEER, "-", cannot=_MISSING)]
    else:
        cells = [_shellwork.w7(PEER, "parallel -j 8", RUNNER, runs, baseline=True)]
    # xargs takes no template: it is given `sh -c` so that it starts a shell
    # per job like the others (but captures nothing: output goes straight out).
    argv = ["xargs", "-P", str(W7_JOBS), "-n", "1", "sh", "-c", f'{W7_BODY}; : "$1"', "_"]
    wall, _ = timed_sync(lambda: _shellwork.run_lines(argv, [str(i) for i in range(W7_N)]), runs)
    cells.append(Cell("W7", "xargs", "xargs -P 8 -n 1 sh -c", wall))
    return cells
