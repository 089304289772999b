"""Workflow files with structured prompt tasks (``schema:``) and agent tasks (``agent:``).

The models are the loopback simulator, started in each test; the schema
models and tools below are imported by the workflows as
``tests.test_workflow_llm_tasks:NAME``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

import fanflow as ff
from fanflow._workflow import WorkflowError, build, json_schema, load
from fanflow.llm import AgentResult
from fanflow.testing import AgentScript, Latency, Script, SimConfig, Simulator

ROOT = Path(__file__).resolve().parent.parent
HERE = "tests.test_workflow_llm_tasks"


class Verdict(BaseModel):
    """A judge's verdict (the schema of a workflow's prompt task)."""

    verdict: Literal["pass", "fail"]
    score: int


_TOTALS = {"A-1": 4200, "B-2": 1300}


def order_total(order_id: str) -> int:
    """The total of an order, in cents."""
    return _TOTALS[order_id]


async def order_status(order_id: str) -> str:
    """The shipping status of an order."""
    return f"order {order_id} shipped"


def spread(*orders: str) -> str:
    """Not a tool: a model names its arguments."""
    return ",".join(orders)


NOT_CALLABLE = 3


FACTS_SCHEMA = """\
      type: object
      properties:
        order: {type: string}
        total: {type: integer}
      required: [order, total]"""

WORKFLOW = """\
name: llm-tasks
llm: "sim:judge@{url}"
params:
  order: A-1
tasks:
  facts:
    prompt: "Extract the facts of order {{{{ params.order }}}}"
    schema:
{facts_schema}
  verdict:
    needs: [facts]
    prompt: >-
      Judge the order {{{{ tasks.facts.value.order }}}}
      worth {{{{ tasks.facts.value.total }}}}: {{{{ tasks.facts.value }}}}
    schema: {here}:Verdict
  summary:
    needs: [verdict]
    prompt: "Summarise the verdict {{{{ tasks.verdict.value.verdict }}}}"
  audit:
    agent: "Audit order {{{{ params.order }}}}: look up its total and status."
    tools: [{here}:order_total, {here}:order_status]
    max_steps: 4
  audit_json:
    agent: "Check order {{{{ params.order }}}} and answer in JSON."
    tools: [{here}:order_total, {here}:order_status]
    schema:
      type: object
      properties:
        total: {{type: integer}}
        status: {{type: string}}
      required: [total, status]
  memo:
    needs: [audit, audit_json]
    prompt: "Memo: {{{{ tasks.audit.value }}}} / total {{{{ tasks.audit_json.value.total }}}}"
