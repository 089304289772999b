"""Subtasks that are agents: ``ff.llm.agent_task(name, llm, prompt, tools=[...])``.

An agent task is a tool-calling loop on the provider's native tool calling
(OpenAI ``tools``/``tool_calls``, Anthropic ``tool_use``/``tool_result``):
the model is asked with the tools described, the tool calls it asks for run
(those of one turn concurrently), their results go back, and so on until it
answers without calling a tool — or ``max_steps`` model calls were made,
which fails the task saying so.

* Tools are plain functions (sync or async). Each is described to the model
  from its signature (a JSON Schema of its parameters, built by pydantic
  from the annotations) and its docstring; the model's arguments are
  validated against the same schema before the tool runs.
* A tool's exception, or arguments that do not validate, go back to the
  model as an error result (``is_error``): the model can recover.
* A timeout or a cancellation (a ``FirstN`` winner elsewhere, a deadline)
  cancels the loop where it is: the model request in flight, or the tool
  calls in flight (async tools are cancelled; a sync tool runs in a worker
  thread that cannot be interrupted, and its result is dropped). No tool
  call starts after that.
* Every model call is a request of the task's attempt: counted in
  ``result.usage``, and in ``usage.wasted`` when the task is cancelled or
  times out; each reserves from a spend budget like any request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._core._exceptions import AgentError
from .._core._jsonable import to_jsonable
from .._core._task import Task
from .._policies._retry import Retry
from ._base import LLM, Completion, Message, ToolCall, estimate_tokens, to_messages
from ._structured import complete_structured, output_schema

__all__ = ["AgentError", "AgentResult", "agent_task", "tool_spec"]

#: Characters of a tool's result sent back to the model, at most.
MAX_RESULT_CHARS = 20_000


@dataclasses.dataclass(frozen=True)
class AgentResult:
    """What an agent task returns.

    Attributes:
        text: the model's final answer.
        tool_calls: every tool call, in order, with its ``result`` or ``error``.
        steps: the model calls made (the final structured call included).
        parsed: with ``schema=``, the final answer validated (else ``None``).
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    steps: int = 0
    parsed: Any = None

    def __str__(self) -> str:
        return self.text


@dataclasses.dataclass(frozen=True)
class _Tool:
    name: str
    fn: Callable[..., Any]
    spec: dict[str, Any]
    arguments: Any  # the pydantic model of its parameters


def tool_spec(fn: Callable[..., Any], name: str | None = None) -> dict[str, Any]:
    """How a function is described to a model: ``{"name", "description", "parameters"}``.

    ``parameters`` is a JSON Schema built from the signature's annotations
    (unannotated parameters take any JSON value); ``description`` is the
    docstring's first paragraph.

    Raises:
        TypeError: ``fn`` is not callable, or takes ``*args``/``**kwargs``
            or positional-only parameters (a model passes named arguments).
    """
    return _tool(fn, name).spec


def _tool(fn: Callable[..., Any], name: str | None = None) -> _Tool:
    if not callable(fn):
        raise TypeError(f"a tool must be a function; got {fn!r:.80}")
    from pydantic import create_model

    tool_name = name or getattr(fn, "__name__", None)
    if not isinstance(tool_name, str) or not tool_name.isidentifier():
        raise TypeError(f"a tool needs a name (a function's __name__); got {fn!r:.80}")
    try:
        # eval_str: a module with `from __future__ import annotations` has
        # its annotations as strings.
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError):
        signature = inspect.signature(fn)  # unresolvable names: taken as any value
    except (TypeError, ValueError):
        raise TypeError(f"tool {tool_name!r}: its signature cannot be read") from None
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.POSITIONAL_ONLY,
        ):
            raise TypeError(
                f"tool {tool_name!r}: parameter {parameter.name!r} cannot be named by a "
                "model (no *args, **kwargs or positional-only parameters)"
            )
        annotation = (
            Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
        )
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    arguments = create_model(f"{tool_name}_arguments", **fields)
    schema = arguments.model_json_schema()
    schema.pop("title", None)
    doc = inspect.getdoc(fn) or ""
    description = doc.split("\n\n")[0].strip() or f"the tool {tool_name}"
    spec = {"name": tool_name, "description": description, "parameters": schema}
    return _Tool(tool_name, fn, spec, arguments)


