"""Fuzzed workflow files: ``fanflow validate`` ends cleanly and quickly on whatever it is given.

Mutations of valid workflows (structure, types, huge numbers, aliases, deep
nesting, unicode, template text) go through ``fanflow validate`` in-process:
the exit status is 0, 1 or 2, nothing raises, no traceback is printed, and
each example ends within a few seconds (an alarm turns a hang into a
failure). ``fanflow run`` is fuzzed only on workflows whose tasks cannot run
arbitrary commands: ``run:`` stays ``true`` or ``echo ok`` and ``call:`` is
``json:dumps``; everything else is mutated.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fanflow._cli import main

BASE: dict[str, Any] = {
    "name": "fuzz",
    "params": {"topic": "sleep", "n": 3, "flags": [1, 2]},
    "llm": "sim:model",
    "strategy": {"best_effort": {"min_success": 1}},
    "timeout": "5s",
    "deadline": "30s",
    "max_concurrency": 4,
    "retry": {"attempts": 2, "backoff": "10ms"},
    "hedge": {"after": "p95", "max_extra": 0.1},
    "rate_limit": {"per_second": 100},
    "audit": "error",
    "tasks": {
        "shell": {"run": "echo {{ params.topic | upper }}", "timeout": "2s"},
        "call": {"call": "json:dumps", "with": {"obj": "{{ params.flags }}"}},
        "ask": {"prompt": "About {{ params.topic }}", "needs": ["shell"]},
        "after": {"run": "echo {{ tasks.shell.value }}", "needs": ["shell"], "writes": ["x"]},
    },
    "aggregate": {"merge": {"conflict": "vote"}},
}

TEMPLATES = [
    "{{ params.topic }}",
    "{{ param.topic }}",
    "{{ task.shell.value }}",
    "{{ tasks.shell.value }}",
    "{{ tasks.nope.value }}",
    "{{ params.topic | uper }}",
    "{{ params.topic | upper }}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ 'x' * 999999999 }}",
    "{% for x in params.flags %}{{ x }}{% endfor %}",
    "{% include 'x' %}",
    "{{",
    "}}{{",
    "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
    "{{ params.__class__ }}",
]
HOSTILE = [
    "9" * 5000,
    "-" + "9" * 4400,
    "1e99999",
    ".nan",
    "!!timestamp 2001-13-45",
    "!!binary ===",
    "!!python/object:os.system",
    "&a [*a]",
    "*nowhere",
    "[" * 400,
    "{" * 400,
    "- " * 200,
    "\t",
    "\x00",
    "\ufeff",
    "p200",
    "0",
    "-1",
    "0.5",
    "''",
    "{}",
    "[]",
    "~",
    "é\u202e\U0001f600",
    "{{ param.x }}",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(-(10**60), 10**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(TEMPLATES),
    st.sampled_from(["0", "2s", "500ms", "p95", "p200", "all_or_nothing", "sim:x", "nope:y"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


class Hang(Exception):
    """An example ran past its alarm."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("fanflow took more than 10 s on one example")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # One folder for every example: call: imports add the workflow's folder to sys.path.
    previous = signal.signal(signal.SIGALRM, _alarm)
    yield tmp_path_factory.mktemp("fuzz")
    signal.signal(signal.SIGALRM, previous)


