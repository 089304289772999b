"""Agent subtasks and structured judges, offline: ``python examples/agents.py``.

The multi-agent research shape (an orchestrator fans out sub-agents, each
with its own tools, and synthesizes what they found), then structured
validators whose verdicts are records, not prose. Everything runs against
fanflow's simulated model service on loopback: the tool calls and answers
are SCRIPTED (fanflow.testing.AgentScript, Script), nothing here is a real
model. The tools are real functions over a small local corpus.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

from pydantic import BaseModel

import fanflow as ff
from fanflow.testing import AgentScript, Latency, Script, SimConfig, Simulator

CORPUS = {
    "solar": "Utility-scale solar costs fell about 90% from 2010 to 2023 (IRENA).",
    "wind": "Onshore wind is among the cheapest new sources where wind is steady (IEA).",
    "storage": "Lithium-ion battery pack prices fell below $140/kWh in 2023 (BNEF).",
}


def search(query: str) -> list[str]:
    """Search the local corpus; returns the names of matching documents."""
    words = query.lower().split()
    return [name for name, text in CORPUS.items() if any(w in text.lower() for w in words)]


async def read(name: str) -> str:
    """Read one document of the corpus by name."""
    await asyncio.sleep(0.01)
    return CORPUS[name]


class Verdict(BaseModel):
    """A validator's verdict on one claim."""

    verdict: Literal["supported", "unsupported"]
    reason: str


def simulated_service() -> SimConfig:
    agents = [
        AgentScript(
            f"research {topic}",
            [
                [{"name": "search", "arguments": {"query": topic}}],
                [{"name": "read", "arguments": {"name": topic}}],
            ],
            f"{CORPUS[topic]} [source: {topic}]",
        )
        for topic in CORPUS
    ]
    judge = {
        json.dumps({"verdict": "supported", "reason": "the cited source says so"}): 0.8,
        json.dumps({"verdict": "unsupported", "reason": "no source says so"}): 0.2,
    }
    return SimConfig(
        latency=Latency(median=0.05, sigma=0.3),
        agents=agents,
        scripts=[Script("Is this claim supported", judge)],
    )


async def main() -> None:
    async with Simulator(simulated_service()) as sim:
        llm = ff.llm.OpenAIChat("research-model", base_url=sim.url)
        print(f"simulated model service (SCRIPTED answers) at {sim.url}\n")

        # 1. The orchestrator fans out one sub-agent per topic, each with tools.
        agents = [
            ff.llm.agent_task(
                topic, llm, f"research {topic}: find and read the source", tools=[search, read]
            )
            for topic in CORPUS
        ]
        result = await ff.fan_out(agents, timeout=30)
        for r in result.results:
            calls = ", ".join(f"{c.name}({json.dumps(c.arguments)})" for c in r.value.tool_calls)
            print(f"agent {r.name}: {r.value.steps} model calls, tools: {calls}")
            print(f"  -> {r.value.text}")
        assert result.usage is not None
        print(f"usage: {result.usage.requests} requests, {result.usage.input_tokens} tokens in\n")

        # 2. Structured validators: one judge per claim, votes over the parsed verdicts.
        claim = "Solar costs fell about 90% from 2010 to 2023."
        votes = await ff.ensemble(
            f"Is this claim supported by the sources? {claim}",
            llm,
            samples=7,
            schema=Verdict,
            key=lambda v: v.verdict,
            max_concurrency=3,
        )
        print(f"claim: {claim}")
        print(f"verdict: {votes.value.verdict} ({votes.value.reason}); votes {dict(votes.votes)}")
        await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
