"""The workflow file format, validated by pydantic, with errors that name file, line and field."""

from __future__ import annotations

import json
import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .._core._exceptions import WorkflowError
from .._options import DEFAULT_CONCURRENCY
from .._policies._budget import Budget
from .._policies._hedge import Hedge
from .._policies._limits import RateLimit
from .._policies._retry import Retry
from .._policies._strategies import AllOrNothing, BestEffort, FirstN, Strategy
from .._policies._vote import Vote

__all__ = [
    "MAX_BYTES",
    "Loaded",
    "Workflow",
    "WorkflowError",
    "json_schema",
    "load",
    "parse_duration",
]

# Limits on what a workflow file may make the loader do. A real workflow is a
# few kilobytes, a few levels deep, with a handful of aliases; the limits sit
# far above that and far below what exhausts memory or time.
MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 50  # nested mappings and sequences
MAX_NODES = 100_000  # nodes once every alias is expanded
MAX_ERRORS = 20  # errors reported at once
# The C parser when PyYAML was built with libyaml: ~10x faster on large files.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``5``, ``2.5``, ``"500ms"``, ``"5s"``, ``"2m"`` or ``"1h"``.

    Raises:
        ValueError: anything else, a negative number, or one not finite.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use e.g. 5s, 500ms, 2m")
    if isinstance(value, int | float):
        # float() of an int past ~10**308 raises OverflowError: call it infinite instead.
        seconds = float(value) if not isinstance(value, int) or abs(value) < 10**300 else math.inf
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"invalid duration {_short(value)}: must be >= 0 and finite")
        return seconds
    if isinstance(value, str) and len(value) <= 40:
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
            if math.isfinite(seconds):
                return seconds
    raise ValueError(f"invalid duration {_short(value)}: use e.g. 5s, 500ms, 2m")


