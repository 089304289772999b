"""Retry policy: exponential backoff with full jitter, honouring Retry-After.

The policy only *computes* delays; the engine schedules the next attempt on
a loop timer. That is why fanflow does not wrap tenacity, stamina or backoff:
they retry by sleeping inside a decorated call, while fanflow must keep the
waiting task out of the concurrency limit, cancel it at the deadline or when
the strategy stops, and report each retry as an event.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .._core._admission import server_wait
from .._core._exceptions import PermanentError
from .._core._validate import check_number

__all__ = ["Retry"]


def _positive(value: float, what: str) -> float:
    return float(check_number(value, what, minimum=0, allow_inf=True, what="a number of seconds"))


class Retry:
    """Retry failed attempts, with exponential backoff and full jitter.

    Args:
        attempts: the most attempts in all (the first included); 1 = never retry.
        backoff: base delay in seconds; the k-th retry waits up to
            ``backoff * 2 ** (k - 1)``, capped at ``max_backoff``.
        max_backoff: the largest backoff in seconds.
        jitter: full jitter ("Exponential Backoff And Jitter", AWS
            Architecture Blog, 2015): wait a uniform random time in
            ``[0, delay]``, so that retries of many tasks do not arrive in
            lockstep. ``False`` waits exactly ``delay``.
        on: the exception types worth retrying (a type or a tuple).
            :class:`PermanentError` is never retried, whatever ``on`` says.
        retry_timeouts: whether an attempt that timed out is retried.

    An error with a ``retry_after`` attribute (seconds, e.g.
    :class:`RateLimited` from an HTTP 429) waits at least that long, but
    never longer than ``max_backoff``: a server-given wait is a hint, and
    ``Retry-After: 99999`` (or a date in 2100) must not park a task for a
    day. A ``retry_after`` that is not a finite number >= 0 is ignored. Tasks
    with ``idempotent=False`` are never retried. Nothing is retried past the
    fan-out's deadline or after its strategy has finished.

    Raises:
        ValueError, TypeError: an invalid option.
    """

    def __init__(
        self,
        attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: bool = True,
        on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        retry_timeouts: bool = True,
    ) -> None:
        self.attempts: int = check_number(attempts, "Retry(attempts=...)", minimum=1, integer=True)
        self.backoff = _positive(backoff, "Retry(backoff=...)")
        self.max_backoff = _positive(max_backoff, "Retry(max_backoff=...)")
        self.jitter = bool(jitter)
        kinds = on if isinstance(on, tuple) else (on,)
        for kind in kinds:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise TypeError(f"Retry(on=...) must be exception types; got {kind!r}")
        self.on = kinds
        self.retry_timeouts = bool(retry_timeouts)
        self._random: Callable[[], float] = random.random

    def __repr__(self) -> str:
        return (
            f"Retry(attempts={self.attempts}, backoff={self.backoff:g}, "
            f"max_backoff={self.max_backoff:g}, jitter={self.jitter})"
        )

    def should_retry(self, error: BaseException | None, timed_out: bool, attempt: int) -> bool:
        """Whether attempt number ``attempt``, which failed this way, gets another try."""
        if attempt >= self.attempts:
            return False
        if timed_out:
            return self.retry_timeouts
        if error is None or isinstance(error, PermanentError):
            return False
        return isinstance(error, self.on)

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        The exponential cap is ``min(max_backoff, backoff * 2 ** (attempt - 1))``;
        with jitter the delay is uniform in ``[0, cap]``. A ``retry_after``
        on ``error`` raises the delay to at least that, up to ``max_backoff``
        (a non-finite or negative ``retry_after`` is ignored).
        """
        cap = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        wait = cap * self._random() if self.jitter else cap
        hint = server_wait(error)
        if hint is not None and hint > wait:
            wait = min(hint, self.max_backoff)
        return wait
