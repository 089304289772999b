"""ff.ensemble hears every model: samples interleave, so model order does not pick the answer."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fanflow as ff
from fanflow.testing import ScriptedLLM

from .conftest import run_isolated


def _models(patterns: Sequence[Sequence[str]]) -> list[ScriptedLLM]:
    return [ScriptedLLM(f"m{i}").enqueue(*answers) for i, answers in enumerate(patterns)]


def _cast_per_model(result: ff.FanInResult) -> collections.Counter[str]:
    return collections.Counter(r.name.split("#")[0] for r in result.results if r.ok)


async def test_two_unanimous_models_both_vote() -> None:
    # A always says 42, B always 41: counting every vote ties 10-10. Queued
    # model by model, A's ten votes came first and stopped the vote at "42,
    # 10 of 10 cast", with B never heard.
    a = ScriptedLLM("A", default="42")
    b = ScriptedLLM("B", default="41")
    result = await ff.ensemble("q?", [a, b], samples=10)
    assert result.votes is not None and result.votes["42"] == 10.0
    assert result.votes.get("41", 0.0) >= 9.0  # B was heard
    assert len(b.history) >= 9
    # Counting every vote ties 10-10; the tie goes to the answer that reached
    # 10 first (Vote's tie_break="first"), so the early stop may skip B's last.
    full = await ff.ensemble(
        "q?",
        [ScriptedLLM("A", default="42"), ScriptedLLM("B", default="41")],
        samples=10,
        early_stop=False,
    )
    assert full.votes == {"42": 10.0, "41": 10.0}
    assert result.value == full.value == "42"
    swapped = await ff.ensemble(
        "q?", [ScriptedLLM("B", default="41"), ScriptedLLM("A", default="42")], samples=10
    )
    assert swapped.votes is not None and swapped.votes.get("42", 0.0) >= 9.0
    assert swapped.value == "41"  # the documented tie-break, nothing else, follows the order


async def test_early_stop_with_one_model_per_answer_counts_each_model_evenly() -> None:
    # Two models agree on 7, a third says 8: the early stop comes after every
    # model has voted about as often as the others, not after the first alone.
    models = [
        ScriptedLLM("A", default="7"),
        ScriptedLLM("B", default="7"),
        ScriptedLLM("C", default="8"),
    ]
    result = await ff.ensemble("q?", models, samples=6, max_concurrency=1)
    assert result.value == "7"
    cast = _cast_per_model(result)
    assert set(cast) == {"A", "B", "C"}
    assert max(cast.values()) - min(cast.values()) <= 1


_ANSWER = st.sampled_from(["a", "b", "c"])


@st.composite
def _patterns(draw: st.DrawFn) -> list[list[str]]:
    models = draw(st.integers(2, 3))
    samples = draw(st.integers(1, 6))
    return [draw(st.lists(_ANSWER, min_size=samples, max_size=samples)) for _ in range(models)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_patterns(), st.sampled_from([1, 2, 4]))
def test_early_stopped_answer_is_the_full_count_whatever_the_model_order(
    patterns: list[list[str]], concurrency: int
) -> None:
    samples = len(patterns[0])

    async def vote(order: Sequence[Sequence[str]], early: bool) -> ff.FanInResult:
        return await ff.ensemble(
            "q?", _models(order), samples=samples, early_stop=early, max_concurrency=concurrency
        )

    early = run_isolated(vote(patterns, True))
    full = run_isolated(vote(patterns, False))
    swapped = run_isolated(vote(patterns[::-1], True))
    assert early.value == full.value  # exact early stop: the full count's answer
    tally = collections.Counter(a for answers in patterns for a in answers)
    assert full.votes == {k: float(v) for k, v in tally.items()}
    top = max(tally.values())
    leaders = [k for k, v in tally.items() if v == top]
    if len(leaders) == 1:
        assert early.value == swapped.value == leaders[0]
    else:
        # Documented tie-breaking: the tied answer that reached the tie first.
        assert early.value in leaders and swapped.value in leaders
    # Every model is heard about as often as the others when the vote stops
    # (one sample in flight at a time: exactly round-robin).
    if concurrency == 1:
        cast = _cast_per_model(early)
        counts = [cast.get(f"m{i}", 0) for i in range(len(patterns))]
        assert max(counts) - min(counts) <= 1, counts
