"""Shell commands as tasks: run in their own process group, killed whole on cancel."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import weakref

__all__ = ["ShellError", "ShellOutput", "run_shell"]


@dataclasses.dataclass(frozen=True)
class ShellOutput:
    """What a finished command printed, and its exit code."""

    command: str
    exit_code: int
    stdout: bytes
    stderr: bytes


class ShellError(Exception):
    """A command exited with a non-zero status (or was killed by a signal).

    Attributes:
        output: the :class:`ShellOutput`, with what the command printed.
    """

    def __init__(self, output: ShellOutput) -> None:
        code = output.exit_code
        why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        super().__init__(f"command {why}: {output.command}")
        self.output = output


# One fork at a time per event loop. asyncio forks inside the loop thread, and
# a burst of 100 spawns started in one loop turn keeps the loop from noticing
# that early jobs have exited (and from stopping on the n-th success) until
# the whole burst is done. Behind a lock each waiter resumes a loop turn
# later, after the loop has polled, so exits are seen between spawns.
_spawn_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _spawn_gate() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    gate = _spawn_gates.get(loop)
    if gate is None:
        gate = _spawn_gates[loop] = asyncio.Lock()
    return gate


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # start_new_session made the shell a process-group leader: the group's id
    # is its pid, and its children (and theirs) are in the group too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_shell(
    command: str,
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> ShellOutput:
    """Run ``command`` with ``/bin/sh -c`` and capture its output.

    The command runs in a new session (its own process group). If the
    awaiting task is cancelled — a timeout, the strategy finishing, the
    caller giving up — the whole group is killed with SIGKILL and reaped
    before the cancellation goes on: no process is left behind. (A child
    that starts a session of its own leaves the group and is out of reach.)

    ``timeout`` counts from the moment the process exists, not from the
    call: commands wait their turn to be forked (one at a time per event
    loop), and that wait is not the command's time.

    Raises:
        ShellError: the command exited non-zero; ``.output`` has what it printed.
        TimeoutError: ``timeout`` seconds passed; the group was killed.
    """
    async with _spawn_gate():
        proc = await asyncio.create_subprocess_shell(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await proc.communicate()
    except BaseException as exc:
        _kill_group(proc)
        # Reap it even if cancelled again meanwhile: a zombie is an orphan too.
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        if isinstance(exc, TimeoutError) and timeout is not None:
            raise TimeoutError(f"timed out after {timeout:g} s: {command}") from None
        raise
    _kill_group(proc)  # background children the command left running
    code = proc.returncode if proc.returncode is not None else -1
    output = ShellOutput(command, code, stdout, stderr)
    if code != 0:
        raise ShellError(output)
    return output
