"""Token accounting per fan-out, including what cancelled attempts wasted.

A fan-out puts a :class:`_Ledger` in the context its attempts run in.
Providers (``fanflow.llm``) call :func:`begin_request` before they send a
request and :meth:`_Request.finish` when the answer arrives (providers
registered with ``register_provider`` have it done for them, from the
``usage`` of the completions they return), so the ledger
knows, for each attempt, what it spent — and, for an attempt cancelled while
its request was in flight, at least the prompt tokens it sent. When the
attempt is settled, the engine books its spending as used, or as wasted if
the attempt was cancelled, timed out, or lost a hedge.

A request that ended in an error instead of an answer (a 429, a 5xx, a
refused connection) was refused before the service did any work: services
do not bill those, so it books one request and no tokens. Requests of one
attempt are sequential (an attempt's key is its asyncio task or its
thread's attempt), so a request still unfinished when the same attempt
begins another has failed; the last one is judged when the attempt is
settled — unfinished in an attempt that ended by itself means it raised,
unfinished in one that was cancelled or timed out means it was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ModelUsage", "Usage", "begin_request", "collect_usage", "combine_usage"]


@dataclasses.dataclass
class ModelUsage:
    """Requests and tokens for one model.

    Attributes:
        requests: requests sent (answered, refused or cut off).
        input_tokens: prompt tokens: as the service reported them; estimated
            for requests cancelled in flight; none for requests the service
            refused (an error instead of an answer: 429, 5xx).
        output_tokens: completion tokens reported by the service.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, other: ModelUsage) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens


def _cost(by_model: Mapping[str, ModelUsage], prices: Mapping[str, tuple[float, float]]) -> float:
    total = 0.0
    for model, use in by_model.items():
        price = prices.get(model)
        if price is None:
            raise KeyError(f"no price for model {model!r}; prices has {sorted(prices)}")
        total += use.input_tokens * price[0] / 1e6 + use.output_tokens * price[1] / 1e6
    return total


@dataclasses.dataclass
class Usage:
    """What a fan-out's model calls spent (``FanInResult.usage``).

    Attributes:
        by_model: everything spent, per model — the wasted part included.
        wasted: the part spent on attempts whose answer was not used: those
            cancelled (the strategy finished, a hedge won, the deadline) or
            timed out. A request cancelled in flight counts its estimated
            prompt tokens; the output the service may have generated for it
            is unknown, so ``wasted`` is a lower bound.
    """

    by_model: dict[str, ModelUsage] = dataclasses.field(default_factory=dict)
    wasted: dict[str, ModelUsage] = dataclasses.field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        """Prompt tokens across models."""
        return sum(u.input_tokens for u in self.by_model.values())

    @property
    def output_tokens(self) -> int:
        """Completion tokens across models."""
        return sum(u.output_tokens for u in self.by_model.values())

    @property
    def requests(self) -> int:
        """Requests sent across models."""
        return sum(u.requests for u in self.by_model.values())

    @property
    def wasted_tokens(self) -> int:
        """Input plus output tokens that bought nothing."""
        return sum(u.input_tokens + u.output_tokens for u in self.wasted.values())

    def cost(self, prices: Mapping[str, tuple[float, float]]) -> float:
        """Total cost, from ``{model: (input price, output price)}`` per million tokens.

        Raises:
            KeyError: a model has no price.
        """
        return _cost(self.by_model, prices)

    def wasted_cost(self, prices: Mapping[str, tuple[float, float]]) -> float:
        """The cost of :attr:`wasted`, priced like :meth:`cost`."""
        return _cost(self.wasted, prices)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "by_model": {m: dataclasses.asdict(u) for m, u in self.by_model.items()},
            "wasted": {m: dataclasses.asdict(u) for m, u in self.wasted.items()},
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "wasted_tokens": self.wasted_tokens,
        }


class _Request:
    """One model request of one attempt."""

    __slots__ = (
        "_key",
        "_ledger",
        "count",
        "done",
        "failed",
        "input_tokens",
        "model",
        "output_tokens",
    )

    def __init__(self, model: str, input_tokens: int, count: int = 1) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = 0
        self.count = count
        self.done = False
        self.failed = False
        self._ledger: _Ledger | None = None
        self._key: object = None

    def fail(self) -> None:
        """The request ended in an error, not an answer: it costs a request, no tokens."""
        if not self.done:
            self.failed = True

    def spent(self, in_flight_wasted: bool) -> ModelUsage:
        """What this request costs once its attempt is over.

        Args:
            in_flight_wasted: whether an unfinished request was cut off in
                flight (its attempt was cancelled or timed out), and so
                costs its estimated prompt; otherwise it ended in an error.
        """
        if self.failed or (not self.done and not in_flight_wasted):
            return ModelUsage(self.count, 0, 0)
        return ModelUsage(self.count, self.input_tokens, self.output_tokens)

    def discard(self) -> None:
        """Take this request back before its attempt is settled: someone else booked it."""
        if self._ledger is not None:
            requests = self._ledger._open.get(self._key)
            if requests is not None and self in requests:
                requests.remove(self)
            self._ledger = None

    def finish(self, input_tokens: int | None, output_tokens: int | None) -> None:
        """Record what the service reported (``None`` keeps the estimate)."""
        if input_tokens is not None:
            self.input_tokens = input_tokens
        self.output_tokens = output_tokens or 0
        self.done = True
        # An answer is the last word: a request inferred failed because its
        # attempt began another (threads sharing one attempt) was only late.
        self.failed = False