def _short(value: Any) -> str:
    """A repr bounded before it is built: a huge value never turns into a huge string."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError(f"must be > 0; got {seconds:g} (leave it out for no limit)")
    return seconds


def _check(build: Any) -> None:
    """Build the runtime object: what it refuses becomes a field error.

    Pydantic turns only ``ValueError`` into a field error; ``TypeError`` would escape.
    """
    try:
        build()
    except TypeError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[float, BeforeValidator(parse_duration)]
# A timeout or deadline: 0 would fail every task at once.
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RetrySpec(_Model):
    """``retry:``: see ``ff.Retry``."""

    attempts: int = Field(3, ge=1, le=1000)
    backoff: Duration = 0.5
    max_backoff: Duration = 30.0
    jitter: bool = True
    retry_timeouts: bool = True

    @model_validator(mode="after")
    def _valid(self) -> RetrySpec:
        _check(self.build)
        return self

    def build(self) -> Retry:
        """The ``ff.Retry`` this spec stands for."""
        return Retry(
            attempts=self.attempts,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            jitter=self.jitter,
            retry_timeouts=self.retry_timeouts,
        )


_PERCENTILE = re.compile(r"^\s*p(\d+(?:\.\d+)?)\s*$")


def _hedge_after(value: Any) -> str | float:
    """``p95`` (a percentile of finished attempts) or a duration such as ``2s`` or ``0.5``."""
    if isinstance(value, str):
        match = _PERCENTILE.match(value) if len(value) <= 40 else None
        if match:
            if not 0 < float(match.group(1)) < 100:
                raise ValueError(
                    f"{_short(value)} is not a percentile: use p1 to p99 (e.g. p95), "
                    "or a duration such as 2s"
                )
            return value.strip()
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"after must be a percentile such as p95 or a duration such as 2s; got {_short(value)}"
        ) from None
    return _positive(seconds)


class HedgeSpec(_Model):
    """``hedge:``: see ``ff.Hedge``; ``after`` is a duration (``2s``) or a percentile (``p95``)."""

    after: Annotated[str | float, BeforeValidator(_hedge_after)] = "p95"
    max_extra: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _valid(self) -> HedgeSpec:
        _check(self.build)
        return self

    def build(self) -> Hedge:
        """The ``ff.Hedge`` this spec stands for."""
        return Hedge(after=self.after, max_extra=self.max_extra)


class RateLimitSpec(_Model):
    """``rate_limit:``: see ``ff.RateLimit``; at least one of its three limits."""

    per_second: float | None = Field(None, gt=0)
    per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_limit(self) -> RateLimitSpec:
        if self.per_second is None and self.per_minute is None and self.tokens_per_minute is None:
            raise ValueError("rate_limit needs per_second, per_minute or tokens_per_minute")
        _check(self.build)
        return self

    def build(self) -> RateLimit:
        """The ``ff.RateLimit`` this spec stands for."""
        return RateLimit(
            per_second=self.per_second,
            per_minute=self.per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )


class BudgetSpec(_Model):
    """``budget:``: see ``ff.Budget``; at least one limit.

    ``prices`` maps a model to ``[dollars per 1M input tokens, dollars per
    1M output tokens]``; ``dollars`` needs them.
    """

    tokens: int | None = Field(None, ge=0)
    dollars: float | None = Field(None, ge=0)
    requests: int | None = Field(None, ge=0)
    prices: dict[str, tuple[float, float]] | None = None

    @model_validator(mode="after")
    def _valid(self) -> BudgetSpec:
        if self.tokens is None and self.dollars is None and self.requests is None:
            raise ValueError("budget needs tokens, dollars or requests")
        _check(self.build)
        return self

    def build(self) -> Budget:
        """The ``ff.Budget`` this spec stands for (a new one each time: it keeps what it spent)."""
        return Budget(
            tokens=self.tokens, dollars=self.dollars, requests=self.requests, prices=self.prices
        )


class StrategySpec(_Model):
    """``strategy:``: a name, or a mapping of one name to its options."""

    kind: Literal["all_or_nothing", "best_effort", "first_n", "vote"] = "best_effort"
    min_success: int | None = Field(None, ge=0)
    max_failures: float | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1)
    quorum: float | None = Field(None, gt=0, le=1)
    early_stop: bool = True

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"kind": data}
        if isinstance(data, dict) and len(data) == 1 and "kind" not in data:
            ((kind, options),) = data.items()
            return {"kind": kind, **(options or {})} if isinstance(options, dict | None) else data
        return data

    @model_validator(mode="after")
    def _needs_n(self) -> StrategySpec:
        if self.kind == "first_n" and self.n is None:
            raise ValueError("first_n needs n, e.g. strategy: {first_n: {n: 2}}")
        budget = self.max_failures
        if budget is not None and budget > 1 and not float(budget).is_integer():
            raise ValueError(
                f"max_failures is a count (a whole number) or a fraction in [0, 1]; got {budget:g}"
            )
        _check(self.build)  # anything else the strategy itself refuses
        return self

    def build(self) -> Strategy:
        """The strategy object this spec stands for."""
        if self.kind == "all_or_nothing":
            return AllOrNothing()
        if self.kind == "first_n":
            assert self.n is not None
            return FirstN(self.n)
        if self.kind == "vote":
            return Vote(quorum=self.quorum, early_stop=self.early_stop)
        budget: int | float | None = self.max_failures
        if budget is not None and budget >= 1 and float(budget).is_integer():
            budget = int(budget)
        return BestEffort(
            min_success=self.min_success if self.min_success is not None else 1,
            max_failures=budget,
        )


_TARGET = re.compile(r"^[\w.]+:[\w.]+$")


def _schema_field(value: Any) -> Any:
    """``schema:``: a JSON Schema (a mapping, checked here) or ``package.module:Model``."""
    if value is None:
        return None
    if isinstance(value, str):
        if not _TARGET.match(value):
            raise ValueError(
                "schema must be a JSON Schema (a mapping) or a pydantic model named as "
                f"package.module:Model; got {_short(value)}"
            )
        return value
    if not isinstance(value, dict):
        raise ValueError(
            "schema must be a JSON Schema (a mapping) or a pydantic model named as "
            f"package.module:Model; got {_short(value)}"
        )
    try:
        same = json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the JSON Schema holds a value JSON cannot carry: {exc}") from None
    except RecursionError:
        raise ValueError("the JSON Schema is nested too deeply") from None
    if not same:
        raise ValueError("a JSON Schema's keys are strings: quote keys such as 1, true or null")
    import jsonschema  # type: ignore[import-untyped]

    try:
        # The check ff.llm's output_schema() makes, with where in the schema.
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        where = ".".join(str(part) for part in exc.absolute_path)
        at = f" at {where}" if where else ""
        raise ValueError(f"not a valid JSON Schema{at}: {exc.message}") from None
    return value


StrictCount = Annotated[int, Field(strict=True)]


class TaskSpec(_Model):
    """One task: exactly one of ``run:`` (shell), ``call:`` (Python), ``prompt:`` or ``agent:``.

    ``prompt:`` and ``agent:`` take ``schema:`` (a JSON Schema, or a
    pydantic model as ``package.module:Model``) and ``repair:`` (rounds of
    repair of an answer that does not validate; default 1). ``agent:``
    takes ``tools:`` (``package.module:function`` each) and ``max_steps:``.
    """

    run: str | None = None
    call: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    prompt: str | None = None
    agent: str | None = None
    llm: str | None = None
    schema_: Annotated[Any, BeforeValidator(_schema_field)] = Field(None, alias="schema")
    repair: StrictCount | None = Field(None, ge=0, le=100)
    tools: list[str] | None = None
    max_steps: StrictCount | None = Field(None, ge=1, le=1000)
    needs: list[str] = Field(default_factory=list)
    timeout: PositiveDuration | None = None
    retry: RetrySpec | None = None
    weight: float = Field(1.0, ge=0)
    reads: list[str] = Field(default_factory=list)
    writes: list[str] = Field(default_factory=list)
    idempotent: bool = True

    @field_validator("tools")
    @classmethod
    def _tool_targets(cls, tools: list[str] | None) -> list[str] | None:
        if tools is None:
            return None
        if not tools:
            raise ValueError("an agent needs at least one tool: tools: [package.module:function]")
        for tool in tools:
            if not _TARGET.match(tool):
                raise ValueError(
                    f"each tool must look like package.module:function; got {_short(tool)}"
                )
        return tools

    @model_validator(mode="after")
    def _one_kind(self) -> TaskSpec:
        kinds = [k for k in ("run", "call", "prompt", "agent") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"a task needs exactly one of run, call, prompt or agent (found: {found})"
            )
        if self.call is not None and not _TARGET.match(self.call):
            raise ValueError(f"call must look like package.module:function; got {self.call!r}")
        if self.with_ and self.call is None:
            raise ValueError("with: gives arguments to a call: task only")
        model_task = self.prompt is not None or self.agent is not None
        if self.schema_ is not None and not model_task:
            raise ValueError("schema: is for prompt: and agent: tasks only")
        if self.repair is not None and self.schema_ is None:
            raise ValueError("repair: goes with schema: (rounds of repair of an invalid answer)")
        if self.agent is None:
            for option in ("tools", "max_steps"):
                if getattr(self, option) is not None:
                    raise ValueError(f"{option}: is for agent: tasks only")
        elif self.tools is None:
            raise ValueError("an agent: task needs tools: [package.module:function, ...]")
        return self


class SynthesizeSpec(_Model):
    llm: str | None = None
    conflict_strategy: str = "majority agreement between sources, noting any disagreement"


class MergeSpec(_Model):
    conflict: Literal["vote", "first", "priority"] = "vote"
    priority: list[str] = Field(default_factory=list)


class AggregateSpec(_Model):
    """``aggregate:``: ``merge:`` (no model) or ``synthesize:`` (a model)."""

    merge: MergeSpec | None = None
    synthesize: SynthesizeSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> AggregateSpec:
        if (self.merge is None) == (self.synthesize is None):
            raise ValueError("aggregate needs exactly one of merge or synthesize")
        return self


class Workflow(_Model):
    """A workflow file: tasks and how to run and fan them in."""

    name: str = "workflow"
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    llm: str | None = None
    strategy: StrategySpec = Field(default_factory=lambda: StrategySpec())
    timeout: PositiveDuration | None = None
    deadline: PositiveDuration | None = None
    max_concurrency: int | None = Field(DEFAULT_CONCURRENCY, ge=1, le=1_000_000)
    retry: RetrySpec | None = None
    hedge: HedgeSpec | None = None
    rate_limit: RateLimitSpec | None = None
    budget: BudgetSpec | None = None
    audit: Literal["error", "warn", "off", "strict"] = "error"
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    aggregate: AggregateSpec | None = None

    @field_validator("tasks")
    @classmethod
    def _names(cls, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
        for name in tasks:
            if not name.strip():
                raise ValueError(f"a task name must not be empty; got {name!r}")
        return tasks


# Fields spelt differently in Python (a keyword, a name pydantic's BaseModel uses).
_ALIASES = {"with_": "with", "schema_": "schema"}


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the YAML node at ``loc``, or of the closest parent that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == _ALIASES.get(key, key):
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _field(loc: tuple[Any, ...]) -> str:
    parts = []
    for key in loc:
        key = _ALIASES.get(key, key)
        parts.append(f"[{key}]" if isinstance(key, int) else str(key))
    return ".".join(parts).replace(".[", "[")


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader, turning a value it cannot build into an error at the value's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            # int("9" * 5000) and !!timestamp 2001-13-45 raise plain ValueErrors,
            # !!timestamp on a mapping an AttributeError: each is a mistake in the file.
            reason = str(exc).split(";")[0][:200]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {reason}", node.start_mark
            ) from None


def _event_line(event: yaml.Event) -> int | None:
    return event.start_mark.line + 1 if event.start_mark is not None else None


def _scan(text: str, name: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_NODES nodes once aliases expand.

    Runs on the event stream, before any node is composed: a "billion laughs"
    file is refused after reading its few lines, not after expanding them.
    """
    loader = _Loader(text)
    try:
        sizes: dict[str, int] = {}  # anchor -> its expanded size
        stack: list[list[Any]] = [[0, None]]  # [expanded size so far, anchor] per open collection
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) > MAX_DEPTH:
                    raise WorkflowError(
                        name,
                        _event_line(event),
                        "",
                        f"nested more than {MAX_DEPTH} levels deep",
                    )
                stack.append([1, event.anchor])
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                size, anchor = stack.pop()
            elif isinstance(event, yaml.ScalarEvent):
                size, anchor = 1, event.anchor
            elif isinstance(event, yaml.AliasEvent):
                size, anchor = sizes.get(event.anchor or "", 1), None
            else:
                continue
            if anchor is not None:
                sizes[anchor] = size
            stack[-1][0] += size
            if stack[-1][0] > MAX_NODES:
                raise WorkflowError(
                    name,
                    _event_line(event),
                    "",
                    f"more than {MAX_NODES} values once its aliases (*name) are expanded",
                )
    finally:
        loader.dispose()


