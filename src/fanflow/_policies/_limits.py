"""Backpressure: a shareable rate limiter and an adaptive concurrency limit."""

from __future__ import annotations

import math
import threading

from .._core._validate import check_number

__all__ = ["AdaptiveConcurrency", "RateLimit"]


def _rate(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    return float(check_number(value, f"RateLimit({what}=...)", above=0))


class _Gcra:
    """One limit as a generic cell rate algorithm (a token bucket without a timer).

    ``tat`` is the theoretical arrival time: when the bucket will be full
    again. A request of ``cost`` units may start at ``tat - tolerance``,
    where ``tolerance`` is the burst in seconds of rate; starting it moves
    ``tat`` on by ``cost / rate``. A request larger than the burst is let
    through when the bucket is full and leaves it in debt. (aiometer uses
    the same algorithm for ``max_per_second``.)
    """

    __slots__ = ("burst", "rate", "tat")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tat = -math.inf

    def earliest(self, now: float, cost: float) -> float:
        tolerance = self.burst / self.rate
        return max(now, self.tat - tolerance + min(cost, self.burst) / self.rate)

    def take(self, start: float, cost: float) -> None:
        self.tat = max(self.tat, start) + cost / self.rate


class RateLimit:
    """A token-bucket rate limit that any number of fan-outs may share.

    Pass one object as ``rate_limit=`` to every fan-out that calls the same
    API with the same key: together they start no more attempts (and spend
    no more estimated tokens) than it allows.

    Args:
        per_second: attempts started per second.
        per_minute: attempts started per minute.
        tokens_per_minute: estimated tokens per minute. Each task declares
            its estimate as ``Task(tokens=...)`` (LLM prompt tasks estimate
            it themselves); tasks that declare none spend none.
        burst: how many attempts may start at once after a quiet spell.
            Default: one second's worth of the request rate (at least 1).
            ``per_second=20`` thus allows 20 at once, then 20 a second;
            ``per_minute=50`` allows one at once, then one every 1.2 s.
            The token limit's burst is one second's worth of its rate (a
            larger request waits for a full bucket and leaves a debt).
        max_pause: the longest pause, in seconds, that one ``RateLimited``
            error may impose on the limit (default 60).

    Slots are handed out first come, first served: an attempt reserves the
    earliest start the limits allow and waits on a timer, holding its place
    in the concurrency limit. A :class:`RateLimited` error with a
    ``retry_after`` pauses every fan-out sharing this limit for that long —
    but never longer than ``max_pause``, nor than the ``max_backoff`` of the
    failed task's :class:`Retry`: one bad ``Retry-After`` header (``inf``,
    a date in 2100) must not stop every later fan-out on the limit. A
    ``retry_after`` that is not a finite number >= 0 causes no pause.

    Raises:
        ValueError, TypeError: no limit given, or an invalid one.
    """

    def __init__(
        self,
        per_second: float | None = None,
        per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        burst: float | None = None,
        max_pause: float = 60.0,
    ) -> None:
        ps = _rate(per_second, "per_second")
        pm = _rate(per_minute, "per_minute")
        tpm = _rate(tokens_per_minute, "tokens_per_minute")
        if ps is None and pm is None and tpm is None:
            raise ValueError(
                "RateLimit needs per_second, per_minute or tokens_per_minute; got none"
            )
        if burst is not None:
            burst = _rate(burst, "burst")
        self.per_second = ps
        self.per_minute = pm
        self.tokens_per_minute = tpm
        self._requests: list[_Gcra] = []
        for rate in (ps, pm / 60.0 if pm else None):
            if rate is not None:
                self._requests.append(_Gcra(rate, burst if burst is not None else max(1.0, rate)))
        self._tokens = _Gcra(tpm / 60.0, max(1.0, tpm / 60.0)) if tpm else None
        self.max_pause = float(
            check_number(max_pause, "RateLimit(max_pause=...)", above=0, what="a number of seconds")
        )
        self._paused_until = -math.inf
        self._lock = threading.Lock()
        self.started = 0
        self.tokens_spent = 0.0

    def __repr__(self) -> str:
        parts = [
            f"{name}={value:g}"
            for name, value in (
                ("per_second", self.per_second),
                ("per_minute", self.per_minute),
                ("tokens_per_minute", self.tokens_per_minute),
            )
            if value is not None
        ]
        return f"RateLimit({', '.join(parts)})"

    def reserve(self, now: float, tokens: float = 0.0) -> float:
        """Reserve the earliest start at or after ``now`` (loop time); return it.

        The caller must start its attempt no earlier than the returned time.
        """
        with self._lock:
            start = max(now, self._paused_until)
            for limit in self._requests:
                start = max(start, limit.earliest(now, 1.0))
            if self._tokens is not None and tokens > 0:
                start = max(start, self._tokens.earliest(now, tokens))
            for limit in self._requests:
                limit.take(start, 1.0)
            if self._tokens is not None and tokens > 0:
                self._tokens.take(start, tokens)
            self.started += 1
            self.tokens_spent += tokens
            return start

    def pause(self, now: float, seconds: float) -> None:
        """Start nothing new before ``now + seconds`` (e.g. a 429's Retry-After).

        ``seconds`` is capped at :attr:`max_pause`; a value that is not a
        finite number >= 0 is ignored (no pause).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return
        if not math.isfinite(seconds) or seconds <= 0:
            return
        with self._lock:
            until = now + min(float(seconds), self.max_pause)
            self._paused_until = max(self._paused_until, until)


class AdaptiveConcurrency:
    """A concurrency limit that finds what the service can take (AIMD).

    Pass it as ``max_concurrency=``. Like TCP congestion control, the limit
    grows additively while attempts succeed (by about one per limit's worth
    of successes) and halves on a :class:`RateLimited` error or a timeout —
    at most once per round of attempts, so one burst of 429s counts once.

    Args:
        initial: the starting limit.
        min: the limit never goes below this.
        max: the limit never goes above this.
        decrease: the factor applied on overload (0 < decrease < 1).

    One object may be passed to several fan-outs, which then share what it
    learns; each fan-out applies the current limit to its own attempts.

    Raises:
        ValueError, TypeError: invalid bounds.
    """

    def __init__(
        self, initial: int = 8, min: int = 1, max: int = 256, *, decrease: float = 0.5
    ) -> None:
        for name, value in (("initial", initial), ("min", min), ("max", max)):
            check_number(value, f"AdaptiveConcurrency({name}=...)", minimum=1, integer=True)
        if not min <= initial <= max:
            raise ValueError(
                f"AdaptiveConcurrency needs min <= initial <= max; got {min}, {initial}, {max}"
            )
        check_number(decrease, "AdaptiveConcurrency(decrease=...)", above=0, below=1)
        self.min = min
        self.max = max
        self.decrease = decrease
        self._value = float(initial)
        self._last_cut = -math.inf
        self.history: list[int] = [initial]

    def __repr__(self) -> str:
        return f"AdaptiveConcurrency(limit={self.limit}, min={self.min}, max={self.max})"

    @property
    def limit(self) -> int:
        """The current limit."""
        return int(self._value)

    def on_success(self) -> None:
        """An attempt succeeded: grow by 1 / limit (one per round)."""
        before = self.limit
        self._value = min(float(self.max), self._value + 1.0 / self._value)
        if self.limit != before:
            self.history.append(self.limit)

    def on_overload(self, attempt_started: float, now: float) -> None:
        """An attempt that started at ``attempt_started`` hit a rate limit or timed out."""
        if attempt_started <= self._last_cut:
            return  # launched under the old limit: already accounted for
        self._last_cut = now
        before = self.limit
        self._value = max(float(self.min), self._value * self.decrease)
        if self.limit != before:
            self.history.append(self.limit)
