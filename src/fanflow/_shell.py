"""Shell commands as tasks: run in their own process group, killed whole on cancel."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess

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


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # start_new_session made the shell a process-group leader: the group's id
    # is its pid, and its children (and theirs) are in the group too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_shell(
    command: str, *, cwd: str | None = None, env: dict[str, str] | None = None
) -> ShellOutput:
    """Run ``command`` with ``/bin/sh -c`` and capture its output.

    The command runs in a new session (its own process group). If the
    awaiting task is cancelled — a timeout, the strategy finishing, the
    caller giving up — the whole group is killed with SIGKILL and reaped
    before the cancellation goes on: no process is left behind. (A child
    that starts a session of its own leaves the group and is out of reach.)

    Raises:
        ShellError: the command exited non-zero; ``.output`` has what it printed.
    """
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
        stdout, stderr = await proc.communicate()
    except BaseException:
        _kill_group(proc)
        # Reap it even if cancelled again meanwhile: a zombie is an orphan too.
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    _kill_group(proc)  # background children the command left running
    code = proc.returncode if proc.returncode is not None else -1
    output = ShellOutput(command, code, stdout, stderr)
    if code != 0:
        raise ShellError(output)
    return output
