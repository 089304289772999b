"""Workflow files: validation errors with file, line and field; needs graphs; run, report."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fanflow as ff
from fanflow._workflow import WorkflowError, build, load

ROOT = Path(__file__).resolve().parent.parent

VALID = textwrap.dedent(
    """\
    name: sample
    params:
      who: world
    strategy: {best_effort: {min_success: 1}}
    timeout: 5s
    tasks:
      hello:
        run: "echo hello {{ params.who }}"
      shout:
        needs: [hello]
        run: "echo {{ tasks.hello.value }} | tr a-z A-Z"
    """
)


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fanflow(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        pytest.param("tasks: [oops", 1, "", "YAML syntax error", id="yaml-syntax"),
        pytest.param("- just\n- a list\n", 1, "", "a mapping", id="not-a-mapping"),
        pytest.param(
            "tasks:\n  a:\n    run: echo\n    timout: 5s\n",
            4,
            "tasks.a.timout",
            "unknown field",
            id="unknown-field",
        ),
        pytest.param(
            "tasks:\n  a:\n    run: echo\n    timeout: soon\n",
            4,
            "tasks.a.timeout",
            "invalid duration 'soon'",
            id="bad-duration",
        ),
        pytest.param(
            "tasks:\n  a:\n    run: echo\n    weight: heavy\n",
            4,
            "tasks.a.weight",
            "number",
            id="wrong-type",
        ),
        pytest.param(
            "strategy: fastest\ntasks:\n  a: {run: echo}\n",
            1,
            "strategy.kind",
            "fastest",
            id="unknown-strategy",
        ),
        pytest.param(
            "tasks:\n  a:\n    run: echo\n    prompt: hi\n",
            2,
            "tasks.a",
            "exactly one of run, call, prompt or agent",
            id="two-kinds",
        ),
        pytest.param("name: x\n", 1, "tasks", "required", id="no-tasks"),
        pytest.param(
            "tasks:\n  a:\n    call: not a target\n",
            2,
            "tasks.a",
            "package.module:function",
            id="bad-call",
        ),
    ],
)
def test_schema_errors_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(WorkflowError) as info:
        build(load(path))
    error = info.value
    assert error.line == line and error.field == field
    assert message in str(error) and str(error).startswith(f"{path}:{line}:")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param(
            """\
            tasks:
              a: {run: echo a}
              b:
                run: "echo {{ tasks.a.value }}"
            """,
            4,
            "task 'b' uses the value of task 'a' without needing it",
            id="hidden-dependency",
        ),
        pytest.param(
            """\
            tasks:
              a: {run: echo, needs: [b]}
              b: {run: echo, needs: [c]}
              c: {run: echo, needs: [a]}
            """,
            2,
            "cycle: a -> b -> c -> a",
            id="cycle",
        ),
        pytest.param(
            "tasks:\n  a: {run: echo, needs: [ghost]}\n",
            2,
            "'ghost', which is not a task",
            id="unknown-need",
        ),
        pytest.param(
            "tasks:\n  a: {run: 'echo {{ params.nope }}'}\n",
            2,
            "unknown parameter 'nope'",
            id="unknown-param",
        ),
        pytest.param(
            "tasks:\n  a: {call: 'no_such_module:fn'}\n",
            2,
            "cannot import 'no_such_module:fn'",
            id="bad-import",
        ),
        pytest.param(
            "tasks:\n  a: {run: echo, writes: [db]}\n  b: {run: echo, writes: [db]}\n",
            2,
            "write/write conflict on resource 'db'",
            id="audit-conflict",
        ),
        pytest.param("tasks:\n  a: {prompt: hi}\n", 2, "needs llm", id="prompt-without-llm"),
    ],
)
def test_reference_graph_and_audit_errors(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(WorkflowError) as info:
        build(load(path))
    assert message in str(info.value) and info.value.line == line


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="no such file"):
        load(tmp_path / "nope.yaml")


def test_writers_ordered_by_needs_do_not_conflict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tasks:\n  a: {run: echo, writes: [db]}\n  b: {run: echo, writes: [db], needs: [a]}\n",
    )
    assert len(build(load(path)).tasks) == 2


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(0, len(VALID) - 1),
    st.integers(0, 8),
    st.text(alphabet=":{}[]-#'\"\n abc0123456789", max_size=8),
)
def test_fuzzed_workflows_fail_cleanly(tmp_path: Path, at: int, cut: int, insert: str) -> None:
    text = VALID[:at] + insert + VALID[at + cut :]
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        build(load(path))
    except WorkflowError as exc:  # the only exception a user's file may cause
        assert str(exc).startswith(str(path))  # noqa: PT017


def test_cli_validate_and_errors_without_traceback(tmp_path: Path) -> None:
    good = write(tmp_path, VALID)
    out = fanflow("validate", str(good))
    assert out.returncode == 0 and "ok - 2 tasks" in out.stdout
    bad = write(tmp_path, "tasks:\n  a:\n    run: echo\n    timeout: soon\n", "bad.yaml")
    out = fanflow("validate", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bad}:4: tasks.a.timeout: invalid duration" in out.stderr
    out = fanflow("run", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "no such file" in out.stderr


def test_cli_schema_is_json_schema() -> None:
    out = fanflow("schema")
    schema = json.loads(out.stdout)
    assert "tasks" in schema["properties"] and schema["title"] == "Workflow"


def test_cli_run_with_needs_json_and_html(tmp_path: Path) -> None:
    wf = write(
        tmp_path,
        """\
        name: graph
        params: {who: "$(touch PWNED); world"}
        timeout: 5s
        tasks:
          hello: {run: "echo hello {{ params.who }}"}
          shout:
            needs: [hello]
            run: "echo {{ tasks.hello.value }} | tr a-z A-Z"
          broken: {run: "exit 3"}
          after-broken: {run: echo never, needs: [broken]}
        """,
    )
    out = fanflow("run", str(wf), "--json", "run.json", "--html", "run.html", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "PWNED").exists()  # parameters and values are quoted
    report = json.loads((tmp_path / "run.json").read_text())
    results = {r["name"]: r for r in report["result"]["results"]}
    assert results["shout"]["value"] == "HELLO $(TOUCH PWNED); WORLD"
    assert results["broken"]["status"] == "error"
    assert results["after-broken"]["status"] == "skipped"
    assert "needs 'broken', which ended error" in results["after-broken"]["reason"]
    assert report["spec_sha256"] and report["workflow"] == "graph"
    page = (tmp_path / "run.html").read_text()
    attempts = sum(len(r["history"]) for r in report["result"]["results"])
    assert page.count('<rect class="attempt') == attempts == 3
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "skipped" in out.stdout and "coverage" in out.stdout


def test_cli_run_exit_1_when_the_strategy_fails(tmp_path: Path) -> None:
    wf = write(
        tmp_path, "strategy: all_or_nothing\ntasks:\n  a: {run: 'exit 1'}\n  b: {run: echo}\n"
    )
    assert fanflow("run", str(wf)).returncode == 1


def test_cli_report_command(tmp_path: Path) -> None:
    wf = write(tmp_path, VALID)
    assert fanflow("run", str(wf), "--json", str(tmp_path / "r.json")).returncode == 0
    out = fanflow("report", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.html"))
    assert out.returncode == 0 and (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    (tmp_path / "junk.json").write_text("{}")
    bad = fanflow("report", str(tmp_path / "junk.json"), "-o", str(tmp_path / "x.html"))
    assert bad.returncode == 2 and "not a fanflow run report" in bad.stderr


async def test_a_slow_independent_branch_overlaps_the_dependent_chain() -> None:
    events: list[tuple[str, str]] = []

    async def step(upstream: Any, delay: float) -> str:
        await asyncio.sleep(delay)
        return "done"

    needs = {"b": ["a"], "c": ["b"]}

    def task(name: str, delay: float) -> ff.Task:
        refs = {need: ff.Ref(need) for need in needs.get(name, [])}
        return ff.Task(name, step, kwargs={"upstream": refs, "delay": delay})

    def record(event: ff.Event) -> None:
        if isinstance(event, ff.TaskStarted):
            events.append(("start", event.name))
        elif isinstance(event, ff.TaskFinished):
            events.append(("end", event.result.name))

    tasks = [task("a", 0.01), task("b", 0.01), task("c", 0.01), task("slow", 0.3)]
    result = await ff.fan_out(tasks, on_event=record)
    assert result.ok
    # The chain a -> b -> c runs to its end while the slow branch is still going.
    assert events.index(("end", "c")) < events.index(("end", "slow"))
    assert events.index(("start", "b")) > events.index(("end", "a"))
    assert events.index(("start", "c")) > events.index(("end", "b"))


async def test_dependents_get_their_needs_results() -> None:
    async def first(upstream: Any) -> int:
        return 20

    async def second(upstream: Any) -> int:
        return upstream["first"] + 1

    tasks = [
        ff.Task("first", first, kwargs={"upstream": {}}),
        ff.Task("second", second, kwargs={"upstream": {"first": ff.Ref("first")}}),
    ]
    result = await ff.fan_out(tasks)
    assert result.value == {"first": 20, "second": 21}


@pytest.mark.parametrize("example", ["validation.yaml"])
def test_validation_example_runs(example: str) -> None:
    out = fanflow("run", f"examples/{example}")
    assert out.returncode == 0, out.stderr
    assert re.search(r"ok: all 4 tasks ok", out.stdout)


def test_validation_example_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "orders.json"
    bad.write_text('[{"id": "A", "items": [{"sku": "x", "qty": 1, "price": 2}], "total": 3}]')
    out = fanflow("run", "examples/validation.yaml", "--set", f"file={bad}")
    assert out.returncode == 1 and "total 3 != 2" in out.stdout


def test_research_and_ensemble_examples_run_offline(tmp_path: Path) -> None:
    # What make demo runs, but writing into tmp_path: a test never overwrites demo-output/.
    from fanflow.testing import SimulatorProcess

    config = str(ROOT / "examples" / "sim-research.json")
    with SimulatorProcess("--latency", "0.2", "--config", config) as simulator:
        run = [sys.executable, "-m", "fanflow", "run"]
        research = subprocess.run(
            [*run, str(ROOT / "examples" / "research.yaml"), "--html", "research.html"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=simulator.env(),
            timeout=120,
        )
        ensemble = subprocess.run(
            [*run, str(ROOT / "examples" / "ensemble.yaml")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=simulator.env(),
            timeout=120,
        )
    assert research.returncode == 0, research.stderr[-2000:]
    assert "synthesize" in research.stdout and "stale-mirror" in research.stdout
    assert (tmp_path / "research.html").exists()
    assert ensemble.returncode == 0, ensemble.stderr[-2000:]
    assert "value: '42'" in ensemble.stdout  # the ensemble example's majority


def test_bulk_example_resumes(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "examples/bulk_processing.py", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith("20000 records ok (0 replayed")
    assert second.startswith("20000 records ok (20000 replayed")


def test_llm_option_supplies_the_model(tmp_path: Path) -> None:
    wf = write(tmp_path, "tasks:\n  a: {prompt: hello}\n")
    assert fanflow("validate", str(wf)).returncode == 2
    out = fanflow("validate", str(wf), "--llm", "openai:gpt-4o-mini")
    assert out.returncode == 0, out.stderr


# --- hostile and fuzzed workflow files (issue #14) -------------------------------------------


def _error(path: Path) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        build(load(path))
    return info.value


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        pytest.param(
            "tasks:\n  a: {run: echo, with: " + "[" * 3000 + "]" * 3000 + "}\n",
            ":2: ",
            "nest",
            id="deep-nesting",
        ),
        pytest.param(
            "params:\n  p:" + "".join(f"\n{'  ' * (i + 2)}k:" for i in range(80)) + " 1\n"
            "tasks:\n  a: {run: echo}\n",
            ":",
            "nested more than 50 levels deep",
            id="deep-block-nesting",
        ),
        pytest.param(
            "hedge: {after: p200}\ntasks:\n  a: {run: echo}\n",
            ":1: hedge.after: ",
            "'p200' is not a percentile: use p1 to p99",
            id="hedge-p200",
        ),
        pytest.param(
            "hedge: {after: soon}\ntasks:\n  a: {run: echo}\n",
            ":1: hedge.after: ",
            "a percentile such as p95 or a duration such as 2s",
            id="hedge-junk",
        ),
        pytest.param(
            "strategy: {best_effort: {max_failures: 1.5}}\ntasks:\n  a: {run: echo}\n",
            ":1: strategy: ",
            "max_failures is a count (a whole number) or a fraction in [0, 1]; got 1.5",
            id="fractional-max-failures",
        ),
        pytest.param(
            "max_concurrency: " + "9" * 5000 + "\ntasks:\n  a: {run: echo}\n",
            ":1: ",
            "Exceeds the limit (4300 digits)",
            id="huge-int",
        ),
        pytest.param(
            "timeout: " + "9" * 400 + "\ntasks:\n  a: {run: echo}\n",
            ":1: timeout: ",
            "invalid duration <an integer of about 400 digits>",
            id="big-int-duration",
        ),
        pytest.param(
            "rate_limit: {}\ntasks:\n  a: {run: echo}\n",
            ":1: rate_limit: ",
            "needs per_second, per_minute or tokens_per_minute",
            id="empty-rate-limit",
        ),
        pytest.param(
            "rate_limit: {per_minute: .inf}\ntasks:\n  a: {run: echo}\n",
            ":1: rate_limit.per_minute: ",
            "finite",
            id="infinite-rate",
        ),
        pytest.param(
            "tasks:\n  '': {run: echo}\n",
            ":1: tasks: ",
            "task name must not be empty",
            id="no-name",
        ),
        pytest.param(
            "name: !!timestamp 2001-13-45\ntasks:\n  a: {run: echo}\n",
            ":1: ",
            "cannot read this value: month must be in 1..12",
            id="bad-timestamp",
        ),
        pytest.param(
            "strategy: {best_effort: {min_success: 5}}\ntasks:\n  a: {run: echo}\n",
            ":1: strategy.best_effort.min_success: ",
            "asks for 5 successes but the workflow has only 1 task(s)",
            id="min-success-over-tasks",
        ),
        pytest.param(
            "strategy: {first_n: {n: 3}}\ntasks:\n  a: {run: echo}\n  b: {run: echo}\n",
            ":1: strategy.first_n.n: ",
            "needs 3 successes but the workflow has only 2 task(s)",
            id="first-n-over-tasks",
        ),
        pytest.param(
            "llm: gpt-4\ntasks:\n  a: {prompt: hi}\n",
            ":1: llm: ",
            "a model URI looks like 'openai:gpt-4o-mini'; got 'gpt-4'",
            id="top-level-llm",
        ),
        pytest.param(
            "tasks:\n  a: {prompt: hi, llm: 'opnai:gpt'}\n",
            ":2: tasks.a.llm: ",
            "unknown model provider 'opnai'",
            id="task-llm",
        ),
        pytest.param(
            "llm: 'sim:m'\ntasks:\n  a: {run: echo}\naggregate:\n  synthesize: {llm: 'openai:'}\n",
            ":5: aggregate.synthesize.llm: ",
            "names no model",
            id="synthesize-llm",
        ),
        pytest.param(
            "tasks:\n  a: {run: echo}\naggregate:\n  synthesize: {}\n",
            ":4: aggregate.synthesize: ",
            "synthesize needs a model",
            id="synthesize-without-llm",
        ),
        pytest.param(
            "timeout: 0\ntasks:\n  a: {run: echo}\n", ":1: timeout: ", "must be > 0", id="timeout-0"
        ),
        pytest.param(
            "deadline: 0s\ntasks:\n  a: {run: echo}\n",
            ":1: deadline: ",
            "must be > 0",
            id="deadline-0",
        ),
        pytest.param(
            "tasks:\n  a: {run: echo, timeout: 0ms}\n",
            ":2: tasks.a.timeout: ",
            "must be > 0",
            id="task-timeout-0",
        ),
    ],
)
def test_hostile_files_are_clear_errors(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    error = _error(path)
    assert str(error).startswith(f"{path}{where}"), str(error)
    assert message in str(error)


@pytest.mark.parametrize("after", ["2s", "500ms", 2, 0.25, "p95"])
def test_hedge_after_takes_durations_and_percentiles(tmp_path: Path, after: Any) -> None:
    path = write(tmp_path, f"hedge: {{after: {after}}}\ntasks:\n  a: {{run: echo}}\n")
    hedge = build(load(path)).options["hedge"]
    expected = {"2s": 2.0, "500ms": 0.5, 2: 2.0, 0.25: 0.25}
    if after == "p95":
        assert hedge.percentile == 95.0
    else:
        assert hedge.after == expected[after]


@pytest.mark.timeout(20)
def test_alias_bombs_are_refused_before_they_expand(tmp_path: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "params:\n" + "".join(f"  {line}\n" for line in lines) + "tasks:\n  a: {run: echo}\n"
    path = write(tmp_path, bomb)
    error = _error(path)
    assert "more than 100000 values once its aliases (*name) are expanded" in str(error)
    assert len(str(error)) < 300
    # A few aliases, as real files use them, are fine.
    path = write(tmp_path, "x: &opts {run: echo}\ntasks:\n  a: *opts\n  b: *opts\n", "ok.yaml")
    with pytest.raises(WorkflowError, match="unknown field 'x'"):
        build(load(path))


def test_error_messages_bound_the_values_they_show(tmp_path: Path) -> None:
    big = "[" + ", ".join(["[" + ", ".join(["word"] * 100) + "]"] * 500) + "]"
    path = write(tmp_path, f"name: {big}\ntasks:\n  a: {{run: echo}}\n")
    error = _error(path)
    assert "name: Input should be a valid string" in str(error) and len(str(error)) < 300


def test_large_files_are_refused_with_the_limit_named(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("tasks:\n  a: {run: echo}\n" + "# padding\n" * 220_000)
    error = _error(path)
    assert "larger than 1048576 bytes (1 MiB), the limit" in str(error)
    import yaml

    from fanflow._workflow import _spec

    if hasattr(yaml, "CSafeLoader"):  # libyaml is there: the C parser reads the file
        assert issubclass(_spec._Loader, yaml.CSafeLoader)


def test_every_schema_mistake_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        timeout: never
        max_concurrency: 0
        tasks:
          a: {run: echo, weight: heavy}
          b: {run: echo, retries: 3}
        """,
    )
    error = _error(path)
    assert [(e.line, e.field) for e in error.errors] == [
        (1, "timeout"),
        (2, "max_concurrency"),
        (4, "tasks.a.weight"),
        (5, "tasks.b.retries"),
    ]
    out = fanflow("validate", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("error: ") == 5 and "4 mistakes found" in out.stderr


def test_set_of_an_undeclared_parameter_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(WorkflowError, match=r"--set: the workflow declares no parameter 'whom'"):
        load(path, ["whom=x"])
    with pytest.raises(WorkflowError, match=r"\(params: who\)"):
        load(path, ["whom=x"])
    assert load(path, ["who=" + "9" * 5000]).workflow.params["who"] == "9" * 5000


def test_research_example_names_the_llm_option() -> None:
    text = (ROOT / "examples" / "research.yaml").read_text()
    assert "--set llm" not in text and "--llm openai:gpt-4o-mini" in text


async def test_examples_run_from_any_folder(tmp_path: Path) -> None:
    out = fanflow("run", str(ROOT / "examples" / "validation.yaml"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"ok: all 4 tasks ok", out.stdout)
    plan = build(load(ROOT / "examples" / "research.yaml"))
    notes = next(t for t in plan.tasks if t.name == "local-notes")
    result = await ff.fan_out([notes])
    assert "caffeine" in result.value["local-notes"].lower()


def test_an_empty_resource_name_is_a_workflow_error_not_a_traceback(tmp_path: Path) -> None:
    # Found by the workflow fuzzer: writes: [''] reached ff.Task and raised TypeError.
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: x\ntasks:\n  a:\n    run: echo hi\n  b:\n    run: echo b\n    writes: ['']\n"
    )
    with pytest.raises(WorkflowError, match=r"wf.yaml:7: tasks.b.writes: .*non-empty strings"):
        build(load(path))
