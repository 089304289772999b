"""One boundary where provider failures become fanflow's error kinds.

HTTP statuses (:func:`from_status`): 429 is :class:`RateLimited`; 408, 409,
425 and every 5xx are :class:`TransientError`; other 4xx are
:class:`PermanentError`.

A ``200`` whose body is not an answer (:func:`bad_body`) is never ``ok``:

* :class:`TransientError` — the body is not JSON (empty, truncated or
  invalid JSON, an HTML page from a proxy or gateway, plain text): the
  signs of a connection cut short or an intermediary in trouble, which a
  new request may not meet; and a well-formed response without an answer
  in it (``choices`` empty or null, a null or non-text ``content``): a
  sampled answer may come next time.
* :class:`PermanentError` — JSON that is not the API's response at all (not
  an object, or an object without ``choices`` / ``content``, such as
  ``{}``): the URL names a server that does not speak the API, and asking
  again will not change that.

Every such message carries the status and a short snippet of the body, with
anything that looks like an API key taken out.

The wait a 429 asks for (:func:`retry_after_seconds`) comes from the first
usable header of ``retry-after-ms``, ``retry-after`` (seconds or an HTTP
date), ``llm_provider-retry-after-ms`` / ``llm_provider-retry-after``
(LiteLLM's proxy) and ``x-ratelimit-reset-requests`` /
``x-ratelimit-reset-tokens`` (OpenAI's durations: ``1s``, ``6m0s``,
``20ms``). A value that is not a finite number >= 0 is ignored; one above
the ceiling (:data:`RETRY_AFTER_CEILING` unless the provider says otherwise)
is cut to it, so a broken or hostile header never becomes a wait of days.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping

from .._core._exceptions import PermanentError, RateLimited, ServiceError, TransientError

__all__ = [
    "RETRY_AFTER_CEILING",
    "bad_body",
    "from_status",
    "redact_keys",
    "retry_after_seconds",
]

RETRY_AFTER_CEILING = 600.0
"""The longest wait, in seconds, a response header can ask for."""

# Request timeout, conflict, too early: worth another try, like 5xx.
_TRANSIENT_4XX = {408, 409, 425}
_SNIPPET = 160
# OpenAI ("sk-..."), Anthropic ("sk-ant-..."), bearer tokens echoed back by a proxy.
_KEY_LIKE = re.compile(r"(?i)\b(sk-[A-Za-z0-9_\-]{6,}|bearer\s+[A-Za-z0-9_.\-~+/=]{6,})")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def redact_keys(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with the given ``secrets`` and anything shaped like an API key replaced."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


def _snippet(body: bytes | str, secrets: tuple[str, ...]) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    if len(text) > _SNIPPET:
        text = text[:_SNIPPET] + "..."
    return repr(redact_keys(text, secrets))


def bad_body(
    provider: str,
    status: int,
    why: str,
    body: bytes | str,
    *,
    permanent: bool = False,
    secrets: tuple[str, ...] = (),
) -> ServiceError:
    """The error for a response body that is not an answer (see the module docstring).

    Args:
        provider: ``"openai"``, ``"anthropic"``...
        status: the HTTP status it came with.
        why: what is wrong with it, for the message.
        body: the body, of which a short snippet goes into the message.
        permanent: :class:`PermanentError` rather than :class:`TransientError`.
        secrets: strings (the API key) never to show.
    """
    text = f"{provider}: HTTP {status} but {why}; body: {_snippet(body, secrets)}"
    return PermanentError(text) if permanent else TransientError(text)


def _seconds(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _date(raw: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return max(0.0, when.timestamp() - time.time())
    except (OverflowError, ValueError, OSError):
        return None


def _duration(raw: str) -> float | None:
    """OpenAI's reset durations (``1s``, ``6m0s``, ``1h2m3.5s``, ``20ms``), or plain seconds."""
    text = raw.strip().lower()
    plain = _seconds(text)
    if plain is not None:
        return plain
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    total = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return total if math.isfinite(total) else None


def _milliseconds(raw: str) -> float | None:
    value = _seconds(raw)
    return None if value is None else value / 1000.0


def _seconds_or_date(raw: str) -> float | None:
    value = _seconds(raw)
    return _date(raw) if value is None else value


# In order of precedence: the first header that parses wins.
_HEADERS: tuple[tuple[str, Callable[[str], float | None]], ...] = (
    ("retry-after-ms", _milliseconds),
    ("retry-after", _seconds_or_date),
    ("llm_provider-retry-after-ms", _milliseconds),
    ("llm_provider-retry-after", _seconds_or_date),
)


def _reset(lowered: Mapping[str, str]) -> float | None:
    # A 429 does not say which limit it hit: the one whose remaining count is
    # 0 if the headers say so, else the earliest reset (a floor on the wait).
    resets = {}
    for kind in ("requests", "tokens"):
        raw = lowered.get(f"x-ratelimit-reset-{kind}")
        value = _duration(raw) if raw is not None else None
        if value is not None:
            resets[kind] = value
    exhausted = [v for k, v in resets.items() if lowered.get(f"x-ratelimit-remaining-{k}") == "0"]
    if exhausted:
        return max(exhausted)
    return min(resets.values()) if resets else None


def retry_after_seconds(
    headers: Mapping[str, str] | None, ceiling: float = RETRY_AFTER_CEILING
) -> float | None:
    """Seconds a response's headers ask to wait before the next request, or ``None``.

    Args:
        headers: the response headers (any case).
        ceiling: the longest wait returned; longer asks are cut to it.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    wait: float | None = None
    for name, parse in _HEADERS:
        raw = lowered.get(name)
        if raw is not None and (wait := parse(raw.strip())) is not None:
            break
    if wait is None:
        wait = _reset(lowered)
    if wait is None:
        return None
    return min(wait, ceiling)


def from_status(
    status: int,
    message: str,
    headers: Mapping[str, str] | None,
    provider: str,
    *,
    ceiling: float = RETRY_AFTER_CEILING,
    secrets: tuple[str, ...] = (),
) -> ServiceError:
    """The fanflow error for an HTTP status from ``provider``.

    429 is :class:`RateLimited` (with ``retry_after`` from the headers, at
    most ``ceiling``); 408, 409, 425 and every 5xx are
    :class:`TransientError`; other 4xx are :class:`PermanentError`.
    ``secrets`` (the API key) never appear in the message.
    """
    text = redact_keys(f"{provider}: HTTP {status}: {message}", secrets)
    if status == 429:
        return RateLimited(text, retry_after=retry_after_seconds(headers, ceiling))
    if status in _TRANSIENT_4XX or status >= 500:
        return TransientError(text)
    return PermanentError(text)
