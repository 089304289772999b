"""The executor protocol: where a fan-out's attempts run.

The engine knows executors only through this module. An :class:`Executor`
is configuration (how many workers, which cluster); :meth:`Executor.open`
gives the :class:`ExecutorSession` of one fan-out, whose :meth:`submit`
starts one attempt and returns an ``asyncio.Future`` of its value:

* cancelling that future must stop the attempt (or, where it cannot be
  stopped, discard its result) and the future must end up done;
* the future may carry ``fanflow_started``, another future that is done
  when the attempt really starts running (after a worker boots, or a place
  in a cluster's queue): the attempt's timeout then counts from there;
* :meth:`ExecutorSession.close` is called once, after every future it gave
  is done.

Four executors ship: :class:`~fanflow.executors.Async` (the default:
coroutines on the event loop, plain callables in worker threads),
:class:`~fanflow.executors.Threads`, :class:`~fanflow.executors.Process`
and :class:`~fanflow.executors.Ray`. Write a fifth by subclassing
:class:`Executor` and :class:`ExecutorSession`.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Call", "Executor", "ExecutorSession"]


class Call:
    """One attempt to run: ``fn(*args, **kwargs)`` for the task ``name``.

    Attributes:
        name: the task's name (for error messages and per-task options).
        fn: the task's function (a coroutine function or a plain callable).
        args: positional arguments, with every ``ff.Ref`` already filled in.
        kwargs: keyword arguments, likewise.
        timed: whether the attempt has a timeout (an executor may skip the
            cost of reporting ``fanflow_started`` when it has none).
        is_async: whether ``fn`` is a coroutine function.
        context: for executors that run ``fn`` in this process off the
            event loop (threads): the ``contextvars.Context`` to run it in,
            so that what it does is booked to this attempt. ``None`` when
            ``fn`` is a coroutine function (its task copies the current one).
    """

    __slots__ = ("args", "context", "fn", "is_async", "kwargs", "name", "timed")

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    timed: bool
    is_async: bool
    context: contextvars.Context | None


class ExecutorSession(abc.ABC):
    """The running side of an :class:`Executor`, for one fan-out."""

    @abc.abstractmethod
    def submit(self, call: Call) -> asyncio.Future[Any]:
        """Start ``call``; return a future of its value (see the module docstring).

        Raise (e.g. ``TypeError`` for arguments that cannot be sent) to fail
        this attempt with that error; the fan-out goes on.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers: every future this session gave is done."""


class Executor(abc.ABC):
    """Where attempts run (see the module docstring)."""

    #: The most attempts this executor runs at once (``None``: no limit of
    #: its own). A fan-out's concurrency is capped at it, so that an attempt's
    #: timeout never counts time spent waiting for a worker.
    workers: int | None = None

    @abc.abstractmethod
    def open(self, loop: asyncio.AbstractEventLoop, limit: float) -> ExecutorSession:
        """A session for one fan-out on ``loop`` with at most ``limit`` attempts at once."""