def _tools(
    tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]],
) -> dict[str, _Tool]:
    pairs = (
        list(tools.items())
        if isinstance(tools, Mapping)
        else [(getattr(fn, "__name__", None), fn) for fn in tools]
    )
    table: dict[str, _Tool] = {}
    for name, fn in pairs:
        tool = _tool(fn, name if isinstance(name, str) else None)
        if tool.name in table:
            raise ValueError(f"two tools are named {tool.name!r}")
        table[tool.name] = tool
    return table


async def _call(tool: _Tool | None, call: ToolCall, agent: asyncio.Task[Any] | None) -> ToolCall:
    """Run one tool call; its record, with the result or the error.

    ``agent`` is the agent's own task: once it is being cancelled (a
    ``FirstN`` winner elsewhere, a timeout), a tool call scheduled in the
    same loop turn does not start.
    """
    if agent is not None and agent.cancelling():
        raise asyncio.CancelledError
    if tool is None:
        return dataclasses.replace(call, error=f"there is no tool named {call.name!r}")
    if call.error is not None:
        return call  # the arguments could not be read
    from pydantic import ValidationError

    try:
        checked = tool.arguments.model_validate(call.arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
            for e in exc.errors()
        )
        return dataclasses.replace(call, error=f"invalid arguments: {problems}")
    kwargs = {field: getattr(checked, field) for field in type(checked).model_fields}
    try:
        if inspect.iscoroutinefunction(tool.fn):
            value = await tool.fn(**kwargs)
        else:
            value = await asyncio.to_thread(tool.fn, **kwargs)
            if inspect.isawaitable(value):
                value = await value
    except Exception as exc:
        return dataclasses.replace(call, error=f"{type(exc).__name__}: {exc}")
    return dataclasses.replace(call, result=value)


def _content(call: ToolCall) -> str:
    if call.error is not None:
        return f"error: {call.error}"
    value = call.result
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(to_jsonable(value), ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"... [cut: {len(text)} characters in all]"
    return text


async def run_agent(
    llm: LLM,
    prompt: str | Sequence[Message],
    tools: Mapping[str, _Tool],
    *,
    max_steps: int,
    schema: Any = None,
    repair: int = 1,
    **params: Any,
) -> AgentResult:
    """The loop of :func:`agent_task` (see the module).

    Raises:
        AgentError: ``max_steps`` model calls without a final answer.
        SchemaError: with ``schema``, the final answer did not validate.
    """
    messages: list[dict[str, Any]] = to_messages(prompt)
    specs = [t.spec for t in tools.values()]
    record: list[ToolCall] = []
    steps = 0
    while steps < max_steps:
        completion: Completion = await llm.complete(messages, tools=specs, **params)
        steps += 1
        if not completion.tool_calls:
            if schema is None:
                return AgentResult(completion.text, tuple(record), steps)
            final = await complete_structured(
                llm,
                [
                    *messages,
                    {"role": "assistant", "content": completion.text},
                    {"role": "user", "content": "Now give your final answer as JSON."},
                ],
                schema,
                repair=repair,
                **params,
            )
            return AgentResult(completion.text, tuple(record), steps + 1, final.parsed)
        messages.append(
            {"role": "assistant", "content": completion.text, "tool_calls": completion.tool_calls}
        )
        agent = asyncio.current_task()
        async with asyncio.TaskGroup() as group:
            running = [
                group.create_task(_call(tools.get(call.name), call, agent))
                for call in completion.tool_calls
            ]
        for task in running:
            done = task.result()
            record.append(done)
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": done.id,
                    "name": done.name,
                    "content": _content(done),
                    "is_error": done.error is not None,
                }
            )
    called = ", ".join(c.name for c in record) or "none"
    raise AgentError(
        f"the agent reached max_steps={max_steps} model calls without a final answer "
        f"(tool calls: {called})",
        record,
    )


