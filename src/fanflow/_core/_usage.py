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

Spend budgets (``budget=``, :class:`~fanflow.Budget`): the budget in force
is a context variable (set by a fan-out given one, or by ``synthesize`` /
``plan``; nested fan-outs inherit it). Each request is charged to it as it
ends — an answer its reported tokens, a refusal one request and no tokens,
a request cut off in flight its estimated prompt — and, once its attempt is
settled, corrected to what the ledger books (never counted twice: totals a
nested fan-out passes up to its parent's ledger are not charged again).
Before a request is sent it needs a reservation: the first request of an
attempt that reserved its estimate (``Task(tokens=...)``) takes that one;
any other request reserves its own (one request, its prompt's estimate
plus ``max_tokens`` when the provider knows it) or raises
:class:`~fanflow.BudgetExceeded` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._exceptions import BudgetExceeded

if TYPE_CHECKING:
    from .._policies._budget import Budget, Spend

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
        "billed",
        "budget",
        "count",
        "done",
        "failed",
        "hold",
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
        # With a budget: what the request holds (until it ends) and what it
        # has been charged so far (corrections are charged as differences).
        self.budget: Budget | None = None
        self.hold: Spend | None = None
        self.billed: Spend | None = None

    def fail(self) -> None:
        """The request ended in an error, not an answer: it costs a request, no tokens."""
        if not self.done:
            self.failed = True
            if self.budget is not None:
                self.bill(ModelUsage(self.count, 0, 0))

    def cut(self) -> None:
        """The request was cut off in flight (cancelled): charge its estimated prompt now.

        Only the budget hears of it here; the ledger judges the request when
        its attempt is settled (and the budget is corrected to that).
        """
        if not self.done and not self.failed and self.budget is not None:
            self.bill(ModelUsage(self.count, self.input_tokens, 0))

    def bill(self, spent: ModelUsage) -> None:
        """Charge ``spent`` to the budget (less what was charged before); free the hold."""
        budget = self.budget
        if budget is None:
            return
        try:
            now = budget.cost(self.model, spent.input_tokens, spent.output_tokens, spent.requests)
        except KeyError:  # refused before it was sent, so not reached: the dearest price
            now = budget.cost(None, spent.input_tokens, spent.output_tokens, spent.requests)
        hold, before, self.hold, self.billed = self.hold, self.billed, None, now
        budget.settle(hold, now, before)

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
        budget = self.budget
        if budget is not None:
            # Someone else (the provider's own booking) charges this request.
            hold, before, self.hold, self.billed = self.hold, self.billed, None, None
            budget.settle(hold, None, before)
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
        if self.budget is not None:
            self.bill(ModelUsage(self.count, self.input_tokens, self.output_tokens))


class _Ledger:
    """Requests per attempt of one fan-out, then the totals."""

    __slots__ = ("_open", "budget", "holds", "parent", "parent_key", "usage", "used")

    def __init__(self, parent: _Ledger | None, parent_key: object) -> None:
        self._open: dict[object, list[_Request]] = {}
        # The budget the fan-out reserves attempts from, and its attempts that
        # hold a reservation not yet taken by a request (by ledger key).
        self.budget: Budget | None = None
        self.holds: dict[object, Any] = {}
        self.usage = Usage()
        self.parent = parent
        self.parent_key = parent_key
        self.used = False  # whether any request was ever booked

    def book_lost(self, lost: list[tuple[str | None, int]]) -> None:
        """Book model calls an earlier run lost when it died (journal=), as wasted.

        Each is a request with its estimated prompt tokens: the answer, if
        one came, was never recorded, so its tokens are unknown (a lower
        bound, as for a call cut off in flight).
        """
        self.used = True
        for model, tokens in lost:
            spent = ModelUsage(1, tokens, 0)
            name = model or "unknown"
            self.usage.by_model.setdefault(name, ModelUsage()).add(spent)
            self.usage.wasted.setdefault(name, ModelUsage()).add(spent)

    def begin(
        self, key: object, model: str, input_tokens: int, request: _Request | None = None
    ) -> _Request:
        self.used = True
        if request is None:
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
            if r.budget is not None:
                r.bill(spent)
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
                if r.budget is not None:
                    r.bill(spent)
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
                # A summary, not a request: no budget (each request was charged).
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
# The spend budget in force (``budget=``): set by a fan-out given one, and by
# ``synthesize``/``plan``; fan-outs started inside an attempt inherit it.
_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "fanflow_budget", default=None
)


