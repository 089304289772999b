"""SPEC §8.2: one set of options, checked the same way by every verb."""

from __future__ import annotations

import concurrent.futures
import math
import re
from collections.abc import Callable
from typing import Any

import pytest

import fanflow as ff
from fanflow import _options
from fanflow._options import DEFAULTS, FanOutOptions, resolve

from .conftest import run_isolated

STARTED: list[str] = []


async def noop() -> None:
    STARTED.append("noop")


@pytest.fixture(autouse=True)
def _nothing_started() -> Any:
    STARTED.clear()
    yield
    assert STARTED == []  # every bad option is refused before any task runs


def tasks() -> list[ff.Task]:
    return [ff.Task("a", noop), ff.Task("b", noop)]


def call_fan_out(**options: Any) -> Any:
    return run_isolated(ff.fan_out(tasks(), **options))


def call_run(**options: Any) -> Any:
    return ff.run(tasks(), **options)


def call_as_completed(**options: Any) -> Any:
    return ff.as_completed(tasks(), **options)


VERBS: dict[str, Callable[..., Any]] = {
    "fan_out": call_fan_out,
    "run": call_run,
    "as_completed": call_as_completed,
}

#: option, bad value, exception, what the message says (a regex).
BAD = [
    ("max_concurrency", "4", TypeError, r"^max_concurrency must be an int, .*got '4'$"),
    ("max_concurrency", 2.5, TypeError, r"^max_concurrency must be an int, .*got 2\.5$"),
    ("max_concurrency", True, TypeError, r"^max_concurrency must be an int, .*got True$"),
    ("max_concurrency", 0, ValueError, r"^max_concurrency must be >= 1; got 0$"),
    ("max_concurrency", -3, ValueError, r"^max_concurrency must be >= 1; got -3$"),
    ("timeout", -1, ValueError, r"^timeout must be >= 0 seconds; got -1$"),
    ("timeout", math.nan, ValueError, r"^timeout must be >= 0 seconds; got nan$"),
    ("timeout", "1", TypeError, r"^timeout must be a number of seconds or None; got '1'$"),
    ("deadline", "x", TypeError, r"^deadline must be a number of seconds or None; got 'x'$"),
    ("deadline", -0.5, ValueError, r"^deadline must be >= 0 seconds; got -0\.5$"),
    ("retry", 3, TypeError, r"^retry must be an ff\.Retry or None; got 3$"),
    ("hedge", 3, TypeError, r"^hedge must be an ff\.Hedge or None; got 3$"),
    ("rate_limit", 3, TypeError, r"^rate_limit must be an ff\.RateLimit or None; got 3$"),
    ("on_event", 3, TypeError, r"^on_event must be callable; got 3$"),
    ("audit", "nope", ValueError, r"^audit must be one of 'error', 'warn', 'strict', 'off'"),
    ("audit", 3, TypeError, r"^audit must be one of .*got 3$"),
    ("executor", "bogus", ValueError, r"^executor must be .*got 'bogus'$"),
    ("executor", 3, TypeError, r"^executor must be .*got 3$"),
    ("progress", "yes", TypeError, r"^progress must be True or False; got 'yes'$"),
    ("raise_on_failure", "no", TypeError, r"^raise_on_failure must be True or False"),
    ("strategy", 3, TypeError, r"^strategy must be an ff\.Strategy .*got 3$"),
    (
        "strategy",
        ff.BestEffort,
        TypeError,
        r"^strategy must be a strategy object, not the class BestEffort\. "
        r"HINT: call it, e\.g\. strategy=ff\.BestEffort\(\)$",
    ),
]


