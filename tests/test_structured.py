"""Structured output (``schema=``, SPEC §8.5): both wire formats, repair, SchemaError."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import fanflow as ff
from fanflow.llm import AnthropicChat, OpenAIChat, SchemaError, complete_structured, prompt_task
from fanflow.testing import Script, ScriptedLLM, SimConfig, Simulator


class Verdict(BaseModel):
    verdict: Literal["yes", "no"]
    score: int


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"enum": ["yes", "no"]}, "score": {"type": "integer"}},
    "required": ["verdict", "score"],
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # The first matching pattern wins, searched in the whole conversation.
    scripts = [
        Script("hopeless", {"I think yes.": 1.0}),
        Script("good", {'{"verdict": "yes", "score": 3}': 1.0}),
        # The first answer is missing a field; the repair round (its prompt
        # holds the validation errors) gets a valid one.
        Script("does not match", {'{"verdict": "no", "score": 1}': 1.0}),
        Script("fixable", {'{"verdict": "yes"}': 1.0}),
    ]
    async with Simulator(SimConfig(scripts=scripts)) as server:
        yield server


@pytest.fixture
async def providers(sim: Simulator) -> AsyncIterator[dict[str, Any]]:
    made = {
        "openai": OpenAIChat("m", base_url=sim.url),
        "anthropic": AnthropicChat("m", base_url=sim.url.removesuffix("/v1")),
    }
    yield made
    for llm in made.values():
        await llm.aclose()


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("schema", [Verdict, VERDICT_SCHEMA], ids=["pydantic", "jsonschema"])
async def test_a_structured_answer_over_http(
    sim: Simulator, providers: dict[str, Any], wire: str, schema: Any
) -> None:
    llm = providers[wire]
    completion = await llm.complete("is this good?", schema=schema)
    expected: Any = Verdict(verdict="yes", score=3)
    if isinstance(schema, dict):
        expected = {"verdict": "yes", "score": 3}
    assert completion.parsed == expected
    assert sim.stats["requests"] == 1


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_an_invalid_answer_is_repaired(
    sim: Simulator, providers: dict[str, Any], wire: str
) -> None:
    llm = providers[wire]
    result = await ff.fan_out([prompt_task("j", llm, "fixable", schema=Verdict)])
    assert result.results[0].value == Verdict(verdict="no", score=1)
    # Two requests, both counted; the second carried the validation errors.
    assert sim.stats["requests"] == 2
    assert result.usage is not None and result.usage.requests == 2


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_invalid_twice_is_a_schema_error_quoting_the_errors(
    sim: Simulator, providers: dict[str, Any], wire: str
) -> None:
    llm = providers[wire]
    result = await ff.fan_out(
        [prompt_task("j", llm, "hopeless", schema=Verdict, retry=ff.Retry(attempts=3))],
        raise_on_failure=False,
    )
    outcome = result.results[0]
    assert isinstance(outcome.error, SchemaError) and isinstance(outcome.error, ff.PermanentError)
    assert outcome.attempts == 1  # permanent: the repair round was the retry
    assert "after a repair round" in str(outcome.error)
    assert outcome.error.errors  # quoted
    assert sim.stats["requests"] == 2
    assert result.usage is not None and result.usage.requests == 2


async def test_the_repair_round_tells_the_model_what_was_wrong() -> None:
    llm = ScriptedLLM("m").enqueue(
        {"verdict": "maybe", "score": "x"}, {"verdict": "no", "score": 2}
    )
    completion = await llm.complete("judge", schema=Verdict)
    assert completion.parsed == Verdict(verdict="no", score=2)
    repair = llm.history[1]
    assert repair[1] == {"role": "assistant", "content": '{"verdict": "maybe", "score": "x"}'}
    assert "verdict:" in repair[2]["content"] and "score:" in repair[2]["content"]
    # Usage of the completion covers both rounds.
    assert completion.usage.input_tokens > llm.history[0][0]["content"].__len__() // 4


async def test_repair_zero_fails_at_once() -> None:
    llm = ScriptedLLM("m").enqueue("no json here")
    with pytest.raises(SchemaError, match="no repair round") as caught:
        await llm.complete("judge", schema=Verdict, repair=0)
    assert caught.value.answer == "no json here" and len(llm.history) == 1


async def test_a_model_without_native_support_gets_the_schema_in_a_system_message() -> None:
    class Plain:
        name = "plain"

        def __init__(self) -> None:
            self.seen: list[Any] = []

        async def complete(self, prompt: Any, **params: Any) -> ff.llm.Completion:
            self.seen.append(prompt)
            text = "```json\n" + '{"verdict": "yes", "score": 1}' + "\n```"
            return ff.llm.Completion(text, "plain", ff.llm.TokenUsage(1, 1), 0.0)

    llm = Plain()
    completion = await complete_structured(llm, "judge", Verdict)
    assert completion.parsed == Verdict(verdict="yes", score=1)
    assert llm.seen[0][0]["role"] == "system" and '"verdict"' in llm.seen[0][0]["content"]


def test_a_bad_schema_is_refused_before_anything_runs() -> None:
    llm = ScriptedLLM()
    with pytest.raises(TypeError, match="pydantic model class or a JSON Schema"):
        prompt_task("t", llm, "p", schema=int)
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        prompt_task("t", llm, "p", schema={"type": "no-such-type"})
    assert llm.history == []


async def test_votes_over_structured_answers() -> None:
    answers = [{"verdict": v, "score": 1} for v in ("yes", "no", "yes", "yes", "no")]
    llm = ScriptedLLM("m").enqueue(*answers)
    tasks = [prompt_task(f"j{i}", llm, f"judge {i}", schema=Verdict) for i in range(5)]
    result = await ff.fan_out(
        tasks, strategy=ff.Vote(key=lambda a: a.verdict, early_stop=False), max_concurrency=1
    )
    assert result.value.verdict == "yes"


async def test_a_journal_stores_and_replays_model_instances(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    first = ScriptedLLM("m").enqueue({"verdict": "yes", "score": 4})
    await ff.fan_out([prompt_task("j", first, "judge", schema=Verdict)], journal=db)
    again = ScriptedLLM("m")
    replayed = await ff.fan_out([prompt_task("j", again, "judge", schema=Verdict)], journal=db)
    assert replayed.results[0].replayed and again.history == []
    assert replayed.results[0].value == Verdict(verdict="yes", score=4)
    # Another schema is another task: it runs.
    other = ScriptedLLM("m").enqueue({"verdict": "no", "score": 1})
    changed = await ff.fan_out(
        [prompt_task("j", other, "judge", schema=VERDICT_SCHEMA)], journal=db
    )
    assert not changed.results[0].replayed and changed.results[0].value["verdict"] == "no"


async def test_merge_takes_structured_answers_as_their_fields() -> None:
    llm = ScriptedLLM("m").enqueue(
        {"verdict": "yes", "score": 3},
        {"verdict": "yes", "score": 4},
        {"verdict": "no", "score": 3},
    )
    tasks = [prompt_task(f"j{i}", llm, f"judge {i}", schema=Verdict) for i in range(3)]
    result = await ff.fan_out(tasks, max_concurrency=1)
    merged = ff.merge(result)
    assert merged.value == {"verdict": "yes", "score": 3}
    assert {c.key for c in merged.conflicts} == {"verdict", "score"}
