"""Argument checks for public verbs and constructors: one rule, one wording.

A value of the wrong type is a ``TypeError``; a value of the right type that
is out of range (or not one of the choices) is a ``ValueError``. Both name
the option and show the value: ``"Retry(attempts=...) must be an int; got
'3'"``. ``bool`` is never a number here, though Python makes it an ``int``.

Standard library only: this module imports nothing from fanflow.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

__all__ = ["check_callable", "check_choice", "check_instance", "check_number"]

T = TypeVar("T")


def _bounds(
    minimum: float | None, maximum: float | None, above: float | None, below: float | None
) -> str:
    """The allowed range in words: ``">= 1"``, ``"> 0"``, ``"in [0, 1]"``, ``"in (0.5, 1)"``."""
    low = f"[{minimum:g}" if minimum is not None else f"({above:g}" if above is not None else ""
    high = f"{maximum:g}]" if maximum is not None else f"{below:g})" if below is not None else ""
    if low and high:
        return f"in {low}, {high}"
    if low:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    if high:
        return ("<= " if high[-1] == "]" else "< ") + high[:-1]
    return "finite"


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    integer: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
    what: str | None = None,
) -> Any:
    """``value`` if it is a number within the bounds; else the right exception.

    Args:
        value: what the caller passed.
        name: the option as the message names it (``"Retry(attempts=...)"``).
        minimum, maximum: inclusive bounds. above, below: exclusive bounds.
        integer: only an ``int`` will do.
        allow_none: ``None`` is accepted (and returned).
        allow_inf: ``math.inf`` is accepted (NaN never is).
        what: how the expected type is named (default ``"an int"`` or
            ``"a number"``).

    Raises:
        TypeError: not an int (``integer``) or not an int or float; a bool.
        ValueError: NaN, an infinity (unless ``allow_inf``), or out of bounds.
    """
    if value is None and allow_none:
        return None
    number: float = value  # narrowed below: an int, or an int or a float
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = what or ("an int" if integer else "a number")
        if allow_none:
            expected += " or None"
        raise TypeError(f"{name} must be {expected}; got {value!r}")
    bounds = _bounds(minimum, maximum, above, below)
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        shown = bounds if bounds == "finite" else f"finite and {bounds}"
        raise ValueError(f"{name} must be {shown}; got {value!r}")
    if (
        (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
        or (above is not None and number <= above)
        or (below is not None and number >= below)
    ):
        raise ValueError(f"{name} must be {bounds}; got {value!r}")
    return value


def check_instance(value: Any, name: str, kinds: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is an instance of ``kinds``; else a ``TypeError`` saying ``what``."""
    if not isinstance(value, kinds):
        raise TypeError(f"{name} must be {what}; got {value!r}")
    return value


def check_callable(value: T, name: str, *, allow_none: bool = False) -> T:
    """``value`` if it is callable (or ``None`` when allowed); else a ``TypeError``."""
    if value is None and allow_none:
        return value
    if not callable(value):
        expected = "callable or None" if allow_none else "callable"
        raise TypeError(f"{name} must be {expected}; got {value!r}")
    return value


def check_choice(
    value: Any,
    name: str,
    choices: Collection[str],
    *,
    or_callable: bool = False,
) -> Any:
    """``value`` if it is one of the string ``choices`` (or, if allowed, a callable).

    Raises:
        TypeError: not a string (nor a callable where one is allowed).
        ValueError: a string that is not one of ``choices``.
    """
    if or_callable and callable(value):
        return value
    listed = ", ".join(repr(c) for c in choices)
    expected = f"one of {listed}" + (" or a callable" if or_callable else "")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {expected}; got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return value
