"""A spend budget shared by fan-outs: reserve before an attempt, settle after.

``ff.Budget`` holds limits on tokens, dollars and requests. Before an attempt
(or a model request) starts, its estimate is *reserved*; if the reservation
does not fit in what is left, the attempt is not started. When it ends, the
reservation is replaced by what it really spent. Concurrent attempts can
therefore overshoot a limit by no more than the error of their estimates —
unlike a check made after the fact, which lets every request in flight
through.

A budget may be shared by several fan-outs, by threads (worker-thread tasks
make model calls from their own thread) and by the verbs' own model calls
(``synthesize``, ``plan``, ``ensemble``), so it is guarded by a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

from .._core._validate import check_number

__all__ = ["Budget", "Spend"]


class Spend:
    """Tokens, dollars and requests: what a budget has spent, has left, or holds.

    Attributes:
        tokens: input plus output tokens.
        dollars: cost from the budget's ``prices`` (0.0 without prices).
        requests: model requests.
    """

    __slots__ = ("dollars", "requests", "tokens")

    def __init__(self, tokens: float = 0, dollars: float = 0.0, requests: float = 0) -> None:
        self.tokens = tokens
        self.dollars = dollars
        self.requests = requests

    def __repr__(self) -> str:
        return (
            f"Spend(tokens={self.tokens:g}, dollars={self.dollars:.6g}, requests={self.requests:g})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spend):
            return NotImplemented
        return (self.tokens, self.dollars, self.requests) == (
            other.tokens,
            other.dollars,
            other.requests,
        )

    def to_dict(self) -> dict[str, float]:
        """Plain JSON data."""
        return {"tokens": self.tokens, "dollars": self.dollars, "requests": self.requests}


def _limit(value: Any, what: str) -> float | None:
    if value is None:
        return None
    return float(check_number(value, f"Budget({what}=...)", minimum=0))


def _prices(value: Any) -> dict[str, tuple[float, float]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            "Budget(prices=...) must be a mapping {model: (dollars per 1M input tokens, "
            f"dollars per 1M output tokens)}}; got {value!r}"
        )
    prices: dict[str, tuple[float, float]] = {}
    for model, price in value.items():
        if not isinstance(model, str) or not model:
            raise TypeError(f"Budget(prices=...): a model name must be a string; got {model!r}")
        if not isinstance(price, tuple | list) or len(price) != 2:
            raise TypeError(
                f"Budget(prices=...)[{model!r}] must be (input price, output price) per 1M "
                f"tokens; got {price!r}"
            )
        pin = check_number(price[0], f"Budget(prices=...)[{model!r}] input price", minimum=0)
        pout = check_number(price[1], f"Budget(prices=...)[{model!r}] output price", minimum=0)
        prices[model] = (float(pin), float(pout))
    return prices


class Budget:
    """Limits on what fan-outs may spend, held before each attempt starts.

    Pass one budget to as many fan-outs and verbs as should share it
    (``budget=``), like a :class:`RateLimit`.

    Args:
        tokens: the most input plus output tokens, or ``None`` for no limit.
        dollars: the most dollars, priced with ``prices``, or ``None``.
        requests: the most model requests, or ``None``.
        prices: ``{model: (dollars per 1M input tokens, dollars per 1M
            output tokens)}``; needed for ``dollars`` (a request to a model
            without a price is refused when ``dollars`` is set).

    Raises:
        TypeError: a limit is not a number, or ``prices`` is malformed.
        ValueError: a negative or non-finite limit or price; ``dollars``
            without ``prices``.
    """

    def __init__(
        self,
        tokens: float | None = None,
        dollars: float | None = None,
        requests: float | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.tokens = _limit(tokens, "tokens")
        self.dollars = _limit(dollars, "dollars")
        self.requests = _limit(requests, "requests")
        self.prices = _prices(prices)
        if self.dollars is not None and not self.prices:
            raise ValueError(
                "Budget(dollars=...) needs prices={model: (input, output) dollars per 1M tokens}"
            )
        self._lock = threading.Lock()
        self._spent = Spend()
        self._held = Spend()

    def __repr__(self) -> str:
        limits = [
            f"{name}={value:g}"
            for name, value in (
                ("tokens", self.tokens),
                ("dollars", self.dollars),
                ("requests", self.requests),
            )
            if value is not None
        ]
        return f"Budget({', '.join(limits)})"

    # -- pricing --------------------------------------------------------
    def price(self, model: str | None, input_tokens: float, output_tokens: float) -> float:
        """Dollars for ``input_tokens`` and ``output_tokens`` of ``model``.

        A model without a price costs 0.0 when there is no dollar limit.

        Raises:
            KeyError: ``dollars`` is limited and ``model`` has no price.
        """
        price = self.prices.get(model) if model is not None else None
        if price is None:
            if self.dollars is None:
                return 0.0
            if model is None:
                # An estimate without a model: the dearest model's price.
                pin = max(p[0] for p in self.prices.values())
                pout = max(p[1] for p in self.prices.values())
                price = (pin, pout)
            else:
                raise KeyError(
                    f"the budget has no price for model {model!r} (prices has "
                    f"{sorted(self.prices)}); a dollar budget cannot count it"
                )
        return input_tokens * price[0] / 1e6 + output_tokens * price[1] / 1e6

    # -- reserving ------------------------------------------------------
    def _fits(self, need: Spend) -> str | None:
        """Why ``need`` does not fit in what is left (``None``: it fits). Lock held."""
        for name, limit, spent, held, want in (
            ("tokens", self.tokens, self._spent.tokens, self._held.tokens, need.tokens),
            ("dollars", self.dollars, self._spent.dollars, self._held.dollars, need.dollars),
            ("requests", self.requests, self._spent.requests, self._held.requests, need.requests),
        ):
            if limit is None:
                continue
            left = limit - spent - held
            # Nothing starts once a limit is used up, not even an attempt
            # estimated at zero: it would spend something.
            if want > left or left <= 0:
                return (
                    f"budget: needs {want:g} {name}, {max(left, 0):g} of {limit:g} left "
                    f"({spent:g} spent, {held:g} held by attempts in flight)"
                )
        return None

    def reserve(self, need: Spend) -> str | None:
        """Hold ``need`` if it fits; else the reason it does not (which says "budget")."""
        with self._lock:
            why = self._fits(need)
            if why is None:
                self._held.tokens += need.tokens
                self._held.dollars += need.dollars
                self._held.requests += need.requests
            return why

    def release(self, held: Spend) -> None:
        """Give back a reservation made with :meth:`reserve`."""
        with self._lock:
            self._held.tokens = max(self._held.tokens - held.tokens, 0)
            self._held.dollars = max(self._held.dollars - held.dollars, 0.0)
            self._held.requests = max(self._held.requests - held.requests, 0)

    def charge(self, spent: Spend) -> None:
        """Book what was really spent."""
        with self._lock:
            self._spent.tokens += spent.tokens
            self._spent.dollars += spent.dollars
            self._spent.requests += spent.requests

    def settle(
        self, held: Spend | None, spent: Spend | None = None, before: Spend | None = None
    ) -> None:
        """Give back ``held`` and book ``spent`` less ``before``, in one step.

        ``before`` is what was booked for the same request earlier: a
        request booked as refused that was answered after all is corrected,
        not counted twice. Any argument may be ``None`` (nothing).
        """
        with self._lock:
            if held is not None:
                self._held.tokens = max(self._held.tokens - held.tokens, 0)
                self._held.dollars = max(self._held.dollars - held.dollars, 0.0)
                self._held.requests = max(self._held.requests - held.requests, 0)
            for part, sign in ((spent, 1), (before, -1)):
                if part is not None:
                    self._spent.tokens += sign * part.tokens
                    self._spent.dollars += sign * part.dollars
                    self._spent.requests += sign * part.requests

    def cost(
        self, model: str | None, input_tokens: float, output_tokens: float, requests: float = 1
    ) -> Spend:
        """What ``requests`` requests of ``model`` with these tokens spend, priced.

        Raises:
            KeyError: ``dollars`` is limited and ``model`` has no price.
        """
        return Spend(
            input_tokens + output_tokens,
            self.price(model, input_tokens, output_tokens),
            requests,
        )

    # -- reading --------------------------------------------------------
    @property
    def spent(self) -> Spend:
        """What has been spent so far (a copy)."""
        with self._lock:
            s = self._spent
            return Spend(s.tokens, s.dollars, s.requests)

    @property
    def held(self) -> Spend:
        """What attempts in flight hold now (a copy)."""
        with self._lock:
            h = self._held
            return Spend(h.tokens, h.dollars, h.requests)

    @property
    def remaining(self) -> Spend:
        """What is left of each limit, not counting what is held (``inf`` when unlimited)."""
        with self._lock:
            s = self._spent
            return Spend(
                math.inf if self.tokens is None else max(self.tokens - s.tokens, 0),
                math.inf if self.dollars is None else max(self.dollars - s.dollars, 0.0),
                math.inf if self.requests is None else max(self.requests - s.requests, 0),
            )

    def to_dict(self) -> dict[str, Any]:
        """The limits, what was spent and what is left, as JSON data (for reports)."""
        remaining = self.remaining
        return {
            "limits": {"tokens": self.tokens, "dollars": self.dollars, "requests": self.requests},
            "spent": self.spent.to_dict(),
            "remaining": {
                k: (None if math.isinf(v) else v) for k, v in remaining.to_dict().items()
            },
        }
