"""``fanflow run``, ``validate``, ``schema`` and ``report``: declarative workflows."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click


def _fail(message: str) -> None:
    """A user's mistake: one line on stderr, exit status 2, no traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _load(path: str, overrides: tuple[str, ...], llm: str | None = None) -> Any:
    from .._workflow import WorkflowError, build, load

    try:
        loaded = load(path, list(overrides))
        if llm is not None:
            # The model for prompt tasks and the synthesis that name none.
            loaded.workflow = loaded.workflow.model_copy(update={"llm": llm})
        return build(loaded)
    except WorkflowError as exc:
        _fail(str(exc))


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
@click.argument("run_json", metavar="RUN.json", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file.")
def report(run_json: str, output: str) -> None:
    """Write a self-contained HTML report (timeline and results) of a run."""
    from .._workflow._report import render_html

    try:
        data = json.loads(Path(run_json).read_text(encoding="utf-8"))
        page = render_html(data)
    except FileNotFoundError:
        _fail(f"{run_json}: no such file")
    except json.JSONDecodeError as exc:
        _fail(f"{run_json}:{exc.lineno}: not JSON: {exc.msg}")
    except (KeyError, TypeError):
        _fail(f"{run_json}: not a fanflow run report (write one with fanflow run --json)")
    Path(output).write_text(page, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Set a parameter.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the run report.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write an HTML report.")
@click.option(
    "--llm", metavar="URI", help="Model for prompts that name none, e.g. openai:gpt-4o-mini."
)
def run(
    workflow: str,
    overrides: tuple[str, ...],
    json_out: str | None,
    html_out: str | None,
    llm: str | None,
) -> None:
    """Run WORKFLOW: fan its tasks out, show progress, then the summary.

    Exit status: 0 when the strategy succeeded, 1 when it failed, 2 for a
    bad workflow file or option.
    """
    from .._workflow._report import render_html

    plan = _load(workflow, overrides, llm)
    code, report_data = asyncio.run(_run(plan))
    if json_out:
        Path(json_out).write_text(json.dumps(report_data, indent=2), encoding="utf-8")
    if html_out:
        Path(html_out).write_text(render_html(report_data), encoding="utf-8")
    sys.exit(code)


async def _run(plan: Any) -> tuple[int, dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    import fanflow as ff

    from .._engine import run_graph
    from .._workflow._report import run_report

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a log or a pipe: do not wrap at 80 columns
    progress = _Progress(console, [t.name for t in plan.tasks])
    started = time.time()
    result = await run_graph(
        plan.tasks, plan.needs, raise_on_failure=False, on_event=progress.event, **plan.options
    )
    progress.close()
    aggregate: dict[str, Any] | None = None
    spec = plan.loaded.workflow.aggregate
    if spec is not None and result.succeeded:
        if spec.merge is not None:
            try:
                merged = ff.merge(result, spec.merge.conflict, priority=spec.merge.priority or None)
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
            llm = ff.llm.from_uri(uri)
            try:
                synthesis = await ff.synthesize(
                    result, llm, conflict_strategy=spec.synthesize.conflict_strategy
                )
            except ff.ServiceError as exc:
                click.echo(f"fanflow run: the synthesis failed: {exc}", err=True)
                synthesis = None
            finally:
                await llm.aclose()  # type: ignore[attr-defined]
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
    console.print(
        f"{verdict}: {result.reason}; coverage {result.coverage:.0%}, confidence "
        f"{result.confidence:.2f} ({result.confidence_level}), {result.elapsed:.2f}s"
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
    )
    return (0 if result.ok else 1), report_data


class _Progress:
    """Live progress: a rich status line on a terminal, plain lines otherwise."""

    def __init__(self, console: Any, names: list[str]) -> None:
        self.console = console
        self.total = len(names)
        self.done = 0
        self.live = None
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(self._line(), console=console, transient=True, refresh_per_second=10)
            self.live.start()

    def _line(self) -> str:
        return f"fanflow: {self.done}/{self.total} tasks finished"

    def event(self, event: Any) -> None:
        import fanflow as ff

        if isinstance(event, ff.TaskFinished):
            self.done += 1
            r = event.result
            if self.live is not None:
                self.live.update(self._line())
            else:
                took = f"{r.duration:.2f}s" if r.duration is not None else "-"
                click.echo(
                    f"  {r.status.value:<9} {r.name} ({took}, {r.attempts} attempt(s))", err=True
                )

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
