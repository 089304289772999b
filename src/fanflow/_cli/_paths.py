"""Output paths checked before any work starts, and written without losing the others."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["output_problem", "report_problem", "write_outputs", "write_reports"]


def output_problem(option: str, path: str | os.PathLike[str] | None) -> str | None:
    """Why ``path`` cannot be written (one line naming ``option`` and the path), or None.

    Checked before a run starts, so that an hour of work is never lost to a
    typo in ``--json``'s folder.
    """
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        return f"{option} {path}: is a folder; give a file name"
    folder = target.parent
    if not folder.is_dir():
        return f"{option} {path}: the folder {str(folder)!r} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{option} {path}: the folder {str(folder)!r} is not writable"
    if target.exists() and not os.access(target, os.W_OK):
        return f"{option} {path}: the file is not writable"
    return None


def write_outputs(outputs: list[tuple[str, str | None, str]]) -> list[str]:
    """Write each ``(option, path, text)`` whose path is set; the problems, one line each.

    One failed write never stops the next: ``--json`` failing still leaves
    ``--html`` written.
    """
    problems = []
    for option, path, text in outputs:
        if path is None:
            continue
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            problems.append(f"{option} {path}: cannot write it: {exc.strerror or exc}")
    return problems


def report_problem(json_out: str | None, html_out: str | None) -> str | None:
    """:func:`output_problem` for a run's ``--json`` and ``--html`` paths."""
    for option, path in (("--json", json_out), ("--html", html_out)):
        problem = output_problem(option, path)
        if problem is not None:
            return problem
    return None


def write_reports(report: dict[str, Any], json_out: str | None, html_out: str | None) -> int:
    """Write a run report as JSON and HTML where asked; say each failure; 1 if any failed."""
    import json

    import click

    from .._workflow._report import render_html

    problems = write_outputs(
        [
            ("--json", json_out, json.dumps(report, indent=2) if json_out else ""),
            ("--html", html_out, render_html(report) if html_out else ""),
        ]
    )
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    return 1 if problems else 0
