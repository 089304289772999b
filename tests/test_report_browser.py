"""The HTML report in a real headless Chromium: it loads cleanly, shows every attempt, and
runs nothing a report's values carry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fanflow._workflow._report import LEFT, WIDTH, render_html

from .test_report import PAYLOADS, hostile_report

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"
)

WORKFLOW = """\
name: browser
timeout: 0.5s
deadline: 0.8s
retry: {attempts: 2, backoff: 10ms, retry_timeouts: true}
tasks:
  fast: {run: "echo fast"}
  slow: {run: "sleep 0.3; echo slow"}
  flaky: {run: "exit 1"}
  hung: {run: "sleep 5"}
  after: {run: "echo after", needs: [fast]}
"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_loads_without_console_errors_and_shows_each_attempt(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanflow",
            "run",
            "wf.yaml",
            "--json",
            "run.json",
            "--html",
            "run.html",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "run.json").read_text())
    results = {r["name"]: r for r in report["result"]["results"]}
    attempts = sum(len(r["history"]) for r in results.values())
    assert len(results["flaky"]["history"]) == 2  # retried: a numbered bar
    # The deadline (0.8 s) falls within the run: the hung task is still running then.
    assert max(a["finished_at"] for r in results.values() for a in r["history"]) >= (
        report["started_at"] + report["deadline"]
    )
    url = (tmp_path / "run.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'<rect class="attempt', dom.stdout)) == attempts
    # The timeline spans the run: the last attempt ends at its right edge, and the
    # deadline that cut the hung task is marked within it.
    bars = re.findall(r'<rect class="attempt[^>]* x="([\d.]+)"[^>]* width="([\d.]+)"', dom.stdout)
    assert max(float(x) + float(w) for x, w in bars) == pytest.approx(LEFT + WIDTH, abs=1)
    (deadline_x,) = re.findall(r'<line class="deadline" x1="([\d.]+)"', dom.stdout)
    assert LEFT + 0.5 * WIDTH <= float(deadline_x) <= LEFT + WIDTH + 1
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,420", url)
    assert shot.stat().st_size > 5000


def test_hostile_values_do_not_run_in_the_page(tmp_path: Path) -> None:
    # Every attack at once, in every field; each one, if it ran, would set the title.
    payload = "".join(PAYLOADS)
    page = tmp_path / "hostile.html"
    page.write_text(render_html(hostile_report(payload)), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    titles = re.findall(r"<title>(.*?)</title>", dom.stdout, re.S)
    assert titles[0].startswith("fanflow run: &lt;script&gt;")
    assert "PWNED" not in titles
    assert "<img" not in dom.stdout and "<script" not in dom.stdout
    # The same payload left unescaped does run: the check above can fail.
    control = tmp_path / "control.html"
    control.write_text(f"<!doctype html><title>x</title><body><p>{payload}</p>", encoding="utf-8")
    ran = chromium(tmp_path, "--dump-dom", control.as_uri())
    assert "<title>PWNED</title>" in ran.stdout
