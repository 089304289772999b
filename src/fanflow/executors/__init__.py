"""Where attempts run: ``executor="async"`` (the default), ``"process"`` or ``Process(...)``.

* ``"async"``: coroutine functions on the event loop, plain callables in
  worker threads. Threads cannot be interrupted: a timed-out plain callable
  finishes in the background and its result is discarded.
* ``"process"`` / :class:`Process`: each attempt runs in a worker process
  (CPU-bound work, or code that must be stoppable). A timed-out or
  cancelled attempt's worker is killed and replaced.
* :class:`Ray`: each attempt a Ray remote task on a local or existing
  cluster, stopped with ``ray.cancel`` when the engine cancels it.
"""

from __future__ import annotations

from ._process import Process as Process
from ._ray import Ray as Ray

__all__ = ["Process", "Ray"]
