"""fanflow's exceptions.

The trees::

    FanOutError                 an operational failure of a fan-out
    ├── StrategyFailed          the strategy's success condition was not met
    └── HiddenDependencyError   the independence audit found a conflict

    ServiceError                what a called service (an API, a model) said
    ├── TransientError          worth retrying: 5xx, connection reset, overload
    │   └── RateLimited         429 / quota: retry after ``retry_after`` seconds
    └── PermanentError          never retried: bad request, auth, not found

Task code raises the ``ServiceError`` kinds (the LLM providers map SDK errors
onto them) so that retries, backoff and adaptive concurrency know what
happened.

Misuse (bad arguments) is reported with the built-in ``ValueError`` and
``TypeError``, before any task starts, so ``except FanOutError`` never hides
a programming mistake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._result import FanInResult

__all__ = [
    "FanOutError",
    "PermanentError",
    "RateLimited",
    "ServiceError",
    "StrategyFailed",
    "TransientError",
]


class FanOutError(Exception):
    """Base class of the operational errors a fan-out raises."""


class StrategyFailed(FanOutError):
    """Raised when a fan-out's strategy could not be satisfied.

    Attributes:
        result: the full :class:`FanInResult`, with every task's
            :class:`TaskResult` (the successes included), so partial work is
            never lost. ``__cause__`` is the first task error, if any.
    """

    def __init__(self, message: str, result: FanInResult) -> None:
        super().__init__(message)
        self.result = result


class ServiceError(Exception):
    """Base class of errors a called service reports (see the tree above)."""


class TransientError(ServiceError):
    """A failure worth retrying (a 5xx, a dropped connection, an overload)."""


class RateLimited(TransientError):
    """The service refused for now (HTTP 429, a quota).

    Args:
        message: what the service said.
        retry_after: seconds the service asked to wait (e.g. from a
            ``Retry-After`` header), or ``None``. :class:`Retry` waits at
            least this long; a shared :class:`RateLimit` pauses every fan-out
            using it for that long.
    """

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.retry_after is not None:
            return f"{text} (retry after {self.retry_after:g} s)"
        return text


class PermanentError(ServiceError):
    """A failure that retrying cannot fix (bad request, auth); never retried."""
