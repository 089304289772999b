"""``fanflow mcp``: fanflow's fan-out as Model Context Protocol tools, served over stdio.

Two tools, on the official ``mcp`` SDK's high-level server (extra
``fanflow[mcp]``, imported only when the server is built):

* ``fan_out_prompts``: named prompts sent to one model at once, fanned in by
  a strategy, optionally synthesized into one answer;
* ``run_workflow``: a workflow file run as ``fanflow run`` runs it; the
  answer is the report ``fanflow run --json`` writes.

Everything a caller chooses (the model, limits, the budget, a schema, the
workflow's params) is checked before anything runs, and a mistake is a tool
error (``isError``) with a message that names it: the server never dies of
a caller's mistake. Shell tasks (``run:``) are refused unless the server was
started with ``--allow-shell``. Stdout carries protocol messages only: while
the server runs, ``sys.stdout`` is stderr (where logs and progress go). API
keys come from the environment only (the providers read them), and error
texts are passed through :func:`~fanflow.llm._errors.redact_keys`.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["MAX_PROMPTS", "BudgetArgs", "build_server", "serve"]

#: The most prompts one ``fan_out_prompts`` call may send.
MAX_PROMPTS = 1000

_FAN_OUT_DESCRIPTION = """\
Send several prompts to one model at the same time and get every answer back, \
with a verdict on how complete the set is.

Give each prompt a name (`prompts`: {name: prompt text}); they run concurrently \
(at most `max_concurrency` at once) and independently: a prompt that fails or \
times out becomes that task's status, never an error of the whole call. \
`strategy` decides when the fan-out succeeded: "best_effort" (default: at least \
one answer), "all_or_nothing" (every prompt must answer; stops at the first \
failure), "first_n" (the first `n` answers are enough; the rest are cancelled), \
"vote" (the prompts ask the same question; the most common answer wins). \
`timeout` is seconds per prompt, `deadline` seconds for the whole fan-out. \
`budget` caps tokens (and dollars, with `prices`): prompts that would exceed it \
are not sent. With `schema` (a JSON Schema object) each answer is parsed JSON \
that validates against it. With `synthesize: true` the same model also writes \
one answer from all the results, naming what is missing.

Returns {ok, strategy, reason, value, coverage, confidence, confidence_level, \
votes, tasks: [{name, status: ok|error|timeout|cancelled|skipped, value, error, \
reason, duration, attempts}], gaps: [{task, status, reason}], usage: {requests, \
input_tokens, output_tokens, tokens, wasted_requests, wasted_tokens}, budget, \
synthesis: {text, confidence_level, gaps} or {error} or null}. `coverage` is the \
share of prompts that answered; `gaps` are the prompts whose answers are missing \
and why; read them before trusting the set.