def _ids(row: tuple[Any, ...]) -> str:
    name, value = row[0], row[1]
    shown = value.__name__ if isinstance(value, type) else repr(value)
    return f"{name}={shown}"


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize(("option", "value", "error", "message"), BAD, ids=map(_ids, BAD))
def test_a_bad_option_is_refused_the_same_way_by_every_verb(
    verb: str, option: str, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        VERBS[verb](**{option: value})
    assert type(caught.value) is error
    assert option in str(caught.value)


@pytest.mark.parametrize(("option", "value", "error", "message"), BAD, ids=map(_ids, BAD))
def test_every_verb_gives_the_same_message(
    option: str, value: Any, error: type[Exception], message: str
) -> None:
    seen = set()
    for call in VERBS.values():
        with pytest.raises(error) as caught:
            call(**{option: value})
        seen.add((type(caught.value), str(caught.value)))
    assert len(seen) == 1


@pytest.mark.parametrize("verb", list(VERBS))
def test_an_unknown_option_is_a_type_error_naming_it_and_the_verb(verb: str) -> None:
    with pytest.raises(TypeError, match=rf"^{verb}\(\) got an unexpected option 'foo'") as caught:
        VERBS[verb](foo=1)
    # The message lists the options the verb does take.
    for name in DEFAULTS:
        assert name in str(caught.value)


@pytest.mark.parametrize("verb", list(VERBS))
def test_the_first_bad_option_checked_is_reported_even_among_good_ones(verb: str) -> None:
    with pytest.raises(ValueError, match=r"^max_concurrency must be >= 1"):
        VERBS[verb](max_concurrency=0, timeout=1, retry=ff.Retry(), audit="warn")


def test_good_options_are_accepted_by_every_verb() -> None:
    options: dict[str, Any] = {
        "strategy": ff.AllOrNothing(),
        "max_concurrency": None,
        "timeout": 1,
        "deadline": 5.0,
        "retry": ff.Retry(attempts=2),
        "hedge": None,
        "rate_limit": None,
        "executor": "async",
        "on_event": lambda event: None,
        "progress": False,
        "audit": "warn",
        "raise_on_failure": True,
        "budget": ff.Budget(tokens=10**9),
        "journal": None,
    }
    assert set(options) == set(DEFAULTS)
    stream = call_as_completed(**options)
    assert isinstance(stream, ff.as_completed)

    # Running needs tasks that run: use ones that record nothing.
    async def quiet() -> int:
        return 1

    plain = [ff.Task("a", quiet), ff.Task("b", quiet)]
    assert run_isolated(ff.fan_out(plain, **options)).ok
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # asyncio.run off this thread
        assert pool.submit(ff.run, plain, **options).result().ok


# -- one declaration, one default each -------------------------------------------


def test_one_default_per_option_and_one_declaration() -> None:
    assert set(FanOutOptions.__annotations__) == set(DEFAULTS)
    assert len(DEFAULTS) == len(set(DEFAULTS))
    assert dict(DEFAULTS) == {
        "strategy": None,
        "max_concurrency": 100,
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


def test_every_option_is_documented_in_the_module_docstring() -> None:
    doc = _options.__doc__ or ""
    for name in DEFAULTS:
        assert re.search(rf"``{name}``", doc), name


def test_the_defaults_are_what_the_verbs_run_with() -> None:
    resolved = resolve("fan_out", {})
    assert type(resolved.strategy) is ff.BestEffort
    assert resolved.settings.limit == 100
    assert resolved.settings.timeout is None and resolved.settings.deadline is None
    assert resolved.settings.retry is None and resolved.settings.hedge is None
    assert resolved.settings.rate_limit is None and resolved.settings.on_event is None
    assert type(resolved.settings.executor) is ff.executors.Async
    assert resolved.audit == "error"
    assert resolved.progress is False and resolved.raise_on_failure is True


def test_resolve_refuses_an_option_a_verb_does_not_take() -> None:
    with pytest.raises(TypeError, match=r"^fan_map\(\) does not take the option 'strategy'$"):
        resolve("fan_map", {"strategy": ff.BestEffort()}, takes=("max_concurrency",))


def test_raise_on_failure_defaults_to_true() -> None:
    # raise_on_failure=False returns the failed result instead of raising.
    async def boom() -> None:
        raise RuntimeError("boom")

    result = run_isolated(ff.fan_out([ff.Task("x", boom)], raise_on_failure=False))
    assert result.ok is False
    with pytest.raises(ff.StrategyFailed):
        run_isolated(ff.fan_out([ff.Task("x", boom)]))


# -- fan_map ---------------------------------------------------------------------


def test_fan_map_rejects_an_option_it_does_not_take() -> None:
    with pytest.raises(TypeError, match="'strategy'"):
        ff.fan_map(str, [1], strategy=ff.BestEffort())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'foo'"):
        ff.fan_map(str, [1], foo=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [row for row in BAD if row[0] in ("timeout", "retry", "rate_limit", "on_event", "executor")]
    + [row for row in BAD if row[0] == "max_concurrency" and row[2] is ValueError],
    ids=lambda value: None,
)
def test_fan_map_checks_the_options_it_shares_the_same_way(
    option: str, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ff.fan_map(str, [1], **{option: value})