def invoke(folder: Path, text: str) -> Result:
    """``fanflow validate`` in-process, with the checks every example must pass."""
    path = folder / "wf.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    args = ["validate", str(path)]
    signal.alarm(10)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=True)
    finally:
        signal.alarm(0)
    assert not isinstance(result.exception, Hang), f"hang on:\n{text[:2000]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception} on:\n{text[:2000]}"
    )
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output[-2000:])
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.lstrip().startswith(("error:", "warning:")), result.output[-2000:]
    return result


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any] = BASE, keep: tuple[str, ...] = ()) -> Any:
    """``base`` with one to four mutations: a value replaced, a key dropped or added."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p and not (set(p) & set(keep))]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(values)
        else:
            parent[path[-1]] = draw(values)
    return data


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutated(), st.one_of(st.none(), st.tuples(st.integers(0, 2000), st.sampled_from(HOSTILE))))
def test_validate_on_mutated_workflows(folder: Path, data: Any, splice: Any) -> None:
    text = _dump(data)
    if splice is not None:
        at, snippet = splice
        at %= len(text) + 1
        text = text[:at] + snippet + text[at:]
    invoke(folder, text)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.sampled_from(["bomb", "deep-flow", "deep-block", "wide", "unicode"]),
    st.integers(1, 12),
    st.integers(2, 5000),
)
def test_validate_on_hostile_shapes(folder: Path, shape: str, width: int, size: int) -> None:
    if shape == "bomb":  # "billion laughs": width ** levels values from a few lines
        lines = [f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
        lines += [
            f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, size % 12 + 1)
        ]
        text = "params:\n" + "\n".join(lines) + "\ntasks:\n  a: {run: echo}\n"
    elif shape == "deep-flow":
        text = "params: {p: " + "[" * size + "]" * size + "}\ntasks:\n  a: {run: echo}\n"
    elif shape == "deep-block":
        levels = size % 200
        text = "params:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(levels))
        text += f"{'  ' * (levels + 1)}1\ntasks:\n  a: {{run: echo}}\n"
    elif shape == "wide":
        text = "tasks:\n" + "".join(f"  t{i}: {{run: echo}}\n" for i in range(size % 3000 + 1))
        text += f"strategy: {{first_n: {{n: {width * size}}}}}\n"
    else:
        text = "name: " + "é\u202e\U0001f600" * size + "\ntasks:\n  a: {run: echo}\n"
    invoke(folder, text)


HARMLESS: dict[str, Any] = {
    "params": {"topic": "sleep", "n": 3},
    "strategy": "best_effort",
    "timeout": "5s",
    "max_concurrency": 4,
    "retry": {"attempts": 2, "backoff": "1ms"},
    "tasks": {
        "t": {"run": "true"},
        "e": {"run": "echo ok", "needs": ["t"]},
        "j": {"call": "json:dumps", "with": {"obj": "{{ params.topic }}", "indent": 2}},
        "k": {"call": "json:dumps", "with": {"obj": "{{ params.n }}"}},
    },
}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutated(HARMLESS, keep=("run", "call")))
@example(copy.deepcopy(HARMLESS))
def test_run_on_mutated_harmless_workflows(folder: Path, data: Any) -> None:
    # Every task is `true`, `echo ok` or json.dumps: mutations reach options, params and
    # arguments, never the commands; a run: or call: key that a mutation drops stays dropped.
    tasks = data.get("tasks")
    for name, spec in list(tasks.items() if isinstance(tasks, dict) else []):
        if isinstance(spec, dict) and "run" in spec:
            spec["run"] = "true" if name == "t" else "echo ok"
        if isinstance(spec, dict) and "call" in spec:
            spec["call"] = "json:dumps"
            arguments = spec.get("with")
            # Only obj=: json.dumps(indent=10**9) would build a gigabyte of spaces.
            spec["with"] = {"obj": arguments.get("obj")} if isinstance(arguments, dict) else {}
    data.pop("rate_limit", None)  # a rate of one a day is valid, and a run then waits a day
    data["deadline"] = "3s"  # bounds retries whatever their backoff
    data["timeout"] = "2s"
    text = _dump(data)
    if invoke(folder, text).exit_code != 0:
        return
    # In a process of its own: a run installs signal handlers and an event loop of its own.
    try:
        out = subprocess.run(
            [sys.executable, "-m", "fanflow", "run", str(folder / "wf.yaml")],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"fanflow run hung on:\n{text}")
    assert out.returncode in (0, 1), (out.returncode, out.stderr[-2000:], text)
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
