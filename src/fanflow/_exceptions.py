"""fanflow's exceptions.

The tree::

    FanOutError                 an operational failure of a fan-out
    ├── StrategyFailed          the strategy's success condition was not met
    └── HiddenDependencyError   the independence audit found a conflict

Misuse (bad arguments) is reported with the built-in ``ValueError`` and
``TypeError``, before any task starts, so ``except FanOutError`` never hides
a programming mistake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._result import FanInResult

__all__ = ["FanOutError", "StrategyFailed"]


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
