"""fanflow as users get it: ``pip install .`` into an empty virtualenv, and a light import.

The install test builds the wheel from this tree and installs it with its
runtime dependencies only (pip uses the package index configured on this
machine), then runs the installed command, imports the package, and reads
the installed metadata: the version from src/fanflow/_version.py, the license
file, ``py.typed``, the console script and the pytest plugin's entry point.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSION = runpy.run_path(str(REPO / "src" / "fanflow" / "_version.py"))["__version__"]

# Optional dependencies and test tools: none may be needed to install or import fanflow.
DEV_ONLY = {
    "aiohttp",
    "anthropic",
    "fakellm",
    "hypothesis",
    "litellm",
    "mypy",
    "openai",
    "opentelemetry-api",
    "pytest",
    "pytest-asyncio",
    "ray",
    "ruff",
}

# Modules `import fanflow` must not load: every one of them is used by some
# part of fanflow (the command line, workflows, the LLM layer, executors...)
# and imported by that part when it is used. (tests/test_exports.py checks a
# shorter list; sqlite3 is allowed: the journal's own import, about 2 ms.)
HEAVY = {
    "aiohttp",
    "anthropic",
    "click",
    "cloudpickle",
    "httpx",
    "jinja2",
    "jsonschema",
    "litellm",
    "mcp",
    "openai",
    "opentelemetry",
    "pydantic",
    "ray",
    "rich",
    "yaml",
}


def _clean_env() -> dict[str, str]:
    """This process's environment without what would leak the dev venv into another."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    }
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str | Path], *, timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``args``; a failure shows the command, its status and all its output."""
    command = [str(a) for a in args]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(command)} took more than {timeout} s\n{exc.stdout}\n{exc.stderr}")
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited with {done.returncode}\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        )
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty virtualenv with ``pip install <repo>`` done (no extras)."""
    root = tmp_path_factory.mktemp("packaging")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=300, cwd=root)
    _run([venv / "bin" / "python", "-m", "pip", "install", REPO], timeout=900, cwd=root)
    return venv


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first test to run builds the venv
def test_the_installed_command_runs(venv: Path) -> None:
    helped = _run([venv / "bin" / "fanflow", "--help"], timeout=120, cwd=venv)
    assert helped.stdout.startswith("Usage: fanflow"), helped.stdout
    commands = helped.stdout.split("Commands:", 1)[-1]
    for command in ("ask", "map", "run", "simulate", "validate"):
        assert f"\n  {command} " in commands, helped.stdout

    versioned = _run([venv / "bin" / "fanflow", "--version"], timeout=120, cwd=venv)
    assert versioned.stdout.strip() == f"fanflow, version {VERSION}"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_installed_package_imports_without_dev_dependencies(venv: Path) -> None:
    code = textwrap.dedent(
        f"""
        import importlib.metadata, json, sys
        import fanflow
        heavy = sorted(set({sorted(HEAVY)!r}) & {{m.split(".")[0] for m in sys.modules}})
        import fanflow.llm, fanflow.testing  # without the llm/sim extras, too
        installed = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())
        print(json.dumps({{
            "version": fanflow.__version__,
            "file": fanflow.__file__,
            "installed": installed,
            "heavy": heavy,
        }}))
        """
    )
    # Not run from the repository: its src/ must not be what gets imported.
    out = json.loads(_run([venv / "bin" / "python", "-c", code], timeout=120, cwd=venv).stdout)
    assert out["version"] == VERSION
    assert Path(out["file"]).is_relative_to(venv), out["file"]
    assert not DEV_ONLY & set(out["installed"]), out["installed"]
    assert out["heavy"] == []


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_installed_metadata(venv: Path) -> None:
    code = textwrap.dedent(
        """
        import importlib.metadata, json
        dist = importlib.metadata.distribution("fanflow")
        print(json.dumps({
            "version": dist.version,
            "files": sorted(str(f) for f in dist.files or ()),
            "license": dist.metadata.get("License-Expression"),
            "license_files": dist.metadata.get_all("License-File"),
            "license_text": dist.read_text("licenses/LICENSE"),
            "classifiers": dist.metadata.get_all("Classifier"),
            "urls": dist.metadata.get_all("Project-URL"),
            "entry_points": sorted(f"{e.group}:{e.name}={e.value}" for e in dist.entry_points),
        }))
        """
    )
    meta = json.loads(_run([venv / "bin" / "python", "-c", code], timeout=120, cwd=venv).stdout)
    assert meta["version"] == VERSION
    assert "fanflow/py.typed" in meta["files"]
    assert f"fanflow-{VERSION}.dist-info/licenses/LICENSE" in meta["files"]
    assert meta["license_text"] == (REPO / "LICENSE").read_text()
    assert meta["license"] == "MIT" and meta["license_files"] == ["LICENSE"]
    # PEP 639: with License-Expression, no "License ::" classifier.
    assert "Typing :: Typed" in meta["classifiers"]
    assert not [c for c in meta["classifiers"] if c.startswith("License ::")]
    assert {url.split(",")[0] for url in meta["urls"]} >= {"Homepage", "Changelog", "Issues"}
    assert meta["entry_points"] == [
        "console_scripts:fanflow=fanflow._cli:main",
        "pytest11:fanflow=fanflow.testing._plugin",
    ]
    # Only the package is shipped: no tests, benchmarks or stray files.
    assert not [
        f
        for f in meta["files"]
        if not f.startswith(("fanflow/", f"fanflow-{VERSION}.dist-info/", "../../../bin/"))
    ]


def test_import_fanflow_loads_nothing_heavy() -> None:
    # A structural stand-in for an import-time budget (no wall clock in tests):
    # what `import fanflow` loads, beyond the standard library and fanflow.
    code = "import sys, fanflow; print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(out.stdout.split())
    assert "fanflow" in loaded
    assert sorted(HEAVY & loaded) == []
    third_party = sorted(loaded - set(sys.stdlib_module_names) - {"fanflow"})
    assert [m for m in third_party if not m.startswith("_")] == []
