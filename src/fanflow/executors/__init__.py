"""Where attempts run: the :class:`Executor` protocol and its four implementations.

* ``"async"`` / :class:`Async` (the default): coroutine functions on the
  event loop, plain callables in worker threads. Threads cannot be
  interrupted: a timed-out plain callable finishes in the background and
  its result is discarded.
* ``"thread"`` / :class:`Threads`: every attempt in a worker thread
  (coroutine functions run there with ``asyncio.run``).
* ``"process"`` / :class:`Process`: each attempt runs in a worker process
  (CPU-bound work, or code that must be stoppable). A timed-out or
  cancelled attempt's worker is killed and replaced.
* :class:`Ray`: each attempt a Ray remote task on a local or existing
  cluster (connected from a thread, with a timeout), stopped with
  ``ray.cancel`` when the engine cancels it and awaited until Ray says it
  is over; its timeout counts from when it starts running on a worker.

Write your own by subclassing :class:`Executor` and :class:`ExecutorSession`
(see ``fanflow.executors._base``); the engine knows executors only through
that protocol.
"""

from __future__ import annotations

from ._async import Async as Async
from ._async import Threads as Threads
from ._base import Call as Call
from ._base import Executor as Executor
from ._base import ExecutorSession as ExecutorSession
from ._process import Process as Process
from ._process import RemoteError as RemoteError
from ._process import RemoteTraceback as RemoteTraceback
from ._ray import Ray as Ray

__all__ = [
    "Async",
    "Call",
    "Executor",
    "ExecutorSession",
    "Process",
    "Ray",
    "RemoteError",
    "RemoteTraceback",
    "Threads",
]
