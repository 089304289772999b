"""The shell jobs' watchdog: a tiny process that outlives fanflow by a moment.

fanflow starts it once per process, the first time it forks a shell job, and
tells it on a pipe which process groups are live: ``+PGID`` when a job is
forked, ``-PGID`` before it is reaped. When fanflow dies — even by
``kill -9``, when no code of its own can run — the kernel closes the pipe;
the watchdog reads EOF and stops every group still listed: SIGTERM, a grace
period, then SIGKILL. A job's grandchildren are in its group, so they go
too. (A process that starts a session of its own leaves the group and is
out of anyone's reach.)

This file runs as a script with ``python -I -S`` and imports only the
standard library, so it starts in a few milliseconds and never imports
fanflow (nor the user's code).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

GRACE = 2.0


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_groups(groups: set[int], grace: float = GRACE, *, reap: bool = False) -> None:
    """SIGTERM every group, wait up to ``grace`` seconds for them to go, then SIGKILL.

    With ``reap``, each group's leader is our child: reap it as it exits (a
    zombie still counts as a member of its group).
    """
    for pgid in groups:
        _signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = set(groups)
    while left and time.monotonic() < deadline:
        if reap:
            for pgid in left:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pgid, os.WNOHANG)
        left = {pgid for pgid in left if _alive(pgid)}
        if left:
            time.sleep(0.02)
    for pgid in groups:
        _signal(pgid, signal.SIGKILL)


def main() -> None:
    # Terminal signals never reach it (it has a session of its own); a stray
    # SIGTERM/SIGINT must not end it before it has done its one job.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    pending = b""
    fd = sys.stdin.fileno()
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if len(line) < 2:
                continue
            try:
                pgid = int(line[1:])
            except ValueError:
                continue
            if line[:1] == b"+":
                groups.add(pgid)
            else:
                groups.discard(pgid)
    if groups:
        stop_groups(groups)


if __name__ == "__main__":
    main()
