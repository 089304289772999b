"""``fanflow run``, ``validate``, ``schema`` and ``report``: declarative workflows."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ._budget import budget_options, make_budget


def _fail(message: str) -> None:
    """A user's mistake: a line per mistake on stderr, exit status 2, no traceback."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(2)


def _load(path: str, overrides: tuple[str, ...], llm: str | None = None) -> Any:
    """The checked plan of the workflow at ``path``, its warnings on stderr; exit 2 if unusable.

    Every mistake found is printed, not only the first.
    """
    from .._workflow import WorkflowError, build, load

    try:
        # --llm is the model for prompt tasks and the synthesis that name none.
        plan = build(load(path, list(overrides), llm=llm))
    except WorkflowError as exc:
        count = len(exc.errors)
        summary = f"\n{path}: {count} mistakes found" if count > 1 else ""
        _fail(str(exc) + summary)
        raise  # not reached: _fail exits
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    return plan


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Set a parameter.")
@click.option(
    "--llm", metavar="URI", help="Model for prompts that name none, e.g. openai:gpt-4o-mini."
)
def validate(workflow: str, overrides: tuple[str, ...], llm: str | None) -> None:
    """Check WORKFLOW: the schema, references, needs graph and independence audit."""
    plan = _load(workflow, overrides, llm)
    graph = f", needs graph of {len(plan.needs)} dependent task(s)" if plan.needs else ""
    click.echo(
        f"{workflow}: ok - {len(plan.tasks)} tasks{graph}; audit found no hidden dependencies"
    )


@click.command()
def schema() -> None:
    """Print the JSON Schema of workflow files."""
    from .._workflow import json_schema

    click.echo(json_schema())


@click.command()
@click.argument("run_json", metavar="RUN.json")
@click.option("-o", "--output", required=True, metavar="FILE", help="The HTML file to write.")
def report(run_json: str, output: str) -> None:
    """Write a self-contained HTML report (timeline and results) of a run.

    RUN.json is a run report written by fanflow run --json. Exit status 0,
    or 2 with a one-line error for a file that cannot be read or is not a
    run report, or an output path that cannot be written.
    """
    from .._workflow._report import ReportError, render_html

    # Paths are checked here rather than by click.Path, whose usage errors
    # span several lines: every mistake is one line, exit status 2.
    try:
        text = Path(run_json).read_text(encoding="utf-8")
    except FileNotFoundError:
        return _fail(f"{run_json}: no such file")
    except UnicodeDecodeError:
        return _fail(f"{run_json}: not a fanflow run report (not UTF-8 text)")
    except OSError as exc:
        return _fail(f"{run_json}: cannot read: {exc.strerror or exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _fail(f"{run_json}:{exc.lineno}: not JSON: {exc.msg}")
    except (ValueError, RecursionError) as exc:
        # Valid JSON that Python refuses: a number past int's digit limit,
        # nesting deeper than the recursion limit.
        return _fail(f"{run_json}: not a fanflow run report ({type(exc).__name__}: {exc})")
    try:
        page = render_html(data)
    except ReportError as exc:
        return _fail(
            f"{run_json}: not a fanflow run report (write one with fanflow run --json): {exc}"
        )
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as exc:
        return _fail(f"{output}: cannot write: {exc.strerror or exc}")
    click.echo(f"wrote {output}", err=True)


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Set a parameter.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the run report.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write an HTML report.")
@click.option(
    "--llm", metavar="URI", help="Model for prompts that name none, e.g. openai:gpt-4o-mini."
)
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False),
    help="Record finished tasks in this SQLite file; a rerun replays those whose inputs "
    "are unchanged instead of running (and paying for) them again.",
)
@budget_options
def run(
    workflow: str,
    overrides: tuple[str, ...],
    json_out: str | None,
    html_out: str | None,
    llm: str | None,
    journal_path: str | None = None,
    budget_tokens: int | None = None,
    budget_dollars: float | None = None,
    budget_prices: tuple[str, ...] = (),
) -> None:
    """Run WORKFLOW: fan its tasks out, show progress, then the summary.

    Exit status: 0 when the strategy succeeded, 1 when it failed, 2 for a
    bad workflow file or option.
    """
    from . import _runner
    from ._paths import report_problem, write_reports

    # Every output path is checked before the run: a typo never costs the run.
    problem = report_problem(json_out, html_out)
    if problem is not None:
        _fail(problem)
    plan = _load(workflow, overrides, llm)
    try:  # the options override or complete the workflow's budget:
        plan.options["budget"] = make_budget(
            plan.options.get("budget"), budget_tokens, budget_dollars, budget_prices
        )
    except ValueError as exc:
        _fail(str(exc))
    journal = _open_journal(journal_path)
    try:
        code, report_data = _runner.run(_run(plan, journal), "run")
    finally:
        if journal is not None:
            journal.close()
    unwritten = write_reports(report_data, json_out, html_out)  # always, whatever the code
    sys.exit(code or unwritten)


