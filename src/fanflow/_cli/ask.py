"""``fanflow ask``: plan a goal with a model, run the plan, synthesize the answer."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from pathlib import Path
from typing import Any

import click

from ._budget import budget_options, make_budget
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
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True, max=1e9),
    default=120.0,
    show_default=True,
    help="Seconds for each model call and each subtask.",
)
@click.option(
    "--deadline",
    type=click.FloatRange(0, min_open=True, max=1e9),
    default=None,
    help="Seconds for the whole ask: planning, subtasks and the answer.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the run report.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write an HTML report.")
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False),
    help="Record the plan and each finished subtask in this SQLite file; a rerun replays "
    "them instead of asking (and paying) again.",
)
@budget_options
def ask(
    goal: str,
    llm_uri: str,
    tool_specs: tuple[str, ...],
    max_tasks: int,
    timeout: float,
    deadline: float | None,
    json_out: str | None,
    html_out: str | None,
    journal_path: str | None = None,
    budget_tokens: int | None = None,
    budget_dollars: float | None = None,
    budget_prices: tuple[str, ...] = (),
) -> None:
    """Plan GOAL into independent subtasks, run them in parallel, and synthesize.

    Shows the plan, progress, then the answer with its confidence and gaps.
    Exit status: 0 when every subtask ran ok, 1 otherwise (the answer still
    notes the gaps) or when the model could not be reached or did not answer
    in time, 2 for bad input (a bad --llm URI, a missing API key or extra)
    or a plan the model could not repair; 130/143/129 when interrupted.
    """
    import math

    import fanflow as ff

    from . import _runner
    from ._paths import report_problem, write_reports

    problem = report_problem(json_out, html_out)
    if problem is not None:
        _fail(problem)
    if math.isnan(timeout) or (deadline is not None and math.isnan(deadline)):
        _fail("--timeout and --deadline take a number of seconds")
    tools = [_tool(spec) for spec in tool_specs]
    try:
        budget = make_budget(None, budget_tokens, budget_dollars, budget_prices)
    except ValueError as exc:
        _fail(str(exc))
    try:
        llm = ff.llm.from_uri(llm_uri)
    except (ValueError, ImportError) as exc:  # a bad --llm URI, a missing extra
        _fail(f"--llm {llm_uri}: {exc}")
    journal = None
    if journal_path is not None:
        try:
            journal = ff.Journal(journal_path, "fanflow tasks")
        except ff.JournalError as exc:
            _fail(f"--journal: {exc}")
    try:
        code, report = _runner.run(
            _ask(goal, llm, tools, max_tasks, timeout, deadline, journal, budget), "ask"
        )
    except ff.BudgetExceeded as exc:  # the planning or the answer did not fit
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except ff.PermanentError as exc:  # a missing key, a refused request
        _fail(str(exc))
    except ff.ServiceError as exc:
        click.echo(f"error: the model failed: {exc}", err=True)
        sys.exit(1)
    except TimeoutError:
        limit = f"--deadline {deadline:g} s" if deadline is not None else f"--timeout {timeout:g} s"
        click.echo(f"error: the model did not answer within {limit}", err=True)
        sys.exit(1)
    finally:
        if journal is not None:
            journal.close()
    unwritten = write_reports(report, json_out, html_out)  # always, whatever the code
    sys.exit(code or unwritten)


async def _ask(
    goal: str,
    llm: Any,
    tools: list[Any],
    max_tasks: int,
    timeout: float,
    deadline: float | None,
    journal: Any = None,
    budget: Any = None,
) -> tuple[int, dict[str, Any]]:
    from rich.console import Console

    import fanflow as ff

    from .._core._usage import _BUDGET

    if budget is not None:
        # This task's own context: planning, the plan's fan-out and the
        # synthesis all run under the budget.
        _BUDGET.set(budget)

    from .._workflow._report import run_report
    from ..llm._plan import plan_once

    console = Console() if sys.stdout.isatty() else Console(width=120)
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline if deadline is not None else None

    def within(seconds: float) -> asyncio.Timeout:
        # A model call gets --timeout, and never more than what --deadline leaves.
        at = loop.time() + seconds
        return asyncio.timeout_at(at if end is None else min(at, end))

    try:
        try:
            async with within(timeout):
                plan = await plan_once(goal, llm, tools=tools, max_tasks=max_tasks, journal=journal)
        except ff.PlanError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        console.print(str(plan), markup=False)
        progress = _Progress(console, [s.name for s in plan.subtasks])
        started = time.time()
        left = None if end is None else max(end - loop.time(), 0.001)
        try:
            result = await plan.run(
                on_event=progress.event,
                timeout=timeout,
                deadline=left,
                raise_on_failure=False,
                journal=journal,
            )
        except asyncio.CancelledError:
            progress.close()
            progress.interrupted(threads=[])
            raise
        progress.close()
        async with within(timeout):
            synthesis = await ff.synthesize(result, llm)
    finally:
        await llm.aclose()
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
    report = run_report(
        "ask", "", result, started_at=started, deadline=None, aggregate=aggregate, budget=budget
    )
    return (0 if not synthesis.gaps else 1), report