class _Ledger:
    """Requests per attempt of one fan-out, then the totals."""

    __slots__ = ("_open", "parent", "parent_key", "usage", "used")

    def __init__(self, parent: _Ledger | None, parent_key: object) -> None:
        self._open: dict[object, list[_Request]] = {}
        self.usage = Usage()
        self.parent = parent
        self.parent_key = parent_key
        self.used = False  # whether any request was ever booked

    def begin(self, key: object, model: str, input_tokens: int) -> _Request:
        self.used = True
        request = _Request(model, input_tokens)
        request._ledger, request._key = self, key
        requests = self._open.setdefault(key, [])
        for earlier in requests:
            # The same attempt moved on to another request: this one ended
            # without an answer (the provider raised, the task went on).
            earlier.fail()
        requests.append(request)
        return request

    def settle(self, key: object, wasted: bool) -> None:
        """Book what attempt ``key`` spent, as used or as wasted."""
        requests = self._open.pop(key, None)
        if not requests:
            return
        for r in requests:
            spent = r.spent(in_flight_wasted=wasted)
            self.usage.by_model.setdefault(r.model, ModelUsage()).add(spent)
            if wasted:
                self.usage.wasted.setdefault(r.model, ModelUsage()).add(spent)

    def close(self) -> Usage | None:
        """Book what is left; pass the totals to an enclosing fan-out.

        What is left are requests made by tasks an attempt started itself
        (an attempt's own requests are booked when it settles): those that
        finished count as used, those still in flight as wasted. A fan-out
        run inside an attempt of another spends on that attempt's behalf:
        the outer fan-out books it with the attempt.
        """
        for requests in self._open.values():
            for r in requests:
                spent = r.spent(in_flight_wasted=True)
                self.usage.by_model.setdefault(r.model, ModelUsage()).add(spent)
                if not r.done and not r.failed:
                    self.usage.wasted.setdefault(r.model, ModelUsage()).add(spent)
        self._open.clear()
        if not self.usage.by_model:
            return None
        parent = self.parent
        if parent is not None and self.parent_key is not None:
            parent.used = True
            for model, use in self.usage.by_model.items():
                request = _Request(model, use.input_tokens, use.requests)
                request.finish(use.input_tokens, use.output_tokens)
                parent._open.setdefault(self.parent_key, []).append(request)
        return self.usage


_LEDGER: contextvars.ContextVar[_Ledger | None] = contextvars.ContextVar(
    "fanflow_ledger", default=None
)
# Set for attempts that run in threads, where there is no current asyncio task.
_ATTEMPT_KEY: contextvars.ContextVar[object] = contextvars.ContextVar(
    "fanflow_attempt", default=None
)


class _Probe:
    """Counts the requests begun while it is current (see :func:`probe`)."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0


_PROBE: contextvars.ContextVar[_Probe | None] = contextvars.ContextVar(
    "fanflow_usage_probe", default=None
)


def probe() -> tuple[_Probe, contextvars.Token[_Probe | None]]:
    """Start counting the requests a provider books itself (``_PROBE.reset(token)`` ends it).

    A wrapper that books a provider's reported usage uses it to learn
    whether the provider already booked the request, so nothing is counted
    twice. The count is shared with tasks the provider starts (they copy
    the context, and with it the same probe).
    """
    counter = _Probe()
    return counter, _PROBE.set(counter)


def begin_request(model: str, estimated_input_tokens: int) -> _Request | None:
    """Tell the enclosing fan-out (if any) that a model request is being sent.

    Returns a handle whose ``finish(input_tokens, output_tokens)`` records
    what the service reported; ``None`` outside a fan-out. Provider
    implementations call this; task code need not.
    """
    counter = _PROBE.get()
    if counter is not None:
        counter.requests += 1
    ledger = _LEDGER.get()
    if ledger is None:
        return None
    key = _ATTEMPT_KEY.get()
    if key is None:
        try:
            key = asyncio.current_task()
        except RuntimeError:
            key = None
    if key is None:
        return None
    return ledger.begin(key, model, estimated_input_tokens)


def _add_usage(total: Usage, part: Usage) -> None:
    for mine, theirs in ((total.by_model, part.by_model), (total.wasted, part.wasted)):
        for model, use in theirs.items():
            mine.setdefault(model, ModelUsage()).add(use)


def combine_usage(*parts: Usage | None) -> Usage | None:
    """The sum of several :class:`Usage` records (``None`` when all are ``None``)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    total = Usage()
    for part in present:
        _add_usage(total, part)
    return total


class _Collected:
    """What :func:`collect_usage` booked: ``usage`` is set when its block ends."""

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage: Usage | None = None


@contextlib.contextmanager
def collect_usage() -> Iterator[_Collected]:
    """Book the model requests made inside the block, outside any fan-out.

    For model calls a program makes itself — ``ff.synthesize`` after a
    fan-out — so its report counts them too. When the block ends,
    ``usage`` holds what they spent (``None`` if none were made): answered
    requests as used, refused ones as a request without tokens, and those
    cut off in flight (a timeout) as wasted, at their estimated prompt.
    Fan-outs inside the block book their own totals to it.
    """
    collected = _Collected()
    ledger = _Ledger(None, None)
    token = _LEDGER.set(ledger)
    try:
        yield collected
    finally:
        _LEDGER.reset(token)
        collected.usage = ledger.close()