"""

FRAMED = r"<<<BEGIN DATA \w+ [^>]*>>>\n{}\n<<<END DATA \w+>>>"
STEPS = [
    [
        {"name": "order_total", "arguments": {"order_id": "A-1"}},
        {"name": "order_total", "arguments": {"order_id": "Z-9"}},
    ],
    [{"name": "order_status", "arguments": {"order_id": "A-1"}}],
]
CONFIG = SimConfig(
    latency=Latency(median=0.0),
    scripts=[
        Script(
            r"Extract the facts of order " + FRAMED.format("A-1"),
            {'{"order": "A-1", "total": 4200}': 1},
        ),
        Script(
            r"Judge the order " + FRAMED.format("A-1") + " worth " + FRAMED.format("4200"),
            {'{"verdict": "pass", "score": 9}': 1},
        ),
        Script(r"Summarise the verdict " + FRAMED.format("pass"), {"Order A-1 passes.": 1}),
        # The final JSON answer of audit_json: only when both tool results reached the model.
        Script(
            r"\n4200\n[\s\S]*\norder A-1 shipped\n", {'{"total": 4200, "status": "shipped"}': 1}
        ),
        Script(
            r"Memo: "
            + FRAMED.format("Order A-1: 4200 cents, shipped.")
            + " / total "
            + FRAMED.format("4200"),
            {"memo written": 1},
        ),
    ],
    agents=[
        AgentScript(r"Audit order", STEPS, answer="Order A-1: 4200 cents, shipped."),
        AgentScript(r"Check order", STEPS, answer="Checked: fine."),
    ],
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(CONFIG) as simulator:
        yield simulator


def write(folder: Path, url: str, facts_schema: str = FACTS_SCHEMA) -> Path:
    path = folder / "wf.yaml"
    path.write_text(WORKFLOW.format(url=url, here=HERE, facts_schema=facts_schema))
    return path


async def run(path: Path, journal: Path | None = None) -> ff.FanInResult:
    plan = build(load(path))
    return await ff.fan_out(
        plan.tasks, raise_on_failure=False, journal=journal and str(journal), **plan.options
    )


TOOL_CALLS = [
    ("order_total", {"order_id": "A-1"}, 4200, None),
    ("order_total", {"order_id": "Z-9"}, None, "KeyError: 'Z-9'"),
    ("order_status", {"order_id": "A-1"}, "order A-1 shipped", None),
]


def check_values(result: ff.FanInResult) -> None:
    values = {r.name: r.value for r in result.results}
    assert result.ok, [(r.name, r.error) for r in result.results]
    assert values["facts"] == {"order": "A-1", "total": 4200}
    assert values["verdict"] == Verdict(verdict="pass", score=9)
    assert type(values["verdict"]) is Verdict
    assert values["summary"] == "Order A-1 passes."
    audit = values["audit"]
    assert isinstance(audit, AgentResult)
    assert audit.text == "Order A-1: 4200 cents, shipped." and audit.steps == 3
    assert audit.parsed is None
    assert [(c.name, c.arguments, c.result, c.error) for c in audit.tool_calls] == TOOL_CALLS
    checked = values["audit_json"]
    assert isinstance(checked, AgentResult)
    assert checked.text == "Checked: fine." and checked.steps == 4
    assert checked.parsed == {"total": 4200, "status": "shipped"}
    assert values["memo"] == "memo written"


async def test_structured_and_agent_tasks_run_and_feed_their_dependents(
    tmp_path: Path, sim: Simulator
) -> None:
    result = await run(write(tmp_path, sim.url))
    check_values(result)
    # Two agents of three model calls each, one more for audit_json's JSON answer.
    assert sim.stats["agent_turns"] == 6 and sim.stats["tool_calls"] == 6
    assert sim.stats["structured"] == 3  # facts, verdict, audit_json's final answer
    assert result.usage is not None and result.usage.requests == 11


async def test_a_journaled_rerun_replays_and_a_schema_edit_reruns_only_that_task(
    tmp_path: Path, sim: Simulator
) -> None:
    journal = tmp_path / "run.db"
    path = write(tmp_path, sim.url)
    check_values(await run(path, journal))
    requests = sim.stats["requests"]

    again = await run(path, journal)
    check_values(again)  # model instances and agent results come back as they were
    assert all(r.replayed for r in again.results)
    assert sim.stats["requests"] == requests

    # A description added to facts' schema: facts asks again; its answer is
    # the same, so every task downstream of it is replayed.
    edited = FACTS_SCHEMA.replace("type: object", "type: object\n      description: order facts")
    third = await run(write(tmp_path, sim.url, edited), journal)
    check_values(third)
    assert {r.name for r in third.results if not r.replayed} == {"facts"}
    assert sim.stats["requests"] == requests + 1


async def test_budget_estimates_name_the_model(tmp_path: Path, sim: Simulator) -> None:
    plan = build(load(write(tmp_path, sim.url)))
    for task in plan.tasks:
        model, prompt_tokens, answer = task.fn.__fanflow_model__
        assert model == "judge" and prompt_tokens > 0 and answer == 256
        assert task.tokens == prompt_tokens + answer


async def test_cli_run_reports_structured_values_and_tool_calls(
    tmp_path: Path, sim: Simulator
) -> None:
    path = write(tmp_path, sim.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fanflow",
        "run",
        str(path),
        "--json",
        str(tmp_path / "run.json"),
        "--html",
        str(tmp_path / "run.html"),
        cwd=ROOT,  # tests.test_workflow_llm_tasks is imported from here
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads((tmp_path / "run.json").read_text())
    results = {r["name"]: r for r in report["result"]["results"]}
    assert results["facts"]["value"] == {"order": "A-1", "total": 4200}
    assert results["verdict"]["value"] == {"verdict": "pass", "score": 9}
    assert results["summary"]["value"] == "Order A-1 passes."
    assert results["audit"]["value"] == "Order A-1: 4200 cents, shipped."
    assert results["audit_json"]["value"] == {"total": 4200, "status": "shipped"}
    calls = [{"name": n, "arguments": a, "result": r, "error": e} for n, a, r, e in TOOL_CALLS]
    assert results["audit"]["agent"] == {"steps": 3, "tool_calls": calls}
    assert results["audit_json"]["agent"] == {"steps": 4, "tool_calls": calls}
    assert "agent" not in results["verdict"]
    page = (tmp_path / "run.html").read_text()
    assert "3 tool call(s): order_total, order_total (error), order_status" in page


# --- mistakes: file:line: field, before anything runs ---------------------------------------


def _case(task: str) -> str:
    return "llm: 'sim:m'\ntasks:\n  a:\n" + textwrap.indent(textwrap.dedent(task), "    ")


@pytest.mark.parametrize(
    ("task", "line", "field", "message"),
    [
        pytest.param(
            "prompt: hi\nschema: 42\n",
            5,
            "tasks.a.schema",
            "schema must be a JSON Schema (a mapping) or a pydantic model named as "
            "package.module:Model; got 42",
            id="schema-number",
        ),
        pytest.param(
            "prompt: hi\nschema: not a target\n",
            5,
            "tasks.a.schema",
            "package.module:Model; got 'not a target'",
            id="schema-string",
        ),
        pytest.param(
            "prompt: hi\nschema: {type: nonsense}\n",
            5,
            "tasks.a.schema",
            "not a valid JSON Schema at type: 'nonsense' is not valid",
            id="schema-invalid",
        ),
        pytest.param(
            "prompt: hi\nschema: tests.no_such_module:Model\n",
            5,
            "tasks.a.schema",
            "cannot import 'tests.no_such_module:Model': No module named 'tests.no_such_module'",
            id="schema-no-module",
        ),
        pytest.param(
            f"prompt: hi\nschema: {HERE}:Missing\n",
            5,
            "tasks.a.schema",
            f"cannot import '{HERE}:Missing'",
            id="schema-no-class",
        ),
        pytest.param(
            f"prompt: hi\nschema: {HERE}:order_total\n",
            5,
            "tasks.a.schema",
            f"'{HERE}:order_total' is not a pydantic model class",
            id="schema-not-a-model",
        ),
        pytest.param(
            "prompt: hi\nschema: {type: object}\nrepair: -1\n",
            6,
            "tasks.a.repair",
            "greater than or equal to 0",
            id="repair-negative",
        ),
        pytest.param(
            "prompt: hi\nrepair: 2\n", 3, "tasks.a", "repair: goes with schema:", id="repair-alone"
        ),
        pytest.param(
            "run: echo\nschema: {type: object}\n",
            3,
            "tasks.a",
            "schema: is for prompt: and agent: tasks only",
            id="schema-on-run",
        ),
        pytest.param(
            "prompt: hi\nagent: hi\n",
            3,
            "tasks.a",
            "a task needs exactly one of run, call, prompt or agent (found: prompt, agent)",
            id="two-kinds",
        ),
        pytest.param(
            "agent: hi\n", 3, "tasks.a", "an agent: task needs tools:", id="agent-no-tools"
        ),
        pytest.param(
            "agent: hi\ntools: []\n",
            5,
            "tasks.a.tools",
            "an agent needs at least one tool",
            id="agent-empty-tools",
        ),
        pytest.param(
            "agent: hi\ntools: [nope]\n",
            5,
            "tasks.a.tools",
            "each tool must look like package.module:function; got 'nope'",
            id="agent-bad-target",
        ),
        pytest.param(
            f"agent: hi\ntools:\n  - {HERE}:order_total\n  - {HERE}:nope\n",
            7,
            "tasks.a.tools[1]",
            f"cannot import '{HERE}:nope'",
            id="agent-no-tool",
        ),
        pytest.param(
            f"agent: hi\ntools: [{HERE}:NOT_CALLABLE]\n",
            5,
            "tasks.a.tools[0]",
            f"'{HERE}:NOT_CALLABLE' is not callable",
            id="agent-not-callable",
        ),
        pytest.param(
            f"agent: hi\ntools: [{HERE}:spread]\n",
            5,
            "tasks.a.tools[0]",
            f"'{HERE}:spread' cannot be a tool: tool 'spread': parameter 'orders' cannot be named",
            id="agent-varargs",
        ),
        pytest.param(
            f"agent: hi\ntools: [{HERE}:order_total, {HERE}:order_total]\n",
            5,
            "tasks.a.tools[1]",
            "two tools are named 'order_total'",
            id="agent-same-tool-twice",
        ),
        pytest.param(
            f"agent: hi\ntools: [{HERE}:order_total]\nmax_steps: 0\n",
            6,
            "tasks.a.max_steps",
            "greater than or equal to 1",
            id="agent-max-steps",
        ),
        pytest.param(
            f"agent: hi\ntools: [{HERE}:order_total]\nmax_steps: true\n",
            6,
            "tasks.a.max_steps",
            "valid integer",
            id="agent-max-steps-bool",
        ),
        pytest.param(
            f"prompt: hi\ntools: [{HERE}:order_total]\n",
            3,
            "tasks.a",
            "tools: is for agent: tasks only",
            id="tools-on-prompt",
        ),
        pytest.param(
            f"agent: hi\ntools: [{HERE}:order_total]\nschema: {HERE}:Missing\n",
            6,
            "tasks.a.schema",
            "cannot import",
            id="agent-bad-schema",
        ),
    ],
)
def test_mistakes_name_file_line_and_field(
    tmp_path: Path, task: str, line: int, field: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_case(task))
    with pytest.raises(WorkflowError) as info:
        build(load(path))
    error = info.value
    assert (error.line, error.field) == (line, field), str(error)
    assert str(error).startswith(f"{path}:{line}: {field}: ") and message in str(error)


async def test_cli_validate_shows_a_bad_tool_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_case(f"agent: hi\ntools: [{HERE}:order_total, {HERE}:nope]\n"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fanflow",
        "validate",
        str(path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    text = err.decode()
    assert "Traceback" not in text
    assert f"{path}:5: tasks.a.tools[1]: cannot import '{HERE}:nope'" in text


def test_the_json_schema_of_the_format_names_the_new_fields() -> None:
    schema = json.loads(json_schema())
    fields = schema["$defs"]["TaskSpec"]["properties"]
    assert {"agent", "schema", "repair", "tools", "max_steps"} <= set(fields)


def test_schema_values_pass_through_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(_case("prompt: hi\nschema: {type: object, required: [x]}\nrepair: 0\n"))
    spec = load(path).workflow.tasks["a"]
    assert spec.schema_ == {"type": "object", "required": ["x"]} and spec.repair == 0


# --- examples/validators.yaml -------------------------------------------------------------

EXAMPLE = SimConfig(
    latency=Latency(median=0.0),
    scripts=[
        Script(
            r"List the id and the stated total",
            {json.dumps({"orders": [{"id": "A-1", "total": 7}, {"id": "A-2", "total": 9}]}): 1},
        ),
        Script(
            r"look plausible",
            {'{"verdict": "pass", "reasons": ["ids are unique", "totals are positive"]}': 1},
        ),
        # The auditor's JSON answer, once the tools' results are in the conversation.
        Script(r"\n7\.0\n7\.0\n9\.0\n9\.0\n", {'{"wrong_totals": []}': 1}),
    ],
    agents=[
        AgentScript(
            # The ids reached the agent's prompt from the fields task's structured value.
            r"orders\s+" + FRAMED.format("A-1, A-2"),
            [
                [
                    {"name": tool, "arguments": {"order_id": order}}
                    for tool in ("stated_total", "items_total")
                ]
                for order in ("A-1", "A-2")
            ],
            answer="No order has a wrong total.",
        )
    ],
)


async def test_the_validators_example_runs_offline_from_any_folder(tmp_path: Path) -> None:
    async with Simulator(EXAMPLE) as simulator:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fanflow",
            "run",
            str(ROOT / "examples" / "validators.yaml"),
            "--llm",
            f"sim:validator@{simulator.url}",
            "--json",
            "run.json",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads((tmp_path / "run.json").read_text())
    results = {r["name"]: r for r in report["result"]["results"]}
    assert results["judge"]["value"] == {
        "verdict": "pass",
        "reasons": ["ids are unique", "totals are positive"],
    }
    assert results["fields"]["value"]["orders"][1] == {"id": "A-2", "total": 9}
    assert results["auditor"]["value"] == {"wrong_totals": []}
    assert results["auditor"]["agent"]["steps"] == 4
    assert [
        (c["name"], c["arguments"], c["result"]) for c in results["auditor"]["agent"]["tool_calls"]
    ] == [
        ("stated_total", {"order_id": "A-1"}, 7.0),
        ("items_total", {"order_id": "A-1"}, 7.0),
        ("stated_total", {"order_id": "A-2"}, 9.0),
        ("items_total", {"order_id": "A-2"}, 9.0),
    ]
