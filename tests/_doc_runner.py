"""Find the code blocks of the documentation and run them, for test_doc_examples.py.

The convention (README.md and docs/**/*.md):

* Fenced blocks in ``python``/``py``, ``sh``/``bash`` and ``console`` run;
  any other language (yaml, json, text, toml, none) does not.
* ``<!-- not-run: REASON -->`` on the nearest non-blank line before the
  fence keeps a block from running; REASON must not be empty. Such blocks
  are reported as skipped, with their reason.
* ``<!-- expect-exit: N -->`` there: the block must exit with status N
  (0 otherwise). Several such comments may stand above one fence.
* A python block is a program of its own (top-level ``await`` allowed); a
  sh/bash block runs with ``bash -e``; in a console block the lines that
  start with ``$ `` are the commands (the rest is output, not checked).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PYTHON = frozenset({"python", "py"})
SHELL = frozenset({"sh", "bash"})
CONSOLE = frozenset({"console"})
RUN = PYTHON | SHELL | CONSOLE

TIMEOUT = 60.0  # seconds per block

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
_COMMENT = re.compile(r"^\s*<!--(?P<body>.*?)-->\s*$")
_NOT_RUN = re.compile(r"^\s*not-run\s*(?::(?P<reason>.*))?$", re.DOTALL)
_EXPECT_EXIT = re.compile(r"^\s*expect-exit\s*(?::(?P<status>.*))?$", re.DOTALL)

# Variables that could send a request anywhere but loopback, or authorise one.
_SECRET = re.compile(r"(_API_KEY|_API_TOKEN|_ACCESS_KEY|_SECRET_KEY|_SECRET|_TOKEN)$")
_SECRET_NAMES = frozenset({"OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_BASE_URL"})
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")


@dataclass(frozen=True)
class Block:
    """One fenced block: ``path:line`` is its opening fence (1-based)."""

    path: str  # relative to ROOT, with forward slashes
    line: int
    lang: str
    code: str
    not_run: str | None = None  # the reason given, "" when it is missing
    expect_exit: int = 0
    problem: str | None = None  # a malformed marker or fence

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    files = [root / "README.md"] if (root / "README.md").exists() else []
    docs = root / "docs"
    if docs.is_dir():
        files += sorted(docs.rglob("*.md"))
    return files


def _markers(lines: list[str], fence: int) -> tuple[str | None, int, str | None]:
    """The markers in the comment lines just above ``lines[fence]``.

    Returns ``(not_run reason or None, expected exit status, problem or None)``.
    """
    not_run: str | None = None
    status = 0
    problem: str | None = None
    i = fence - 1
    while i >= 0:
        text = lines[i]
        if not text.strip():
            i -= 1
            continue
        comment = _COMMENT.match(text)
        if comment is None:
            break
        body = comment["body"]
        if (m := _NOT_RUN.match(body)) is not None:
            not_run = (m["reason"] or "").strip()
        elif (m := _EXPECT_EXIT.match(body)) is not None:
            raw = (m["status"] or "").strip()
            try:
                status = int(raw)
            except ValueError:
                problem = f"line {i + 1}: expect-exit needs an integer status, got {raw!r}"
        i -= 1
    return not_run, status, problem


def _dedent(line: str, indent: str) -> str:
    if line.startswith(indent):
        return line[len(indent) :]
    return line.lstrip(" \t")


def parse(path: Path, root: Path = ROOT) -> list[Block]:
    """Every fenced block of ``path`` (of any language)."""
    rel = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, indent, fence = i, m["indent"], m["fence"]
        lang = m["info"].split()[0].lower() if m["info"].split() else ""
        body: list[str] = []
        i += 1
        closed = False
        while i < len(lines):
            end = _FENCE.match(lines[i])
            if (
                end is not None
                and end["fence"][0] == fence[0]
                and len(end["fence"]) >= len(fence)
                and not end["info"]
            ):
                closed = True
                break
            body.append(_dedent(lines[i], indent))
            i += 1
        i += 1
        not_run, status, problem = _markers(lines, start)
        if not closed:
            problem = f"the block opened at line {start + 1} is never closed"
        code = "\n".join(body) + "\n" if body else ""
        blocks.append(Block(rel, start + 1, lang, code, not_run, status, problem))
    return blocks


def runnable_blocks(root: Path = ROOT) -> list[Block]:
    """The blocks the tests run or report: those in a language that runs."""
    return [b for f in doc_files(root) for b in parse(f, root) if b.lang in RUN]


def console_commands(code: str) -> str:
    """The commands of a console block: lines after ``$ ``, with their ``\\`` continuations."""
    out: list[str] = []
    continued = False
    for line in code.splitlines():
        if continued:
            out.append(line)
        elif line.startswith("$ "):
            out.append(line[2:])
        else:
            continue
        continued = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


# Runs a python block as __main__, with top-level await, its line numbers
# those of the Markdown file (tracebacks point into the doc).
_BOOTSTRAP = r"""
def _fanflow_doc_block():
    import ast, asyncio, inspect, sys, traceback
    import __main__
    code_file, doc_path, line = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(code_file, encoding="utf-8") as f:
        source = "\n" * line + f.read()
    namespace = __main__.__dict__
    del namespace["_fanflow_doc_block"]
    namespace["__file__"] = code_file
    sys.argv = [doc_path]
    try:
        code = compile(source, doc_path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                       dont_inherit=True)
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        # The traceback from the block's first frame on: not this bootstrap's.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != doc_path:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        sys.exit(1)

