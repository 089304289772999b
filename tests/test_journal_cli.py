"""fanflow run --journal: replay unchanged tasks, rerun changed ones and their dependents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOW = """\
name: journaled
params:
  word: {{type: string, default: hello}}
tasks:
  a:
    run: echo {a} >> ran.log; echo A-{{{{ params.word }}}}
  b:
    run: echo b >> ran.log; echo B
  c:
    needs: [a]
    run: echo c >> ran.log; echo C-{{{{ tasks.a.value }}}}
  d:
    needs: [b]
    run: echo d >> ran.log; echo D-{{{{ tasks.b.value }}}}
"""


def fanflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def write(folder: Path, a: str = "a") -> Path:
    path = folder / "wf.yaml"
    path.write_text(WORKFLOW.format(a=a))
    return path


def ran(folder: Path) -> list[str]:
    log = folder / "ran.log"
    lines = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return sorted(lines)


def replayed(report: Path) -> dict[str, bool]:
    data = json.loads(report.read_text())
    return {r["name"]: r["replayed"] for r in data["result"]["results"]}


def test_a_rerun_replays_and_an_edit_reruns_what_it_changes(tmp_path: Path) -> None:
    wf = write(tmp_path)
    first = fanflow("run", str(wf), "--journal", "j.db", "--json", "r.json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert ran(tmp_path) == ["a", "b", "c", "d"]
    again = fanflow("run", str(wf), "--journal", "j.db", "--json", "r.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert ran(tmp_path) == []
    assert replayed(tmp_path / "r.json") == {"a": True, "b": True, "c": True, "d": True}
    assert "replayed from the journal" in again.stdout + again.stderr
    # A parameter a uses: a runs, its output changes, so c runs; b and d are replayed.
    edited = fanflow(
        "run", str(wf), "--journal", "j.db", "--json", "r.json", "--set", "word=bye", cwd=tmp_path
    )
    assert edited.returncode == 0, edited.stderr
    assert ran(tmp_path) == ["a", "c"]
    assert replayed(tmp_path / "r.json") == {"a": False, "b": True, "c": False, "d": True}
    # An edited command whose output is the same: a runs, c is replayed.
    write(tmp_path, a="a-edited")
    same = fanflow(
        "run", str(wf), "--journal", "j.db", "--json", "r.json", "--set", "word=bye", cwd=tmp_path
    )
    assert same.returncode == 0, same.stderr
    assert ran(tmp_path) == ["a-edited"]
    assert replayed(tmp_path / "r.json") == {"a": False, "b": True, "c": True, "d": True}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing-folder", "does not exist"),
        ("junk", "not a fanflow journal"),
        ("folder", "is a directory"),
    ],
)
def test_a_bad_journal_is_refused_before_anything_runs(
    tmp_path: Path, setup: str, message: str
) -> None:
    wf = write(tmp_path)
    target = tmp_path / "j.db"
    if setup == "missing-folder":
        target = tmp_path / "nowhere" / "j.db"
    elif setup == "junk":
        target.write_bytes(b"junk" * 1000)
    else:
        target.mkdir()
    done = fanflow("run", str(wf), "--journal", str(target), cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert setup == "folder" or done.stderr.startswith("error: --journal:")
    assert ran(tmp_path) == []
