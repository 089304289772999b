"""The documentation site builds with warnings as errors, and has its key pages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs", reason="the docs tools come with the dev extra")
pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is in dev")

# Links mkdocs reports (at INFO level, see mkdocs.yml) that leave docs/: only
# the in-depth pages' links to the README are allowed.
ALLOWED_OUTSIDE_LINKS = re.compile(r"'\.\./README\.md(#[^']*)?'")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out, built.stdout + built.stderr


@pytest.mark.slow
def test_build_is_strict_and_links_resolve(site: tuple[Path, str]) -> None:
    _, log = site
    broken = [
        line
        for line in log.splitlines()
        if "not found among documentation files" in line and not ALLOWED_OUTSIDE_LINKS.search(line)
    ]
    assert not broken, "\n".join(broken)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [
        "index.html",
        "guide/strategies/index.html",
        "guide/cli/index.html",
        "coming-from/asyncio/index.html",
        "coming-from/langgraph/index.html",
        "coming-from/gnu-parallel/index.html",
        "benchmarks/index.html",
        "journals/index.html",
    ],
)
def test_key_pages_exist(site: tuple[Path, str], page: str) -> None:
    out, _ = site
    assert (out / page).is_file()


@pytest.mark.slow
def test_api_reference_is_generated_from_docstrings(site: tuple[Path, str]) -> None:
    import fanflow
    import fanflow.llm
    import fanflow.testing

    out, _ = site
    for module, page in [
        (fanflow, "api/fanflow/index.html"),
        (fanflow.llm, "api/llm/index.html"),
        (fanflow.testing, "api/testing/index.html"),
    ]:
        html = (out / page).read_text(encoding="utf-8")
        missing = [name for name in module.__all__ if f'id="{module.__name__}.{name}"' not in html]
        assert not missing, f"{page} does not document {missing}"
    api = (out / "api/fanflow/index.html").read_text(encoding="utf-8")
    assert "Run tasks concurrently and fan their results in." in api  # its docstring
    assert not re.findall(r'id="fanflow\._', api), "private names are documented"
