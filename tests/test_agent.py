"""Agent subtasks (``ff.llm.agent_task``, SPEC §8.5): the tool loop, its errors, its stops."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import fanflow as ff
from fanflow.llm import AgentError, AgentResult, ToolCall, agent_task, tool_spec
from fanflow.testing import ScriptedLLM


def add(a: int, b: int = 1) -> int:
    """Add two numbers.

    More text that is not the description.
    """
    return a + b


async def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def broken(x: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot do {x}")


async def test_the_loop_runs_tools_and_returns_the_final_answer() -> None:
    llm = ScriptedLLM("m").enqueue(
        ToolCall("c1", "add", {"a": 2, "b": 3}),
        [ToolCall("c2", "lookup", {"key": "k"}), ToolCall("c3", "add", {"a": 7})],
        "five, value of k, eight",
    )
    result = await ff.fan_out([agent_task("ag", llm, "compute", tools=[add, lookup])])
    value = result.results[0].value
    assert isinstance(value, AgentResult)
    assert value.text == "five, value of k, eight" and value.steps == 3
    assert [(c.name, c.result, c.error) for c in value.tool_calls] == [
        ("add", 5, None),
        ("lookup", "value of k", None),
        ("add", 8, None),
    ]
    # The model heard each result back under its call's id, in order.
    last = llm.history[-1]
    assert [(m["role"], m.get("tool_call_id"), m["content"]) for m in last[-2:]] == [
        ("tool", "c2", "value of k"),
        ("tool", "c3", "8"),
    ]
    assert last[-3]["tool_calls"][0]["name"] == "lookup"
    # Every step is a request of the task, counted in usage.
    assert result.usage is not None and result.usage.requests == 3
    # The tools were described from their signatures and docstrings.
    assert llm.requests[0]["tools"] == [tool_spec(add), tool_spec(lookup)]


def test_tools_are_described_from_signature_and_docstring() -> None:
    spec = tool_spec(add)
    assert spec["name"] == "add" and spec["description"] == "Add two numbers."
    assert spec["parameters"]["required"] == ["a"]
    assert spec["parameters"]["properties"]["a"]["type"] == "integer"
    assert spec["parameters"]["properties"]["b"]["default"] == 1

    def spread(*args: int) -> None:
        """Takes anything."""

    with pytest.raises(TypeError, match=r"\*args"):
        tool_spec(spread)
    with pytest.raises(TypeError, match="must be a function"):
        tool_spec(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_steps"):
        agent_task("a", ScriptedLLM(), "p", tools=[add], max_steps=0)


def test_two_tools_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        agent_task("a", ScriptedLLM(), "p", tools=[add, add])


async def test_errors_go_back_to_the_model_as_error_results() -> None:
    llm = ScriptedLLM("m").enqueue(
        [
            ToolCall("c1", "broken", {"x": "it"}),
            ToolCall("c2", "add", {"a": "not a number"}),
            ToolCall("c3", "nosuch", {}),
        ],
        "recovered",
    )
    result = await ff.fan_out([agent_task("ag", llm, "p", tools=[add, broken])])
    value = result.results[0].value
    assert value.text == "recovered"
    errors = [c.error for c in value.tool_calls]
    assert errors[0] == "ValueError: cannot do it"
    assert errors[1] is not None and errors[1].startswith("invalid arguments: a:")
    assert errors[2] == "there is no tool named 'nosuch'"
    sent = [m for m in llm.history[-1] if m["role"] == "tool"]
    assert all(m["is_error"] for m in sent)
    assert sent[0]["content"] == "error: ValueError: cannot do it"


async def test_max_steps_reached_is_a_task_error_saying_so() -> None:
    llm = ScriptedLLM("m").enqueue(*[ToolCall(f"c{i}", "add", {"a": i}) for i in range(5)])
    result = await ff.fan_out(
        [agent_task("ag", llm, "p", tools=[add], max_steps=3)], raise_on_failure=False
    )
    outcome = result.results[0]
    assert outcome.status is ff.Status.ERROR and isinstance(outcome.error, AgentError)
    assert "max_steps=3" in str(outcome.error) and "add, add, add" in str(outcome.error)
    assert outcome.attempts == 1  # permanent: not retried
    assert len(llm.history) == 3


class Verdict(BaseModel):
    verdict: str
    confidence: float


async def test_a_schema_for_the_final_answer() -> None:
    llm = ScriptedLLM("m").enqueue(
        ToolCall("c1", "lookup", {"key": "k"}),
        "it is fine",
        {"verdict": "fine"},  # missing confidence: repaired
        {"verdict": "fine", "confidence": 0.9},
    )
    result = await ff.fan_out([agent_task("ag", llm, "p", tools=[lookup], schema=Verdict)])
    value = result.results[0].value
    assert value.parsed == Verdict(verdict="fine", confidence=0.9)
    assert value.steps == 3 and result.usage is not None and result.usage.requests == 4


async def test_a_timeout_mid_tool_stops_the_tool_and_the_loop() -> None:
    started: list[str] = []
    finished: list[str] = []

    async def slow(x: str) -> str:
        """Takes long."""
        started.append(x)
        await asyncio.sleep(30)
        finished.append(x)
        return x

    llm = ScriptedLLM("m").enqueue(ToolCall("c1", "slow", {"x": "a"}), ToolCall("c2", "slow", {}))
    result = await ff.fan_out(
        [agent_task("ag", llm, "p", tools=[slow], timeout=0.2)], raise_on_failure=False
    )
    assert result.results[0].status is ff.Status.TIMEOUT
    assert started == ["a"] and finished == []
    assert len(llm.history) == 1  # no model call after the stop
    # The step already made is wasted: the task lost.
    assert result.usage is not None and sum(u.requests for u in result.usage.wasted.values()) == 1


async def test_first_n_winner_stops_the_other_agents_before_their_next_tool() -> None:
    calls: list[str] = []

    async def step(who: str) -> str:
        """One step of work."""
        calls.append(who)
        await asyncio.sleep(0.05 if who == "fast" else 0.2)
        return who

    def agent(who: str, n: int) -> ff.Task:
        script: list[Any] = [ToolCall(f"{who}{i}", "step", {"who": who}) for i in range(n)]
        llm = ScriptedLLM(who).enqueue(*script, f"{who} done")
        return agent_task(who, llm, "work", tools=[step])

    result = await ff.fan_out(
        [agent("fast", 1), agent("slow1", 5), agent("slow2", 5)], strategy=ff.FirstN(1)
    )
    assert result.value == [] or result.results[0].ok
    assert result.results[0].value.text == "fast done"
    assert [r.status for r in result.results[1:]] == [ff.Status.CANCELLED] * 2
    count = len(calls)
    await asyncio.sleep(0.5)
    assert len(calls) == count  # no tool call started after the winner returned
    assert calls.count("slow1") == 1 and calls.count("slow2") == 1


async def test_journal_replays_an_agent_without_asking_again(tmp_path: Path) -> None:
    def tasks(llm: ScriptedLLM) -> list[ff.Task]:
        return [agent_task("ag", llm, "p", tools=[add], schema=Verdict)]

    first = ScriptedLLM("m").enqueue(
        ToolCall("c1", "add", {"a": 1}), "ok", {"verdict": "v", "confidence": 1.0}
    )
    db = tmp_path / "j.db"
    done = await ff.fan_out(tasks(first), journal=db)
    again = ScriptedLLM("m")
    replayed = await ff.fan_out(tasks(again), journal=db)
    assert replayed.results[0].replayed and again.history == []
    value = replayed.results[0].value
    assert value == done.results[0].value
    assert isinstance(value.parsed, Verdict) and value.tool_calls[0].result == 2


async def test_an_agent_under_a_budget_reserves_each_step() -> None:
    llm = ScriptedLLM("m").enqueue(*[ToolCall(f"c{i}", "add", {"a": i}) for i in range(5)])
    budget = ff.Budget(requests=2)
    result = await ff.fan_out(
        [agent_task("ag", llm, "p", tools=[add])], budget=budget, raise_on_failure=False
    )
    assert isinstance(result.results[0].error, ff.BudgetExceeded)
    assert budget.spent.requests == 2 and len(llm.history) == 2


# -- over loopback HTTP: both providers' native tool calling, against the simulator --------


@pytest.fixture
async def agent_sim() -> Any:
    from fanflow.testing import AgentScript, Latency, SimConfig, Simulator

    scripts = [
        AgentScript(
            "research",
            [
                [{"name": "lookup", "arguments": {"key": "alpha"}}],
                [
                    {"name": "add", "arguments": {"a": 2, "b": 40}},
                    {"name": "broken", "arguments": {"x": "beta"}},
                ],
            ],
            "alpha and 42, and beta failed",
        ),
        AgentScript("slow work", [[{"name": "slow", "arguments": {"x": "a"}}]], "never"),
    ]
    config = SimConfig(latency=Latency(median=0.005, sigma=0.1), agents=scripts)
    async with Simulator(config) as sim:
        yield sim


def _model(sim: Any, wire: str) -> Any:
    from fanflow.llm import AnthropicChat, OpenAIChat

    if wire == "openai":
        return OpenAIChat("m", base_url=sim.url)
    return AnthropicChat("m", base_url=sim.url.removesuffix("/v1"))


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_the_tool_loop_over_http(agent_sim: Any, wire: str) -> None:
    llm = _model(agent_sim, wire)
    task = agent_task("r", llm, "research this", tools=[add, lookup, broken])
    result = await ff.fan_out([task])
    await llm.aclose()
    value = result.results[0].value
    assert value.text == "alpha and 42, and beta failed" and value.steps == 3
    assert [(c.name, c.arguments, c.result, c.error) for c in value.tool_calls] == [
        ("lookup", {"key": "alpha"}, "value of alpha", None),
        ("add", {"a": 2, "b": 40}, 42, None),
        ("broken", {"x": "beta"}, None, "ValueError: cannot do beta"),
    ]
    assert agent_sim.stats["tool_calls"] == 3 and agent_sim.stats["requests"] == 3
    assert result.usage is not None and result.usage.requests == 3


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_timeout_mid_tool_over_http(agent_sim: Any, wire: str) -> None:
    started: list[str] = []
    finished: list[str] = []

    async def slow(x: str) -> str:
        """Takes long."""
        started.append(x)
        await asyncio.sleep(30)
        finished.append(x)
        return x

    llm = _model(agent_sim, wire)
    task = agent_task("s", llm, "slow work", tools=[slow], timeout=0.5)
    result = await ff.fan_out([task], raise_on_failure=False)
    await llm.aclose()
    assert result.results[0].status is ff.Status.TIMEOUT
    assert started == ["a"] and finished == []
    assert agent_sim.stats["requests"] == 1  # the loop stopped in the tool: no second call
    assert result.usage is not None and result.usage.wasted_tokens > 0


def test_the_agents_example_runs_offline() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "agents.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert 'agent solar: 3 model calls, tools: search({"query": "solar"})' in done.stdout
    assert "verdict: supported" in done.stdout and "Traceback" not in done.stderr


async def test_a_tool_call_scheduled_in_the_winners_turn_does_not_start() -> None:
    # The winner's answer and a loser's tool call arrive in the same loop
    # turn: the winner is settled (and the loser cancelled) before the
    # loser's tool task first runs, which must then not start the tool.
    started: list[str] = []

    async def work(who: str) -> str:
        """Do some work."""
        started.append(who)
        return who

    winner = ScriptedLLM("w", delay=0.05).enqueue("won")
    loser = ScriptedLLM("l", delay=0.05).enqueue(ToolCall("c1", "work", {"who": "loser"}), "late")
    result = await ff.fan_out(
        [
            agent_task("winner", winner, "p", tools=[work]),
            agent_task("loser", loser, "p", tools=[work]),
        ],
        strategy=ff.FirstN(1),
    )
    assert result.results[0].value.text == "won"
    assert result.results[1].status is ff.Status.CANCELLED
    await asyncio.sleep(0.1)
    assert started == []
