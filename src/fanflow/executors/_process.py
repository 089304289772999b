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
from collections.abc import Callable, Mapping
from typing import Any

from ._framing import read_message, write_message

__all__ = ["Process", "RemoteError"]


class RemoteError(Exception):
    """The traceback of an exception raised in a worker process (its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class Process:
    """Run attempts in worker processes.

    Args:
        workers: the most worker processes (default: the number of CPUs).
            The fan-out's concurrency is capped at this many, so an attempt's
            timeout never counts time spent waiting for a worker.

    Each worker is a fresh interpreter (``python -m
    fanflow.executors._worker``) in a session of its own: it never re-runs
    your main script, and killing it kills whatever the job started. It
    imports what your process can (the same ``sys.path``); functions from
    ``__main__``, lambdas and closures are sent by value (cloudpickle).
    Coroutine functions run in the worker with ``asyncio.run``. Workers
    start on first use and stop when the fan-out ends.

    Raises:
        ValueError: ``workers`` < 1.
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise ValueError(f"Process(workers=...) must be an int >= 1; got {workers!r}")
        self.workers = workers or os.cpu_count() or 1

    def __repr__(self) -> str:
        return f"Process(workers={self.workers})"


class _Worker:
    """One worker process and its pipes."""

    __slots__ = ("fut", "proc")

    def __init__(self) -> None:
        env = dict(os.environ)
        # The worker imports what the parent can: the same module search path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanflow.executors._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a kill takes whatever the job started too
        )
        self.fut: asyncio.Future[Any] | None = None

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=1)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                if pipe is not None:
                    pipe.close()


class ProcessPool:
    """The worker processes of one fan-out."""

    def __init__(self, config: Process, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self._idle: deque[_Worker] = deque()
        self._busy: set[_Worker] = set()
        self._closed = False

    def submit(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> asyncio.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker; cancelling the future kills it.

        Raises:
            TypeError: the function or its arguments cannot be pickled (names the task).
        """
        import cloudpickle

        try:
            message = cloudpickle.dumps((fn, args, dict(kwargs)))
        except Exception as exc:
            raise TypeError(
                f"task {name!r} cannot be sent to a worker process: {exc}. HINT: pass "
                "arguments that pickle (no open files, sockets, locks or live clients)"
            ) from None
        worker = self._idle.popleft() if self._idle else _Worker()
        fut: asyncio.Future[Any] = self.loop.create_future()
        worker.fut = fut
        self._busy.add(worker)
        self.loop.add_reader(worker.fileno(), self._on_reply, worker)
        fut.add_done_callback(lambda f: self._on_done(worker, f))
        assert worker.proc.stdin is not None
        try:
            write_message(worker.proc.stdin, message)
        except (BrokenPipeError, OSError) as exc:
            fut.set_exception(RuntimeError(f"the worker process is gone: {exc}"))
        return fut

    def _on_reply(self, worker: _Worker) -> None:
        self.loop.remove_reader(worker.fileno())
        fut = worker.fut
        assert worker.proc.stdout is not None
        data = read_message(worker.proc.stdout)
        if data is None:
            # The worker died: killed from outside, or it crashed the interpreter.
            code = worker.proc.poll()
            error: BaseException = RuntimeError(f"the worker process died (exit code {code})")
            ok, value, text = False, error, ""
        else:
            ok, value, text = pickle.loads(data)
        if fut is None or fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            if text:
                value.__cause__ = RemoteError(text)
            fut.set_exception(value)

    def _on_done(self, worker: _Worker, fut: asyncio.Future[Any]) -> None:
        self._busy.discard(worker)
        worker.fut = None
        if fut.cancelled():
            # A timeout, the strategy finishing or the fan-out ending: the
            # job may still be running, so its worker goes.
            with contextlib.suppress(Exception):
                self.loop.remove_reader(worker.fileno())
            worker.kill()
        elif self._closed:
            worker.kill()
        elif worker.proc.poll() is None:
            self._idle.append(worker)
        else:
            worker.kill()

    def close(self) -> None:
        """Stop every worker: idle ones at once, busy ones are killed."""
        self._closed = True
        for worker in list(self._busy):
            if worker.fut is not None and not worker.fut.done():
                worker.fut.cancel()
        while self._idle:
            self._idle.popleft().kill()
