"""Running a command's coroutine so that SIGINT, SIGTERM and SIGHUP stop it cleanly.

The first signal cancels the command: every running shell job's process
group gets SIGTERM, then SIGKILL after a grace period; journals and job logs
are committed by the commands' own ``finally`` blocks; the command says what
was interrupted; the process exits 128 + the signal's number (130, 143,
129), as a shell reports a process killed by it. A second signal skips the
grace period. Plain functions running in threads cannot be stopped: the run
ends without them and says so.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

__all__ = ["run", "signal_name"]

T = TypeVar("T")

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    return signal.Signals(signum).name


async def _guarded(coro: Coroutine[Any, Any, T], received: list[int]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int) -> None:
        received.append(signum)
        # Again: the cleanup in progress skips its grace periods.
        task.cancel(msg=f"fanflow: {signal_name(signum)}")

    installed = []
    for signum in _SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # nohup: a closed terminal is meant not to stop us
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (ValueError, RuntimeError):  # not the main thread
            continue
        installed.append(signum)
    try:
        return await coro
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def run(coro: Coroutine[Any, Any, T], command: str) -> T:
    """Run ``coro`` to completion; on a signal, exit with 128 + its number.

    The coroutine sees the signal as a cancellation: it should clean up in
    ``finally`` blocks and may print what it interrupted in an
    ``except asyncio.CancelledError`` block before re-raising.

    Raises:
        SystemExit: 130, 143 or 129 when SIGINT, SIGTERM or SIGHUP stopped it.
    """
    received: list[int] = []
    try:
        with asyncio.Runner() as runner:
            value = runner.run(_guarded(coro, received))
        if not received:
            return value
    except (asyncio.CancelledError, KeyboardInterrupt):
        if not received:
            received.append(signal.SIGINT)
    signum = received[0]
    click.echo(f"fanflow {command}: stopped by {signal_name(signum)}", err=True)
    sys.stderr.flush()
    sys.exit(128 + signum)