def _open_journal(path: str | None) -> Any:
    """The ``--journal`` file, opened before anything runs (a bad one: exit 2)."""
    if path is None:
        return None
    import fanflow as ff

    try:
        return ff.Journal(path, "fanflow tasks")
    except ff.JournalError as exc:
        _fail(f"--journal: {exc}")
        return None


async def _run(plan: Any, journal: Any = None) -> tuple[int, dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    import fanflow as ff

    from .._core._usage import collect_usage, combine_usage
    from .._workflow._report import run_report

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a log or a pipe: do not wrap at 80 columns
    progress = _Progress(console, [t.name for t in plan.tasks])
    started = time.time()
    try:
        result = await ff.fan_out(
            plan.tasks,
            raise_on_failure=False,
            on_event=progress.event,
            journal=journal,
            **plan.options,
        )
    except asyncio.CancelledError:
        progress.close()
        progress.interrupted(threads=[n for n, t in plan.loaded.workflow.tasks.items() if t.call])
        raise
    progress.close()
    aggregate: dict[str, Any] | None = None
    aggregate_failed = False
    synthesis_usage = None  # the synthesis's model calls, booked outside the fan-out
    spec = plan.loaded.workflow.aggregate
    if spec is not None and result.succeeded:
        if spec.merge is not None:
            try:
                merged = ff.merge(
                    result, conflict=spec.merge.conflict, priority=spec.merge.priority or None
                )
            except (TypeError, ValueError) as exc:
                click.echo(f"fanflow run: aggregate: merge: {exc}", err=True)
                return 1, run_report(
                    plan.name,
                    plan.spec_hash,
                    result,
                    started_at=started,
                    deadline=plan.options.get("deadline"),
                )
            aggregate = {
                "kind": "merge",
                "value": merged.value,
                "conflicts": [c.key for c in merged.conflicts],
                "gaps": [g.task for g in merged.gaps],
            }
        elif spec.synthesize is not None:
            uri = spec.synthesize.llm or plan.loaded.workflow.llm
            synthesis = None
            try:
                llm = ff.llm.from_uri(uri)
            except (ValueError, ImportError) as exc:
                click.echo(f"fanflow run: the synthesis failed: {exc}", err=True)
                aggregate_failed = True
            else:
                try:
                    with collect_usage() as collected:
                        synthesis = await ff.synthesize(
                            result,
                            llm,
                            conflict_strategy=spec.synthesize.conflict_strategy,
                            budget=plan.options.get("budget"),
                        )
                except (ff.ServiceError, TimeoutError, OSError) as exc:
                    why = str(exc) or type(exc).__name__
                    click.echo(f"fanflow run: the synthesis failed: {why}", err=True)
                    aggregate_failed = True
                finally:
                    await llm.aclose()  # type: ignore[attr-defined]
                synthesis_usage = collected.usage
            if synthesis is not None:
                aggregate = {
                    "kind": "synthesize",
                    "text": synthesis.text,
                    "confidence_level": synthesis.confidence_level,
                    "gaps": [g.task for g in synthesis.gaps],
                }
    table = Table(title=f"{plan.name}: {result.strategy}", title_justify="left")
    for column in ("task", "status", "attempts", "time", "hedged", "note"):
        table.add_column(column)
    styles = {
        "ok": "green",
        "error": "red",
        "timeout": "yellow",
        "cancelled": "dim",
        "skipped": "dim",
    }
    for r in result.results:
        note = f"{type(r.error).__name__}: {r.error}" if r.error is not None else (r.reason or "")
        took = f"{r.duration:.2f}s" if r.duration is not None else "-"
        status = f"[{styles[r.status.value]}]{r.status.value}[/]"
        table.add_row(r.name, status, str(r.attempts), took, "yes" if r.hedged else "", note[:80])
    console.print(table)
    verdict = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
    replays = sum(r.replayed for r in result.results)
    console.print(
        f"{verdict}: {result.reason}; coverage {result.coverage:.0%}, confidence "
        f"{result.confidence:.2f} ({result.confidence_level}), {result.elapsed:.2f}s"
        + (f"; {replays} replayed from the journal" if replays else "")
    )
    if aggregate is not None:
        console.print(f"\n[bold]{aggregate['kind']}[/]:")
        console.print(
            aggregate.get("text") or json.dumps(aggregate.get("value"), indent=2), markup=False
        )
    elif result.ok and not isinstance(result.value, dict):
        console.print(f"value: {result.value!r}", markup=False)
    report_data = run_report(
        plan.name,
        plan.spec_hash,
        result,
        started_at=started,
        deadline=plan.options.get("deadline"),
        aggregate=aggregate,
        budget=plan.options.get("budget"),
    )
    if aggregate_failed:
        report_data["aggregate"] = {"kind": "synthesize", "failed": True}
    if synthesis_usage is not None:
        # The synthesis is a model call of the run too (failed ones included):
        # its own usage under "aggregate", the run's total beside the result.
        report_data["aggregate"]["usage"] = synthesis_usage.to_dict()
        total = combine_usage(result.usage, synthesis_usage)
        assert total is not None
        report_data["usage"] = total.to_dict()
    return (0 if result.ok and not aggregate_failed else 1), report_data


class _Progress:
    """Live progress: a rich status line on a terminal, plain lines otherwise."""

    def __init__(self, console: Any, names: list[str]) -> None:
        self.console = console
        self.total = len(names)
        self.done = 0
        self.running: dict[str, None] = {}
        self.finished: dict[str, None] = {}
        self.live = None
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(self._line(), console=console, transient=True, refresh_per_second=10)
            self.live.start()

    def _line(self) -> str:
        return f"fanflow: {self.done}/{self.total} tasks finished"

    def event(self, event: Any) -> None:
        import fanflow as ff

        if isinstance(event, ff.TaskStarted):
            self.running[event.name] = None
        elif isinstance(event, ff.TaskFinished):
            self.finished[event.result.name] = None
            self.done += 1
            r = event.result
            if self.live is not None:
                self.live.update(self._line())
            else:
                took = f"{r.duration:.2f}s" if r.duration is not None else "-"
                how = "replayed from the journal" if r.replayed else f"{r.attempts} attempt(s)"
                click.echo(f"  {r.status.value:<9} {r.name} ({took}, {how})", err=True)

    def interrupted(self, threads: list[str]) -> None:
        """Say what a signal interrupted: finished, stopped, and never started."""
        stopped = [n for n in self.running if n not in self.finished]
        never = self.total - len(self.finished) - len(stopped)
        click.echo(
            f"fanflow: interrupted: {len(self.finished)} of {self.total} tasks finished, "
            f"{len(stopped)} stopped ({', '.join(stopped) or 'none'}), {never} never started",
            err=True,
        )
        abandoned = [n for n in stopped if n in threads]
        if abandoned:
            click.echo(
                "fanflow: plain Python functions cannot be interrupted: the threads of "
                f"{', '.join(abandoned)} were abandoned (use async functions, or "
                'executor="process" in the library, for code that must really stop)',
                err=True,
            )

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
