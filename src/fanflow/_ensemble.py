"""Ensemble reasoning / self-consistency: many samples, one vote."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._api import fan_out
from ._limits import AdaptiveConcurrency, RateLimit
from ._result import FanInResult
from ._retry import Retry
from ._validate import check_number
from ._vote import BetaStop, Vote

if TYPE_CHECKING:
    from .llm import LLM, Message

__all__ = ["ensemble"]


async def ensemble(
    prompt: str | Sequence[Message],
    llms: LLM | str | Sequence[LLM | str],
    samples: int = 5,
    *,
    key: Callable[[Any], Hashable] | None = None,
    early_stop: bool | BetaStop = True,
    quorum: float | None = None,
    max_concurrency: int | AdaptiveConcurrency | None = 4,
    timeout: float | None = None,
    deadline: float | None = None,
    retry: Retry | None = None,
    rate_limit: RateLimit | None = None,
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
    :class:`BetaStop` stops sooner on a statistical rule. Fewer samples in
    flight (``max_concurrency``, default 4) let early stopping save more.

    Args:
        prompt: the question.
        llms: a model, a model URI, or a list of them.
        samples: samples per model.
        key: normalises answers before counting (see ``ff.llm.last_number``
            and ``ff.llm.answer_line`` for free-text answers).
        early_stop, quorum: as for :class:`Vote`.
        params: passed to each ``complete`` call (``temperature``...).

    Returns:
        The :class:`FanInResult`: ``value`` is the winning answer, ``votes``
        the tally, ``usage`` the tokens spent (and wasted on cancelled samples).

    Raises:
        StrategyFailed: no answer won (see :class:`Vote`).
        ValueError, TypeError: bad arguments.
    """
    from .llm import from_uri, prompt_task

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
            max_concurrency=max_concurrency,
            timeout=timeout,
            deadline=deadline,
            retry=retry,
            rate_limit=rate_limit,
            raise_on_failure=raise_on_failure,
        )
    finally:
        for model in owned:  # built here from a URI: close its connections
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()
