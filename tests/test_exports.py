"""The public surface: sorted, complete, and named fanflow.X."""

from __future__ import annotations

import subprocess
import sys

import fanflow as ff

# Names SPEC.md fixes for the parts built so far.
SPEC_NAMES = {
    "Task",
    "task",
    "Status",
    "TaskResult",
    "FanInResult",
    "fan_out",
    "run",
    "as_completed",
    "FanOutError",
    "StrategyFailed",
    "AllOrNothing",
    "BestEffort",
    "FirstN",
    "Vote",
    "BetaStop",
    "Strategy",
    "TaskStarted",
    "TaskRetrying",
    "TaskHedged",
    "TaskFinished",
    "FanOutFinished",
}


def test_all_is_sorted_and_complete() -> None:
    assert ff.__all__ == sorted(ff.__all__, key=str.casefold)
    assert set(ff.__all__) >= SPEC_NAMES
    for name in ff.__all__:
        assert hasattr(ff, name), name


def test_public_names_report_the_public_module() -> None:
    assert ff.StrategyFailed.__module__ == "fanflow"
    assert ff.Task.__module__ == "fanflow"
    assert repr(ff.Status.OK) == "<Status.OK: 'ok'>"


def test_public_callables_have_docstrings() -> None:
    for name in ff.__all__:
        assert getattr(ff, name).__doc__, f"fanflow.{name} has no docstring"


def test_import_is_light() -> None:
    # Importing fanflow must not pull in heavy or optional dependencies.
    code = (
        "import sys, fanflow; "
        "heavy = {'openai', 'anthropic', 'ray', 'opentelemetry', 'rich', 'pydantic'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
