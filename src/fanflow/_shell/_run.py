"""Shell commands as tasks: run in their own process group, killed whole on cancel.

What a command prints is kept in memory up to :data:`SPILL_AT` bytes per
stream, then in an unlinked temporary file (as GNU parallel does), so a job
printing gigabytes costs disk, not RAM; :meth:`ShellOutput.write_stdout`
streams it out in chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from .._core._exceptions import ShellError, ShellTimeoutError
from . import _signals

__all__ = ["SPILL_AT", "ShellError", "ShellOutput", "ShellTimeoutError", "run_shell"]

#: Bytes of one stream kept in memory; past that, the stream goes to a temporary file.
SPILL_AT = 1 << 20

_CHUNK = 1 << 20


class _Capture:
    """One stream's bytes: in memory up to SPILL_AT, then in an unlinked temporary file."""

    __slots__ = ("_buf", "_file", "size")

    def __init__(self, data: bytes = b"") -> None:
        self._buf = bytearray()
        self._file: IO[bytes] | None = None
        self.size = 0
        if data:
            self.write(data)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._buf += data
        if len(self._buf) > SPILL_AT:
            # TemporaryFile has no name on disk: the space is freed when it
            # is closed, even if this process is killed. Owned (and closed) by
            # the ShellOutput, not by a with block.
            self._file = tempfile.TemporaryFile(prefix="fanflow-output-")  # noqa: SIM115
            self._file.write(self._buf)
            self._buf = bytearray()

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def chunks(self) -> Iterator[bytes]:
        if self._file is None:
            if self._buf:
                yield bytes(self._buf)
            return
        self._file.flush()
        self._file.seek(0)
        while chunk := self._file.read(_CHUNK):
            yield chunk
        self._file.seek(0, os.SEEK_END)

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buf = bytearray()
        self.size = 0


def _finish(*captures: _Capture) -> None:
    for capture in captures:
        if isinstance(capture, _Forward):
            capture.finish()


class _Forward(_Capture):
    """A stream passed on line by line as it arrives (``--line-buffer``), not kept.

    Complete lines go to ``sink`` at once; a last line without a newline
    goes when the stream ends. ``size`` still counts every byte.
    """

    __slots__ = ("_partial", "_sink")

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        super().__init__()
        self._sink = sink
        self._partial = b""

    def write(self, data: bytes) -> None:
        self.size += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        if cut:
            self._sink(data[:cut])
        self._partial = data[cut:]

    def finish(self) -> None:
        if self._partial:
            self._sink(self._partial)
            self._partial = b""


class ShellOutput:
    """What a finished command printed, and its exit code.

    Each stream is held in memory up to :data:`SPILL_AT` bytes, and past
    that in an unlinked temporary file: :meth:`write_stdout` and
    :meth:`write_stderr` stream it out in chunks, while the ``stdout`` and
    ``stderr`` properties read it whole into memory. :meth:`close` frees
    the temporary files (garbage collection does too).
    """

    __slots__ = ("_err", "_out", "command", "exit_code")

    def __init__(
        self,
        command: str,
        exit_code: int,
        stdout: bytes | _Capture = b"",
        stderr: bytes | _Capture = b"",
    ) -> None:
        self.command = command
        self.exit_code = exit_code
        self._out = stdout if isinstance(stdout, _Capture) else _Capture(stdout)
        self._err = stderr if isinstance(stderr, _Capture) else _Capture(stderr)

    def __repr__(self) -> str:
        return (
            f"ShellOutput({self.command!r}, exit_code={self.exit_code}, "
            f"stdout: {self._out.size} bytes, stderr: {self._err.size} bytes)"
        )

    @property
    def stdout(self) -> bytes:
        """Everything the command printed on stdout (read whole into memory)."""
        return self._out.read()

    @property
    def stderr(self) -> bytes:
        """Everything the command printed on stderr (read whole into memory)."""
        return self._err.read()

    @property
    def stdout_size(self) -> int:
        """Bytes printed on stdout."""
        return self._out.size

    @property
    def stderr_size(self) -> int:
        """Bytes printed on stderr."""
        return self._err.size

    @property
    def spilled(self) -> bool:
        """Whether a stream was too large for memory and went to a temporary file."""
        return self._out.spilled or self._err.spilled

    def write_stdout(self, dest: IO[bytes]) -> None:
        """Write what the command printed on stdout to ``dest``, in chunks (not flushed)."""
        for chunk in self._out.chunks():
            dest.write(chunk)

    def write_stderr(self, dest: IO[bytes]) -> None:
        """Write what the command printed on stderr to ``dest``, in chunks (not flushed)."""
        for chunk in self._err.chunks():
            dest.write(chunk)

    def close(self) -> None:
        """Free the output (its temporary files); the streams are empty afterwards."""
        self._out.close()
        self._err.close()


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


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    # start_new_session made the shell a process-group leader: the group's id
    # is its pid, and its children (and theirs) are in the group too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _group_alive(pid: int) -> bool:
    """Whether a process of group ``pid`` is still running (zombies are not)."""
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # kill() counts zombies too: a grandchild killed with its group waits to
    # be reaped by init, which may take its time (or never come, for an init
    # that does not reap). Look for a member that is not a zombie.
    try:
        entries = os.scandir("/proc")
    except OSError:  # no /proc: trust kill()
        return True
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pid and fields[0] != b"Z":
                return True
    return False