def _parse_yaml(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    """The composed document (for line numbers) and its data; WorkflowError for bad YAML."""
    try:
        _scan(text, name)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # libyaml marks an unexpected end of the file one line past its last line.
        last = max(len(text.splitlines()), 1)
        line = min(mark.line + 1, last) if mark is not None else None
        kind = (
            "YAML error"
            if isinstance(exc, yaml.constructor.ConstructorError)
            else "YAML syntax error"
        )
        raise WorkflowError(name, line, "", f"{kind}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise WorkflowError(name, None, "", f"YAML error: {str(exc)[:200]}") from None
    except RecursionError:
        raise WorkflowError(name, None, "", "nested too deeply") from None
    return root, data


def _set_param(params: dict[str, Any], assignment: str, path: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise WorkflowError(path, None, "--set", f"expected key=value; got {_short(assignment)}")
    if key not in params:
        known = ", ".join(sorted(params)) or "none"
        raise WorkflowError(
            path,
            None,
            "--set",
            f"the workflow declares no parameter {key!r} (params: {known})",
        )
    value: Any = raw
    if raw and len(raw) <= 4000:
        try:
            value = _parse_yaml(raw, path)[1]
        except WorkflowError:
            value = raw
    params[key] = value if isinstance(value, str | int | float | bool) else raw


def _check_uri(uri: str) -> str | None:
    """Why ``uri`` is not a model URI, or ``None``: parsed as ``from_uri`` does, nothing built."""
    from ..llm import _uri

    if ":" not in uri:
        return f"a model URI looks like 'openai:gpt-4o-mini'; got {_short(uri)}"
    scheme, _, rest = uri.partition(":")
    if scheme not in _uri._PROVIDERS:
        known = ", ".join(sorted(_uri._PROVIDERS))
        return f"unknown model provider {_short(scheme)} in {_short(uri)}; known: {known}"
    at = rest.rfind("@http")
    if not (rest[:at] if at >= 0 else rest):
        return f"the model URI {_short(uri)} names no model"
    return None


class Loaded:
    """A validated workflow with its source, to name lines in later errors."""

    def __init__(self, workflow: Workflow, path: str, root: yaml.Node | None, text: str) -> None:
        self.workflow = workflow
        self.path = path
        self.root = root
        self.text = text

    @property
    def folder(self) -> str:
        """The workflow file's folder: ``run:`` tasks start there, ``| path`` resolves there."""
        return str(Path(self.path).resolve().parent)

    def error(self, loc: tuple[Any, ...], message: str) -> WorkflowError:
        """A :class:`WorkflowError` for the field at ``loc``."""
        return WorkflowError(self.path, _line_of(self.root, loc), _field(loc), message)

    def problems(self) -> list[WorkflowError]:
        """Mistakes the schema cannot see: counts against the tasks, model URIs."""
        wf = self.workflow
        errors: list[WorkflowError] = []
        count = len(wf.tasks)
        for option, value in (("min_success", wf.strategy.min_success), ("n", wf.strategy.n)):
            if value is not None and value > count:
                what = "first_n needs" if option == "n" else "min_success asks for"
                errors.append(
                    self.error(
                        ("strategy", wf.strategy.kind, option),
                        f"{what} {value} successes but the workflow has only {count} task(s)",
                    )
                )
        uris: list[tuple[tuple[Any, ...], str]] = []
        if wf.llm is not None:
            uris.append((("llm",), wf.llm))
        uris += [(("tasks", n, "llm"), t.llm) for n, t in wf.tasks.items() if t.llm is not None]
        synth = wf.aggregate.synthesize if wf.aggregate is not None else None
        if synth is not None:
            if synth.llm is not None:
                uris.append((("aggregate", "synthesize", "llm"), synth.llm))
            elif wf.llm is None:
                errors.append(
                    self.error(
                        ("aggregate", "synthesize"),
                        "synthesize needs a model: llm: here or at the top level (or --llm)",
                    )
                )
        for loc, uri in uris:
            problem = _check_uri(uri)
            if problem is not None:
                errors.append(self.error(loc, problem))
        return errors


def _read(path: str | Path, name: str) -> str:
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise WorkflowError(name, None, "", "no such file") from None
    except OSError as exc:
        raise WorkflowError(name, None, "", f"cannot read it: {exc}") from None
    if len(raw) > MAX_BYTES:
        raise WorkflowError(
            name, None, "", f"the file is larger than {MAX_BYTES} bytes (1 MiB), the limit"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(name, None, "", f"cannot read it: {exc}") from None


def _validation_errors(exc: ValidationError, name: str, root: yaml.Node | None) -> WorkflowError:
    errors = []
    for error in exc.errors(include_url=False, include_input=True)[:MAX_ERRORS]:
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        elif error["type"] == "missing":
            message = "this field is required"
        elif "input" in error and error["type"] not in ("value_error",):
            message = f"{message} (got {_short(error['input'])})"
        errors.append(WorkflowError(name, _line_of(root, loc), _field(loc), message))
    return WorkflowError.combine(errors)


def load(path: str | Path, overrides: list[str] | None = None, *, llm: str | None = None) -> Loaded:
    """Read and validate a workflow file.

    Args:
        path: the file (at most 1 MiB).
        overrides: ``--set key=value`` assignments of declared params.
        llm: the default model URI, replacing the file's ``llm:`` (``--llm``).

    Raises:
        WorkflowError: a missing or unreadable file, a file too large or
            too deeply nested, a YAML syntax error, or invalid fields — every
            one found, each naming the file, the line and the field.
    """
    name = str(path)
    text = _read(path, name)
    root, data = _parse_yaml(text, name)
    if not isinstance(data, dict):
        raise WorkflowError(name, 1, "", "a workflow is a mapping with at least 'tasks:'")
    if overrides:
        params = dict(data.get("params") or {}) if isinstance(data.get("params"), dict) else {}
        for assignment in overrides:
            _set_param(params, assignment, name)
        data["params"] = params
    if llm is not None:
        data["llm"] = llm
    try:
        loaded = Loaded(Workflow.model_validate(data), name, root, text)
    except ValidationError as exc:
        raise _validation_errors(exc, name, root) from None
    except RecursionError:
        raise WorkflowError(name, None, "", "nested too deeply") from None
    problems = loaded.problems()
    if problems:
        raise WorkflowError.combine(problems)
    return loaded


def json_schema() -> str:
    """The JSON Schema of the workflow format."""
    return json.dumps(Workflow.model_json_schema(by_alias=True), indent=2)
