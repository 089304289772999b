"""ff.plan / Plan.run / ff.ask over loopback HTTP to the simulator scripted with plans."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

import fanflow as ff
from fanflow.testing import Latency, Script, SimConfig, Simulator, SimulatorProcess

CALLS: list[str] = []


async def lookup(source: str) -> str:
    """Look a topic up in one source."""
    CALLS.append(source)
    await asyncio.sleep(0.02)
    if source == "broken":
        raise ConnectionError("source unreachable")
    return f"{source} says caffeine delays sleep"


def plan_json(*tasks: dict[str, Any]) -> str:
    return json.dumps({"tasks": list(tasks)})


def tool(name: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "tool": "lookup", "args": {"source": source}, **extra}


GOOD = plan_json(
    tool("a", "arxiv"),
    tool("b", "pubmed"),
    tool("c", "web"),
    {
        "name": "d",
        "prompt": "Combine {{ tasks.a.value }} and {{ tasks.b.value }}",
        "needs": ["a", "b"],
    },
)

BAD = {
    "invalid-json": ("this is not JSON", "not valid JSON"),
    "cycle": (
        plan_json(tool("a", "x", needs=["b"]), tool("b", "y", needs=["a"])),
        "cycle: a -> b -> a",
    ),
    "unknown-tool": (
        plan_json({"name": "a", "tool": "search_everything", "args": {}}),
        "unknown tool 'search_everything'",
    ),
    "hidden-dependency": (
        plan_json(tool("a", "x"), {"name": "b", "prompt": "use {{ tasks.a.value }}"}),
        "uses the value of 'a' without needing it",
    ),
    "too-many": (plan_json(*(tool(f"t{i}", "x") for i in range(3))), "at most 2 are allowed"),
    "bad-args": (
        plan_json({"name": "a", "tool": "lookup", "args": {"where": "x"}}),
        "bad arguments for 'lookup'",
    ),
}


def scripts() -> list[Script]:
    out = [
        Script(r"(?s)GOAL-REPAIRED.*Your plan has these problems", {GOOD: 1}),
        Script(r"(?s)^You are the planner.*GOAL-REPAIRED", {"not json at all": 1}),
        Script(r"(?s)^You are the planner.*GOAL-GOOD", {GOOD: 1}),
        Script(
            r"(?s)^You are the planner.*GOAL-FAILING",
            {
                plan_json(
                    tool("ok", "arxiv"),
                    tool("down", "broken"),
                    {"name": "after", "prompt": "Use {{ tasks.down.value }}", "needs": ["down"]},
                ): 1
            },
        ),
        Script(r"^You have received results", {"Synthesis: sources agree.": 1}),
        Script(r"Combine", {"combined": 1}),
    ]
    for kind, (answer, _) in BAD.items():
        out.insert(0, Script(rf"(?s)^You are the planner.*GOAL-BAD-{kind}", {answer: 1}))
    return out


@pytest.fixture
async def llm() -> AsyncIterator[Any]:
    CALLS.clear()
    async with Simulator(SimConfig(latency=Latency(0.002, 0.1), scripts=scripts())) as sim:
        model = ff.llm.from_uri(f"sim:planner@{sim.url}")
        model.sim = sim  # type: ignore[attr-defined]
        yield model
        await model.aclose()  # type: ignore[attr-defined]


async def test_independent_subtasks_run_in_parallel_and_the_dependent_after(llm: Any) -> None:
    plan = await ff.plan("GOAL-GOOD: what do sources say?", llm, tools=[lookup])
    assert [s.name for s in plan.subtasks] == ["a", "b", "c", "d"]
    assert "d: 'Combine" in str(plan) and "[after a, b]" in str(plan)
    assert plan.to_dict()["tasks"][3]["needs"] == ("a", "b")
    events: list[tuple[str, str]] = []

    def record(event: ff.Event) -> None:
        if isinstance(event, ff.TaskStarted):
            events.append(("start", event.name))
        elif isinstance(event, ff.TaskFinished):
            events.append(("end", event.result.name))

    result = await plan.run(on_event=record)
    assert result.ok and result.value["d"] == "combined"
    first_end = min(i for i, e in enumerate(events) if e[0] == "end")
    assert {e[1] for e in events[:first_end]} == {"a", "b", "c"}  # all three started at once
    start_d = events.index(("start", "d"))
    assert start_d > events.index(("end", "a")) and start_d > events.index(("end", "b"))
    synthesis = await ff.synthesize(result, llm)
    for value in result.value.values():
        assert value in synthesis.prompt


@pytest.mark.parametrize("kind", sorted(BAD))
async def test_a_bad_plan_gets_one_repair_round_then_a_plan_error(llm: Any, kind: str) -> None:
    _, problem = BAD[kind]
    with pytest.raises(ff.PlanError) as info:
        await ff.plan(f"GOAL-BAD-{kind}", llm, tools=[lookup], max_tasks=2)
    assert any(problem in p for p in info.value.problems), info.value.problems
    assert problem in str(info.value)
    assert llm.sim.stats["requests"] == 2  # the plan and one repair
    assert CALLS == []  # nothing ran


async def test_the_repair_round_can_fix_a_plan(llm: Any) -> None:
    plan = await ff.plan("GOAL-REPAIRED", llm, tools=[lookup])
    assert len(plan.subtasks) == 4 and llm.sim.stats["requests"] == 2


async def test_a_failed_subtask_is_a_gap_and_its_dependents_are_skipped(llm: Any) -> None:
    synthesis = await ff.ask("GOAL-FAILING: report", llm, tools=[lookup])
    assert synthesis.text == "Synthesis: sources agree."
    gaps = {g.task: g for g in synthesis.gaps}
    assert gaps["down"].status == "error" and "source unreachable" in gaps["down"].reason
    assert gaps["after"].status == "skipped" and "needs 'down'" in gaps["after"].reason
    assert "arxiv says caffeine" in synthesis.prompt


def test_fanflow_ask_offline(tmp_path: Any) -> None:
    (tmp_path / "mytools.py").write_text(
        "def lookup(source: str) -> str:\n"
        '    """Look a topic up in one source."""\n'
        '    return f"{source} says caffeine delays sleep"\n'
    )
    config = {"scripts": [{"pattern": s.pattern, "answers": dict(s.answers)} for s in scripts()]}
    (tmp_path / "sim.json").write_text(json.dumps(config))
    with SimulatorProcess("--latency", "0", "--config", str(tmp_path / "sim.json")) as sim:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "fanflow",
                "ask",
                "GOAL-GOOD: compare sources",
                "--llm",
                f"sim:planner@{sim.url}",
                "--tools",
                "mytools:lookup",
                "--json",
                "ask.json",
                "--html",
                "ask.html",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 0, out.stderr
    assert "plan for: GOAL-GOOD" in out.stdout and "[after a, b]" in out.stdout
    assert "Synthesis: sources agree." in out.stdout
    report = json.loads((tmp_path / "ask.json").read_text())
    assert len(report["aggregate"]["plan"]["tasks"]) == 4
    assert (tmp_path / "ask.html").read_text().count('<rect class="attempt') == 4
    bad = subprocess.run(
        [sys.executable, "-m", "fanflow", "ask", "x", "--llm", "nope:model"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown model provider" in bad.stderr
    assert "Traceback" not in bad.stderr
