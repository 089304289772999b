"""From a workflow spec to tasks, a ``needs:`` graph and fan-out options."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import inspect
import json
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import _strategies, _vote
from .._aggregate import _as_text, _Framer
from .._engine import UPSTREAM, check_graph
from .._hedge import Hedge
from .._limits import RateLimit
from .._result import TaskResult
from .._retry import Retry
from .._shell import run_shell
from .._strategies import Strategy
from .._task import Task
from ._spec import Loaded, RetrySpec, StrategySpec, TaskSpec

__all__ = ["Plan", "build"]

# {{ params.NAME }}, {{ tasks.NAME.value }}, {{ tasks.NAME.value.KEY }}
_REF = re.compile(r"\{\{\s*(params|tasks)\.([\w-]+)((?:\.[\w-]+)*)\s*\}\}")


@dataclasses.dataclass
class Plan:
    """A workflow ready to run: tasks, their needs, and the fan-out options."""

    name: str
    tasks: list[Task]
    needs: dict[str, list[str]]
    options: dict[str, Any]
    loaded: Loaded
    spec_hash: str


def _strategy(spec: StrategySpec) -> Strategy:
    if spec.kind == "all_or_nothing":
        return _strategies.AllOrNothing()
    if spec.kind == "first_n":
        assert spec.n is not None
        return _strategies.FirstN(spec.n)
    if spec.kind == "vote":
        return _vote.Vote(quorum=spec.quorum, early_stop=spec.early_stop)
    budget: int | float | None = spec.max_failures
    if budget is not None and budget >= 1 and float(budget).is_integer():
        budget = int(budget)
    return _strategies.BestEffort(
        min_success=spec.min_success if spec.min_success is not None else 1, max_failures=budget
    )


def _retry(spec: RetrySpec | None) -> Retry | None:
    if spec is None:
        return None
    return Retry(
        attempts=spec.attempts,
        backoff=spec.backoff,
        max_backoff=spec.max_backoff,
        jitter=spec.jitter,
        retry_timeouts=spec.retry_timeouts,
    )


def _lookup(value: Any, path: list[str]) -> Any:
    for key in path:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        else:
            raise KeyError(key)
    return value


class _Template:
    """A string with ``{{ ... }}`` references, checked at build time, filled at run time."""

    def __init__(self, text: str, loaded: Loaded, loc: tuple[Any, ...], task: str) -> None:
        self.text = text
        self.refs: list[str] = []
        params = loaded.workflow.params
        tasks = loaded.workflow.tasks
        needs = set(tasks[task].needs) if task in tasks else set()
        for match in _REF.finditer(text):
            kind, name, rest = match.groups()
            if kind == "params":
                if name not in params:
                    known = ", ".join(sorted(params)) or "none"
                    raise loaded.error(loc, f"unknown parameter {name!r} (params: {known})")
                continue
            if name not in tasks:
                raise loaded.error(loc, f"refers to task {name!r}, which does not exist")
            if not rest.startswith(".value") and rest != "":
                raise loaded.error(
                    loc, f"use {{{{ tasks.{name}.value }}}} to refer to a task's value"
                )
            if name not in needs:
                raise loaded.error(
                    loc,
                    f"task {task!r} uses the value of task {name!r} without needing it: a hidden "
                    f"dependency. HINT: add needs: [{name}] to {task!r}",
                )
            self.refs.append(name)

    def fill(
        self,
        params: Mapping[str, Any],
        upstream: Mapping[str, TaskResult],
        quote: Callable[[str], str],
        frame: Callable[[str, str], str] | None = None,
    ) -> str:
        def value(match: re.Match[str]) -> str:
            kind, name, rest = match.groups()
            if kind == "params":
                return quote(str(params[name]))
            path = [p for p in rest.split(".") if p][1:]  # after "value"
            result = upstream[name]
            try:
                data = _lookup(result.value, path)
            except KeyError as exc:
                raise KeyError(f"task {name!r} returned no key {exc.args[0]!r}") from None
            text = _as_text(data)
            return frame(name, text) if frame is not None else quote(text)

        return _REF.sub(value, self.text)


def _import(target: str, loaded: Loaded, loc: tuple[Any, ...]) -> Callable[..., Any]:
    # call: targets are found beside the workflow file, or from the current folder.
    for folder in (str(Path(loaded.path).resolve().parent), str(Path.cwd())):
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


def _shell_task(template: _Template, params: Mapping[str, Any]) -> Callable[..., Any]:
    async def run(upstream: Mapping[str, TaskResult]) -> str:
        command = template.fill(params, upstream, shlex.quote)
        output = await run_shell(command)
        return output.stdout.decode("utf-8", errors="replace").rstrip("\n")

    return run


def _call_task(
    fn: Callable[..., Any], arguments: dict[str, Any], params: Mapping[str, Any]
) -> Callable[..., Any]:
    async def call(upstream: Mapping[str, TaskResult]) -> Any:
        kwargs = {
            k: (v.fill(params, upstream, str) if isinstance(v, _Template) else v)
            for k, v in arguments.items()
        }
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        # A plain function runs in a thread, as ff.Task would run it.
        return await asyncio.to_thread(fn, **kwargs)

    return call


def _prompt_task(
    template: _Template, llm_uri: str, params: Mapping[str, Any]
) -> Callable[..., Any]:
    async def ask(upstream: Mapping[str, TaskResult]) -> str:
        from ..llm import from_uri

        texts = [_as_text(upstream[name].value) for name in template.refs]
        framer = _Framer(texts)

        def frame(name: str, text: str) -> str:
            return framer.block(f"output of task {json.dumps(name)}", text)

        prompt = template.fill(params, upstream, str, frame)
        if template.refs:
            prompt = framer.preamble() + "\n\n" + prompt
        llm = from_uri(llm_uri)
        try:
            completion = await llm.complete(prompt)
        finally:
            close = getattr(llm, "aclose", None)
            if close is not None:
                await close()
        return completion.text

    return ask


def _build_task(name: str, spec: TaskSpec, loaded: Loaded) -> Task:
    wf = loaded.workflow
    params = wf.params
    base = ("tasks", name)
    fn: Callable[..., Any]
    if spec.run is not None:
        fn = _shell_task(_Template(spec.run, loaded, (*base, "run"), name), params)
    elif spec.call is not None:
        target = _import(spec.call, loaded, (*base, "call"))
        arguments = {
            k: (
                _Template(v, loaded, (*base, "with_", k), name)
                if isinstance(v, str) and "{{" in v
                else v
            )
            for k, v in spec.with_.items()
        }
        fn = _call_task(target, arguments, params)
    else:
        assert spec.prompt is not None
        uri = spec.llm or wf.llm
        if uri is None:
            raise loaded.error(
                (*base, "llm"), "a prompt task needs llm: (here or at the top level)"
            )
        fn = _prompt_task(_Template(spec.prompt, loaded, (*base, "prompt"), name), uri, params)
    fn.__qualname__ = fn.__name__ = name
    return Task(
        name,
        fn,
        kwargs={"upstream": UPSTREAM},
        timeout=spec.timeout,
        retry=_retry(spec.retry),
        weight=spec.weight,
        reads=spec.reads,
        writes=spec.writes,
        idempotent=spec.idempotent,
    )


def build(loaded: Loaded) -> Plan:
    """Check references, needs and the audit; return the tasks and options to run.

    Raises:
        WorkflowError: an unknown parameter or task, a hidden dependency (a
            value used without ``needs:``), a cycle, an import that fails,
            or an audit conflict — naming the file, line and field.
    """
    wf = loaded.workflow
    tasks = [_build_task(name, spec, loaded) for name, spec in wf.tasks.items()]
    needs = {name: list(spec.needs) for name, spec in wf.tasks.items() if spec.needs}
    try:
        check_graph(list(wf.tasks), needs)
    except ValueError as exc:
        culprit = next(
            (n for n, deps in needs.items() if any(d not in wf.tasks or d == n for d in deps)),
            next(iter(needs), ""),
        )
        raise loaded.error(("tasks", culprit, "needs"), str(exc)) from None
    from .._audit import audit

    report = audit(tasks, needs)
    if report.conflicts:
        conflict = report.conflicts[0]
        raise loaded.error(("tasks", conflict.tasks[0]), str(conflict))
    hedge = None
    if wf.hedge is not None:
        hedge = Hedge(after=wf.hedge.after, max_extra=wf.hedge.max_extra)
    rate = None
    if wf.rate_limit is not None:
        rate = RateLimit(
            per_second=wf.rate_limit.per_second,
            per_minute=wf.rate_limit.per_minute,
            tokens_per_minute=wf.rate_limit.tokens_per_minute,
        )
    options: dict[str, Any] = {
        "strategy": _strategy(wf.strategy),
        "max_concurrency": wf.max_concurrency,
        "timeout": wf.timeout,
        "deadline": wf.deadline,
        "retry": _retry(wf.retry),
        "hedge": hedge,
        "rate_limit": rate,
        "audit": wf.audit,
    }
    digest = hashlib.sha256(loaded.text.encode("utf-8")).hexdigest()
    return Plan(wf.name, tasks, needs, options, loaded, digest)
