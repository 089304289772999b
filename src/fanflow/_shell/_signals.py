"""No orphans: the process groups of live shell jobs, stopped whatever ends fanflow.

Three ways a fan-out of shell jobs can end early, and what stops the jobs:

* Cancellation (a timeout, a strategy that is done, Ctrl-C turned into
  ``KeyboardInterrupt``, the CLI's signal handlers): ``run_shell`` itself
  sends SIGTERM to the job's group, waits :data:`GRACE` seconds, then SIGKILL.
* SIGTERM or SIGHUP to a library user's process that left them at their
  default (death): while a job is live, a handler is installed that stops
  every live group the same way, then lets the signal kill the process as it
  would have (same exit status). It is removed when no job is live.
* ``kill -9`` of the process (or a crash): nothing in the process can run.
  A watchdog process (``_watchdog.py``), started once, is told on a pipe
  which groups are live; when the pipe closes it stops those that remain.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from ._watchdog import stop_groups

__all__ = ["GRACE", "live_groups", "track", "untrack"]

#: Seconds a job's process group has between SIGTERM and SIGKILL.
GRACE = 0.5

_FATAL = (signal.SIGTERM, signal.SIGHUP)
_live: set[int] = set()
_lock = threading.Lock()
_watchdog_fd: int | None = None
_watchdog_failed = False
_installed: dict[int, bool] = {}


def live_groups() -> frozenset[int]:
    """The process groups of the shell jobs running now (for tests and diagnostics)."""
    return frozenset(_live)


def _start_watchdog() -> None:
    global _watchdog_fd, _watchdog_failed
    read, write = os.pipe()
    try:
        os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", str(Path(__file__).with_name("_watchdog.py"))],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
            # A session of its own: Ctrl-C and a closed terminal never reach it.
            setsid=True,
        )
    except OSError:
        os.close(write)
        _watchdog_failed = True  # no watchdog: jobs may outlive a kill -9
        return
    finally:
        os.close(read)
    # Never block the event loop on it: a full pipe loses a line, not a turn.
    os.set_blocking(write, False)
    _watchdog_fd = write


def _tell_watchdog(line: bytes) -> None:
    global _watchdog_fd
    if _watchdog_fd is None:
        return
    try:
        os.write(_watchdog_fd, line)
    except BlockingIOError:
        pass
    except OSError:  # it died: carry on without it
        os.close(_watchdog_fd)
        _watchdog_fd = None


def _after_fork_in_child() -> None:
    # A forked child (multiprocessing's fork) must not keep the watchdog's
    # pipe open, or the watchdog would not see its parent die; nor does it
    # own the parent's jobs.
    global _watchdog_fd, _watchdog_failed
    if _watchdog_fd is not None:
        os.close(_watchdog_fd)
    _watchdog_fd = None
    _watchdog_failed = False
    _live.clear()
    _installed.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _on_fatal_signal(signum: int, frame: FrameType | None) -> None:
    stop_groups(set(_live), GRACE, reap=True)
    _live.clear()
    # Then die of the signal, as the default disposition would have.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; the watchdog still covers
    for sig in _FATAL:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_fatal_signal)
            _installed[sig] = True


def _uninstall() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in list(_installed):
        if signal.getsignal(sig) is _on_fatal_signal:
            signal.signal(sig, signal.SIG_DFL)
        del _installed[sig]


def track(pgid: int) -> None:
    """Record a live job's process group (after it is forked)."""
    with _lock:
        if _watchdog_fd is None and not _watchdog_failed:
            _start_watchdog()
        if not _live:
            _install()
        _live.add(pgid)
    _tell_watchdog(b"+%d\n" % pgid)


def untrack(pgid: int) -> None:
    """Forget a job's process group (after it is stopped and reaped)."""
    _tell_watchdog(b"-%d\n" % pgid)
    with _lock:
        _live.discard(pgid)
        if not _live and _installed:
            _uninstall()