class _TimedOut(TimeoutError):
    """A command's own timeout: carries how the stopped command ended."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__()
        self.returncode = returncode


async def _stop_group(pid: int, exited: Any) -> None:
    """SIGTERM the job's group, give it :data:`GRACE` seconds, SIGKILL the rest, reap.

    Called while the job is being cancelled (a timeout, the fan-out ending,
    a signal): the job's processes get the chance to clean up that a
    terminal's Ctrl-C or GNU parallel's --termseq gives them. Cancelled
    again meanwhile (a second Ctrl-C), it goes straight to SIGKILL.
    ``exited`` is a future done when the leader is reaped, or an
    ``asyncio.subprocess.Process``.
    """
    loop = asyncio.get_running_loop()
    _kill_group(pid, signal.SIGTERM)
    deadline = loop.time() + _signals.GRACE
    if isinstance(exited, asyncio.Future):
        done = exited.done
    else:

        def done() -> bool:
            return exited.returncode is not None

    try:
        # No event says "the group is empty": poll, briefly.
        while loop.time() < deadline and (not done() or _group_alive(pid)):  # noqa: ASYNC110
            await asyncio.sleep(0.005 if not done() else 0.05)
    except BaseException:
        pass  # cancelled again: no more grace
    _kill_group(pid)
    # Reap it even if cancelled again meanwhile: a zombie is an orphan too.
    # (Not its pipes: a child that left the group may hold them.)
    with contextlib.suppress(BaseException):
        await asyncio.shield(exited if isinstance(exited, asyncio.Future) else exited.wait())


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


class _Fd:
    """A pipe end, with the two methods of a file object _Child uses."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Spawned:
    """A command started with ``os.posix_spawn`` in a session of its own.

    What ``subprocess.Popen`` would give, for the part of it _run_pidfd uses
    (``pid``, ``stdout``, ``stderr``, ``poll``, ``wait``, ``returncode``),
    without Popen's per-call Python work: about a third of fanflow map's
    cost per short job went to Popen's bookkeeping (its fd list, its error
    pipe, file objects for the pipes, opening /dev/null).
    """

    __slots__ = ("pid", "returncode", "stderr", "stdout")

    def __init__(self, argv: list[str], env: Mapping[str, str] | None) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.pid = os.posix_spawn(
                argv[0],
                argv,
                _environment() if env is None else env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, _devnull(), 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsid=True,
                # Python ignores SIGPIPE (and SIGXFSZ); a job must not inherit
                # that (`yes | head` would spin on EPIPE): Popen resets them too.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self.stdout = _Fd(out_r)
        self.stderr = _Fd(err_r)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _environment() -> Mapping[Any, Any]:
    # os.environ's own bytes dict, always current: posix_spawn reads a plain
    # dict in C, where os.environ costs a Python-level decode and encode per
    # variable per job (a third of a short job's spawn, measured).
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else os.environ


_DEVNULL: int | None = None


def _devnull() -> int:
    # One /dev/null for every job's stdin, opened once, never inherited.
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


def _start(argv: list[str], cwd: str | None, env: dict[str, str] | None) -> Any:
    if cwd is None and os.path.isabs(argv[0]):
        return _Spawned(argv, env)
    # posix_spawn has no working directory before Python 3.13: Popen then.
    return subprocess.Popen(argv, cwd=cwd, env=env, **_PIPES_AND_SESSION)


class _Child:
    """A command forked with Popen, watched by the event loop through a pidfd and its pipes."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        proc: Any,
        out: _Capture,
        err: _Capture,
    ) -> None:
        self.loop = loop
        self.proc = proc
        self.pidfd = os.pidfd_open(proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        self.pipes = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.open = 2
        # The fds still watched: close() removes only these (removing one
        # the loop no longer watches costs a KeyError and its message).
        self.watched = {*self.pipes, self.pidfd}
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
            self.pipes[fd].write(data)
            return
        self.loop.remove_reader(fd)
        self.watched.discard(fd)
        self.open -= 1
        self._maybe_done()

    def _exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        self.watched.discard(self.pidfd)
        self.proc.poll()  # reaps it: the pidfd said it has exited
        if not self.exited.done():
            self.exited.set_result(None)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.open == 0 and self.exited.done() and not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        for fd in self.watched:
            self.loop.remove_reader(fd)
        self.watched.clear()
        os.close(self.pidfd)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


async def _run_pidfd(
    argv: list[str],
    cwd: str | None,
    env: dict[str, str] | None,
    timeout: float | None,
    out: _Capture,
    err: _Capture,
) -> int:
    loop = asyncio.get_running_loop()
    gate = _spawn_gate()
    await gate.acquire()
    try:
        # A fork in the loop thread, as asyncio's own subprocesses do.
        proc = _start(argv, cwd, env)
    finally:
        # Held until the next loop turn: the next fork waits for a poll.
        loop.call_soon(gate.release)
    _signals.track(proc.pid)
    try:
        child = _Child(loop, proc, out, err)
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        _signals.untrack(proc.pid)
        raise
    try:
        try:
            async with asyncio.timeout(timeout):
                await child.done
        except TimeoutError:
            await _stop_group(proc.pid, child.exited)
            raise _TimedOut(proc.returncode) from None
        except BaseException:
            await _stop_group(proc.pid, child.exited)
            raise
        _kill_group(proc.pid)  # background children the command left running
    finally:
        child.close()
        _signals.untrack(proc.pid)
    return proc.returncode if proc.returncode is not None else -1


async def _pump(stream: asyncio.StreamReader | None, sink: _Capture) -> None:
    # Chunk by chunk into the capture (which spills to disk), never whole in memory.
    assert stream is not None
    while chunk := await stream.read(65536):
        sink.write(chunk)


async def _run_asyncio(
    argv: list[str],
    cwd: str | None,
    env: dict[str, str] | None,
    timeout: float | None,
    out: _Capture,
    err: _Capture,
) -> int:
    async with _spawn_gate():
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, **_PIPES_AND_SESSION)
        )
        try:
            proc = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # Cancelled while asyncio was still connecting the pipes: asyncio
            # would kill only the shell, and a child holding the pipes would
            # keep its wait() hanging. Let the spawn finish, stop the group.
            with contextlib.suppress(BaseException):
                proc = await spawn
                _signals.track(proc.pid)
                try:
                    await _stop_group(proc.pid, proc)
                finally:
                    _signals.untrack(proc.pid)
            raise
    _signals.track(proc.pid)
    try:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err), proc.wait())
        except TimeoutError:
            await _stop_group(proc.pid, proc)
            raise _TimedOut(proc.returncode) from None
        except BaseException:
            await _stop_group(proc.pid, proc)
            raise
        _kill_group(proc.pid)
    finally:
        _signals.untrack(proc.pid)
    return proc.returncode if proc.returncode is not None else -1


async def run_shell(
    command: str,
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    shell: str = "/bin/sh",
    on_output: tuple[Callable[[bytes], None], Callable[[bytes], None]] | None = None,
) -> ShellOutput:
    """Run ``command`` with ``/bin/sh -c`` (or ``shell -c``) and capture its output.

    The command runs in a new session (its own process group). If the
    awaiting task is cancelled — a timeout, the strategy finishing, the
    caller giving up — the whole group gets SIGTERM, then SIGKILL after
    :data:`fanflow._shell._signals.GRACE` seconds, and is reaped before the
    cancellation goes on: no process is left behind. (A child that starts a
    session of its own leaves the group and is out of reach.)

    ``timeout`` counts from the moment the process exists, not from the
    call: commands wait their turn to be forked (one at a time per event
    loop), and that wait is not the command's time.

    Output beyond :data:`SPILL_AT` bytes per stream is kept in a temporary
    file (see :class:`ShellOutput`). With ``on_output=(stdout_sink,
    stderr_sink)`` it is not kept: each stream is passed on line by line as
    it arrives (its sizes are still counted).

    Raises:
        ShellError: the command exited non-zero; ``.output`` has what it printed.
        ShellTimeoutError: ``timeout`` seconds passed; the group was killed;
            ``.output`` has what it printed until then. (A ``TimeoutError``.)
        OSError: the shell could not be started (e.g. ``cwd`` does not exist).
    """
    run = _run_pidfd if _HAVE_PIDFD else _run_asyncio
    out: _Capture
    err: _Capture
    if on_output is None:
        out, err = _Capture(), _Capture()
    else:
        out, err = _Forward(on_output[0]), _Forward(on_output[1])
    try:
        code = await run([shell, "-c", command], cwd, env, timeout, out, err)
    except TimeoutError as exc:
        _finish(out, err)
        if timeout is None:
            out.close()
            err.close()
            raise
        # How the stopped job ended: -15 when SIGTERM did it, -9 when it
        # ignored SIGTERM and SIGKILL came after the grace period.
        ended = exc.returncode if isinstance(exc, _TimedOut) else None
        partial = ShellOutput(command, ended if ended is not None else -signal.SIGTERM, out, err)
        raise ShellTimeoutError(f"timed out after {timeout:g} s: {command}", partial) from None
    except BaseException:
        _finish(out, err)
        out.close()
        err.close()
        raise
    _finish(out, err)
    output = ShellOutput(command, code, out, err)
    if code != 0:
        raise ShellError(output)
    return output
