"""From a workflow spec to tasks, a ``needs:`` graph and fan-out options."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core._graph import check_graph
from .._core._task import Ref, Task
from .._core._threads import TaskExit, run_sync
from .._policies._retry import Retry
from .._shell._run import run_shell
from .._template import Mode, Template, TemplateError, is_template, quoted_placeholders
from ._spec import Loaded, RetrySpec, TaskSpec, WorkflowError

if TYPE_CHECKING:
    from ..llm._structured import OutputSchema

__all__ = ["Plan", "build"]


@dataclasses.dataclass
class Plan:
    """A workflow ready to run: tasks, their needs, and the fan-out options."""

    name: str
    tasks: list[Task]
    needs: dict[str, list[str]]
    options: dict[str, Any]
    loaded: Loaded
    spec_hash: str
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Things that work but likely not as meant: a placeholder inside quotes in ``run:``."""


def _retry(spec: RetrySpec | None) -> Retry | None:
    return spec.build() if spec is not None else None


_TITLES = {"tasks": "output of task {}", "params": "parameter {}"}


def _template(text: str, loaded: Loaded, loc: tuple[Any, ...], task: str, mode: Mode) -> Template:
    """A checked template: syntax, filters, and every name it uses against params and tasks.

    Raises:
        WorkflowError: at ``loc``, naming what is wrong and what is known.
    """
    wf = loaded.workflow
    params, tasks = wf.params, wf.tasks
    try:
        template = Template(
            text,
            mode,
            titles=_TITLES,
            dashed=[n for n in (*params, *tasks) if "-" in n],
        )
    except TemplateError as exc:
        raise loaded.error(loc, str(exc)) from None
    needs = set(tasks[task].needs) if task in tasks else set()
    for ref in template.references:
        name = ref.keys[0] if ref.keys else None
        if ref.root == "params":
            if not isinstance(name, str):
                raise loaded.error(loc, "refer to a parameter by name: {{ params.NAME }}")
            if name not in params:
                known = ", ".join(sorted(params)) or "none"
                raise loaded.error(loc, f"unknown parameter {name!r} (params: {known})")
            continue
        if not isinstance(name, str):
            raise loaded.error(loc, "refer to a task by name: {{ tasks.NAME.value }}")
        if name not in tasks:
            known = ", ".join(sorted(tasks))
            raise loaded.error(
                loc, f"refers to task {name!r}, which does not exist (tasks: {known})"
            )
        if ref.keys[1:2] != ("value",):
            raise loaded.error(loc, f"use {{{{ tasks.{name}.value }}}} to refer to a task's value")
        if name not in needs:
            raise loaded.error(
                loc,
                f"task {task!r} uses the value of task {name!r} without needing it: a hidden "
                f"dependency. HINT: add needs: [{name}] to {task!r}",
            )
    return template


def _values(template: Template, upstream: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the tasks ``template`` uses (all of them needs, checked at build).

    A structured value is its JSON data (``{{ tasks.x.value.field }}`` reads
    a field); an agent's value is its answer: the parsed one with
    ``schema:``, else its text.
    """
    return {name: _data(upstream[name]) for name in template.tasks()}


def _data(value: Any) -> Any:
    """What a template sees of a task's value (see :func:`_values`)."""
    from ..llm._agent import AgentResult

    if isinstance(value, AgentResult):
        value = value.text if value.parsed is None else value.parsed
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):  # pydantic
        return value.model_dump(mode="json")
    return value


def _fill(value: Any, params: Mapping[str, Any], upstream: Mapping[str, Any], folder: str) -> Any:
    """A ``with:`` value with its templates rendered (one expression keeps its type)."""
    if isinstance(value, Template):
        return value.render(params, _values(value, upstream), folder=folder)
    if isinstance(value, dict):
        return {k: _fill(v, params, upstream, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, params, upstream, folder) for v in value]
    return value