The model is a URI: "openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest", \
"litellm:...", "openai:MODEL@http://host:port/v1" (any OpenAI-compatible server), \
"sim:MODEL" (fanflow's simulator). API keys come from the server's environment."""

_RUN_WORKFLOW_DESCRIPTION = """\
Run a fanflow workflow file (YAML: tasks fanned out concurrently, a strategy, \
an optional aggregate step) and return its run report.

`path` is the workflow file (relative to the server's working directory); \
`params` sets the workflow's declared parameters ({name: string, number or \
boolean}); `llm` is the model URI for prompt tasks and the synthesis that name \
none (e.g. "openai:gpt-4o-mini"); `timeout` (seconds per task), `deadline` \
(seconds for the whole run) and `budget` override the file's. Mistakes in the \
file or the arguments are reported, every one, and nothing runs. Workflows with \
shell tasks (`run:`) are refused unless the server was started with \
`--allow-shell`.

Returns the JSON report `fanflow run --json` writes: {fanflow, workflow, \
spec_sha256, started_at, finished_at, deadline, result: {ok, strategy, value, \
reason, coverage, confidence, confidence_level, counts, usage, results: [{name, \
status, value, error: {type, message} or null, attempts, duration, reason, \
...}]}, aggregate: {kind: merge|synthesize, ...} or null, budget}."""


class BudgetArgs(BaseModel):
    """A spending limit for one tool call (an ``ff.Budget``)."""

    model_config = ConfigDict(extra="forbid")

    tokens: Annotated[
        int | None,
        Field(
            ge=0,
            description="The most input plus output tokens; prompts that do not fit are not sent.",
        ),
    ] = None
    dollars: Annotated[
        float | None,
        Field(ge=0, description="The most dollars; needs `prices` for the models used."),
    ] = None
    prices: Annotated[
        dict[str, tuple[float, float]] | None,
        Field(
            description="Dollars per 1M input and output tokens per model, e.g. "
            '{"gpt-4o-mini": [0.15, 0.6]}.'
        ),
    ] = None


def _tool_error(message: str) -> Exception:
    """The SDK's anticipated-failure exception: the caller gets ``message``, ``isError`` set."""
    from mcp.server.mcpserver.exceptions import ToolError

    from .llm._errors import redact_keys

    return ToolError(redact_keys(message))


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    from .llm._errors import redact_keys

    text = str(error)
    return redact_keys(f"{type(error).__name__}: {text}" if text else type(error).__name__)


def _seconds(value: float | None, what: str) -> float | None:
    """``value`` checked as a positive, finite number of seconds (or ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _tool_error(f"{what} must be a number of seconds; got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise _tool_error(f"{what} must be a finite number of seconds > 0; got {value!r}")
    return float(value)


def _budget(args: BudgetArgs | None, base: Any = None) -> Any:
    """The ``ff.Budget`` for ``args``, laid over ``base`` (a workflow's), or ``base``."""
    if args is None:
        return base
    import fanflow as ff

    prices = dict(base.prices) if base is not None else {}
    prices.update(args.prices or {})
    dollars = args.dollars if args.dollars is not None else (base.dollars if base else None)
    if dollars is not None and not prices:
        raise _tool_error(
            f"budget.dollars ({dollars:g}) needs budget.prices: dollars per 1M input and "
            'output tokens for each model, e.g. {"gpt-4o-mini": [0.15, 0.6]}'
        )
    try:
        return ff.Budget(
            tokens=args.tokens if args.tokens is not None else (base.tokens if base else None),
            dollars=dollars,
            requests=base.requests if base is not None else None,
            prices=prices or None,
        )
    except (TypeError, ValueError) as exc:
        raise _tool_error(f"budget: {exc}") from None


def _strategy(kind: str, n: int | None, count: int) -> Any:
    import fanflow as ff

    if kind != "first_n":
        if n is not None:
            raise _tool_error(f'n is only for strategy "first_n"; the strategy is {kind!r}')
        return {
            "best_effort": ff.BestEffort,
            "all_or_nothing": ff.AllOrNothing,
            "vote": ff.Vote,
        }[kind]()
    if n is None:
        raise _tool_error('strategy "first_n" needs n: how many answers are enough')
    if not 1 <= n <= count:
        raise _tool_error(f'strategy "first_n" needs 1 <= n <= {count} (the prompts); got n={n}')
    return ff.FirstN(n)


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {
            "requests": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "tokens": 0,
            "wasted_requests": 0,
            "wasted_tokens": 0,
        }
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "tokens": usage.input_tokens + usage.output_tokens,
        "wasted_requests": sum(u.requests for u in usage.wasted.values()),
        "wasted_tokens": usage.wasted_tokens,
    }


async def fan_out_prompts(
    prompts: Mapping[str, str],
    model: str,
    *,
    strategy: str = "best_effort",
    n: int | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    max_concurrency: int | None = None,
    budget: BudgetArgs | None = None,
    synthesize: bool = False,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``fan_out_prompts`` tool: send ``prompts`` to ``model`` at once, fan the answers in.

    Returns:
        The answer described in the tool's description (JSON data).

    Raises:
        ToolError: a bad argument (the message names it); nothing was sent.
    """
    import fanflow as ff

    from ._core._jsonable import to_jsonable
    from ._core._usage import collect_usage, combine_usage
    from .llm._aggregate import gaps_of
    from .llm._errors import redact_keys

    if not prompts:
        raise _tool_error("prompts is empty: give at least one {name: prompt text}")
    if len(prompts) > MAX_PROMPTS:
        raise _tool_error(f"at most {MAX_PROMPTS} prompts per call; got {len(prompts)}")
    for name, text in prompts.items():
        if not isinstance(name, str) or not name.strip():
            raise _tool_error(f"prompt names must be non-empty strings; got {name!r}")
        if not isinstance(text, str) or not text.strip():
            raise _tool_error(f"prompt {name!r} is empty")
    if strategy not in ("best_effort", "all_or_nothing", "first_n", "vote"):
        raise _tool_error(
            'strategy must be "best_effort", "all_or_nothing", "first_n" or "vote"; '
            f"got {strategy!r}"
        )
    chosen = _strategy(strategy, n, len(prompts))
    timeout = _seconds(timeout, "timeout")
    deadline = _seconds(deadline, "deadline")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise _tool_error(f"max_concurrency must be an integer >= 1; got {max_concurrency!r}")
    spend = _budget(budget)
    try:
        llm = ff.llm.from_uri(model)
    except (ValueError, ImportError) as exc:
        raise _tool_error(f"model {model!r}: {exc}") from None
    try:
        try:
            tasks = [
                ff.llm.prompt_task(name, llm, text, schema=schema) for name, text in prompts.items()
            ]
        except (TypeError, ValueError) as exc:
            raise _tool_error(f"schema: {exc}") from None
        options: dict[str, Any] = {
            "strategy": chosen,
            "timeout": timeout,
            "deadline": deadline,
            "budget": spend,
            "raise_on_failure": False,
            "audit": "off",  # model calls share nothing: there is nothing to audit
        }
        if max_concurrency is not None:
            options["max_concurrency"] = max_concurrency
        try:
            result = await ff.fan_out(tasks, **options)
        except (TypeError, ValueError) as exc:
            raise _tool_error(str(exc)) from None
        synthesis: dict[str, Any] | None = None
        synthesis_usage = None
        if synthesize:
            if not result.succeeded:
                synthesis = {"error": "not synthesized: no prompt was answered"}
            else:
                extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
                try:
                    with collect_usage() as collected:
                        made = await ff.synthesize(result, llm, budget=spend, **extra)
                except (ff.ServiceError, ff.BudgetExceeded, TimeoutError, OSError) as exc:
                    synthesis = {"error": f"the synthesis failed: {_describe(exc)}"}
                else:
                    synthesis = {
                        "text": made.text,
                        "confidence_level": made.confidence_level,
                        "gaps": [g.task for g in made.gaps],
                    }
                synthesis_usage = collected.usage
    finally:
        aclose = getattr(llm, "aclose", None)  # the providers' HTTP clients
        if aclose is not None:
            await aclose()
    answer: dict[str, Any] = {
        "ok": result.ok,
        "strategy": result.strategy,
        "reason": result.reason,
        "value": to_jsonable(result.value),
        "coverage": result.coverage,
        "confidence": result.confidence,
        "confidence_level": result.confidence_level,
        "votes": (
            [{"answer": str(k), "weight": w} for k, w in result.votes.items()]
            if result.votes is not None
            else None
        ),
        "tasks": [
            {
                "name": r.name,
                "status": r.status.value,
                "value": to_jsonable(r.value),
                "error": _describe(r.error),
                "reason": r.reason or None,
                "duration": r.duration,
                "attempts": r.attempts,
            }
            for r in result.results
        ],
        "gaps": [
            {"task": g.task, "status": g.status, "reason": redact_keys(g.reason)}
            for g in gaps_of(result)
        ],
        "usage": _usage(combine_usage(result.usage, synthesis_usage)),
        "budget": spend.to_dict() if spend is not None else None,
        "synthesis": synthesis,
    }
    return answer


def _param_overrides(params: Mapping[str, Any]) -> list[str]:
    """``params`` as ``--set`` assignments, each value read back exactly as given."""
    import json

    overrides = []
    for key, value in params.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise _tool_error(f"params: {key!r} is not a parameter name")
        if value is None or not isinstance(value, str | int | float | bool):
            raise _tool_error(
                f"params.{key}: a parameter is a string, a number or a boolean; got {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise _tool_error(f"params.{key}: must be a finite number; got {value!r}")
        if isinstance(value, str) and len(value) > 3000:
            # Long values are taken as text as they are (never parsed): see _set_param.
            raw = value
        else:
            # JSON is YAML: a string stays that string ("3" stays "3"), a number a number.
            raw = json.dumps(value, ensure_ascii=False)
        overrides.append(f"{key}={raw}")
    return overrides


async def run_workflow(
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    llm: str | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    budget: BudgetArgs | None = None,
    allow_shell: bool = False,
) -> dict[str, Any]:
    """The ``run_workflow`` tool: run the workflow at ``path``; the ``fanflow run --json`` report.

    Raises:
        ToolError: a bad argument or workflow (every mistake named), or shell
            tasks without ``allow_shell``; nothing ran.
    """
    import fanflow as ff

    from ._cli.workflow import _run
    from ._workflow import WorkflowError, build, load

    timeout = _seconds(timeout, "timeout")
    deadline = _seconds(deadline, "deadline")
    overrides = _param_overrides(params or {})
    try:
        loaded = load(path, overrides, llm=llm)
    except WorkflowError as exc:
        raise _tool_error(str(exc)) from None
    shell = [name for name, spec in loaded.workflow.tasks.items() if spec.run is not None]
    if shell and not allow_shell:
        raise _tool_error(
            f"{path}: refused: the workflow has shell tasks ({', '.join(shell)}), and this "
            "server runs no shell commands; start it with `fanflow mcp --allow-shell` to "
            "allow them. Nothing ran."
        )
    try:
        plan = build(loaded)
    except WorkflowError as exc:
        raise _tool_error(str(exc)) from None
    for warning in plan.warnings:
        print(f"fanflow mcp: warning: {warning}", file=sys.stderr)
    if timeout is not None:
        plan.options["timeout"] = timeout
    if deadline is not None:
        plan.options["deadline"] = deadline
    plan.options["budget"] = _budget(budget, plan.options.get("budget"))
    try:
        _code, report = await _run(plan)
    except (TypeError, ValueError, ff.FanOutError) as exc:
        raise _tool_error(f"{path}: {exc}") from None
    return report


@contextlib.asynccontextmanager
async def _stdout_to_stderr(_server: Any) -> AsyncIterator[None]:
    """While serving, ``print`` and rich consoles write to stderr: stdout is the protocol's.

    The SDK's stdio transport has taken hold of the real stdout by the time
    the server's lifespan begins.
    """
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def build_server(*, allow_shell: bool = False) -> MCPServer[Any]:
    """The MCP server with fanflow's two tools (``mcp`` is imported here).

    Args:
        allow_shell: let ``run_workflow`` run workflows with shell (``run:``) tasks.

    Raises:
        ImportError: the ``mcp`` package is not installed (``pip install 'fanflow[mcp]'``).
    """
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError as exc:
        raise ImportError(
            f"fanflow mcp needs the MCP SDK: pip install 'fanflow[mcp]' ({exc})"
        ) from None

    from . import __version__

    server: MCPServer[Any] = MCPServer(
        "fanflow",
        version=__version__,
        instructions=(
            "fanflow runs independent subtasks concurrently and fans their results back in. "
            "Use fan_out_prompts to ask a model several questions at once (or the same "
            "question several times and vote); use run_workflow to run a fanflow workflow "
            "file. Both report every task's status, the coverage and what is missing."
        ),
        lifespan=_stdout_to_stderr,
        log_level="WARNING",
    )

    @server.tool(name="fan_out_prompts", description=_FAN_OUT_DESCRIPTION)
    async def fan_out_prompts_tool(
        prompts: Annotated[
            dict[str, str],
            Field(description="The prompts to send, by name: {name: prompt text}."),
        ],
        model: Annotated[
            str,
            Field(description='Model URI, e.g. "openai:gpt-4o-mini" or "sim:m".'),
        ],
        strategy: Annotated[
            Literal["best_effort", "all_or_nothing", "first_n", "vote"],
            Field(description="When the fan-out succeeded (see the tool's description)."),
        ] = "best_effort",
        n: Annotated[
            int | None, Field(description='For "first_n": how many answers are enough.')
        ] = None,
        timeout: Annotated[
            float | None, Field(description="Seconds each prompt may take (> 0).")
        ] = None,
        deadline: Annotated[
            float | None, Field(description="Seconds for the whole fan-out (> 0).")
        ] = None,
        max_concurrency: Annotated[
            int | None, Field(description="The most prompts in flight at once (default 100).")
        ] = None,
        budget: Annotated[
            BudgetArgs | None, Field(description="A spending limit: tokens and/or dollars.")
        ] = None,
        synthesize: Annotated[
            bool, Field(description="Also have the model write one answer from all results.")
        ] = False,
        schema: Annotated[
            dict[str, Any] | None,
            Field(description="A JSON Schema object: each answer is JSON validated by it."),
        ] = None,
    ) -> dict[str, Any]:
        return await fan_out_prompts(
            prompts,
            model,
            strategy=strategy,
            n=n,
            timeout=timeout,
            deadline=deadline,
            max_concurrency=max_concurrency,
            budget=budget,
            synthesize=synthesize,
            schema=schema,
        )

    @server.tool(name="run_workflow", description=_RUN_WORKFLOW_DESCRIPTION)
    async def run_workflow_tool(
        path: Annotated[str, Field(description="The workflow file (YAML).")],
        params: Annotated[
            dict[str, str | int | float | bool] | None,
            Field(description="Values of the workflow's declared params."),
        ] = None,
        llm: Annotated[
            str | None,
            Field(description="Model URI for prompt tasks and the synthesis that name none."),
        ] = None,
        timeout: Annotated[
            float | None, Field(description="Seconds each task may take (> 0).")
        ] = None,
        deadline: Annotated[
            float | None, Field(description="Seconds for the whole run (> 0).")
        ] = None,
        budget: Annotated[
            BudgetArgs | None, Field(description="A spending limit: tokens and/or dollars.")
        ] = None,
    ) -> dict[str, Any]:
        return await run_workflow(
            path,
            params=params,
            llm=llm,
            timeout=timeout,
            deadline=deadline,
            budget=budget,
            allow_shell=allow_shell,
        )

    return server


async def serve(*, allow_shell: bool = False) -> None:
    """Serve the tools over stdio until the client closes the connection."""
    server = build_server(allow_shell=allow_shell)
    shell = "shell tasks allowed" if allow_shell else "shell tasks refused"
    print(f"fanflow mcp: serving over stdio ({shell})", file=sys.stderr)
    await server.run_stdio_async()
