"""ensemble, fan_map, synthesize and merge: the shared options, keyword-only (SPEC §8.2)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

import pytest

import fanflow as ff
from fanflow._options import DEFAULTS
from fanflow.testing import ScriptedLLM


async def value(v: Any) -> Any:
    return v


async def sleepy(x: int) -> int:
    await asyncio.sleep(0.05)
    return x


@pytest.mark.parametrize("verb", [ff.ensemble, ff.fan_map])
def test_shared_options_have_the_one_default(verb: Any) -> None:
    params = inspect.signature(verb).parameters
    shared = [name for name in params if name in DEFAULTS]
    assert "max_concurrency" in shared and "timeout" in shared and "deadline" in shared
    for name in shared:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == DEFAULTS[name], name


async def test_ensemble_default_puts_every_sample_in_flight() -> None:
    in_flight = peak = 0

    class Slow(ScriptedLLM):
        async def complete(self, prompt: Any, **params: Any) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return await super().complete(prompt, **params)

    result = await ff.ensemble("q?", Slow("m", default="7"), samples=12, early_stop=False)
    assert result.value == "7" and peak == 12
    peak = 0
    await ff.ensemble("q?", Slow("m", default="7"), samples=12, max_concurrency=4)
    assert peak == 4


@pytest.mark.parametrize("option", ["strategy", "executor", "audit"])
async def test_ensemble_refuses_an_option_it_does_not_take(option: Any) -> None:
    llm = ScriptedLLM(default="7")
    with pytest.raises(TypeError, match=f"ensemble\\(\\) does not take the option '{option}'"):
        await ff.ensemble("q?", llm, samples=2, **{option: DEFAULTS[option]})
    assert llm.history == []


async def test_ensemble_checks_shared_options_like_fan_out() -> None:
    llm = ScriptedLLM(default="7")
    with pytest.raises(TypeError, match="max_concurrency"):
        await ff.ensemble("q?", llm, max_concurrency="4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        await ff.ensemble("q?", llm, max_concurrency=0)
    with pytest.raises(TypeError, match="on_event"):
        await ff.ensemble("q?", llm, on_event=42)  # type: ignore[arg-type]
    assert llm.history == []
    seen: list[dict[str, Any]] = []

    class Recording(ScriptedLLM):
        async def complete(self, prompt: Any, **params: Any) -> Any:
            seen.append(params)
            return await super().complete(prompt, **params)

    events: list[ff.Event] = []
    result = await ff.ensemble(
        "q?", Recording(default="7"), samples=2, on_event=events.append, temperature=0.5
    )
    assert result.value == "7" and events
    assert [p["temperature"] for p in seen] == [0.5, 0.5]  # model parameters pass through


async def test_ensemble_samples_by_position_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match=r"samples=\.\.\."):
        result = await ff.ensemble("q?", ScriptedLLM(default="7"), 3, early_stop=False)  # type: ignore[misc]
    assert len(result.results) == 3
    with pytest.raises(TypeError, match="keyword-only"):
        await ff.ensemble("q?", ScriptedLLM(default="7"), 3, 4)  # type: ignore[misc]


async def test_synthesize_and_merge_options_by_position_are_deprecated() -> None:
    result = await ff.fan_out(
        [ff.Task("a", value, args=({"k": 1},)), ff.Task("b", value, args=({"k": 2},))]
    )
    with pytest.warns(DeprecationWarning, match=r"conflict_strategy=\.\.\., template=\.\.\."):
        synthesis = await ff.synthesize(
            result, ScriptedLLM(), "recency", "Rule: {conflict_strategy}"
        )
    assert synthesis.prompt == "Rule: recency"
    with pytest.raises(TypeError, match="multiple values for 'conflict_strategy'"):
        await ff.synthesize(result, ScriptedLLM(), "recency", conflict_strategy="x")
    with pytest.warns(DeprecationWarning, match=r"pass conflict=\.\.\."):
        merged = ff.merge(result, "first")
    assert merged.value == {"k": 1}
    with pytest.warns(DeprecationWarning, match="merge"):
        assert ff.merge(result, "priority", priority=["b"]).value == {"k": 2}
    with pytest.raises(TypeError, match="keyword-only"):
        ff.merge(result, "first", "x")
    assert ff.merge(result, conflict="first").value == {"k": 1}


@pytest.mark.parametrize("option", ["strategy", "audit", "raise_on_failure", "progress"])
def test_fan_map_refuses_an_option_it_does_not_take(option: str) -> None:
    with pytest.raises(TypeError, match=repr(option)):
        ff.fan_map(sleepy, range(3), **{option: DEFAULTS[option]})


def test_fan_map_refuses_an_unbounded_window() -> None:
    with pytest.raises(TypeError, match="max_concurrency=None"):
        ff.fan_map(sleepy, itertools.count(), max_concurrency=None)  # type: ignore[arg-type]


async def test_fan_map_deadline_ends_an_endless_stream() -> None:
    statuses: list[str] = []
    async with ff.fan_map(sleepy, itertools.count(), max_concurrency=5, deadline=0.12) as results:
        async for r in results:
            statuses.append(r.status.value)
    assert "ok" in statuses and "timeout" in statuses
    assert statuses.count("timeout") <= 5
    with pytest.raises(TypeError, match="deadline"):
        ff.fan_map(sleepy, range(3), deadline="1")  # type: ignore[arg-type]
