"""``fanflow mcp``: the MCP server, end to end through the SDK's own stdio client.

Each test starts ``python -m fanflow mcp`` as a subprocess and talks to it
with ``mcp.client.stdio.stdio_client`` and ``ClientSession``; the model is
fanflow's simulator (``sim:`` URIs, ``FANFLOW_SIM_URL``) on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_env() -> Iterator[dict[str, str]]:
    from fanflow.testing import SimulatorProcess

    with SimulatorProcess(
        "--latency",
        "0.05",
        "--sigma",
        "0.1",
        "--script",
        "capital of France=Paris:1",
        "--script",
        "coffee=Coffee is old:1",
    ) as sim:
        yield {"FANFLOW_SIM_URL": sim.url}


def _servers() -> list[int]:
    """This process's children that are ``fanflow mcp`` servers, still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"mcp" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_server_left() -> Iterator[None]:
    yield
    assert _servers() == []


@contextlib.asynccontextmanager
async def connect(env: dict[str, str], tmp_path: Path, *args: str) -> AsyncIterator[ClientSession]:
    """A session with a fresh ``fanflow mcp`` server (its stderr in ``tmp_path/server.log``)."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "fanflow", "mcp", *args],
        env=env,
        cwd=str(tmp_path),
    )
    with (tmp_path / "server.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """The tool's structured answer; fails the test if the call was a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def error_of(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The message of a call that must be a tool error."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return " ".join(getattr(block, "text", "") for block in result.content)