def _templates_in(
    value: Any, loaded: Loaded, loc: tuple[Any, ...], task: str, errors: list[WorkflowError]
) -> Any:
    """``value`` with each template string (at any depth) compiled; errors are collected."""
    if isinstance(value, str) and is_template(value):
        try:
            return _template(value, loaded, loc, task, "value")
        except WorkflowError as exc:
            errors.append(exc)
            return value
    if isinstance(value, dict):
        return {k: _templates_in(v, loaded, (*loc, k), task, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_templates_in(v, loaded, (*loc, i), task, errors) for i, v in enumerate(value)]
    return value


def _import_object(target: str, loaded: Loaded, loc: tuple[Any, ...]) -> Any:
    """``package.module:name`` imported; a :class:`WorkflowError` at ``loc`` if it cannot be."""
    # Targets (call:, schema:, tools:) are found beside the workflow file, or
    # from the current folder.
    for folder in (loaded.folder, str(Path.cwd())):
        if folder not in sys.path:
            sys.path.append(folder)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return _lookup_attr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise loaded.error(loc, f"cannot import {target!r}: {exc}") from None


def _import(target: str, loaded: Loaded, loc: tuple[Any, ...]) -> Callable[..., Any]:
    fn = _import_object(target, loaded, loc)
    if not callable(fn):
        raise loaded.error(loc, f"{target!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _lookup_attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _used_params(template: Template, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters ``template`` refers to (for a task's fingerprint)."""
    names = {r.keys[0] for r in template.references if r.root == "params" and r.keys}
    return {name: params[name] for name in sorted(map(str, names)) if name in params}


def _shell_task(template: Template, params: Mapping[str, Any], folder: str) -> Callable[..., Any]:
    async def run(upstream: Mapping[str, Any]) -> str:
        command = template.render(params, _values(template, upstream), folder=folder)
        # Relative paths in the command mean the workflow's folder, wherever fanflow runs.
        output = await run_shell(command, cwd=folder)
        return output.stdout.decode("utf-8", errors="replace").rstrip("\n")

    def fingerprint(upstream: Mapping[str, Any]) -> Any:
        # In a journal (--journal), a run: task is the command it runs.
        return {
            "run": template.render(params, _values(template, upstream), folder=folder),
            "folder": folder,
        }

    run.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
    return run


def _call_task(
    fn: Callable[..., Any], arguments: dict[str, Any], params: Mapping[str, Any], folder: str
) -> Callable[..., Any]:
    async def call(upstream: Mapping[str, Any]) -> Any:
        kwargs = {k: _fill(v, params, upstream, folder) for k, v in arguments.items()}
        if inspect.iscoroutinefunction(fn):
            try:
                return await fn(**kwargs)
            except SystemExit as exc:  # the task's error, not the end of fanflow
                raise TaskExit(exc.code) from exc
        # A plain function runs in a daemon worker thread, as ff.Task would run it.
        return await run_sync(fn, **kwargs)

    def fingerprint(upstream: Mapping[str, Any]) -> Any:
        # In a journal: the function (its code and what it captured) and its arguments.
        from .._core._fingerprint import fn_digest

        kwargs = {k: _fill(v, params, upstream, folder) for k, v in arguments.items()}
        return {"call": fn_digest(fn, "its function"), "with": kwargs}

    call.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
    return call


def _schema(spec: TaskSpec, loaded: Loaded, loc: tuple[Any, ...]) -> OutputSchema | None:
    """The task's ``schema:`` ready to use: an inline JSON Schema or an imported pydantic model.

    Raises:
        WorkflowError: at ``loc``: a module or class that cannot be imported,
            or a class that is not a pydantic model.
    """
    from ..llm._structured import output_schema

    if spec.schema_ is None:
        return None
    if isinstance(spec.schema_, dict):
        return output_schema(spec.schema_)  # checked when the file was loaded
    target = str(spec.schema_)
    model = _import_object(target, loaded, loc)
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise loaded.error(
            loc, f"{target!r} is not a pydantic model class (a subclass of pydantic.BaseModel)"
        )
    try:
        return output_schema(model)
    except Exception as exc:  # a model pydantic cannot describe as a JSON Schema
        raise loaded.error(loc, f"{target!r} has no JSON Schema: {exc}") from None


def _model_estimate(fn: Any, llm_uri: str, template: Template) -> None:
    """``fn.__fanflow_model__``: the model and token estimate a budget reserves.

    Under a budget (budget:, --budget-tokens) the attempt reserves the
    template's estimate plus an answer of 256 tokens (values filled in
    later are not known yet: their size is the estimate's error).
    """
    from ..llm._base import estimate_tokens

    rest = llm_uri.partition(":")[2]
    at = rest.rfind("@http")
    fn.__fanflow_model__ = (
        rest[:at] if at >= 0 else rest,
        estimate_tokens(template.source),
        _ANSWER_TOKENS,
    )


def _model_codec(schema: OutputSchema | None) -> Any:
    """How a journal stores a pydantic model instance: its JSON data, validated on replay."""
    model = schema.model if schema is not None else None
    if model is None:
        return None
    return (lambda value: value.model_dump(mode="json"), model.model_validate)


def _prompt_task(
    template: Template,
    llm_uri: str,
    params: Mapping[str, Any],
    folder: str,
    schema: OutputSchema | None = None,
    repair: int = 1,
) -> Callable[..., Any]:
    async def ask(upstream: Mapping[str, Any]) -> Any:
        from ..llm import from_uri
        from ..llm._structured import complete_structured

        # Task values and params alike are framed as data between nonce markers.
        prompt = template.render(params, _values(template, upstream), folder=folder)
        llm = from_uri(llm_uri)
        try:
            if schema is None:
                return (await llm.complete(prompt)).text
            completion = await complete_structured(llm, prompt, schema, repair=repair)
            return completion.parsed
        finally:
            close = getattr(llm, "aclose", None)
            if close is not None:
                await close()

    def fingerprint(upstream: Mapping[str, Any]) -> Any:
        # In a journal: what the prompt is rendered from (the rendering itself
        # frames values with a fresh nonce each time), the model, and the schema.
        found: dict[str, Any] = {
            "prompt": template.source,
            "values": _values(template, upstream),
            "params": _used_params(template, params),
            "model": llm_uri,
        }
        if schema is not None:
            found.update(schema=schema.json_schema, repair=repair)
        return found

    ask.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
    codec = _model_codec(schema)
    if codec is not None:
        ask.__fanflow_codec__ = codec  # type: ignore[attr-defined]
    _model_estimate(ask, llm_uri, template)
    return ask


def _agent_task(
    template: Template,
    llm_uri: str,
    params: Mapping[str, Any],
    folder: str,
    tools: Mapping[str, Any],
    max_steps: int,
    schema: OutputSchema | None,
    repair: int,
) -> Callable[..., Any]:
    from ..llm._agent import _dump, _load, run_agent

    async def agent(upstream: Mapping[str, Any]) -> Any:
        from ..llm import from_uri

        prompt = template.render(params, _values(template, upstream), folder=folder)
        llm = from_uri(llm_uri)
        try:
            return await run_agent(
                llm, prompt, tools, max_steps=max_steps, schema=schema, repair=repair
            )
        finally:
            close = getattr(llm, "aclose", None)
            if close is not None:
                await close()

    def fingerprint(upstream: Mapping[str, Any]) -> Any:
        # In a journal: as a prompt task, plus the tools (their code) and the limits.
        from .._core._fingerprint import fn_digest

        return {
            "agent": template.source,
            "values": _values(template, upstream),
            "params": _used_params(template, params),
            "model": llm_uri,
            "tools": {n: fn_digest(t.fn, f"tool {n!r}").hex() for n, t in tools.items()},
            "max_steps": max_steps,
            "schema": None if schema is None else schema.json_schema,
            "repair": repair,
        }

    agent.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
    # In a journal: the answer, the tool calls and a model instance as JSON data.
    agent.__fanflow_codec__ = (  # type: ignore[attr-defined]
        lambda value: _dump(value, schema),
        lambda data: _load(data, schema),
    )
    _model_estimate(agent, llm_uri, template)
    return agent


def _tools(targets: list[str], loaded: Loaded, loc: tuple[Any, ...]) -> dict[str, Any]:
    """Each ``tools:`` entry imported and described as the model will see it.

    Raises:
        WorkflowError: at ``loc[i]``: an import that fails, something that
            cannot be a tool, or two tools of one name.
    """
    from ..llm._agent import _tool

    table: dict[str, Any] = {}
    for i, target in enumerate(targets):
        fn = _import(target, loaded, (*loc, i))
        try:
            tool = _tool(fn)
        except TypeError as exc:
            raise loaded.error((*loc, i), f"{target!r} cannot be a tool: {exc}") from None
        if tool.name in table:
            raise loaded.error((*loc, i), f"two tools are named {tool.name!r}")
        table[tool.name] = tool
    return table


# The answer a workflow's prompt task reserves room for under a budget.
_ANSWER_TOKENS = 256


def _quote_warnings(template: Template, loaded: Loaded, loc: tuple[Any, ...]) -> list[str]:
    where = str(loaded.error(loc, "")).removesuffix(": ")
    return [
        f"{where}: {placeholder} sits inside quotes written in the command: its value is "
        'shell-quoted already, so these quotes no longer protect it (inside "..." the shell '
        "still expands $(...) and `...` in the value); write the placeholder without quotes"
        for placeholder in quoted_placeholders(template.source)
    ]


def _build_task(
    name: str, spec: TaskSpec, loaded: Loaded, errors: list[WorkflowError], warnings: list[str]
) -> Task | None:
    """The task, or ``None`` with its mistakes appended to ``errors``."""
    wf = loaded.workflow
    params = wf.params
    base = ("tasks", name)
    fn: Callable[..., Any]
    try:
        if spec.run is not None:
            template = _template(spec.run, loaded, (*base, "run"), name, "shell")
            warnings += _quote_warnings(template, loaded, (*base, "run"))
            fn = _shell_task(template, params, loaded.folder)
        elif spec.call is not None:
            found: list[WorkflowError] = []
            arguments = _templates_in(spec.with_, loaded, (*base, "with_"), name, found)
            target = _import(spec.call, loaded, (*base, "call"))
            if found:
                errors += found
                return None
            fn = _call_task(target, arguments, params, loaded.folder)
        else:
            kind = "prompt" if spec.prompt is not None else "agent"
            source = spec.prompt if spec.prompt is not None else spec.agent
            assert source is not None
            uri = spec.llm or wf.llm
            template = _template(source, loaded, (*base, kind), name, "prompt")
            if uri is None:
                raise loaded.error(
                    (*base, "llm"), f"a {kind} task needs llm: (here or at the top level)"
                )
            schema = _schema(spec, loaded, (*base, "schema_"))
            repair = 1 if spec.repair is None else spec.repair
            if kind == "prompt":
                fn = _prompt_task(template, uri, params, loaded.folder, schema, repair)
            else:
                assert spec.tools is not None
                tools = _tools(spec.tools, loaded, (*base, "tools"))
                steps = 8 if spec.max_steps is None else spec.max_steps
                fn = _agent_task(template, uri, params, loaded.folder, tools, steps, schema, repair)
    except WorkflowError as exc:
        errors.append(exc)
        return None
    fn.__qualname__ = fn.__name__ = name
    estimate = getattr(fn, "__fanflow_model__", None)
    try:
        return Task(
            name,
            fn,
            # Each need's value, filled in when the task starts (ff.Ref).
            kwargs={"upstream": {need: Ref(need) for need in spec.needs}},
            needs=spec.needs,
            timeout=spec.timeout,
            retry=_retry(spec.retry),
            weight=spec.weight,
            reads=spec.reads,
            writes=spec.writes,
            idempotent=spec.idempotent,
            tokens=0 if estimate is None else estimate[1] + estimate[2],
        )
    except (TypeError, ValueError) as exc:  # e.g. an empty resource name
        field = "writes" if "writes" in str(exc) else "reads" if "reads" in str(exc) else ""
        errors.append(loaded.error((*base, field) if field else base, str(exc)))
        return None


def build(loaded: Loaded) -> Plan:
    """Check templates, references, needs and the audit; return the tasks and options to run.

    Raises:
        WorkflowError: an unknown parameter or task, a template error, a
            hidden dependency (a value used without ``needs:``), a cycle, an
            import that fails, or an audit conflict — every one found, each
            naming the file, line and field.
    """
    wf = loaded.workflow
    errors: list[WorkflowError] = []
    warnings: list[str] = []
    built = [_build_task(name, spec, loaded, errors, warnings) for name, spec in wf.tasks.items()]
    needs = {name: list(spec.needs) for name, spec in wf.tasks.items() if spec.needs}
    try:
        check_graph(list(wf.tasks), needs)
    except ValueError as exc:
        culprit = next(
            (n for n, deps in needs.items() if any(d not in wf.tasks or d == n for d in deps)),
            next(iter(needs), ""),
        )
        errors.append(loaded.error(("tasks", culprit, "needs"), str(exc)))
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise WorkflowError.combine(errors)
    tasks = [task for task in built if task is not None]
    from .._policies._audit import audit

    report = audit(tasks, needs)
    if report.conflicts:
        raise WorkflowError.combine(
            [loaded.error(("tasks", c.tasks[0]), str(c)) for c in report.conflicts]
        )
    options: dict[str, Any] = {
        "strategy": wf.strategy.build(),
        "max_concurrency": wf.max_concurrency,
        "timeout": wf.timeout,
        "deadline": wf.deadline,
        "retry": _retry(wf.retry),
        "hedge": wf.hedge.build() if wf.hedge is not None else None,
        "rate_limit": wf.rate_limit.build() if wf.rate_limit is not None else None,
        "budget": wf.budget.build() if wf.budget is not None else None,
        "audit": wf.audit,
    }
    digest = hashlib.sha256(loaded.text.encode("utf-8")).hexdigest()
    return Plan(wf.name, tasks, needs, options, loaded, digest, warnings)
