"""Output paths checked before any work starts, and written without losing the others."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["output_problem", "write_outputs"]


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
