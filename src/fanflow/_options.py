"""One set of options for every verb: one declaration, one default each, one check.

``fan_out``, ``run``, ``as_completed``, ``fan_map``, ``ensemble``,
``Plan.run`` and ``ask`` take these keyword-only options, with these names,
types and defaults, wherever the option makes sense for the verb:

=================== ======================================= ==============
option              type                                    default
=================== ======================================= ==============
``strategy``        ``ff.Strategy``                         ``BestEffort()``
``max_concurrency`` ``int``, ``ff.AdaptiveConcurrency``,    ``100``
                    ``None`` (no limit)
``timeout``         seconds per attempt, or ``None``        ``None``
``deadline``        seconds for the whole fan-out, or None  ``None``
``retry``           ``ff.Retry`` or ``None``                ``None``
``hedge``           ``ff.Hedge`` or ``None``                ``None``
``rate_limit``      ``ff.RateLimit`` or ``None``            ``None``
``executor``        ``"async"``, ``"thread"``, ``"process"``  ``"async"``
                    or an ``ff.executors.Executor``
``on_event``        a callable (sync or async), or ``None`` ``None``
``progress``        ``bool``                                ``False``
``audit``           ``"error"``, ``"warn"``, ``"strict"``,  ``"error"``
                    ``"off"``
``raise_on_failure`` ``bool``                               ``True``
``budget``          ``ff.Budget`` or ``None``               ``None``
``journal``         a file path, an ``ff.Journal``, or None ``None``
=================== ======================================= ==============

A wrong type is a ``TypeError``, a wrong value a ``ValueError``; both name
the option. An option a verb does not take is a ``TypeError`` naming it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, TypedDict

from ._core._driver import Settings
from ._core._events import Event
from ._core._task import _check_timeout
from ._policies._budget import Budget
from ._policies._hedge import Hedge
from ._policies._limits import AdaptiveConcurrency, RateLimit
from ._policies._retry import Retry
from ._policies._strategies import BestEffort, Strategy
from .executors._base import Executor

__all__ = ["DEFAULTS", "FanOutOptions", "Resolved", "resolve"]

EventHandler = Callable[[Event], Any]
AuditMode = Literal["error", "warn", "strict", "off"]
ExecutorSpec = Literal["async", "thread", "process"] | Executor

DEFAULT_CONCURRENCY = 100


class FanOutOptions(TypedDict, total=False):
    """The options every verb shares (see the module docstring for defaults)."""

    strategy: Strategy | None
    max_concurrency: int | AdaptiveConcurrency | None
    timeout: float | None
    deadline: float | None
    retry: Retry | None
    hedge: Hedge | None
    rate_limit: RateLimit | None
    executor: ExecutorSpec
    on_event: EventHandler | None
    progress: bool
    audit: AuditMode
    raise_on_failure: bool
    budget: Budget | None
    journal: str | os.PathLike[str] | Any | None


#: The one default of each option.
DEFAULTS: Mapping[str, Any] = {
    "strategy": None,
    "max_concurrency": DEFAULT_CONCURRENCY,
    "timeout": None,
    "deadline": None,
    "retry": None,
    "hedge": None,
    "rate_limit": None,
    "executor": "async",
    "on_event": None,
    "progress": False,
    "audit": "error",
    "raise_on_failure": True,
    "budget": None,
    "journal": None,
}

_AUDIT_MODES = ("error", "warn", "strict", "off")


class Resolved:
    """Options checked and filled in with their defaults."""

    __slots__ = ("audit", "journal", "progress", "raise_on_failure", "settings", "strategy")

    def __init__(
        self,
        settings: Settings,
        strategy: Strategy,
        audit: AuditMode,
        progress: bool,
        raise_on_failure: bool,
        journal: Any = None,
    ) -> None:
        #: the ``journal=`` option as given (a path or an ``ff.Journal``), checked
        self.journal = journal
        self.settings = settings
        self.strategy = strategy
        self.audit = audit
        self.progress = progress
        self.raise_on_failure = raise_on_failure


def executor_of(spec: Any) -> Executor:
    """The :class:`Executor` for an ``executor=`` option.

    Raises:
        TypeError: not a string or an Executor.
        ValueError: an unknown name.
    """
    if isinstance(spec, Executor):
        return spec
    if isinstance(spec, str):
        from .executors import Async, Process, Threads

        if spec == "async":
            return Async()
        if spec == "thread":
            return Threads()
        if spec == "process":
            return Process()
        raise ValueError(
            "executor must be 'async', 'thread', 'process' or an ff.executors.Executor "
            f"(e.g. ff.executors.Process(workers=4), ff.executors.Ray()); got {spec!r}"
        )
    raise TypeError(
        "executor must be 'async', 'thread', 'process' or an ff.executors.Executor "
        f"(e.g. ff.executors.Process(workers=4), ff.executors.Ray()); got {spec!r}"
    )


def _strategy(value: Any) -> Strategy:
    if value is None:
        return BestEffort()
    if isinstance(value, type) and issubclass(value, Strategy):
        raise TypeError(
            f"strategy must be a strategy object, not the class {value.__name__}. "
            f"HINT: call it, e.g. strategy=ff.{value.__name__}()"
        )
    if not isinstance(value, Strategy):
        raise TypeError(
            "strategy must be an ff.Strategy such as ff.AllOrNothing(), ff.BestEffort(), "
            f"ff.FirstN(n) or ff.Vote(); got {value!r}"
        )
    return value


def check_concurrency(value: Any) -> tuple[float, AdaptiveConcurrency | None]:
    """``max_concurrency`` as (limit, adaptive).

    Raises:
        TypeError: not an int, an AdaptiveConcurrency or None.
        ValueError: an int below 1.
    """
    if value is None:
        return math.inf, None
    if isinstance(value, AdaptiveConcurrency):
        return float(value.limit), value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"max_concurrency must be an int, an ff.AdaptiveConcurrency or None; got {value!r}"
        )
    if value < 1:
        raise ValueError(f"max_concurrency must be >= 1; got {value!r}")
    return float(value), None


def resolve(
    verb: str,
    options: Mapping[str, Any],
    *,
    takes: Collection[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Resolved:
    """Check ``options`` for ``verb`` and fill in the defaults.

    Args:
        verb: the verb's name, for messages (``"fan_out"``).
        options: what the caller passed.
        takes: the options this verb accepts (default: all of them).
        defaults: the verb's fixed values for options it does not take.

    Raises:
        TypeError: an option the verb does not take, or a wrong type.
        ValueError: a wrong value.
    """
    allowed = DEFAULTS.keys() if takes is None else takes
    unknown = [name for name in options if name not in allowed]
    if unknown:
        known = [name for name in unknown if name in DEFAULTS]
        if known:
            raise TypeError(f"{verb}() does not take the option {known[0]!r}")
        raise TypeError(
            f"{verb}() got an unexpected option {unknown[0]!r}; its options are "
            f"{', '.join(sorted(allowed))}"
        )
    merged = {**DEFAULTS, **(defaults or {}), **options}
    strategy = _strategy(merged["strategy"])
    limit, adaptive = check_concurrency(merged["max_concurrency"])
    for name, kind, what in (
        ("retry", Retry, "an ff.Retry"),
        ("hedge", Hedge, "an ff.Hedge"),
        ("rate_limit", RateLimit, "an ff.RateLimit"),
        ("budget", Budget, "an ff.Budget"),
    ):
        value = merged[name]
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{name} must be {what} or None; got {value!r}")
    on_event = merged["on_event"]
    if on_event is not None and not callable(on_event):
        raise TypeError(f"on_event must be callable; got {on_event!r}")
    audit = merged["audit"]
    if not isinstance(audit, str):
        raise TypeError(f"audit must be one of {', '.join(map(repr, _AUDIT_MODES))}; got {audit!r}")
    if audit not in _AUDIT_MODES:
        raise ValueError(
            f"audit must be one of {', '.join(map(repr, _AUDIT_MODES))}; got {audit!r}"
        )
    for name in ("progress", "raise_on_failure"):
        if not isinstance(merged[name], bool | int):
            raise TypeError(f"{name} must be True or False; got {merged[name]!r}")
    journal = merged["journal"]
    if journal is not None:
        from ._bulk._journal import Journal

        if not isinstance(journal, str | os.PathLike | Journal):
            raise TypeError(f"journal must be a file path, an ff.Journal or None; got {journal!r}")
        if isinstance(journal, str | os.PathLike) and not os.fspath(journal):
            raise ValueError("journal must be a file path; got an empty string")
    settings = Settings(
        limit=limit,
        adaptive=adaptive,
        executor=executor_of(merged["executor"]),
        timeout=_check_timeout(merged["timeout"], "timeout"),
        deadline=_check_timeout(merged["deadline"], "deadline"),
        retry=merged["retry"],
        hedge=merged["hedge"],
        rate_limit=merged["rate_limit"],
        on_event=on_event,
        budget=merged["budget"],
    )
    mode: AuditMode = audit  # type: ignore[assignment]  # checked above
    return Resolved(
        settings,
        strategy,
        mode,
        bool(merged["progress"]),
        bool(merged["raise_on_failure"]),
        journal,
    )
