"""Small shared types: the task status enum."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.StrEnum):
    """How one task of a fan-out ended.

    A ``str`` enum, so ``result.status == "ok"`` works and it serialises as
    its plain value.
    """

    OK = "ok"
    """The task returned a value."""
    ERROR = "error"
    """The task raised (after its retries); ``TaskResult.error`` holds the exception."""
    TIMEOUT = "timeout"
    """The task was cut off by its per-attempt timeout or by the fan-out's deadline."""
    CANCELLED = "cancelled"
    """The task was running when the strategy finished early, and was stopped."""
    SKIPPED = "skipped"
    """The task never started, because the fan-out had already finished."""