async def test_list_tools_shows_both_with_input_schemas(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    async with connect(sim_env, tmp_path) as session:
        listed = await session.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == {"fan_out_prompts", "run_workflow"}
    fan = tools["fan_out_prompts"]
    assert set(fan.input_schema["required"]) == {"prompts", "model"}
    assert {"strategy", "n", "timeout", "deadline", "max_concurrency", "budget"} <= set(
        fan.input_schema["properties"]
    )
    assert {"synthesize", "schema"} <= set(fan.input_schema["properties"])
    assert "coverage" in (fan.description or "")
    run = tools["run_workflow"]
    assert run.input_schema["required"] == ["path"]
    assert {"params", "llm", "timeout", "deadline", "budget"} <= set(run.input_schema["properties"])
    assert "--allow-shell" in (run.description or "")


async def test_fan_out_prompts_answers_every_prompt(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    async with connect(sim_env, tmp_path) as session:
        answer = await call(
            session,
            "fan_out_prompts",
            prompts={"a": "Say A", "b": "Say B", "c": "Say C"},
            model="sim:m",
            max_concurrency=2,
        )
    assert answer["ok"] is True
    assert answer["strategy"].startswith("BestEffort")
    assert [t["name"] for t in answer["tasks"]] == ["a", "b", "c"]
    for task in answer["tasks"]:
        assert task["status"] == "ok"
        assert task["value"].startswith("Simulated answer to: Say ")
        assert task["error"] is None
        assert task["duration"] > 0
    assert answer["coverage"] == 1.0
    assert answer["confidence_level"] == "high"
    assert answer["gaps"] == []
    assert answer["usage"]["requests"] == 3
    assert answer["usage"]["tokens"] > 0
    assert answer["usage"]["wasted_tokens"] == 0
    assert answer["synthesis"] is None
    # Nothing but protocol messages on stdout: the session worked; logs went to stderr.
    assert "serving over stdio" in (tmp_path / "server.log").read_text()


async def test_a_timeout_makes_a_task_timeout(sim_env: dict[str, str], tmp_path: Path) -> None:
    # The simulator answers after about 50 ms; a task may take 1 ms.
    async with connect(sim_env, tmp_path) as session:
        answer = await call(
            session, "fan_out_prompts", prompts={"slow": "Say slow"}, model="sim:m", timeout=0.001
        )
    assert answer["ok"] is False
    (task,) = answer["tasks"]
    assert task["status"] == "timeout"
    assert task["value"] is None
    assert task["error"].startswith("TimeoutError")
    assert answer["coverage"] == 0.0
    assert answer["gaps"][0]["task"] == "slow"
    assert answer["gaps"][0]["status"] == "timeout"


async def test_synthesis_and_vote(sim_env: dict[str, str], tmp_path: Path) -> None:
    question = "What is the capital of France?"
    async with connect(sim_env, tmp_path) as session:
        synthesized = await call(
            session,
            "fan_out_prompts",
            prompts={"x": "Say X", "y": "Say Y"},
            model="sim:m",
            synthesize=True,
        )
        voted = await call(
            session,
            "fan_out_prompts",
            prompts={f"q{i}": question for i in range(3)},
            model="sim:m",
            strategy="vote",
        )
    synthesis = synthesized["synthesis"]
    assert isinstance(synthesis["text"], str) and synthesis["text"]
    assert synthesis["confidence_level"] == "high"
    assert synthesis["gaps"] == []
    assert synthesized["usage"]["requests"] == 3  # two prompts, one synthesis
    assert voted["ok"] is True
    assert voted["value"] == "Paris"
    assert voted["votes"][0]["answer"] == "paris"


async def test_schema_gives_structured_answers(sim_env: dict[str, str], tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["answer", "score"],
    }
    async with connect(sim_env, tmp_path) as session:
        answer = await call(
            session,
            "fan_out_prompts",
            prompts={"one": "Rate one", "two": "Rate two"},
            model="sim:m",
            schema=schema,
        )
    for task in answer["tasks"]:
        assert task["status"] == "ok"
        assert isinstance(task["value"]["answer"], str)
        assert isinstance(task["value"]["score"], int)


async def test_a_budget_stops_prompts_before_they_are_sent(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    async with connect(sim_env, tmp_path) as session:
        answer = await call(
            session,
            "fan_out_prompts",
            prompts={"a": "Say A", "b": "Say B"},
            model="sim:m",
            budget={"tokens": 1},
        )
    assert answer["ok"] is False
    assert answer["usage"]["requests"] == 0
    assert answer["budget"]["limits"]["tokens"] == 1
    assert [t["status"] for t in answer["tasks"]] == ["skipped", "skipped"]
    assert "budget" in answer["tasks"][0]["reason"]


BAD_ARGUMENTS = [
    ({"prompts": {}}, "prompts is empty"),
    ({"prompts": {"a": ""}}, "prompt 'a' is empty"),
    ({"prompts": ["a", "b"]}, "prompts"),
    ({"model": "nope:m"}, "unknown model provider"),
    ({"model": "sim"}, "model 'sim'"),
    ({"timeout": -1}, "timeout"),
    ({"deadline": 0}, "deadline"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"strategy": "first_n"}, "needs n"),
    ({"strategy": "first_n", "n": 5}, "n=5"),
    ({"n": 1}, "only for"),
    ({"strategy": "most"}, "strategy"),
    ({"budget": {"dollars": 1}}, "needs budget.prices"),
    ({"budget": {"tokens": -3}}, "tokens"),
    ({"budget": {"tokens": 5, "colour": "red"}}, "colour"),
    ({"schema": {"type": "nonsense"}}, "schema"),
]


async def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    good = {"prompts": {"a": "Say A"}, "model": "sim:m"}
    async with connect(sim_env, tmp_path) as session:
        for arguments, message in BAD_ARGUMENTS:
            text = await error_of(session, "fan_out_prompts", **{**good, **arguments})
            assert message in text, (arguments, text)
        answer = await call(session, "fan_out_prompts", **good)  # still serving
    assert answer["ok"] is True
    assert answer["usage"]["requests"] == 1  # the bad calls sent nothing


PROMPT_WORKFLOW = """\
name: mcp-prompts
params:
  topic: tea
llm: sim:m
strategy: all_or_nothing
tasks:
  facts:
    prompt: "Facts about {{ params.topic }}"
  history:
    prompt: "History of {{ params.topic }}"
"""


async def test_run_workflow_returns_the_run_report(sim_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(PROMPT_WORKFLOW)
    async with connect(sim_env, tmp_path) as session:
        report = await call(
            session, "run_workflow", path="flow.yaml", params={"topic": "coffee"}, timeout=30
        )
        missing = await error_of(session, "run_workflow", path="nowhere.yaml")
        unknown = await error_of(session, "run_workflow", path="flow.yaml", params={"colour": 1})
    assert report["workflow"] == "mcp-prompts"
    assert len(report["spec_sha256"]) == 64
    result = report["result"]
    assert result["ok"] is True
    assert result["strategy"].startswith("AllOrNothing")
    values = {r["name"]: r["value"] for r in result["results"]}
    # The param reached the prompts (the simulator answers prompts about coffee so).
    assert values == {"facts": "Coffee is old", "history": "Coffee is old"}
    assert result["usage"]["input_tokens"] > 0
    assert "no such file" in missing
    assert "colour" in unknown
    json.dumps(report)  # the same JSON fanflow run --json writes


SHELL_WORKFLOW = """\
name: mcp-shell
tasks:
  ask:
    prompt: "Say hi"
    llm: sim:m
  touch:
    run: "touch made.txt && echo done"
"""


async def test_shell_tasks_are_refused_without_allow_shell(
    sim_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "shell.yaml").write_text(SHELL_WORKFLOW)
    async with connect(sim_env, tmp_path) as session:
        text = await error_of(session, "run_workflow", path="shell.yaml")
    assert "touch" in text
    assert "--allow-shell" in text
    assert not (tmp_path / "made.txt").exists()  # nothing ran


async def test_shell_tasks_run_with_allow_shell(sim_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "shell.yaml").write_text(SHELL_WORKFLOW)
    async with connect(sim_env, tmp_path, "--allow-shell") as session:
        report = await call(session, "run_workflow", path=str(tmp_path / "shell.yaml"))
    assert (tmp_path / "made.txt").exists()
    values = {r["name"]: r["value"] for r in report["result"]["results"]}
    assert values["touch"] == "done"
    assert report["result"]["ok"] is True


def test_the_cli_does_not_import_the_sdk() -> None:
    import subprocess

    code = "import sys, fanflow._cli; assert 'mcp' not in sys.modules, 'mcp imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
