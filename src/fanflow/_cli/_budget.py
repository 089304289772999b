"""``--budget-tokens``, ``--budget-dollars``, ``--budget-price``: a budget on the command line.

Shared by ``fanflow run`` (where they override or complete a workflow's
``budget:``) and ``fanflow ask``. A bad value is a one-line error and exit
status 2, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._policies._budget import Budget

__all__ = ["budget_options", "make_budget"]

F = TypeVar("F", bound=Callable[..., Any])


def budget_options(fn: F) -> F:
    """Add the three budget options to a click command (as ``budget_tokens``, ...)."""
    fn = click.option(
        "--budget-price",
        "budget_prices",
        multiple=True,
        metavar="MODEL=IN,OUT",
        help="A model's price in dollars per 1M input and output tokens, for "
        "--budget-dollars (repeatable).",
    )(fn)
    fn = click.option(
        "--budget-dollars",
        type=click.FloatRange(min=0),
        default=None,
        help="Spend at most this many dollars (needs prices: --budget-price or the "
        "workflow's budget: prices:).",
    )(fn)
    fn = click.option(
        "--budget-tokens",
        type=click.IntRange(min=0),
        default=None,
        help="Spend at most this many tokens (input plus output); attempts that do not "
        "fit are not started.",
    )(fn)
    return fn


def _price(spec: str) -> tuple[str, tuple[float, float]]:
    """``MODEL=IN,OUT`` as ``(model, (in, out))``.

    Raises:
        ValueError: the spec is malformed (the message names it).
    """
    model, sep, numbers = spec.rpartition("=")
    parts = numbers.split(",")
    if not sep or not model or len(parts) != 2:
        raise ValueError(
            f"--budget-price expects MODEL=IN,OUT (dollars per 1M tokens); got {spec!r}"
        )
    try:
        pin, pout = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"--budget-price {spec!r}: IN and OUT must be numbers") from None
    if not (math.isfinite(pin) and math.isfinite(pout)) or pin < 0 or pout < 0:
        raise ValueError(f"--budget-price {spec!r}: prices must be finite numbers >= 0")
    return model, (pin, pout)


def make_budget(
    base: Budget | None,
    tokens: int | None,
    dollars: float | None,
    prices: tuple[str, ...],
) -> Budget | None:
    """The budget to run with: ``base`` (a workflow's) with the options laid over it.

    Raises:
        ValueError: a malformed price, a non-finite dollar amount, or
            ``--budget-dollars`` without any price (the message names the option).
    """
    if tokens is None and dollars is None and not prices:
        return base
    table: dict[str, tuple[float, float]] = dict(base.prices) if base is not None else {}
    for spec in prices:
        model, price = _price(spec)
        table[model] = price
    if dollars is not None and not math.isfinite(dollars):
        raise ValueError(f"--budget-dollars must be a finite number >= 0; got {dollars!r}")
    limit_dollars = dollars if dollars is not None else (base.dollars if base else None)
    if limit_dollars is not None and not table:
        raise ValueError(
            f"--budget-dollars {limit_dollars:g} needs prices: give --budget-price "
            "MODEL=IN,OUT (dollars per 1M input and output tokens) or the workflow's "
            "budget: prices:"
        )
    try:
        return Budget(
            tokens=tokens if tokens is not None else (base.tokens if base else None),
            dollars=limit_dollars,
            requests=base.requests if base is not None else None,
            prices=table or None,
        )
    except TypeError as exc:
        raise ValueError(str(exc)) from None
