"""fanflow demo: multi-source research, an ensemble vote and a synthesis, offline.

Six simulated sources answer a query with random latencies; one of them
fails and one hangs past its timeout. The same fan-out runs under each
aggregation strategy, and a small ensemble of simulated models votes. Then
the LLM layer runs over real HTTP against fanflow's simulated model service
on loopback: an ensemble with early stopping, and the seed's aggregator
prompt synthesizing research results. Nothing here calls a real model or
needs an API key: every "model" answer is SIMULATED.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import fanflow as ff

QUERY = "effects of caffeine on sleep"


async def source(name: str, latency: float, outcome: str = "ok") -> dict[str, Any]:
    """A simulated search source: waits ``latency`` seconds, then answers."""
    await asyncio.sleep(latency)
    if outcome == "fail":
        raise ConnectionError(f"{name}: connection reset by peer")
    return {"source": name, "hits": int(latency * 100) % 17 + 3}


def research_tasks(rng: random.Random) -> list[ff.Task]:
    plan = [
        ("arxiv", rng.uniform(0.15, 0.35), "ok"),
        ("pubmed", rng.uniform(0.15, 0.35), "ok"),
        ("web", rng.uniform(0.05, 0.2), "ok"),
        ("wikipedia", rng.uniform(0.1, 0.3), "ok"),
        ("flaky-db", 0.12, "fail"),
        ("slow-mirror", 30.0, "ok"),  # hangs: cut off by its timeout
    ]
    return [
        ff.Task(name, source, args=(name, latency, outcome), timeout=0.5)
        for name, latency, outcome in plan
    ]


async def model(answer: str, latency: float) -> str:
    """A simulated model sample."""
    await asyncio.sleep(latency)
    return answer


def vote_tasks(rng: random.Random) -> list[ff.Task]:
    # About 70 % of samples say 42 (spelt two ways), 20 % say 41, the rest
    # something else; the order they come in is random.
    answers = ["42"] * 7 + [" 42 "] * 3 + ["41"] * 3 + ["forty", "43"]
    rng.shuffle(answers)
    return [
        ff.Task(f"sample-{i}", model, args=(a, rng.uniform(0.02, 0.1)))
        for i, a in enumerate(answers)
    ]


def show(title: str, result: ff.FanInResult) -> None:
    verdict = "OK" if result.ok else "FAILED"
    print(f"\n== {title}: {result.strategy} -> {verdict}")
    print(f"   {result.reason}")
    print(f"   {'task':<12} {'status':<10} {'time':>7}  note")
    for r in result.results:
        took = f"{r.duration:.2f}s" if r.duration is not None else "-"
        note = ""
        if r.error is not None:
            note = f"{type(r.error).__name__}: {r.error}"
        elif r.reason:
            note = r.reason
        print(f"   {r.name:<12} {r.status.value:<10} {took:>7}  {note[:60]}")
    value = result.value if not isinstance(result.value, dict) else list(result.value)
    print(f"   value={value!r}")
    print(
        f"   coverage={result.coverage:.2f}  confidence={result.confidence:.2f} "
        f"({result.confidence_level})  elapsed={result.elapsed:.2f}s"
    )


async def main() -> None:
    rng = random.Random(7)
    print(f"fanflow demo (simulated sources, offline) - query: {QUERY!r}")
    tasks = research_tasks(rng)
    for title, strategy in [
        ("all-or-nothing", ff.AllOrNothing()),
        ("best-effort", ff.BestEffort(min_success=3)),
        ("first-n", ff.FirstN(2)),
    ]:
        result = await ff.fan_out(tasks, strategy=strategy, raise_on_failure=False)
        show(title, result)

    result = await ff.fan_out(tasks, deadline=0.25, raise_on_failure=False)
    show("best-effort with a 0.25 s deadline", result)

    votes = vote_tasks(rng)
    full = await ff.fan_out(votes, strategy=ff.Vote(early_stop=False), max_concurrency=4)
    early = await ff.fan_out(votes, strategy=ff.Vote(), max_concurrency=4)
    show("ensemble vote, early stop", early)
    print(f"   votes={early.votes}")
    answered = len(early.succeeded) + len(early.failed)
    print(
        f"   full count: {full.value!r} after {len(full.results)} answers; "
        f"early stop: {early.value!r} after {answered} answers "
        f"({len(early.cancelled)} in flight cancelled, {len(early.skipped)} never sent)"
    )


async def llm_layer() -> None:
    from fanflow.testing import Latency, Script, SimConfig, Simulator

    config = SimConfig(
        latency=Latency(median=0.03, sigma=0.4),
        rate_limit_rate=0.1,  # one request in ten gets a 429 with Retry-After
        retry_after=0.05,
        scripts=[
            Script(r"6 x 7", {"42": 0.7, "41": 0.2, "I am not sure": 0.1}),
            Script(
                r"Synthesize",
                {
                    "Caffeine delays sleep onset and reduces deep sleep (arxiv, pubmed, web, "
                    "wikipedia agree). Gap: flaky-db failed, slow-mirror timed out. "
                    "Confidence: medium.": 1.0
                },
            ),
        ],
        seed=1,
    )
    async with Simulator(config) as sim:
        print(f"\n== LLM layer over HTTP: simulated model service at {sim.url}")
        llm = ff.llm.from_uri(f"sim:demo-model@{sim.url}")
        vote = await ff.ensemble(
            "What is 6 x 7? Answer with a number.",
            llm,
            samples=20,
            max_concurrency=4,
            retry=ff.Retry(attempts=5, backoff=0.02),
        )
        assert vote.usage is not None
        print(f"   ensemble: {vote.value!r} with votes {vote.votes}")
        print(
            f"   {vote.usage.requests} requests of 20 samples ({sim.stats['429']} got a 429 and "
            f"were retried); {vote.usage.wasted_tokens} tokens wasted on cancelled samples"
        )
        research = await ff.fan_out(
            research_tasks(random.Random(7)), strategy=ff.BestEffort(min_success=3)
        )
        synthesis = await ff.synthesize(research, llm, conflict_strategy="majority of sources")
        print(
            f"   synthesis ({synthesis.confidence_level} confidence, coverage "
            f"{synthesis.coverage:.0%}): {synthesis.text}"
        )
        print(f"   gaps: {[(g.task, g.status) for g in synthesis.gaps]}")
        print(f"   (the exact prompt sent is {len(synthesis.prompt)} characters: task results")
        print("    framed as data between nonce markers, failures listed with their reasons)")
        await llm.aclose()  # type: ignore[attr-defined]


if __name__ == "__main__":
    asyncio.run(main())
    asyncio.run(llm_layer())
