"""Every code block of README.md and docs/**/*.md runs (or says why not).

One test per block, named ``path:line`` of its opening fence. The
convention is in tests/_doc_runner.py: python, sh/bash and console blocks
run; ``<!-- not-run: REASON -->`` above a fence skips it with that reason
(listed by ``pytest -ra``); ``<!-- expect-exit: N -->`` expects status N.
Blocks run offline: a ``fanflow simulate`` process serves ``sim:`` models
(``$FANFLOW_SIM_URL``), API keys are removed from the environment and the
proxy variables point at a loopback port that refuses connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fanflow.testing import SimulatorProcess

from . import _doc_runner as runner

BLOCKS = runner.runnable_blocks()

# Blocks that take longer than a few seconds each, by id (path:line); the
# whole file runs in about 20 s (blocks three at a time).
SLOW: frozenset[str] = frozenset()


def _param(block: runner.Block) -> object:
    marks = [pytest.mark.slow] if block.id in SLOW else []
    # Each block's own timeout ends it first; pytest-timeout is the backstop
    # (the first test's setup runs every block, three at a time).
    marks.append(pytest.mark.timeout(300))
    return pytest.param(block, id=block.id, marks=marks)


@pytest.fixture(scope="module")
def block_env() -> Iterator[dict[str, str]]:
    """One simulator for the module; the environment every block runs in."""
    refused = runner.refusing_port()
    try:
        with SimulatorProcess() as sim:
            yield runner.block_env(sim.env(), refused.getsockname()[1])
    finally:
        refused.close()


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest,
    block_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, runner.Outcome]:
    """Run the selected blocks three at a time, once: each is its own process,
    mostly waiting on imports and the simulator, so the file takes a third
    of the time it takes one by one."""
    selected = {
        item.callspec.params["block"].id
        for item in request.session.items
        if item.path.name == "test_doc_examples.py" and hasattr(item, "callspec")
    }
    todo = [b for b in BLOCKS if b.id in selected and b.problem is None and b.not_run is None]

    def one(block: runner.Block) -> tuple[str, runner.Outcome]:
        tmp = tmp_path_factory.mktemp("block")
        return block.id, runner.run_block(block, tmp, block_env)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, todo))


def test_blocks_are_found() -> None:
    assert any(b.path == "README.md" for b in BLOCKS), "no runnable block found in README.md"
    assert len({b.id for b in BLOCKS}) == len(BLOCKS)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_doc_block(block: runner.Block, outcomes: dict[str, runner.Outcome]) -> None:
    if block.problem is not None:
        pytest.fail(f"{block.id}: {block.problem}", pytrace=False)
    if block.not_run is not None:
        if not block.not_run:
            pytest.fail(
                f"{block.id}: <!-- not-run: REASON --> needs a reason; none is given",
                pytrace=False,
            )
        pytest.skip(f"{block.id}: not-run: {block.not_run}")
    outcome = outcomes[block.id]
    if outcome.status != block.expect_exit:
        pytest.fail(runner.report(block, outcome), pytrace=False)


# The harness itself, on made-up Markdown.

_SAMPLE = """\
# Title

```python
print("hi")
```

<!-- not-run: needs a GPU -->

```sh
nvidia-smi
```

<!-- not-run: -->
```bash
true
```

<!-- expect-exit: 3 -->
```console
$ fanflow --version
fanflow 0.1.0
$ echo a \\
  b
a b
```

```yaml
a: 1
```

- a list item:

  ```py
  x = 1
  ```

````markdown
```python
inside
```
````
"""


def test_parse_sample(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(_SAMPLE)
    blocks = [b for f in runner.doc_files(tmp_path) for b in runner.parse(f, tmp_path)]
    got = [(b.line, b.lang, b.not_run, b.expect_exit) for b in blocks]
    assert got == [
        (3, "python", None, 0),
        (9, "sh", "needs a GPU", 0),
        (14, "bash", "", 0),
        (19, "console", None, 3),
        (27, "yaml", None, 0),
        (33, "py", None, 0),
        (37, "markdown", None, 0),
    ]
    assert blocks[5].code == "x = 1\n"
    assert runner.console_commands(blocks[3].code) == "fanflow --version\necho a \\\n  b\n"
    assert [b.id for b in runner.runnable_blocks(tmp_path)] == [
        "README.md:3",
        "README.md:9",
        "README.md:14",
        "README.md:19",
        "README.md:33",
    ]


def test_bad_markers_are_problems(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("<!-- expect-exit: x -->\n```sh\ntrue\n```\n```python\n")
    first, second = runner.parse(tmp_path / "README.md", tmp_path)
    assert first.problem is not None and "expect-exit" in first.problem
    assert second.problem is not None and "never closed" in second.problem


def test_env_is_offline() -> None:
    env = runner.block_env(
        {"PATH": "/usr/bin", "OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y", "HTTPS_PROXY": "z"},
        9,
    )
    assert "OPENAI_API_KEY" not in env and "ANTHROPIC_API_KEY" not in env
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:9"
    assert env["PATH"].split(":")[0].endswith("bin")
