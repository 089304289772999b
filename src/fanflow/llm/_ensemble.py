"""Ensemble reasoning / self-consistency: many samples, one vote."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._api import fan_out
from .._core._result import FanInResult
from .._core._validate import check_number
from .._options import DEFAULT_CONCURRENCY, DEFAULTS, EventHandler, resolve
from .._policies._budget import Budget
from .._policies._hedge import Hedge
from .._policies._limits import AdaptiveConcurrency, RateLimit
from .._policies._retry import Retry
from .._policies._vote import BetaStop, Vote
from ._aggregate import deprecated_positional

if TYPE_CHECKING:
    from . import LLM, Message

__all__ = ["ensemble"]

#: The shared options (``fanflow._options``) ensemble takes. Not ``strategy``
#: (it builds its own Vote), ``executor`` (samples are model calls on the
#: loop) or ``audit`` (samples share nothing but the model).
_TAKES = frozenset(
    {
        "max_concurrency",
        "timeout",
        "deadline",
        "retry",
        "hedge",
        "rate_limit",
        "budget",
        "on_event",
        "progress",
        "raise_on_failure",
    }
)


async def ensemble(
    prompt: str | Sequence[Message],
    llms: LLM | str | Sequence[LLM | str],
    *args: int,
    samples: int = 5,
    key: Callable[[Any], Hashable] | None = None,
    early_stop: bool | BetaStop = True,
    quorum: float | None = None,
    max_concurrency: int | AdaptiveConcurrency | None = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    deadline: float | None = None,
    retry: Retry | None = None,
    hedge: Hedge | None = None,
    rate_limit: RateLimit | None = None,
    budget: Budget | None = None,
    on_event: EventHandler | None = None,
    progress: bool = False,
    raise_on_failure: bool = True,
    **params: Any,
) -> FanInResult:
    """Ask several models (and/or one model several times) and take the majority answer.

    Fans ``prompt`` out to ``samples`` samples of each model (sample ``j``
    is sent with ``seed=j``), and votes on the answers with :class:`Vote`.
    Samples are started round-robin across the models (each model's first
    sample, then each one's second...), so every model is heard as early
    as the others: the answer does not depend on the order of ``llms``,
    except that a tie in the full count goes to the answer that reached
    the tied weight first (``Vote``'s ``tie_break="first"``).
    With ``early_stop=True`` it stops once the winner cannot change, so it
    makes fewer calls than ``samples`` per model with the same answer; a
    :class:`BetaStop` stops sooner on a statistical rule.

    Early stopping can only skip samples that have not started: with every
    sample in flight at once there is nothing left to skip. The default
    ``max_concurrency`` is 100, as for every verb, which for most ensembles
    means all samples at once (fastest, no calls saved); a lower one, such
    as ``max_concurrency=4``, lets early stopping save more calls at the
    cost of more wall-clock time.

    Args:
        prompt: the question.
        llms: a model, a model URI, or a list of them.
        samples: samples per model (default 5).
        key: normalises answers before counting (see ``ff.llm.last_number``
            and ``ff.llm.answer_line`` for free-text answers).
        early_stop, quorum: as for :class:`Vote`.
        max_concurrency, timeout, deadline, retry, hedge, rate_limit,
            budget, on_event, progress, raise_on_failure: the options every verb
            shares (``fanflow._options``), with the same types and defaults
            as for :func:`fan_out` (``max_concurrency=100``,
            ``raise_on_failure=True``, the others off). ``strategy``,
            ``executor`` and ``audit`` make no sense here; passing one is a
            ``TypeError`` naming it.
        params: passed to each sample's :func:`prompt_task` (``temperature``...;
            ``schema=Model`` votes on parsed answers: give ``key=``, e.g.
            ``key=lambda v: v.verdict``).

    Everything after ``llms`` is keyword-only; ``samples`` by position still
    works for one release, with a ``DeprecationWarning``.

    Returns:
        The :class:`FanInResult`: ``value`` is the winning answer, ``votes``
        the tally, ``usage`` the tokens spent (and wasted on cancelled samples).

    Raises:
        StrategyFailed: no answer won (see :class:`Vote`).
        ValueError, TypeError: bad arguments.
    """
    from . import from_uri, prompt_task

    if args:
        samples = deprecated_positional("ensemble", args, {"samples": samples}, {"samples": 5})[
            "samples"
        ]
    options: dict[str, Any] = {
        "max_concurrency": max_concurrency,
        "timeout": timeout,
        "deadline": deadline,
        "retry": retry,
        "hedge": hedge,
        "rate_limit": rate_limit,
        "budget": budget,
        "on_event": on_event,
        "progress": progress,
        "raise_on_failure": raise_on_failure,
    }
    # A shared option ensemble does not take would otherwise reach the
    # model as a completion parameter: refuse it by name.
    misplaced = {name: value for name, value in params.items() if name in DEFAULTS}
    resolve("ensemble", {**options, **misplaced}, takes=_TAKES)
    check_number(samples, "ensemble(samples=...)", minimum=1, integer=True)
    if isinstance(llms, str) or hasattr(llms, "complete"):
        items: list[Any] = [llms]
    elif isinstance(llms, Iterable):
        items = list(llms)
    else:
        raise TypeError(
            f"ensemble(llms=...) must be a model, a model URI or a list of them; got {llms!r}"
        )
    if not items:
        raise ValueError("ensemble(llms=...) needs at least one model; got none")
    for item in items:
        if not (isinstance(item, str) or hasattr(item, "complete")):
            raise TypeError(
                f"ensemble(llms=...) must hold models (with .complete) or model URIs; got {item!r}"
            )
    models: list[LLM] = [from_uri(m) if isinstance(m, str) else m for m in items]
    owned = [m for m, item in zip(models, items, strict=True) if isinstance(item, str)]
    names = [getattr(m, "name", type(m).__name__) for m in models]
    labels = [name if names.count(name) == 1 else f"{i}:{name}" for i, name in enumerate(names)]
    # Round-robin (A#0, B#0, A#1, B#1, ...): queued model by model, the first
    # model's samples would fill the early votes and early stopping (or the
    # deadline) would leave the others barely heard, so the answer would
    # depend on the order the models were listed in.
    tasks = [
        prompt_task(f"{label}#{j}", model, prompt, seed=j, **params)
        for j in range(samples)
        for model, label in zip(models, labels, strict=True)
    ]
    try:
        return await fan_out(
            tasks,
            strategy=Vote(key=key, quorum=quorum, early_stop=early_stop),
            **options,
        )
    finally:
        for model in owned:  # built here from a URI: close its connections
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()
