"""The process executor: a pool of worker processes that can be killed one by one.

``concurrent.futures.ProcessPoolExecutor`` cannot stop a running job, so a
timeout there leaves the work running. Here each worker is a process with a
pipe of its own: a job is sent to an idle worker, its reply is read when the
pipe becomes readable, and a job that is cancelled (its timeout, the
strategy finishing, the fan-out ending) has its worker killed with SIGKILL
and replaced. Functions and arguments travel with cloudpickle, so lambdas,
closures and functions defined in ``__main__`` work too.

Workers are separate interpreters started with ``subprocess`` rather than
``multiprocessing``: forkserver and spawn children re-import the user's main
script, and fork is unsafe once the parent has threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import sys
from collections import deque
from typing import Any

from .._core._exceptions import RemoteError, RemoteTraceback
from .._core._validate import check_number
from ._base import Call, Executor, ExecutorSession
from ._framing import PARENT_ENV, Decoder, encode

__all__ = ["Process", "RemoteError", "RemoteTraceback"]

#: Run as a script, so that a worker boots without importing fanflow.
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")


class Process(Executor):
    """Run attempts in worker processes.

    Args:
        workers: the most worker processes (default: the number of CPUs).
            The fan-out's concurrency is capped at this many, so an attempt's
            timeout never counts time spent waiting for a worker.

    Each worker is a fresh interpreter (``python .../executors/_worker.py``)
    in a session of its own: it never re-runs your main script, and killing
    it kills whatever the job started. It imports what your process can (the
    same ``sys.path``); functions from ``__main__``, lambdas and closures are
    sent by value (cloudpickle). Coroutine functions run in the worker with
    ``asyncio.run``. Workers start on first use and stop when the fan-out
    ends, and die with your process however it ends (``kill -9`` included),
    taking their jobs' children along. A task's timeout counts from when its
    attempt starts running in a worker, not while a new worker boots. An
    exception that cannot be pickled back comes back as a :class:`RemoteError`
    naming its type, with its message and traceback.

    Raises:
        TypeError: ``workers`` is not an int.
        ValueError: ``workers`` < 1.
    """

    def __init__(self, workers: int | None = None) -> None:
        check_number(workers, "Process(workers=...)", minimum=1, integer=True, allow_none=True)
        self.workers = workers or os.cpu_count() or 1

    def __repr__(self) -> str:
        return f"Process(workers={self.workers})"

    def open(self, loop: asyncio.AbstractEventLoop, limit: float) -> ProcessPool:
        """The worker processes of one fan-out (started on first use)."""
        return ProcessPool(self, loop)


class _Worker:
    """One worker process, its pipes (non-blocking) and the attempt it runs."""

    __slots__ = ("broken", "decoder", "fut", "name", "out", "proc", "started")

    def __init__(self) -> None:
        from .._shell._signals import track

        env = dict(os.environ)
        # The worker imports what the parent can: the same module search path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # It checks it still has this parent once its parent-death signal is set.
        env[PARENT_ENV] = str(os.getpid())
        self.proc = subprocess.Popen(
            [sys.executable, _WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a kill takes whatever the job started too
        )
        # Its group is stopped with fanflow's: by the SIGTERM/SIGHUP handler of
        # a library program, and by the watchdog after a kill -9.
        track(self.proc.pid)
        # Never block the event loop on a worker: a big job waits in ``out``
        # while the worker boots, and a reply is read as it arrives.
        os.set_blocking(self.fileno(), False)
        os.set_blocking(self.stdin_fd(), False)
        self.decoder = Decoder()
        self.fut: asyncio.Future[Any] | None = None
        self.started: asyncio.Future[None] | None = None
        self.name = ""
        self.out: memoryview | None = None
        self.broken = False  # its pipes closed or failed: never reused

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def stdin_fd(self) -> int:
        assert self.proc.stdin is not None
        return self.proc.stdin.fileno()

    def how_it_died(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=0.5)  # its pipe closed: it is exiting
        code = self.proc.returncode
        if code is None:
            return "its pipe closed"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def kill(self) -> None:
        from .._shell._signals import untrack

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=1)
        if self.proc.returncode is not None:
            untrack(self.proc.pid)  # else the watchdog still has it
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                if pipe is not None:
                    pipe.close()


class ProcessPool(ExecutorSession):
    """The worker processes of one fan-out."""

    def __init__(self, config: Process, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self._idle: deque[_Worker] = deque()
        self._busy: set[_Worker] = set()
        self._closed = False

    def submit(self, call: Call) -> asyncio.Future[Any]:
        """Run the call in a worker; cancelling the future kills it.

        The future's ``fanflow_started`` (a future) is done when the attempt
        starts running in the worker: a cold worker's boot is not the task's time.

        Raises:
            TypeError: the function or its arguments cannot be pickled (names the task).
            OSError: no worker process could be started.
        """
        import cloudpickle

        name = call.name
        try:
            message = cloudpickle.dumps((call.fn, call.args, dict(call.kwargs)))
        except Exception as exc:
            raise TypeError(
                f"task {name!r} cannot be sent to a worker process: {exc}. HINT: pass "
                "arguments that pickle (no open files, sockets, locks or live clients)"
            ) from None
        worker = self._idle.popleft() if self._idle else self._spawn()
        fut: asyncio.Future[Any] = self.loop.create_future()
        started: asyncio.Future[None] = self.loop.create_future()
        worker.fut, worker.started, worker.name = fut, started, name
        self._busy.add(worker)
        fut.add_done_callback(lambda f: self._on_done(worker, f))
        setattr(fut, "fanflow_started", started)  # noqa: B010 - the engine's hook
        worker.out = memoryview(encode(message))
        self._write(worker)
        return fut

    def _spawn(self) -> _Worker:
        worker = _Worker()
        self.loop.add_reader(worker.fileno(), self._on_readable, worker)
        return worker

    def _write(self, worker: _Worker) -> None:
        out = worker.out
        if out is None:
            return
        try:
            sent = os.write(worker.stdin_fd(), out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # the worker is gone (EPIPE)
            worker.out = None
            self._broken(worker, f"the worker process is gone: {exc}")
            return
        if sent < len(out):
            worker.out = out[sent:]
            self.loop.add_writer(worker.stdin_fd(), self._write, worker)
        else:
            worker.out = None
            self.loop.remove_writer(worker.stdin_fd())

    def _on_readable(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.fileno(), 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # The worker died: killed from outside, or it crashed the interpreter.
            self._broken(worker, f"the worker process died ({worker.how_it_died()})")
            return
        for message in worker.decoder.feed(data):
            self._on_message(worker, message)

    def _broken(self, worker: _Worker, why: str) -> None:
        worker.broken = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(worker.fileno())
        with contextlib.suppress(Exception):
            self.loop.remove_writer(worker.stdin_fd())
        fut = worker.fut
        if fut is not None and not fut.done():
            fut.set_exception(RuntimeError(f"task {worker.name!r}: {why}"))
        elif worker in self._idle:
            self._idle.remove(worker)
            worker.kill()

    def _on_message(self, worker: _Worker, message: bytes) -> None:
        if not message:  # the attempt started running (see _worker.py)
            if worker.started is not None and not worker.started.done():
                worker.started.set_result(None)
            return
        # The envelope holds only builtins and bytes: it loads whatever the job sent.
        try:
            reply = pickle.loads(message)
        except Exception as exc:  # never leave the attempt hanging
            self._broken(worker, f"the worker process sent a garbled reply: {exc}")
            return
        fut = worker.fut
        if fut is None or fut.done():
            return
        if reply[0] == "ok":
            _, payload, type_name, reason = reply
            self._settle_value(fut, worker.name, payload, type_name, reason)
        else:
            _, payload, type_name, text, trace = reply
            self._settle_error(fut, payload, type_name, text, trace)

    @staticmethod
    def _settle_value(
        fut: asyncio.Future[Any], name: str, payload: bytes | None, type_name: str, reason: str
    ) -> None:
        if payload is not None:
            try:
                fut.set_result(pickle.loads(payload))
                return
            except Exception as exc:
                reason = f"it cannot be rebuilt here: {type(exc).__name__}: {exc}"
        fut.set_exception(
            TypeError(
                f"the value returned by task {name!r} ({type_name}) cannot be sent back "
                f"from the worker process: {reason}. HINT: return plain data (numbers, "
                "strings, lists, dicts, dataclasses)"
            )
        )

    @staticmethod
    def _settle_error(
        fut: asyncio.Future[Any], payload: bytes | None, type_name: str, text: str, trace: str
    ) -> None:
        error: object = None
        if payload is not None:
            # An exception class whose __init__ wants other arguments than
            # its ``args`` (or that the parent cannot import) fails here.
            with contextlib.suppress(Exception):
                error = pickle.loads(payload)
        if not isinstance(error, BaseException):
            error = RemoteError(type_name, text, trace)
        if trace:
            error.__cause__ = RemoteTraceback(trace)
        try:
            fut.set_exception(error)
        except TypeError:  # StopIteration cannot be a future's exception
            fut.set_exception(RemoteError(type_name, text, trace))

    def _on_done(self, worker: _Worker, fut: asyncio.Future[Any]) -> None:
        self._busy.discard(worker)
        worker.fut = worker.started = None
        if fut.cancelled() or self._closed or worker.broken or worker.proc.poll() is not None:
            # A timeout, the strategy finishing or the fan-out ending: the job
            # may still be running, so its worker goes; and so does a worker
            # whose pipe broke.
            self._retire(worker)
        else:
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(worker.fileno())
        with contextlib.suppress(Exception):
            self.loop.remove_writer(worker.stdin_fd())
        worker.kill()

    def close(self) -> None:
        """Stop every worker: idle ones at once, busy ones are killed."""
        self._closed = True
        for worker in list(self._busy):
            if worker.fut is not None and not worker.fut.done():
                worker.fut.cancel()
        while self._idle:
            self._retire(self._idle.popleft())
