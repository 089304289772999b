"""Run one example of ``examples.yaml`` hermetically, with GNU parallel or fanflow map.

Shared by ``record.py`` (which records GNU parallel's results into the data
file) and ``tests/test_gnu_conformance.py`` (which compares fanflow map
against them). Standard library plus PyYAML only.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).with_name("examples.yaml")
GNU = "/usr/bin/parallel"
TIMEOUT = 20  # seconds per example (coreutils timeout: exit 124)

# `parallel` as a command word: at the start of a line, or after | ; & ( .
_COMMAND_WORD = re.compile(r"(^|[|;&(]\s*|\n\s*)parallel(?=\s|$)")


def fanflow_map() -> str:
    """The shell words that run ``fanflow map`` with this interpreter."""
    return f"{shlex.quote(sys.executable)} -m fanflow map"


def substitute(command: str, runner: str) -> str:
    """``command`` with each ``parallel`` command word replaced by ``runner``."""
    return _COMMAND_WORD.sub(lambda m: m.group(1) + runner, command)


def load() -> dict[str, Any]:
    with DATA.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


@dataclass
class Outcome:
    stdout: bytes
    stderr: bytes
    exit: int


def script(example: dict[str, Any], runner: str) -> str:
    """The bash script: setup (silent), the command, then ``after`` (its exit kept)."""
    lines = [
        "{",
        example.get("setup") or ":",
        "} </dev/null >/dev/null 2>&1",
        substitute(example["command"], runner),
        "__conformance_rc=$?",
    ]
    if example.get("after"):
        lines.append(example["after"])
    lines.append("exit $__conformance_rc")
    return "\n".join(lines) + "\n"


def run(example: dict[str, Any], runner: str, timeout: int = TIMEOUT) -> Outcome:
    """Run ``example`` in a fresh temp dir with a minimal environment."""
    with tempfile.TemporaryDirectory(prefix="gnu-conformance-") as tmp:
        home = Path(tmp, "home")
        (home / ".parallel").mkdir(parents=True)
        (home / ".parallel" / "will-cite").touch()  # no citation notice
        work = Path(tmp, "work")
        work.mkdir()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "SHELL": "/bin/bash",
            "LC_ALL": "C",
        }
        proc = subprocess.run(
            ["timeout", str(timeout), "bash", "-c", script(example, runner)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout + 10,
            check=False,
        )
        return Outcome(proc.stdout, proc.stderr, proc.returncode)


def normalize(stdout: bytes, sort: bool) -> bytes:
    """The bytes compared: sorted by line when the example's order is not promised."""
    if not sort:
        return stdout
    lines = stdout.split(b"\n")
    tail = lines.pop() if lines else b""
    return b"".join(sorted(line + b"\n" for line in lines)) + tail


def expected(example: dict[str, Any]) -> bytes:
    """The recorded stdout (stored already normalized) as bytes."""
    return str(example["stdout"]).encode("utf-8", "surrogateescape")


def passes(example: dict[str, Any], outcome: Outcome) -> bool:
    return (
        normalize(outcome.stdout, example["sorted"]) == expected(example)
        and outcome.exit == example["exit"]
    )


if __name__ == "__main__":  # pragma: no cover - debugging aid
    data = load()
    by_id = {e["id"]: e for e in data["examples"]}
    ex = by_id[sys.argv[1]]
    runner = GNU if "--gnu" in sys.argv else fanflow_map()
    print(script(ex, runner))
    out = run(ex, runner)
    print(
        f"exit {out.exit}\n--- stdout\n{out.stdout.decode(errors='replace')}"
        f"--- stderr\n{out.stderr.decode(errors='replace')}"
    )
