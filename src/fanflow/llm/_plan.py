"""The orchestrator as a model: plan a goal into subtasks, validate, run as a graph.

After LLMCompiler (Kim et al., 2023): the model writes a dependency graph of
subtasks once; fanflow checks it (schema, known tools, arguments, cycles,
hidden dependencies, size) before anything runs, gives the model one round
to repair what is wrong, then runs ready subtasks in parallel and
synthesizes the results with their gaps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Unpack

from .._api import fan_out
from .._core._exceptions import PlanError
from .._core._graph import check_graph
from .._core._result import FanInResult
from .._core._task import Ref, Task
from .._core._threads import TaskExit, run_sync
from .._core._usage import budget_scope
from .._options import FanOutOptions
from .._policies._audit import audit
from .._policies._budget import Budget
from ._aggregate import DEFAULT_CONFLICT_STRATEGY, Synthesis, synthesize

if TYPE_CHECKING:
    # Jinja2 is imported when a plan is first checked, not with fanflow.
    from .._template import Template

__all__ = ["Plan", "PlanError", "Subtask", "ask", "plan"]

# A subtask name may hold "-": after "tasks." it is a name, not a minus.
_DASHED = re.compile(r"\btasks\.(\w+(?:-\w+)+)")
_TITLES = {"tasks": "output of subtask {}"}


def _template(text: str, mode: Literal["prompt", "value"]) -> Template:
    """The plan's ``{{ tasks.NAME.value }}`` template (fanflow's one templater, roots: tasks).

    Raises:
        TemplateError: a syntax error, an unknown name or filter.
    """
    from .._template import Template

    return Template(text, mode, roots=("tasks",), titles=_TITLES, dashed=_DASHED.findall(text))


def _render(template: Template, upstream: Mapping[str, Any]) -> Any:
    """``template`` filled with the values of the subtasks it uses (all of them needs)."""
    return template.render(tasks={name: upstream[name] for name in template.tasks()})


@functools.cache
def _schema() -> Any:
    """The plan's pydantic model, built on first use (importing fanflow stays light)."""
    from pydantic import BaseModel, ConfigDict, Field

    class SubtaskSpec(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str = Field(min_length=1, max_length=64, pattern=r"^[\w-]+$")
        prompt: str | None = None
        tool: str | None = None
        args: dict[str, Any] = Field(default_factory=dict)
        needs: list[str] = Field(default_factory=list)
        reads: list[str] = Field(default_factory=list)
        writes: list[str] = Field(default_factory=list)

    class PlanSpec(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tasks: list[SubtaskSpec] = Field(min_length=1)

    return PlanSpec


@dataclasses.dataclass(frozen=True)
class Subtask:
    """One subtask of a plan: a sub-prompt for the model or a call of a tool."""

    name: str
    prompt: str | None
    tool: str | None
    args: dict[str, Any]
    needs: tuple[str, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]

    def refs(self) -> set[str]:
        """The subtasks whose values this one uses."""
        from .._template import TemplateError

        names: set[str] = set()
        for text in self.templates():
            try:
                names.update(_template(text, "value").tasks())
            except TemplateError:
                continue  # reported by the plan's check, not here
        return names

    def templates(self) -> list[str]:
        """The prompt and the string arguments that hold template syntax."""
        from .._template import is_template

        texts = [self.prompt or "", *(v for v in self.args.values() if isinstance(v, str))]
        return [text for text in texts if is_template(text)]


def _describe_tool(name: str, fn: Callable[..., Any]) -> str:
    try:
        signature = str(inspect.signature(fn))
    except (TypeError, ValueError):
        signature = "(...)"
    doc = inspect.getdoc(fn) or "no description"
    return f"- {name}{signature}: {doc.splitlines()[0]}"


PLANNER_PROMPT = """\
You are the planner of a parallel workflow. Break the goal into at most {max_tasks}
independent subtasks that can run at the same time; where one subtask truly needs
another's result, say so with "needs".

Goal:
{goal}

Tools you may call (a subtask either calls one tool with "args", or asks the model a
"prompt"):
{tools}

Reply with JSON only, in this form:
{{"tasks": [{{"name": "short-name", "prompt": "a question for the model" or null,
  "tool": "tool name" or null, "args": {{...}}, "needs": ["other-name"],
  "reads": [], "writes": []}}]}}
To use another subtask's result in a prompt or a string argument, write
{{{{ tasks.NAME.value }}}} and list NAME in "needs".
"""


def _parse(text: str) -> Any:
    body = text.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", body, re.S)
    if fence:
        body = fence.group(1)
    return json.loads(body)


def _check(
    text: str, tools: Mapping[str, Callable[..., Any]], max_tasks: int
) -> tuple[list[Subtask], list[str]]:
    """Subtasks from the model's answer, or the problems with it."""
    try:
        data = _parse(text)
    except json.JSONDecodeError as exc:
        return [], [f"the answer is not valid JSON ({exc.msg} at line {exc.lineno})"]
    from pydantic import ValidationError

    from .._template import TemplateError

    try:
        spec = _schema().model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        return [], [f"the plan does not match the schema: {where}: {error['msg']}"]
    problems: list[str] = []
    if len(spec.tasks) > max_tasks:
        problems.append(f"the plan has {len(spec.tasks)} subtasks; at most {max_tasks} are allowed")
    names = [t.name for t in spec.tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"duplicate subtask names: {', '.join(dupes)}")
    subtasks = []
    for t in spec.tasks:
        if (t.prompt is None) == (t.tool is None):
            problems.append(f"subtask {t.name!r} needs exactly one of prompt or tool")
        if t.tool is not None:
            fn = tools.get(t.tool)
            if fn is None:
                known = ", ".join(sorted(tools)) or "none"
                problems.append(
                    f"subtask {t.name!r} calls unknown tool {t.tool!r} (tools: {known})"
                )
            else:
                try:
                    inspect.signature(fn).bind(**t.args)
                except TypeError as exc:
                    problems.append(f"subtask {t.name!r}: bad arguments for {t.tool!r}: {exc}")
        sub = Subtask(
            t.name, t.prompt, t.tool, t.args, tuple(t.needs), tuple(t.reads), tuple(t.writes)
        )
        for text in sub.templates():
            try:
                template = _template(text, "value")
            except TemplateError as exc:
                problems.append(f"subtask {t.name!r}: {exc}")
                continue
            for use in template.references:
                if use.keys[1:2] != ("value",) or not isinstance(use.keys[0], str):
                    problems.append(
                        f"subtask {t.name!r}: write {{{{ tasks.NAME.value }}}} to use a result"
                    )
        for ref in sorted(sub.refs()):
            if ref not in names:
                problems.append(f"subtask {t.name!r} uses the value of unknown subtask {ref!r}")
            elif ref not in sub.needs:
                problems.append(
                    f"subtask {t.name!r} uses the value of {ref!r} without needing it "
                    "(a hidden dependency)"
                )
        subtasks.append(sub)
    needs = {s.name: list(s.needs) for s in subtasks if s.needs}
    if not dupes:
        try:
            check_graph(names, needs)
        except ValueError as exc:
            problems.append(str(exc))
    if not problems:
        report = audit(
            [Task(s.name, print, reads=s.reads, writes=s.writes) for s in subtasks], needs
        )
        problems += [str(c) for c in report.conflicts]
    return subtasks, problems


class Plan:
    """A validated plan: subtasks with their needs, ready to run as a graph.

    ``str(plan)`` shows it, ``plan.to_dict()`` gives it as data, and
    ``await plan.run(...)`` runs it.
    """

    def __init__(
        self, goal: str, subtasks: list[Subtask], llm: Any, tools: Mapping[str, Callable[..., Any]]
    ) -> None:
        self.goal = goal
        self.subtasks = subtasks
        self.llm = llm
        self.tools = dict(tools)

    def __str__(self) -> str:
        lines = [f"plan for: {self.goal}"]
        for s in self.subtasks:
            what = (
                f"{s.tool}({', '.join(f'{k}={v!r}' for k, v in s.args.items())})"
                if s.tool
                else repr(s.prompt)
            )
            after = f"  [after {', '.join(s.needs)}]" if s.needs else ""
            lines.append(f"  {s.name}: {what}{after}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data."""
        return {"goal": self.goal, "tasks": [dataclasses.asdict(s) for s in self.subtasks]}

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], llm: Any, tools: Mapping[str, Callable[..., Any]]
    ) -> Plan:
        """A plan from :meth:`to_dict`'s data (a journal's replay of a planning call).

        Raises:
            KeyError, TypeError: the data is not a plan's.
        """
        subtasks = [
            Subtask(
                name=t["name"],
                prompt=t["prompt"],
                tool=t["tool"],
                args=dict(t["args"]),
                needs=tuple(t["needs"]),
                reads=tuple(t["reads"]),
                writes=tuple(t["writes"]),
            )
            for t in data["tasks"]
        ]
        return cls(data["goal"], subtasks, llm, tools)

    def tasks(self) -> tuple[list[Task], dict[str, list[str]]]:
        """The fanflow tasks and the needs graph this plan runs as."""
        tasks = [
            Task(
                s.name,
                self._runner(s),
                # Each need's value, filled in when the subtask starts (ff.Ref).
                kwargs={"upstream": {need: Ref(need) for need in s.needs}},
                needs=s.needs,
                reads=s.reads,
                writes=s.writes,
            )
            for s in self.subtasks
        ]
        return tasks, {s.name: list(s.needs) for s in self.subtasks if s.needs}

    def _runner(self, sub: Subtask) -> Callable[..., Any]:
        llm, tools = self.llm, self.tools

        from .._template import is_template

        async def run(upstream: Mapping[str, Any]) -> Any:
            if sub.tool is not None:
                # "{{ tasks.a.value }}" alone keeps the value's type; mixed text is a string.
                args = {
                    k: _render(_template(v, "value"), upstream)
                    if isinstance(v, str) and is_template(v)
                    else v
                    for k, v in sub.args.items()
                }
                fn = tools[sub.tool]
                if inspect.iscoroutinefunction(fn):
                    try:
                        return await fn(**args)
                    except SystemExit as exc:  # the subtask's error
                        raise TaskExit(exc.code) from exc
                return await run_sync(fn, **args)
            assert sub.prompt is not None
            # Each result is framed as nonce-delimited data, never as instructions.
            prompt = _render(_template(sub.prompt, "prompt"), upstream)
            return (await llm.complete(prompt)).text

        def fingerprint(upstream: Mapping[str, Any]) -> Any:
            # In a journal: the subtask as planned, what it uses, and its tool or model.
            from .._core._fingerprint import fn_digest
            from ._tasks import model_identity

            used = {name: upstream[name] for name in sorted(upstream)}
            if sub.tool is not None:
                doer: Any = fn_digest(tools[sub.tool], f"tool {sub.tool!r}")
            else:
                doer = model_identity(llm)
            return {"subtask": dataclasses.asdict(sub), "upstream": used, "by": doer}

        run.__qualname__ = run.__name__ = sub.name
        run.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
        return run

    async def run(self, **options: Unpack[FanOutOptions]) -> FanInResult:
        """Run the plan: ready subtasks in parallel, each as soon as its needs are ok.

        A subtask whose need failed is skipped with the reason.

        Args:
            **options: the options every verb shares (``fanflow._options``),
                with the same defaults as for :func:`fan_out`
                (``max_concurrency=100``; ``raise_on_failure=True``: a plan
                whose strategy fails raises :class:`StrategyFailed`).

        Raises:
            StrategyFailed: as for :func:`fan_out`.
        """
        tasks, _ = self.tasks()
        return await fan_out(tasks, **options)


async def plan(
    goal: str,
    llm: Any,
    *,
    tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]] | None = None,
    max_tasks: int = 8,
    budget: Budget | None = None,
) -> Plan:
    """Ask ``llm`` to break ``goal`` into subtasks; validate the plan before anything runs.

    The model sees the goal and each tool's name, signature and first
    docstring line, and answers with JSON (JSON mode where the provider has
    one). The plan is checked — schema, known tools, arguments that bind to
    the tool's signature, no cycles, no value used without ``needs``, no
    resource conflicts, at most ``max_tasks`` subtasks. If anything is wrong
    the model gets one repair round with the problems listed.

    ``budget`` (an :class:`~fanflow.Budget`, or ``None`` for the one in
    force, if any) is charged for the planning calls; each reserves its
    prompt's estimate first.

    Raises:
        PlanError: the plan is still unusable after the repair round; it
            names every problem. Nothing has run.
        BudgetExceeded: a planning call does not fit in the budget.
        ValueError: ``max_tasks`` < 1.
        TypeError: ``budget`` is not a :class:`~fanflow.Budget`.
    """
    if max_tasks < 1:
        raise ValueError(f"max_tasks must be >= 1; got {max_tasks!r}")
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"plan(budget=...) must be a fanflow.Budget or None; got {budget!r}")
    if tools is None:
        table: dict[str, Callable[..., Any]] = {}
    elif isinstance(tools, Mapping):
        table = dict(tools)
    else:
        table = {getattr(fn, "__name__", repr(fn)): fn for fn in tools}
    described = "\n".join(_describe_tool(n, f) for n, f in table.items()) or "(none)"
    prompt = PLANNER_PROMPT.format(goal=goal, tools=described, max_tasks=max_tasks)
    params: dict[str, Any] = {}
    if type(llm).__name__ == "OpenAIChat":
        params["response_format"] = {"type": "json_object"}
    messages = [{"role": "user", "content": prompt}]
    with budget_scope(budget):
        text = (await llm.complete(messages, **params)).text
    subtasks, problems = _check(text, table, max_tasks)
    if problems:
        repair = [
            *messages,
            {"role": "assistant", "content": text},
            {
                "role": "user",
                "content": "Your plan has these problems:\n"
                + "\n".join(f"- {p}" for p in problems)
                + "\nReply with the corrected plan, JSON only.",
            },
        ]
        with budget_scope(budget):
            text = (await llm.complete(repair, **params)).text
        subtasks, problems = _check(text, table, max_tasks)
        if problems:
            raise PlanError(problems, text)
    return Plan(goal, subtasks, llm, table)


