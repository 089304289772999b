"""LLM-layer benchmarks, over HTTP to the simulator running in its own process."""

from __future__ import annotations

import asyncio
import statistics
import time

import fanflow as ff
from fanflow.testing import SimulatorProcess

Row = tuple[str, str, str, str]


def bench_ensemble(questions: int = 200, samples: int = 40, limit: int = 4) -> list[Row]:
    """Calls and accuracy of a 70 %-accurate simulated model, per stopping rule."""
    script = "question=42:0.7,41:0.1,43:0.1,44:0.1"
    rules: list[tuple[str, bool | ff.BetaStop]] = [
        ("full", False),
        ("exact", True),
        ("beta", ff.BetaStop(0.95)),
    ]
    with SimulatorProcess("--latency", "0.005", "--sigma", "0.3", "--script", script) as sim:

        async def run_all() -> dict[str, list[int]]:
            stats = {label: [0, 0, 0] for label, _ in rules}
            llm = ff.llm.OpenAIChat("m", base_url=sim.url, api_key_env=None)
            for q in range(questions):
                prompt = f"question {q}: what is 6 x 7?"
                full_value = None
                for label, rule in rules:
                    result = await ff.ensemble(
                        prompt,
                        llm,
                        samples=samples,
                        early_stop=rule,
                        max_concurrency=limit,
                        raise_on_failure=False,
                    )
                    if label == "full":
                        full_value = result.value
                    assert result.usage is not None
                    stats[label][0] += result.usage.requests
                    stats[label][1] += result.value == "42"
                    stats[label][2] += result.value == full_value
            await llm.aclose()
            return stats

        stats = asyncio.run(run_all())
    full_calls = stats["full"][0]
    names = {
        "full": ("ensemble, 40 samples, no early stop", ""),
        "exact": ("ensemble, exact early stop", " (target >= 1.3x)"),
        "beta": ("ensemble, BetaStop(0.95)", " (target >= 2.8x)"),
    }
    rows = []
    for label, (name, target) in names.items():
        calls, correct, same = stats[label]
        rows.append(
            (
                "ensemble",
                name,
                f"{calls / questions:.1f} calls/question",
                f"{full_calls / calls:.2f}x fewer{target}; accuracy {correct / questions:.1%}; "
                f"same answer as full count {same / questions:.1%}",
            )
        )
    return rows


def bench_provider_throughput(n: int = 2000, limit: int = 64) -> list[Row]:
    """Prompts per second through fan_out + the provider vs the bare SDK."""
    with SimulatorProcess("--latency", "0") as sim:

        async def bare() -> float:
            import openai

            client = openai.AsyncOpenAI(api_key="x", base_url=sim.url, max_retries=0)
            sem = asyncio.Semaphore(limit)

            async def one(i: int) -> str:
                async with sem:
                    r = await client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"p{i}"}]
                    )
                    return r.choices[0].message.content or ""

            t0 = time.perf_counter()
            await asyncio.gather(*[one(i) for i in range(n)])
            took = time.perf_counter() - t0
            await client.close()
            return took

        async def fanflow() -> float:
            llm = ff.llm.OpenAIChat("m", base_url=sim.url, api_key_env=None)
            tasks = [ff.llm.prompt_task(f"p{i}", llm, f"p{i}") for i in range(n)]
            t0 = time.perf_counter()
            await ff.fan_out(tasks, max_concurrency=limit)
            took = time.perf_counter() - t0
            await llm.aclose()
            return took

        base = asyncio.run(bare())
        t = asyncio.run(fanflow())
    return [
        ("provider", f"openai SDK + Semaphore({limit}), {n} prompts", f"{n / base:.0f}/s", "1.00x"),
        (
            "provider",
            f"fan_out of prompt tasks, max_concurrency={limit}",
            f"{n / t:.0f}/s",
            f"{base / t:.2f}x the bare SDK's throughput",
        ),
    ]


def bench_plan(runs: int = 5) -> list[Row]:
    """A 4-level plan: plan.run (parallel graph) vs ReAct-style one step at a time."""
    import json
    import random

    from fanflow.testing import Latency, Script, SimConfig, Simulator

    rng = random.Random(5)
    latency = {f"t{i}": rng.lognormvariate(-2.3, 0.5) for i in range(6)}  # median ~0.1 s

    async def tool(name: str) -> str:
        await asyncio.sleep(latency[name])
        return f"{name} done"

    def t(name: str, needs: list[str] | None = None) -> dict[str, object]:
        return {"name": name, "tool": "tool", "args": {"name": name}, "needs": needs or []}

    plan_text = json.dumps(
        {
            "tasks": [
                t("t0"),
                t("t1"),
                t("t2"),
                t("t3"),
                t("t4", ["t0", "t1"]),
                t("t5", ["t2", "t3"]),
                {
                    "name": "merge",
                    "prompt": "Merge {{ tasks.t4.value }} {{ tasks.t5.value }}",
                    "needs": ["t4", "t5"],
                },
                {
                    "name": "final",
                    "prompt": "Answer from {{ tasks.merge.value }}",
                    "needs": ["merge"],
                },
            ]
        }
    )
    config = SimConfig(
        latency=Latency(0.05, 0.0),
        scripts=[Script("^You are the planner", {plan_text: 1}), Script("", {"ok": 1})],
    )

    async def run_all() -> tuple[float, int, float, int]:
        async with Simulator(config) as sim:
            llm = ff.llm.OpenAIChat("m", base_url=sim.url, api_key_env=None)
            planned, react = [], []
            calls_plan = calls_react = 0
            for _ in range(runs):
                before = sim.stats["requests"]
                t0 = time.perf_counter()
                plan = await ff.plan("a four-level job", llm, tools={"tool": tool})
                await plan.run()
                planned.append(time.perf_counter() - t0)
                calls_plan = sim.stats["requests"] - before
                before = sim.stats["requests"]
                t0 = time.perf_counter()
                for sub in plan.subtasks:  # ReAct: think, then act, one step at a time
                    await llm.complete(f"Which step next? Done so far: {sub.needs}")
                    if sub.tool:
                        await tool(sub.name)
                    else:
                        await llm.complete(sub.prompt or "")
                await llm.complete("Final answer?")
                react.append(time.perf_counter() - t0)
                calls_react = sim.stats["requests"] - before
            await llm.aclose()
        return statistics.median(planned), calls_plan, statistics.median(react), calls_react

    planned, calls_plan, react, calls_react = asyncio.run(run_all())
    return [
        (
            "plan",
            "ReAct-style, one step at a time",
            f"{react:.2f} s",
            f"1.00x, {calls_react} model calls",
        ),
        (
            "plan",
            "ff.plan + plan.run (4-level graph)",
            f"{planned:.2f} s",
            f"{react / planned:.2f}x faster, {calls_plan} model calls",
        ),
    ]
