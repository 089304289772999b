"""A wrong type is a TypeError, a wrong value a ValueError; both name the option and the value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import fanflow as ff
from fanflow._core._validate import check_callable, check_choice, check_instance, check_number


class _Model:
    name = "m"

    async def complete(self, prompt: Any, **params: Any) -> Any:
        raise AssertionError("never called")


def _fan_in() -> ff.FanInResult:
    return ff.FanInResult(None, [], True, "AllOrNothing()", 1.0, 0.0)


async def _synthesize(**kwargs: Any) -> Any:
    options: dict[str, Any] = {"result": _fan_in(), "llm": _Model()}
    options.update(kwargs)
    return await ff.synthesize(**options)


async def _ensemble(**kwargs: Any) -> Any:
    options: dict[str, Any] = {"prompt": "q", "llms": _Model()}
    options.update(kwargs)
    return await ff.ensemble(**options)


def _adaptive(**kwargs: Any) -> Any:
    return ff.AdaptiveConcurrency(**kwargs)


def _shown(bad: Any, message: str) -> bool:
    """Whether the message shows the bad value (or, for a container, the bad item in it)."""
    parts = list(bad.values()) if isinstance(bad, dict) else bad if isinstance(bad, list) else []
    return repr(bad) in message or any(repr(part) in message for part in parts)


def _merge(**kwargs: Any) -> Any:
    return ff.merge(_fan_in(), **kwargs)


# (what, call, option named in the message, bad value, exception)
CASES: list[tuple[str, Callable[[Any], Any], str, Any, type[Exception]]] = [
    ("Retry", lambda v: ff.Retry(attempts=v), "attempts", "3", TypeError),
    ("Retry", lambda v: ff.Retry(attempts=v), "attempts", True, TypeError),
    ("Retry", lambda v: ff.Retry(attempts=v), "attempts", 2.0, TypeError),
    ("Retry", lambda v: ff.Retry(attempts=v), "attempts", 0, ValueError),
    ("Retry", lambda v: ff.Retry(backoff=v), "backoff", "1s", TypeError),
    ("Retry", lambda v: ff.Retry(backoff=v), "backoff", -1, ValueError),
    ("Retry", lambda v: ff.Retry(backoff=v), "backoff", math.nan, ValueError),
    ("Retry", lambda v: ff.Retry(max_backoff=v), "max_backoff", None, TypeError),
    ("Retry", lambda v: ff.Retry(on=v), "on", "ValueError", TypeError),
    ("Hedge", lambda v: ff.Hedge(after=v), "after", [1], TypeError),
    ("Hedge", lambda v: ff.Hedge(after=v), "after", "p100", ValueError),
    ("Hedge", lambda v: ff.Hedge(after=v), "after", 0, ValueError),
    ("Hedge", lambda v: ff.Hedge(max_extra=v), "max_extra", "0.1", TypeError),
    ("Hedge", lambda v: ff.Hedge(max_extra=v), "max_extra", 2, ValueError),
    ("Hedge", lambda v: ff.Hedge(min_samples=v), "min_samples", "20", TypeError),
    ("Hedge", lambda v: ff.Hedge(min_samples=v), "min_samples", 2.5, TypeError),
    ("Hedge", lambda v: ff.Hedge(min_samples=v), "min_samples", 0, ValueError),
    ("RateLimit", lambda v: ff.RateLimit(per_second=v), "per_second", "10", TypeError),
    ("RateLimit", lambda v: ff.RateLimit(per_second=v), "per_second", 0, ValueError),
    ("RateLimit", lambda v: ff.RateLimit(1, burst=v), "burst", False, TypeError),
    ("RateLimit", lambda v: ff.RateLimit(1, max_pause=v), "max_pause", None, TypeError),
    ("RateLimit", lambda v: ff.RateLimit(1, max_pause=v), "max_pause", math.inf, ValueError),
    ("RateLimit", lambda v: ff.RateLimit(1, max_pause=v), "max_pause", "60", TypeError),
    ("AdaptiveConcurrency", lambda v: ff.AdaptiveConcurrency(initial=v), "initial", "8", TypeError),
    ("AdaptiveConcurrency", lambda v: ff.AdaptiveConcurrency(initial=v), "initial", 8.0, TypeError),
    ("AdaptiveConcurrency", lambda v: ff.AdaptiveConcurrency(min=v), "min", 0, ValueError),
    ("AdaptiveConcurrency", lambda v: ff.AdaptiveConcurrency(max=v), "max", None, TypeError),
    (
        "AdaptiveConcurrency",
        lambda v: ff.AdaptiveConcurrency(decrease=v),
        "decrease",
        "x",
        TypeError,
    ),
    (
        "AdaptiveConcurrency",
        lambda v: ff.AdaptiveConcurrency(decrease=v),
        "decrease",
        1,
        ValueError,
    ),
    ("BestEffort", lambda v: ff.BestEffort(min_success=v), "min_success", "1", TypeError),
    ("BestEffort", lambda v: ff.BestEffort(min_success=v), "min_success", -1, ValueError),
    ("BestEffort", lambda v: ff.BestEffort(max_failures=v), "max_failures", "2", TypeError),
    ("BestEffort", lambda v: ff.BestEffort(max_failures=v), "max_failures", 1.5, ValueError),
    ("BestEffort", lambda v: ff.BestEffort(max_failures=v), "max_failures", -1, ValueError),
    ("FirstN", lambda v: ff.FirstN(v), "n", "2", TypeError),
    ("FirstN", lambda v: ff.FirstN(v), "n", True, TypeError),
    ("FirstN", lambda v: ff.FirstN(v), "n", 0, ValueError),
    ("Vote", lambda v: ff.Vote(key=v), "key", "lower", TypeError),
    ("Vote", lambda v: ff.Vote(quorum=v), "quorum", "half", TypeError),
    ("Vote", lambda v: ff.Vote(quorum=v), "quorum", 0, ValueError),
    ("Vote", lambda v: ff.Vote(quorum=v), "quorum", 1.5, ValueError),
    ("Vote", lambda v: ff.Vote(weights=v), "weights", [1, 2], TypeError),
    ("Vote", lambda v: ff.Vote(weights=v), "weights", {"a": "1"}, TypeError),
    ("Vote", lambda v: ff.Vote(weights=v), "weights", {"a": -1}, ValueError),
    ("Vote", lambda v: ff.Vote(early_stop=v), "early_stop", 0.95, TypeError),
    ("Vote", lambda v: ff.Vote(tie_break=v), "tie_break", 3, TypeError),
    ("Vote", lambda v: ff.Vote(tie_break=v), "tie_break", "random", ValueError),
    ("BetaStop", lambda v: ff.BetaStop(confidence=v), "confidence", "0.9", TypeError),
    ("BetaStop", lambda v: ff.BetaStop(confidence=v), "confidence", 0.5, ValueError),
    ("merge", lambda v: _merge(conflict=v), "conflict", 3, TypeError),
    ("merge", lambda v: _merge(conflict=v), "conflict", "newest", ValueError),
    ("merge", lambda v: _merge(conflict="priority", priority=v), "priority", "a", TypeError),
    ("merge", lambda v: _merge(conflict=v), "priority", "priority", ValueError),
    ("merge", lambda v: ff.merge(v), "result", {"a": 1}, TypeError),
]

ASYNC_CASES: list[tuple[str, Callable[[Any], Any], str, Any, type[Exception]]] = [
    ("synthesize", lambda v: _synthesize(timeout=v), "timeout", "5", TypeError),
    ("synthesize", lambda v: _synthesize(timeout=v), "timeout", 0, ValueError),
    ("synthesize", lambda v: _synthesize(timeout=v), "timeout", math.nan, ValueError),
    ("synthesize", lambda v: _synthesize(retry=v), "retry", 3, TypeError),
    ("synthesize", lambda v: _synthesize(llm=v), "llm", "openai:gpt-4o", TypeError),
    ("synthesize", lambda v: _synthesize(result=v), "result", [1, 2], TypeError),
    ("synthesize", lambda v: _synthesize(template=v), "template", None, TypeError),
    ("ensemble", lambda v: _ensemble(samples=v), "samples", "3", TypeError),
    ("ensemble", lambda v: _ensemble(samples=v), "samples", 1.0, TypeError),
    ("ensemble", lambda v: _ensemble(samples=v), "samples", 0, ValueError),
    ("ensemble", lambda v: _ensemble(llms=v), "llms", 42, TypeError),
    ("ensemble", lambda v: _ensemble(llms=v), "llms", [], ValueError),
    ("ensemble", lambda v: _ensemble(llms=v), "llms", [42], TypeError),
]


def _ids(cases: list[tuple[str, Any, str, Any, type[Exception]]]) -> list[str]:
    return [f"{what}-{option}-{value!r}" for what, _, option, value, _ in cases]


@pytest.mark.parametrize(("what", "call", "option", "bad", "kind"), CASES, ids=_ids(CASES))
def test_bad_options_raise_the_right_kind_naming_option_and_value(
    what: str, call: Callable[[Any], Any], option: str, bad: Any, kind: type[Exception]
) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        call(bad)
    assert type(info.value) is kind, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert what in message and option in message, message
    assert _shown(bad, message), message


@pytest.mark.parametrize(
    ("what", "call", "option", "bad", "kind"), ASYNC_CASES, ids=_ids(ASYNC_CASES)
)
async def test_bad_arguments_to_verbs_raise_the_right_kind(
    what: str, call: Callable[[Any], Any], option: str, bad: Any, kind: type[Exception]
) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        await call(bad)
    assert type(info.value) is kind, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert what in message and option in message, message
    if bad != []:
        assert _shown(bad, message), message


def test_audit_mode_is_checked() -> None:
    from fanflow._policies._audit import check_before_run

    with pytest.raises(TypeError, match=r"audit must be one of .*; got 1"):
        check_before_run([], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"audit must be one of .*; got 'loud'"):
        check_before_run([], "loud")


def test_the_helpers() -> None:
    with pytest.raises(
        TypeError, match=r"^timeout must be a number of seconds or None; got 'abc'$"
    ):
        check_number("abc", "timeout", allow_none=True, what="a number of seconds")
    assert check_number(None, "timeout", allow_none=True) is None
    with pytest.raises(TypeError, match="must be a number; got True"):
        check_number(True, "x")  # bool is not a number
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]; got 2"):
        check_number(2, "x", minimum=0, maximum=1)
    with pytest.raises(ValueError, match=r"must be in \(0.5, 1\); got 1"):
        check_number(1, "x", above=0.5, below=1)
    with pytest.raises(ValueError, match="must be finite and > 0; got inf"):
        check_number(math.inf, "x", above=0)
    assert check_number(math.inf, "x", above=0, allow_inf=True) == math.inf
    with pytest.raises(TypeError, match=r"must be an int; got 1\.0"):
        check_number(1.0, "n", integer=True)
    with pytest.raises(TypeError, match="must be callable; got 3"):
        check_callable(3, "key")
    with pytest.raises(TypeError, match="must be a string; got 3"):
        check_instance(3, "name", str, "a string")
    with pytest.raises(ValueError, match="must be one of 'a', 'b'; got 'c'"):
        check_choice("c", "mode", ("a", "b"))
    assert check_choice(len, "mode", ("a",), or_callable=True) is len
