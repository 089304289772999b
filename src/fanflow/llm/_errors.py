"""One boundary where provider failures become fanflow's error kinds."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from .._exceptions import PermanentError, RateLimited, ServiceError, TransientError

__all__ = ["from_status", "retry_after_seconds"]

# Request timeout, conflict, too early: worth another try, like 5xx.
_TRANSIENT_4XX = {408, 409, 425}


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_status(
    status: int, message: str, headers: Mapping[str, str] | None, provider: str
) -> ServiceError:
    """The fanflow error for an HTTP status from ``provider``.

    429 is :class:`RateLimited` (with ``retry_after`` from the headers); 408,
    409, 425 and every 5xx are :class:`TransientError`; other 4xx are
    :class:`PermanentError`.
    """
    text = f"{provider}: HTTP {status}: {message}"
    if status == 429:
        return RateLimited(text, retry_after=retry_after_seconds(headers))
    if status in _TRANSIENT_4XX or status >= 500:
        return TransientError(text)
    return PermanentError(text)