def agent_task(
    name: str,
    llm: LLM,
    prompt: str | Sequence[Message],
    *,
    tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]] = (),
    max_steps: int = 8,
    schema: Any = None,
    repair: int = 1,
    timeout: float | None = None,
    retry: Retry | None = None,
    weight: float = 1.0,
    reads: Sequence[str] = (),
    writes: Sequence[str] = (),
    **params: Any,
) -> Task:
    """A :class:`~fanflow.Task` that is an agent: a tool-calling loop with ``llm``.

    The value is an :class:`AgentResult` (``.text``, ``.tool_calls`` each
    with ``.name``, ``.arguments``, ``.result`` or ``.error``, ``.steps``,
    ``.parsed``). See the module for how tools, errors, cancellation and
    usage behave.

    Args:
        name: the task's name.
        llm: a model whose ``complete`` takes ``tools=`` (fanflow's providers
            and :class:`~fanflow.testing.ScriptedLLM` do).
        prompt: the agent's instructions.
        tools: functions (or ``{name: function}``) the model may call.
        max_steps: the most model calls; reaching it without an answer fails
            the task with :class:`AgentError` (permanent: not retried).
        schema: a pydantic model class or JSON Schema for the final answer:
            one more model call asks for it as JSON, validated with
            ``repair`` rounds (:class:`~fanflow.llm.SchemaError` if not).
        timeout, retry, weight, reads, writes: as for :class:`~fanflow.Task`.
        params: passed to every ``llm.complete`` (``temperature``, ``max_tokens``...).

    Raises:
        TypeError: a tool cannot be described (see :func:`tool_spec`), or a
            bad ``schema``.
        ValueError: ``max_steps`` < 1, or two tools share a name.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"agent_task(max_steps=...) must be an int >= 1; got {max_steps!r}")
    table = _tools(tools)
    spec = output_schema(schema) if schema is not None else None

    async def agent() -> AgentResult:
        return await run_agent(
            llm, prompt, table, max_steps=max_steps, schema=spec, repair=repair, **params
        )

    agent.__qualname__ = agent.__name__ = f"agent[{getattr(llm, 'name', llm)}]"

    def fingerprint() -> Any:
        from .._core._fingerprint import fn_digest
        from ._tasks import model_identity

        return {
            "prompt": prompt,
            "model": model_identity(llm),
            "tools": {n: fn_digest(t.fn, f"tool {n!r}").hex() for n, t in table.items()},
            "max_steps": max_steps,
            "schema": None if spec is None else spec.json_schema,
            "params": params,
        }

    agent.__fanflow_fingerprint__ = fingerprint  # type: ignore[attr-defined]
    agent.__fanflow_codec__ = (  # type: ignore[attr-defined]
        lambda value: _dump(value, spec),
        lambda data: _load(data, spec),
    )
    prompt_tokens = estimate_tokens(prompt)
    max_tokens = int(params.get("max_tokens", 256))
    model = getattr(llm, "model", None) or getattr(llm, "name", None)
    # Under a budget the attempt reserves its first call; later calls reserve their own.
    agent.__fanflow_model__ = (  # type: ignore[attr-defined]
        model if isinstance(model, str) and model else None,
        prompt_tokens,
        max_tokens,
    )
    return Task(
        name,
        agent,
        timeout=timeout,
        retry=retry,
        weight=weight,
        reads=reads,
        writes=writes,
        tokens=prompt_tokens + max_tokens,
    )


def _dump(value: AgentResult, spec: Any) -> Any:
    parsed = value.parsed
    if spec is not None and spec.model is not None and parsed is not None:
        parsed = parsed.model_dump(mode="json")
    return {
        "text": value.text,
        "steps": value.steps,
        "parsed": to_jsonable(parsed),
        "tool_calls": [
            {
                "id": c.id,
                "name": c.name,
                "arguments": to_jsonable(c.arguments),
                "result": to_jsonable(c.result),
                "error": c.error,
            }
            for c in value.tool_calls
        ],
    }


def _load(data: Any, spec: Any) -> AgentResult:
    parsed = data["parsed"]
    if spec is not None and spec.model is not None and parsed is not None:
        parsed = spec.model.model_validate(parsed)
    return AgentResult(
        data["text"],
        tuple(ToolCall(**c) for c in data["tool_calls"]),
        data["steps"],
        parsed,
    )
