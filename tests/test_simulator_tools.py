"""The simulator's structured answers and scripted tool calls, over loopback HTTP with the SDKs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anthropic
import openai
import pydantic
import pytest

from fanflow.testing import AgentScript, Latency, Script, SimConfig, Simulator, minimal_instance

FAST = Latency(median=0.0)


class Address(pydantic.BaseModel):
    street: str
    number: int


class Verdict(pydantic.BaseModel):
    verdict: Literal["yes", "no"]
    confidence: float = pydantic.Field(ge=0.5, le=1.0)
    reasons: list[str] = pydantic.Field(min_length=2)
    address: Address
    maybe: Address | None
    tags: list[str] = []
    flag: bool
    note: str = "optional"


@asynccontextmanager
async def clients(
    config: SimConfig,
) -> AsyncIterator[tuple[Simulator, openai.AsyncOpenAI, anthropic.AsyncAnthropic]]:
    async with Simulator(config) as sim:
        oa = openai.AsyncOpenAI(base_url=sim.url, api_key="x", max_retries=0)
        an = anthropic.AsyncAnthropic(
            base_url=sim.url.removesuffix("/v1"), api_key="x", max_retries=0
        )
        try:
            yield sim, oa, an
        finally:
            await oa.close()
            await an.close()


def json_schema_format(model: type[pydantic.BaseModel]) -> Any:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": model.__name__,
            "schema": model.model_json_schema(),
            "strict": False,
        },
    }


# --- minimal instances ------------------------------------------------------------------------


def test_minimal_instance_of_a_pydantic_schema() -> None:
    instance = minimal_instance(Verdict.model_json_schema())
    assert instance == {
        "verdict": "yes",
        "confidence": 0.5,
        "reasons": ["simulated", "simulated"],
        "address": {"street": "simulated", "number": 0},
        "maybe": {"street": "simulated", "number": 0},
        "flag": False,
    }
    Verdict.model_validate(instance)


def test_minimal_instance_keywords() -> None:
    assert minimal_instance({"type": "integer", "exclusiveMinimum": 3}) == 4
    assert minimal_instance({"type": "number", "maximum": -2}) == -2
    assert minimal_instance({"const": 7}) == 7
    assert minimal_instance({"oneOf": [{"type": "boolean"}, {"type": "string"}]}) is False
    assert minimal_instance({"type": ["null", "string"]}) == "simulated"
    assert minimal_instance({"type": "string", "minLength": 12}) == "simulatedxxx"
    assert minimal_instance({"type": "string", "maxLength": 3}) == "sim"
    assert minimal_instance({"type": "array", "items": {"type": "integer"}}) == []
    assert minimal_instance({}) is None
    with pytest.raises(ValueError, match="does not resolve"):
        minimal_instance({"$ref": "#/$defs/Missing"})
    node = {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}, "required": ["n"]}
    recursive = {"$defs": {"N": node}, "$ref": "#/$defs/N"}
    with pytest.raises(ValueError, match="no finite instance"):
        minimal_instance(recursive)


# --- structured output ------------------------------------------------------------------------


async def test_openai_json_schema_without_a_script_gets_the_minimal_instance() -> None:
    async with clients(SimConfig(latency=FAST)) as (sim, oa, _):
        response = await oa.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "judge this"}],
            response_format=json_schema_format(Verdict),
        )
        text = response.choices[0].message.content
        assert text is not None
        verdict = Verdict.model_validate_json(text)
        assert verdict.address == Address(street="simulated", number=0)
        assert response.choices[0].finish_reason == "stop"
        assert response.usage is not None and response.usage.completion_tokens == len(text) // 4
        assert sim.stats["structured"] == 1


async def test_openai_json_schema_answers_from_the_script() -> None:
    config = SimConfig(latency=FAST, scripts=[Script("judge", {'{"verdict": "no"}': 1.0})])
    async with clients(config) as (_, oa, _):
        response = await oa.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "please judge"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "v", "schema": {"type": "object"}, "strict": True},
            },
        )
        assert response.choices[0].message.content == '{"verdict": "no"}'


async def test_openai_json_object_keeps_the_default_answer() -> None:
    async with clients(SimConfig(latency=FAST)) as (_, oa, _):
        response = await oa.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "anything"}],
            response_format={"type": "json_object"},
        )
        assert response.choices[0].message.content == "Simulated answer to: anything"


async def test_anthropic_forced_tool_answers_from_the_script() -> None:
    config = SimConfig(
        latency=FAST,
        scripts=[Script("judge", {'{"verdict": "yes"}': 1.0}), Script("plain", {"not json": 1.0})],
    )
    tool: Any = {"name": "answer", "description": "d", "input_schema": Verdict.model_json_schema()}
    async with clients(config) as (_, _, an):
        for prompt, expected in [
            ("judge it", {"verdict": "yes"}),
            ("plain it", {"text": "not json"}),
        ]:
            response = await an.messages.create(
                model="c",
                max_tokens=100,
                messages=[{"role": "user", "content": prompt}],
                tools=[tool],
                tool_choice={"type": "tool", "name": "answer"},
            )
            assert response.stop_reason == "tool_use"
            [block] = response.content
            assert block.type == "tool_use"
            assert block.name == "answer" and block.input == expected
            assert block.id.startswith("toolu_sim_")
            assert response.usage.output_tokens == max(1, len(json.dumps(expected)) // 4)


async def test_anthropic_forced_tool_without_a_script_gets_the_minimal_instance() -> None:
    tool: Any = {"name": "answer", "description": "d", "input_schema": Verdict.model_json_schema()}
    async with clients(SimConfig(latency=FAST, seed=3)) as (sim, _, an):
        response = await an.messages.create(
            model="c",
            max_tokens=100,
            system="be a judge",
            messages=[{"role": "user", "content": "hello"}],
            tools=[tool],
            tool_choice={"type": "tool", "name": "answer"},
        )
        [block] = response.content
        assert block.type == "tool_use"
        assert Verdict.model_validate(block.input).reasons == ["simulated", "simulated"]
        assert block.id == "toolu_sim_1"
        assert sim.stats["structured"] == 1 and sim.stats["tool_calls"] == 0


async def test_anthropic_forcing_a_tool_not_offered_is_a_400() -> None:
    tool: Any = {"name": "answer", "description": "d", "input_schema": {"type": "object"}}
    async with clients(SimConfig(latency=FAST)) as (sim, _, an):
        with pytest.raises(anthropic.BadRequestError, match="'other' is not among the tools"):
            await an.messages.create(
                model="c",
                max_tokens=100,
                messages=[{"role": "user", "content": "hello"}],
                tools=[tool],
                tool_choice={"type": "tool", "name": "other"},
            )
        assert sim.stats["requests"] == 0


# --- agents -----------------------------------------------------------------------------------

STEPS = [
    [{"name": "search", "arguments": {"q": "capital of France"}}],
    [{"name": "fetch", "arguments": {"url": "http://example.com/paris"}}],
    [{"name": "search", "arguments": {"q": "population", "limit": 3}}],
]
AGENT = AgentScript("capital", STEPS, answer="Paris.")


def openai_tools(*names: str) -> Any:
    return [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in names
    ]


def anthropic_tools(*names: str) -> Any:
    return [{"name": n, "description": n, "input_schema": {"type": "object"}} for n in names]


async def test_openai_agent_script_three_turns() -> None:
    config = SimConfig(latency=FAST, agents=[AGENT], scripts=[Script(".", {"scripted": 1.0})])
    async with clients(config) as (sim, oa, _):
        messages: list[Any] = [
            {"role": "system", "content": "you are an agent"},
            {"role": "user", "content": "What is the capital?"},
        ]
        seen: list[tuple[str, str, dict[str, Any]]] = []
        for _ in range(10):
            response = await oa.chat.completions.create(
                model="m", messages=messages, tools=openai_tools("search", "fetch")
            )
            choice = response.choices[0]
            if choice.finish_reason != "tool_calls":
                break
            assert choice.message.content is None
            calls = choice.message.tool_calls or []
            messages.append(choice.message.model_dump(exclude_none=True))
            for call in calls:
                assert call.type == "function"
                arguments = json.loads(call.function.arguments)
                seen.append((call.id, call.function.name, arguments))
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": f"result of {call.id}"}
                )
        assert seen == [
            ("call_0_0", "search", {"q": "capital of France"}),
            ("call_1_0", "fetch", {"url": "http://example.com/paris"}),
            ("call_2_0", "search", {"q": "population", "limit": 3}),
        ]
        assert choice.finish_reason == "stop" and choice.message.content == "Paris."
        assert sim.stats["tool_calls"] == 3 and sim.stats["agent_turns"] == 4
        assert sim.stats["requests"] == 4 and sim.stats["200"] == 4


async def test_anthropic_agent_script_three_turns() -> None:
    config = SimConfig(latency=FAST, agents=[AGENT])
    async with clients(config) as (sim, _, an):
        messages: list[Any] = [{"role": "user", "content": "What is the capital?"}]
        seen: list[tuple[str, str, object]] = []
        for _ in range(10):
            response = await an.messages.create(
                model="c",
                max_tokens=100,
                messages=messages,
                tools=anthropic_tools("search", "fetch"),
                tool_choice={"type": "auto"},
            )
            if response.stop_reason != "tool_use":
                break
            messages.append(
                {"role": "assistant", "content": [b.model_dump() for b in response.content]}
            )
            results: list[Any] = []
            for block in response.content:
                assert block.type == "tool_use"
                seen.append((block.id, block.name, block.input))
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": block.id,
                        "content": [{"type": "text", "text": f"result of {block.id}"}],
                        "is_error": False,
                    }
                )
            messages.append({"role": "user", "content": results})
        assert seen == [
            ("toolu_0_0", "search", {"q": "capital of France"}),
            ("toolu_1_0", "fetch", {"url": "http://example.com/paris"}),
            ("toolu_2_0", "search", {"q": "population", "limit": 3}),
        ]
        assert response.stop_reason == "end_turn"
        assert [(b.type, getattr(b, "text", None)) for b in response.content] == [
            ("text", "Paris.")
        ]
        assert sim.stats["tool_calls"] == 3 and sim.stats["agent_turns"] == 4


async def test_parallel_tool_calls_in_one_turn() -> None:
    agent = AgentScript(
        "both",
        [[{"name": "a", "arguments": {"i": 1}}, {"name": "b"}]],
        answer="done",
    )
    async with clients(SimConfig(latency=FAST, agents=[agent])) as (sim, oa, an):
        response = await oa.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "do both"}],
            tools=openai_tools("a", "b"),
        )
        calls = response.choices[0].message.tool_calls or []
        assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
            ("call_0_0", "a", '{"i": 1}'),
            ("call_0_1", "b", "{}"),
        ]
        reply = await an.messages.create(
            model="c",
            max_tokens=10,
            messages=[{"role": "user", "content": "do both"}],
            tools=anthropic_tools("a", "b"),
        )
        assert [(b.id, b.name, b.input) for b in reply.content if b.type == "tool_use"] == [
            ("toolu_0_0", "a", {"i": 1}),
            ("toolu_0_1", "b", {}),
        ]
        assert sim.stats["tool_calls"] == 4 and sim.stats["agent_turns"] == 2


async def test_a_tool_not_offered_is_a_400() -> None:
    async with clients(SimConfig(latency=FAST, agents=[AGENT])) as (sim, oa, an):
        with pytest.raises(openai.BadRequestError, match="'fetch', which the request does not"):
            await oa.chat.completions.create(
                model="m",
                messages=[
                    {"role": "user", "content": "capital?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_0_0",
                                "type": "function",
                                "function": {"name": "search", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_0_0", "content": "r"},
                ],
                tools=openai_tools("search"),
            )
        with pytest.raises(anthropic.BadRequestError, match="calls the tool 'search'"):
            await an.messages.create(
                model="c",
                max_tokens=10,
                messages=[{"role": "user", "content": "capital?"}],
                tools=anthropic_tools("fetch"),
            )
        assert sim.stats["requests"] == 0


async def test_agents_need_tools_and_a_matching_first_user_message() -> None:
    config = SimConfig(latency=FAST, agents=[AGENT])
    async with clients(config) as (sim, oa, an):
        no_tools = await oa.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "capital?"}]
        )
        assert no_tools.choices[0].message.content == "Simulated answer to: capital?"
        # The pattern is searched in the first user message only, not the system prompt.
        other = await an.messages.create(
            model="c",
            max_tokens=10,
            system="capital",
            messages=[{"role": "user", "content": "hello"}],
            tools=anthropic_tools("search"),
        )
        assert [b.type for b in other.content] == ["text"]
        assert other.stop_reason == "end_turn"
        assert sim.stats["agent_turns"] == 0


async def test_agent_requests_get_failure_injection_and_their_latency() -> None:
    agent = AgentScript("capital", STEPS, answer="Paris.", step_latency=Latency(median=0.0))
    config = SimConfig(latency=Latency(median=60.0, sigma=0), fail_first=1, agents=[agent])
    async with clients(config) as (sim, oa, _):
        request: Any = {
            "model": "m",
            "messages": [{"role": "user", "content": "capital?"}],
            "tools": openai_tools("search", "fetch"),
        }
        with pytest.raises(openai.RateLimitError):
            await oa.chat.completions.create(**request)
        response = await oa.chat.completions.create(**request)
        calls = response.choices[0].message.tool_calls or []
        assert [c.id for c in calls] == ["call_0_0"]
        assert sim.stats["429"] == 1 and sim.stats["200"] == 1 and sim.stats["tool_calls"] == 1


# --- conversations with tool calls --------------------------------------------------------------


async def test_tool_conversations_are_read_and_scripts_match_tool_results() -> None:
    config = SimConfig(
        latency=FAST,
        scripts=[Script("the secret is 42", {"found it": 1.0})],
        default_answer="no match",
    )
    async with clients(config) as (_, oa, an):
        response = await oa.chat.completions.create(
            model="m",
            messages=[
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x": 1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "the secret is 42"},
            ],
        )
        assert response.choices[0].message.content == "found it"
        reply = await an.messages.create(
            model="c",
            max_tokens=10,
            messages=[
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "the secret is 42"}
                    ],
                },
            ],
        )
        assert [getattr(b, "text", None) for b in reply.content] == ["found it"]
        plain = await an.messages.create(
            model="c",
            max_tokens=10,
            messages=[
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "nothing"}],
                            "is_error": True,
                        }
                    ],
                },
            ],
        )
        assert [getattr(b, "text", None) for b in plain.content] == ["no match"]


async def test_tool_calls_without_results_are_a_400() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    async with clients(SimConfig(latency=FAST)) as (sim, oa, an):
        with pytest.raises(openai.BadRequestError, match="without results"):
            await oa.chat.completions.create(
                model="m",
                messages=[
                    {"role": "user", "content": "go"},
                    {"role": "assistant", "content": None, "tool_calls": [call]},  # type: ignore[list-item]
                    {"role": "user", "content": "again"},
                ],
            )
        with pytest.raises(openai.BadRequestError, match="'nope', which no preceding"):
            await oa.chat.completions.create(
                model="m",
                messages=[
                    {"role": "user", "content": "go"},
                    {"role": "tool", "tool_call_id": "nope", "content": "r"},
                ],
            )
        with pytest.raises(anthropic.BadRequestError, match="without results"):
            await an.messages.create(
                model="c",
                max_tokens=10,
                messages=[
                    {"role": "user", "content": "go"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                    },
                    {"role": "user", "content": "no result"},
                ],
            )
        assert sim.stats["requests"] == 0


async def test_plain_answers_are_unchanged() -> None:
    config = SimConfig(latency=FAST, scripts=[Script("hello", {"hi there": 1.0})])
    async with clients(config) as (sim, oa, an):
        response = await oa.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}]
        )
        assert response.model == "simulated:m"
        assert response.choices[0].message.content == "hi there"
        assert response.choices[0].message.tool_calls is None
        assert response.choices[0].finish_reason == "stop"
        assert response.usage is not None and response.usage.completion_tokens == 2
        reply = await an.messages.create(
            model="c", max_tokens=10, messages=[{"role": "user", "content": "other"}]
        )
        assert reply.model == "simulated:c" and reply.stop_reason == "end_turn"
        assert [getattr(b, "text", None) for b in reply.content] == ["Simulated answer to: other"]
        assert reply.usage.output_tokens == len("Simulated answer to: other") // 4
        assert sim.stats["structured"] == 0 and sim.stats["agent_turns"] == 0
