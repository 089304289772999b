"""Where attempts run: ``executor="async"`` (the default), ``"process"`` or ``Process(...)``.

* ``"async"``: coroutine functions on the event loop, plain callables in
  worker threads. Threads cannot be interrupted: a timed-out plain callable
  finishes in the background and its result is discarded.
* ``"process"`` / :class:`Process`: each attempt runs in a worker process
  (CPU-bound work, or code that must be stoppable). A timed-out or
  cancelled attempt's worker is killed and replaced.
* :class:`Ray`: each attempt a Ray remote task on a local or existing
  cluster (connected from a thread, with a timeout), stopped with
  ``ray.cancel`` when the engine cancels it and awaited until Ray says it
  is over; its timeout counts from when it starts running on a worker.
"""

from __future__ import annotations

from ._process import Process as Process
from ._process import RemoteError as RemoteError
from ._process import RemoteTraceback as RemoteTraceback
from ._ray import Ray as Ray

__all__ = ["Process", "Ray", "RemoteError", "RemoteTraceback"]
