"""Budgets in workflow files (``budget:``) and on the command line (``--budget-tokens``...)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = """\
name: budgeted
llm: sim:m
strategy: best_effort
tasks:
"""
TASKS = "".join(f"  q{i}: {{prompt: 'question {i}: say something short'}}\n" for i in range(10))


def fanflow(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def simulator() -> Iterator[dict[str, str]]:
    from fanflow.testing import SimulatorProcess

    with SimulatorProcess("--latency", "0.05", "--sigma", "0.1") as sim:
        yield sim.env()


@pytest.mark.parametrize(
    ("budget", "line", "field", "message"),
    [
        ("budget:\n  tokens: -1\n", 6, "budget.tokens", "greater than or equal to 0"),
        ("budget:\n  tokens: 10\n  dollars: 2\n", 5, "budget", "needs prices"),
        ("budget:\n  prices: {m: [1, 2]}\n", 5, "budget", "needs tokens, dollars or requests"),
        ("budget:\n  tokens: 10\n  prices: {m: [1, x]}\n", 7, "budget.prices.m[1]", "number"),
        ("budget:\n  tokens: 10\n  colour: red\n", 7, "budget.colour", "unknown field"),
        ("budget: 5\n", 5, "budget", ""),
    ],
    ids=["negative", "dollars-without-prices", "no-limit", "bad-price", "unknown", "scalar"],
)
def test_a_bad_budget_is_a_file_line_field_error(
    tmp_path: Path, budget: str, line: int, field: str, message: str
) -> None:
    wf = write(tmp_path, "name: t\ntasks:\n  a: {run: echo hi}\n" + "\n" + budget)
    out = fanflow("validate", str(wf))
    assert out.returncode == 2, out.stderr
    assert f"{wf}:{line}: {field}" in out.stderr and message in out.stderr
    assert "Traceback" not in out.stderr


def test_a_good_budget_validates(tmp_path: Path) -> None:
    wf = write(
        tmp_path,
        "name: t\ntasks:\n  a: {run: echo hi}\n"
        "budget: {tokens: 100, dollars: 0.5, requests: 3, prices: {m: [0.15, 0.6]}}\n",
    )
    out = fanflow("validate", str(wf))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-dollars", "1"], "needs prices"),
        (["--budget-tokens", "-5"], "--budget-tokens"),
        (["--budget-tokens", "many"], "--budget-tokens"),
        (["--budget-dollars", "1", "--budget-price", "m=1"], "MODEL=IN,OUT"),
        (["--budget-dollars", "1", "--budget-price", "m=a,b"], "must be numbers"),
        (["--budget-dollars", "nan", "--budget-price", "m=1,2"], "--budget-dollars"),
    ],
    ids=["dollars-without-prices", "negative", "not-a-number", "price-shape", "price-nan", "nan"],
)
def test_bad_budget_options_exit_2_without_a_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    wf = write(tmp_path, "name: t\ntasks:\n  a: {run: echo hi}\n")
    out = fanflow("run", str(wf), *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert "hi" not in out.stdout  # nothing ran


def test_budget_tokens_limits_a_workflow_of_prompt_tasks(
    tmp_path: Path, simulator: dict[str, str]
) -> None:
    wf = write(tmp_path, PROMPTS + TASKS)
    # Each prompt task reserves its template's estimate (~10) plus 256 for the answer.
    out = fanflow(
        "run", str(wf), "--budget-tokens", "800", "--json", "run.json", "--html", "run.html",
        cwd=tmp_path, env=simulator,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "run.json").read_text())
    results = report["result"]["results"]
    ok = [r for r in results if r["status"] == "ok"]
    skipped = [r for r in results if r["status"] == "skipped"]
    assert ok and skipped and len(ok) + len(skipped) == 10
    assert all("budget" in r["reason"] for r in skipped)
    budget = report["budget"]
    assert budget["limits"]["tokens"] == 800
    assert 0 < budget["spent"]["tokens"] <= 800
    assert budget["spent"]["requests"] == len(ok) and budget["skipped"] == len(skipped)
    assert budget["remaining"]["tokens"] == 800 - budget["spent"]["tokens"]
    page = (tmp_path / "run.html").read_text()
    assert "<h2>Budget</h2>" in page and f"{len(skipped)} task(s) skipped for the budget" in page


def test_the_options_override_and_complete_the_workflows_budget(
    tmp_path: Path, simulator: dict[str, str]
) -> None:
    wf = write(
        tmp_path,
        PROMPTS.replace("llm: sim:m", "llm: sim:m\nbudget: {tokens: 100000, prices: {m: [1, 2]}}")
        + TASKS,
    )
    out = fanflow(
        "run", str(wf), "--budget-tokens", "300", "--budget-dollars", "5", "--json", "r.json",
        cwd=tmp_path, env=simulator,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    budget = json.loads((tmp_path / "r.json").read_text())["budget"]
    assert budget["limits"] == {"tokens": 300, "dollars": 5, "requests": None}
    assert budget["spent"]["dollars"] > 0 and budget["spent"]["tokens"] <= 300
    assert budget["skipped"] >= 8  # one reservation (~266 tokens) fits at a time


def test_a_workflow_without_a_budget_reports_none(
    tmp_path: Path, simulator: dict[str, str]
) -> None:
    wf = write(tmp_path, PROMPTS + TASKS)
    out = fanflow("run", str(wf), "--json", "r.json", cwd=tmp_path, env=simulator)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert "budget" not in report
    assert all(r["status"] == "ok" for r in report["result"]["results"])


def test_ask_refuses_a_planning_call_over_budget(tmp_path: Path, simulator: dict[str, str]) -> None:
    out = fanflow(
        "ask", "plan a picnic", "--llm", "sim:m", "--budget-tokens", "5",
        cwd=tmp_path, env=simulator,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "budget" in out.stderr and "Traceback" not in out.stderr


def test_ask_budget_options_are_checked(tmp_path: Path) -> None:
    out = fanflow("ask", "x", "--llm", "sim:m", "--budget-dollars", "2", cwd=tmp_path)
    assert out.returncode == 2 and "needs prices" in out.stderr
    assert "Traceback" not in out.stderr
