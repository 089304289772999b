"""The HTML report in a real headless Chromium: it loads cleanly and shows every attempt."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"
)

WORKFLOW = """\
name: browser
timeout: 0.5s
deadline: 3s
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
    attempts = sum(len(r["history"]) for r in report["result"]["results"])
    assert attempts >= 7  # the failing and hung tasks were retried
    url = (tmp_path / "run.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'<rect class="attempt', dom.stdout)) == attempts
    assert 'class="deadline"' in dom.stdout
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,420", url)
    assert shot.stat().st_size > 5000