_fanflow_doc_block()
"""


def refusing_port() -> socket.socket:
    """A loopback socket bound but not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def block_env(base: dict[str, str], proxy_port: int) -> dict[str, str]:
    """``base`` without credentials, with proxies at a refusing port, ``.venv/bin`` first."""
    env = {
        k: v
        for k, v in base.items()
        if not _SECRET.search(k.upper())
        and k.upper() not in _SECRET_NAMES
        and k.lower() not in _PROXIES
        and k.lower() != "no_proxy"
        and not k.startswith("PYTEST_")
    }
    proxy = f"http://127.0.0.1:{proxy_port}"
    for name in _PROXIES:
        env[name] = env[name.upper()] = proxy
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost,::1"
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, str(ROOT / ".venv" / "bin"), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: timed out
    output: str
    timeout: float = TIMEOUT


def prepare(tmp: Path) -> Path:
    """A working directory holding a copy of the repository's examples/."""
    cwd = tmp / "work"
    cwd.mkdir()
    shutil.copytree(
        ROOT / "examples", cwd / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    return cwd


def run_block(block: Block, tmp: Path, env: dict[str, str], timeout: float = TIMEOUT) -> Outcome:
    """Run ``block`` in a fresh process in a copy of examples/ under ``tmp``."""
    cwd = prepare(tmp)
    if block.lang in PYTHON:
        code_file = tmp / "block.py"
        code_file.write_text(block.code, encoding="utf-8")
        doc = str(ROOT / block.path)
        cmd = [sys.executable, "-c", _BOOTSTRAP, str(code_file), doc, str(block.line)]
    else:
        script = block.code if block.lang in SHELL else console_commands(block.code)
        code_file = tmp / "block.sh"
        code_file.write_text(script, encoding="utf-8")
        cmd = ["bash", "-e", str(code_file)]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        out = b""
        status = None
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            rest, _ = proc.communicate()
            out += rest
    return Outcome(status, out.decode("utf-8", "replace"), timeout)


def report(block: Block, outcome: Outcome, limit: int = 12_000) -> str:
    """The failure message: where the block is, the block, and what it printed."""
    if outcome.status is None:
        what = f"did not finish within {outcome.timeout:g} s"
    else:
        what = f"exited with status {outcome.status} (expected {block.expect_exit})"
    output = outcome.output
    if len(output) > limit:
        output = "[... cut ...]\n" + output[-limit:]
    numbered = "\n".join(
        f"{block.line + 1 + n:5d}  {text}" for n, text in enumerate(block.code.splitlines())
    )
    return (
        f"{block.id}: the ```{block.lang} block {what}\n"
        f"--- block ({block.id}) ---\n{numbered}\n"
        f"--- output ---\n{output}"
    )
