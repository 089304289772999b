"""From a workflow spec to tasks, a ``needs:`` graph and fan-out options."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._core._graph import check_graph
from .._core._task import Ref, Task
from .._core._threads import TaskExit, run_sync
from .._policies._retry import Retry
from .._shell._run import run_shell
from .._template import Mode, Template, TemplateError, is_template, quoted_placeholders
from ._spec import Loaded, RetrySpec, TaskSpec, WorkflowError

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
    """The values of the tasks ``template`` uses (all of them needs, checked at build)."""
    return {name: upstream[name] for name in template.tasks()}


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


def _import(target: str, loaded: Loaded, loc: tuple[Any, ...]) -> Callable[..., Any]:
    # call: targets are found beside the workflow file, or from the current folder.
    for folder in (loaded.folder, str(Path.cwd())):
        if folder not in sys.path:
            sys.path.append(folder)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        fn = _lookup_attr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise loaded.error(loc, f"cannot import {target!r}: {exc}") from None
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


def _prompt_task(
    template: Template, llm_uri: str, params: Mapping[str, Any], folder: str
) -> Callable[..., Any]:
    async def ask(upstream: Mapping[str, Any]) -> str:
        from ..llm import from_uri

        # Task values and params alike are framed as data between nonce markers.
        prompt = template.render(params, _values(template, upstream), folder=folder)
        llm = from_uri(llm_uri)
        try:
            completion = await llm.complete(prompt)
        finally:
            close = getattr(llm, "aclose", None)
            if close is not None:
                await close()
        return completion.text

    def fingerprint(upstream: Mapping[str, Any]) -> Any:
        # In a journal: what the prompt is rendered from (the rendering itself
        # frames values with a fresh nonce each time), and the model.
        return {
            "prompt": template.source,
            "values": _values(template, upstream),
            "params": _used_params(template, params),
            "model": llm_uri,
        }

    ask.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
    # Under a budget (budget:, --budget-tokens) the attempt reserves the
    # template's estimate plus an answer of 256 tokens (values filled in
    # later are not known yet: their size is the estimate's error).
    from ..llm._base import estimate_tokens

    rest = llm_uri.partition(":")[2]
    at = rest.rfind("@http")
    ask.__fanflow_model__ = (  # type: ignore[attr-defined]
        rest[:at] if at >= 0 else rest,
        estimate_tokens(template.source),
        _ANSWER_TOKENS,
    )
    return ask


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
            assert spec.prompt is not None
            uri = spec.llm or wf.llm
            template = _template(spec.prompt, loaded, (*base, "prompt"), name, "prompt")
            if uri is None:
                raise loaded.error(
                    (*base, "llm"), "a prompt task needs llm: (here or at the top level)"
                )
            fn = _prompt_task(template, uri, params, loaded.folder)
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