async def ask(
    goal: str,
    llm: Any,
    *,
    tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]] | None = None,
    conflict_strategy: str = DEFAULT_CONFLICT_STRATEGY,
    max_tasks: int = 8,
    **options: Unpack[FanOutOptions],
) -> Synthesis:
    """Plan ``goal``, run the plan, and synthesize the results with their gaps.

    Args:
        goal, llm, tools, max_tasks: as for :func:`plan`.
        conflict_strategy: as for :func:`synthesize`.
        **options: the options every verb shares (``fanflow._options``),
            for running the plan, with the same defaults as for
            :func:`fan_out` (``max_concurrency=100``,
            ``raise_on_failure=True``...).

    Raises:
        PlanError: as :func:`plan`.
        StrategyFailed: the plan's run failed its strategy (by default: no
            subtask succeeded) and ``raise_on_failure`` is true.
    """
    the_plan = await plan_once(
        goal,
        llm,
        tools=tools,
        max_tasks=max_tasks,
        journal=options.get("journal"),
        budget=options.get("budget"),
    )
    result = await the_plan.run(**options)
    return await synthesize(
        result, llm, conflict_strategy=conflict_strategy, budget=options.get("budget")
    )


async def plan_once(
    goal: str,
    llm: Any,
    *,
    tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]] | None,
    max_tasks: int,
    journal: Any,
    budget: Any = None,
) -> Plan:
    """:func:`plan`, recorded in ``journal`` (if any) and replayed from it on a rerun.

    Planning is a model call, and a model need not plan the same way twice:
    replaying the plan keeps its subtasks — and so their records — the same.

    Raises:
        PlanError: as :func:`plan`.
    """
    if journal is None:
        return await plan(goal, llm, tools=tools, max_tasks=max_tasks, budget=budget)
    from .._core._fingerprint import fn_digest
    from ._tasks import model_identity

    if tools is None:
        table: dict[str, Callable[..., Any]] = {}
    elif isinstance(tools, Mapping):
        table = dict(tools)
    else:
        table = {getattr(fn, "__name__", repr(fn)): fn for fn in tools}

    async def planning() -> dict[str, Any]:
        return (await plan(goal, llm, tools=table, max_tasks=max_tasks, budget=budget)).to_dict()

    def fingerprint() -> Any:
        return {
            "goal": goal,
            "model": model_identity(llm),
            "tools": {name: fn_digest(fn, f"tool {name!r}") for name, fn in table.items()},
            "max_tasks": max_tasks,
        }

    planning.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
    done = await fan_out(
        [Task("plan", planning)], journal=journal, raise_on_failure=False, audit="off"
    )
    outcome = done.results[0]
    if outcome.error is not None:
        raise outcome.error
    if not outcome.ok:
        raise asyncio.CancelledError  # the planning call was stopped
    return Plan.from_dict(outcome.value, llm, table)
