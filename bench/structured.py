"""Structured output and agent subtasks (issue #19), over HTTP to the simulator.

* throughput of structured prompt tasks vs plain ones through the OpenAI
  SDK path at concurrency 64 (the validation must not be the bottleneck);
* an ensemble of structured judges (70 % accurate) with exact early stop
  vs the full count: same answers, fewer calls;
* FirstN(1) of 4 agents with 3-6 tool steps each: tool calls started after
  the winner returned (target 0), and the tokens the losers wasted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

import fanflow as ff
from fanflow.testing import SimulatorProcess

Row = tuple[str, str, str, str]


class Answer(BaseModel):
    answer: str
    confidence: float


class Judgement(BaseModel):
    verdict: Literal["42", "41", "43", "44"]


def bench_structured_throughput(n: int = 2000, limit: int = 64, runs: int = 5) -> list[Row]:
    """Prompts per second, plain vs schema=, interleaved, median of ``runs``."""
    with SimulatorProcess("--latency", "0") as sim:

        async def one_run(schema: type[BaseModel] | None) -> float:
            llm = ff.llm.OpenAIChat("m", base_url=sim.url, api_key_env=None)
            tasks = [ff.llm.prompt_task(f"p{i}", llm, f"p{i}", schema=schema) for i in range(n)]
            t0 = time.perf_counter()
            result = await ff.fan_out(tasks, max_concurrency=limit)
            took = time.perf_counter() - t0
            assert result.ok and (schema is None or isinstance(result.results[0].value, schema))
            await llm.aclose()
            return took

        # Warm up first (imports, the SDK's first client, the server's first
        # connections): the first run of either kind is ~25% slower.
        asyncio.run(one_run(None))
        asyncio.run(one_run(Answer))
        plain, structured = [], []
        for _ in range(runs):
            plain.append(asyncio.run(one_run(None)))
            structured.append(asyncio.run(one_run(Answer)))
    p, s = statistics.median(plain), statistics.median(structured)
    return [
        ("structured", f"plain prompt tasks, {n}, concurrency {limit}", f"{n / p:.0f}/s", "1.00x"),
        (
            "structured",
            "  with schema= (response_format json_schema, validated)",
            f"{n / s:.0f}/s",
            f"{p / s:.2f}x plain's throughput (target >= 0.95x)",
        ),
    ]


def bench_structured_ensemble(questions: int = 100, samples: int = 40, limit: int = 4) -> list[Row]:
    """Calls and answers of structured judges, exact early stop vs the full count."""
    answers = {
        json.dumps({"verdict": "42"}): 0.7,
        json.dumps({"verdict": "41"}): 0.1,
        json.dumps({"verdict": "43"}): 0.1,
        json.dumps({"verdict": "44"}): 0.1,
    }
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "sim.json"
        config.write_text(json.dumps({"scripts": [{"pattern": "question", "answers": answers}]}))
        args = ("--latency", "0.005", "--sigma", "0.3", "--config", str(config))
        with SimulatorProcess(*args) as sim:

            async def run_all() -> dict[str, list[int]]:
                stats = {"full": [0, 0, 0], "exact": [0, 0, 0]}
                llm = ff.llm.OpenAIChat("m", base_url=sim.url, api_key_env=None)
                for q in range(questions):
                    full = None
                    for label, rule in (("full", False), ("exact", True)):
                        result = await ff.ensemble(
                            f"question {q}: what is 6 x 7?",
                            llm,
                            samples=samples,
                            schema=Judgement,
                            key=lambda j: j.verdict,
                            early_stop=rule,
                            max_concurrency=limit,
                            raise_on_failure=False,
                        )
                        verdict = result.value.verdict if result.value is not None else None
                        if label == "full":
                            full = verdict
                        assert result.usage is not None
                        stats[label][0] += result.usage.requests
                        stats[label][1] += verdict == "42"
                        stats[label][2] += verdict == full
                await llm.aclose()
                return stats

            stats = asyncio.run(run_all())
    full_calls = stats["full"][0]
    rows = []
    for label, name in (
        ("full", f"structured judges, {samples} samples, full count"),
        ("exact", "  exact early stop"),
    ):
        calls, correct, same = stats[label]
        rows.append(
            (
                "structured",
                name,
                f"{calls / questions:.1f} calls/question",
                f"{full_calls / calls:.2f}x fewer (target >= 1.3x); accuracy "
                f"{correct / questions:.1%}; same answer as the full count {same / questions:.1%}",
            )
        )
    return rows


def bench_agents(rounds: int = 10) -> list[Row]:
    """FirstN(1) of 4 agents with 3-6 tool steps: tool calls after the winner, waste."""
    from fanflow.testing import AgentScript, Latency, SimConfig, Simulator

    late = 0
    total_calls = 0
    wasted_tokens = 0
    wasted_requests = 0
    spent_tokens = 0

    async def one(seed: int) -> None:
        nonlocal late, total_calls, wasted_tokens, wasted_requests, spent_tokens
        steps = {f"agent{i}": 3 + (i + seed) % 4 for i in range(4)}  # 3..6 tool steps
        scripts = [
            AgentScript(
                f"you are {name}",
                [[{"name": "search", "arguments": {"query": f"{name} {k}"}}] for k in range(n)],
                f"{name}: done after {n} searches",
            )
            for name, n in steps.items()
        ]
        config = SimConfig(latency=Latency(median=0.01, sigma=0.3), agents=scripts, seed=seed)
        calls: list[float] = []

        async def search(query: str) -> str:
            """Search for a query."""
            calls.append(time.time())
            await asyncio.sleep(0.01)
            return f"results for {query}"

        async with Simulator(config) as sim:
            llm = ff.llm.OpenAIChat("m", base_url=sim.url, api_key_env=None)
            tasks = [
                ff.llm.agent_task(name, llm, f"you are {name}: research", tools=[search])
                for name in steps
            ]
            result = await ff.fan_out(tasks, strategy=ff.FirstN(1))
            # Give any leftover tool call the chance to show itself.
            await asyncio.sleep(0.1)
            await llm.aclose()
        winner = next(r for r in result.results if r.ok)
        assert winner.finished_at is not None
        late += sum(1 for t in calls if t > winner.finished_at)
        total_calls += len(calls)
        assert result.usage is not None
        spent_tokens += result.usage.input_tokens + result.usage.output_tokens
        wasted_tokens += result.usage.wasted_tokens
        wasted_requests += sum(u.requests for u in result.usage.wasted.values())

    for seed in range(rounds):
        asyncio.run(one(seed))
    return [
        (
            "structured",
            f"FirstN(1) of 4 agents, 3-6 tool steps, {rounds} rounds",
            f"{late} tool calls after the winner",
            f"target 0; {total_calls} tool calls in all",
        ),
        (
            "structured",
            "  wasted by the losing agents",
            f"{wasted_tokens:,} tokens",
            f"{wasted_requests} requests; {wasted_tokens / max(spent_tokens, 1):.0%} of "
            f"{spent_tokens:,} tokens spent",
        ),
    ]


def bench_structured(runs: int = 3) -> list[Row]:
    """All of issue #19's figures."""
    return [
        *bench_structured_throughput(runs=max(runs, 5)),
        *bench_structured_ensemble(),
        *bench_agents(),
    ]
