"""``fanflow ask``: plan a goal with a model, run the plan, synthesize the answer."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from .workflow import _fail, _Progress


def _tool(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not attr:
        _fail(f"--tools expects module:function; got {spec!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        _fail(f"--tools {spec}: cannot import it: {exc}")
    if not callable(fn):
        _fail(f"--tools {spec}: not callable")
    return fn


@click.command()
@click.argument("goal")
@click.option(
    "--llm", "llm_uri", required=True, metavar="URI", help="The planning and answering model."
)
@click.option(
    "--tools",
    "tool_specs",
    multiple=True,
    metavar="MODULE:FUNCTION",
    help="A tool the plan may call (repeatable).",
)
@click.option(
    "--max-tasks", default=8, show_default=True, type=click.IntRange(1), help="Largest plan."
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the run report.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write an HTML report.")
def ask(
    goal: str,
    llm_uri: str,
    tool_specs: tuple[str, ...],
    max_tasks: int,
    json_out: str | None,
    html_out: str | None,
) -> None:
    """Plan GOAL into independent subtasks, run them in parallel, and synthesize.

    Shows the plan, progress, then the answer with its confidence and gaps.
    Exit status: 0 when every subtask ran ok, 1 otherwise (the answer still
    notes the gaps), 2 for bad input or a plan the model could not repair.
    """
    from .._workflow._report import render_html

    tools = [_tool(spec) for spec in tool_specs]
    try:
        code, report = asyncio.run(_ask(goal, llm_uri, tools, max_tasks))
    except ValueError as exc:  # a bad --llm URI
        _fail(str(exc))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if html_out:
        Path(html_out).write_text(render_html(report), encoding="utf-8")
    sys.exit(code)


async def _ask(
    goal: str, llm_uri: str, tools: list[Any], max_tasks: int
) -> tuple[int, dict[str, Any]]:
    from rich.console import Console

    import fanflow as ff

    from .._workflow._report import run_report

    console = Console() if sys.stdout.isatty() else Console(width=120)
    llm = ff.llm.from_uri(llm_uri)
    try:
        try:
            plan = await ff.plan(goal, llm, tools=tools, max_tasks=max_tasks)
        except ff.PlanError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        console.print(str(plan), markup=False)
        progress = _Progress(console, [s.name for s in plan.subtasks])
        started = time.time()
        result = await plan.run(on_event=progress.event)
        progress.close()
        synthesis = await ff.synthesize(result, llm)
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
    level, coverage = synthesis.confidence_level, synthesis.coverage
    console.print(f"\n[bold]answer[/] ({level} confidence, coverage {coverage:.0%}):")
    console.print(synthesis.text, markup=False)
    if synthesis.gaps:
        console.print(
            "gaps: " + "; ".join(f"{g.task} ({g.status}: {g.reason})" for g in synthesis.gaps),
            markup=False,
        )
    aggregate = {
        "kind": "synthesize",
        "text": synthesis.text,
        "confidence_level": synthesis.confidence_level,
        "gaps": [g.task for g in synthesis.gaps],
        "plan": plan.to_dict(),
    }
    report = run_report("ask", "", result, started_at=started, deadline=None, aggregate=aggregate)
    return (0 if not synthesis.gaps else 1), report
