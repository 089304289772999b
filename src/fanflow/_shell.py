"""Shell commands as tasks: run in their own process group, killed whole on cancel."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import weakref
from typing import Any

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


# One fork at a time per event loop. Forking happens inside the loop thread,
# and a burst of 100 forks started in one loop turn keeps the loop from
# noticing that early jobs have exited (and from stopping on the n-th
# success) until the whole burst is done. Behind a lock each waiter resumes
# a loop turn later, after the loop has polled, so exits are seen between
# forks.
_spawn_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _spawn_gate() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    gate = _spawn_gates.get(loop)
    if gate is None:
        gate = _spawn_gates[loop] = asyncio.Lock()
    return gate


def _kill_group(pid: int) -> None:
    # start_new_session made the shell a process-group leader: the group's id
    # is its pid, and its children (and theirs) are in the group too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# Linux >= 5.3 gives a process a file descriptor that becomes readable when
# it exits: the event loop can watch the exit and both pipes directly, with
# no child-watcher thread and no transports (about 0.6 ms a job instead of
# 0.8 on `true`, against 0.5 for xargs). Elsewhere asyncio's subprocesses are used.
def _pidfd_works() -> bool:
    # Python may offer os.pidfd_open on a kernel that lacks the call (ENOSYS).
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


_HAVE_PIDFD = _pidfd_works()

# Output captured, no input, and a session (so a process group) of its own.
_PIPES_AND_SESSION: dict[str, Any] = {
    "stdin": subprocess.DEVNULL,
    "stdout": subprocess.PIPE,
    "stderr": subprocess.PIPE,
    "start_new_session": True,
}


class _Child:
    """A command forked with Popen, watched by the event loop through a pidfd and its pipes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        self.loop = loop
        self.proc = proc
        self.pidfd = os.pidfd_open(proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        self.pipes = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.open = 2
        for fd in self.pipes:
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._read, fd)
        loop.add_reader(self.pidfd, self._exit)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.pipes[fd] += data
            return
        self.loop.remove_reader(fd)
        self.open -= 1
        self._maybe_done()

    def _exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        self.proc.poll()  # reaps it: the pidfd said it has exited
        if not self.exited.done():
            self.exited.set_result(None)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.open == 0 and self.exited.done() and not self.done.done():
            self.done.set_result(None)

    def output(self) -> tuple[bytes, bytes]:
        out, err = self.pipes.values()
        return bytes(out), bytes(err)

    def close(self) -> None:
        for fd in (*self.pipes, self.pidfd):
            self.loop.remove_reader(fd)
        os.close(self.pidfd)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


async def _run_pidfd(
    command: str, cwd: str | None, env: dict[str, str] | None, timeout: float | None
) -> tuple[int, bytes, bytes]:
    loop = asyncio.get_running_loop()
    gate = _spawn_gate()
    await gate.acquire()
    try:
        # A fork in the loop thread, as asyncio's own subprocesses do.
        proc = subprocess.Popen(  # noqa: ASYNC220
            ["/bin/sh", "-c", command], cwd=cwd, env=env, **_PIPES_AND_SESSION
        )
    finally:
        # Held until the next loop turn: the next fork waits for a poll.
        loop.call_soon(gate.release)
    try:
        child = _Child(loop, proc)
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    try:
        try:
            async with asyncio.timeout(timeout):
                await child.done
        except BaseException:
            _kill_group(proc.pid)
            # Reap it even if cancelled again meanwhile: a zombie is an orphan
            # too. (Not its pipes: a child that left the group may hold them.)
            with contextlib.suppress(BaseException):
                await asyncio.shield(child.exited)
            raise
        _kill_group(proc.pid)  # background children the command left running
        stdout, stderr = child.output()
    finally:
        child.close()
    return (proc.returncode if proc.returncode is not None else -1), stdout, stderr


async def _run_asyncio(
    command: str, cwd: str | None, env: dict[str, str] | None, timeout: float | None
) -> tuple[int, bytes, bytes]:
    async with _spawn_gate():
        proc = await asyncio.create_subprocess_shell(
            command, cwd=cwd, env=env, **_PIPES_AND_SESSION
        )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await proc.communicate()
    except BaseException:
        _kill_group(proc.pid)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    _kill_group(proc.pid)
    return (proc.returncode if proc.returncode is not None else -1), stdout, stderr


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
        OSError: the shell could not be started (e.g. ``cwd`` does not exist).
    """
    run = _run_pidfd if _HAVE_PIDFD else _run_asyncio
    try:
        code, stdout, stderr = await run(command, cwd, env, timeout)
    except TimeoutError:
        if timeout is None:
            raise
        raise TimeoutError(f"timed out after {timeout:g} s: {command}") from None
    output = ShellOutput(command, code, stdout, stderr)
    if code != 0:
        raise ShellError(output)
    return output