@contextlib.contextmanager
def budget_scope(budget: Budget | None) -> Iterator[None]:
    """Make ``budget`` the one in force inside the block (``None``: leave it as it is)."""
    if budget is None:
        yield
        return
    token = _BUDGET.set(budget)
    try:
        yield
    finally:
        _BUDGET.reset(token)


class _Probe:
    """Counts the requests begun while it is current (see :func:`probe`)."""

    __slots__ = ("request", "requests")

    def __init__(self) -> None:
        self.requests = 0
        # The wrapper's own request: its budget reservation passes to the
        # provider's request, so one request never holds two.
        self.request: _Request | None = None


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


def begin_request(
    model: str,
    estimated_input_tokens: int,
    expected_output_tokens: int | None = None,
    *,
    reserve: bool = True,
) -> _Request | None:
    """Tell the enclosing fan-out (if any) and the budget in force that a request is being sent.

    Returns a handle whose ``finish(input_tokens, output_tokens)`` records
    what the service reported (``fail()``: an error instead of an answer;
    ``cut()``: cancelled in flight); ``None`` outside a fan-out and without
    a budget. Provider implementations call this; task code need not.

    Args:
        model: the model, as the budget's ``prices`` name it.
        estimated_input_tokens: the prompt's estimated tokens.
        expected_output_tokens: the most the answer may take (``max_tokens``),
            when known: reserved with the prompt under a budget.
        reserve: ``False`` for a request already made (``record_usage``):
            charged to the budget, never refused.

    Raises:
        BudgetExceeded: a budget is in force and the request does not fit
            (or ``model`` has no price under its dollar limit); nothing was sent.
    """
    counter = _PROBE.get()
    if counter is not None:
        counter.requests += 1
    ledger = _LEDGER.get()
    budget = _BUDGET.get()
    if ledger is None and budget is None:
        return None
    key = _ATTEMPT_KEY.get()
    if key is None and ledger is not None:
        try:
            key = asyncio.current_task()
        except RuntimeError:
            key = None
    request: _Request | None = None
    if budget is not None:
        request = _Request(model, estimated_input_tokens)
        if reserve:
            _reserve(request, budget, ledger, key, counter, expected_output_tokens)
        else:
            request.budget = budget
    if ledger is None or key is None:
        return request
    return ledger.begin(key, model, estimated_input_tokens, request)


def _reserve(
    request: _Request,
    budget: Budget,
    ledger: _Ledger | None,
    key: object,
    counter: _Probe | None,
    expected_output_tokens: int | None,
) -> None:
    """Give ``request`` a reservation: its attempt's, its wrapper's, or its own.

    Raises:
        BudgetExceeded: it needs its own and that does not fit.
    """
    model = request.model
    if budget.dollars is not None and model not in budget.prices:
        raise BudgetExceeded(
            f"budget: no price for model {model!r} (prices has {sorted(budget.prices)}); "
            f"a dollar budget of {budget.dollars:g} cannot count it, so the request was not sent"
        )
    request.budget = budget
    outer = counter.request if counter is not None else None
    if outer is not None and outer.hold is not None and outer.budget is budget:
        # The wrapper around a provider reserved; the provider's request takes it.
        request.hold, outer.hold = outer.hold, None
        return
    if ledger is not None and ledger.holds and ledger.budget is budget:
        holder = ledger.holds.pop(key, None)
        if holder is not None and holder.hold is not None:
            # The attempt's first request: it spends the attempt's reservation.
            request.hold, holder.hold = holder.hold, None
            return
    estimate = request.input_tokens
    output = expected_output_tokens or 0
    need = budget.cost(model, estimate, output, 1)
    why = budget.reserve(need)
    if why is not None:
        raise BudgetExceeded(f"{why}; the request to model {model!r} was not sent")
    request.hold = need


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
