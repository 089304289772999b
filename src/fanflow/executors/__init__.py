"""Where attempts run: ``executor="async"`` (the default), ``"process"`` or ``Process(...)``.

* ``"async"``: coroutine functions on the event loop, plain callables in
  worker threads. Threads cannot be interrupted: a timed-out plain callable
  finishes in the background and its result is discarded.
* ``"process"`` / :class:`Process`: each attempt runs in a worker process
  (CPU-bound work, or code that must be stoppable). A timed-out or
  cancelled attempt's worker is killed and replaced.
"""

from __future__ import annotations

from ._process import Process as Process

__all__ = ["Process"]
