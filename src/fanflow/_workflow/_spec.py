"""The workflow file format, validated by pydantic, with errors that name file, line and field."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

__all__ = ["Loaded", "Workflow", "WorkflowError", "json_schema", "load", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``5``, ``2.5``, ``"500ms"``, ``"5s"``, ``"2m"`` or ``"1h"``.

    Raises:
        ValueError: anything else, or a negative number.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use e.g. 5s, 500ms, 2m")
    if isinstance(value, int | float):
        if value < 0 or math.isnan(value):
            raise ValueError(f"invalid duration {value!r}: must be >= 0")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"invalid duration {value!r}: use e.g. 5s, 500ms, 2m")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySpec(_Model):
    """``retry:``: see ``ff.Retry``."""

    attempts: int = Field(3, ge=1)
    backoff: Duration = 0.5
    max_backoff: Duration = 30.0
    jitter: bool = True
    retry_timeouts: bool = True


class HedgeSpec(_Model):
    """``hedge:``: see ``ff.Hedge``; ``after`` is a duration or a percentile like ``p95``."""

    after: str | float = "p95"
    max_extra: float = Field(0.1, ge=0, le=1)


class RateLimitSpec(_Model):
    """``rate_limit:``: see ``ff.RateLimit``."""

    per_second: float | None = Field(None, gt=0)
    per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)


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
        return self


class TaskSpec(_Model):
    """One task: exactly one of ``run:`` (shell), ``call:`` (Python) or ``prompt:`` (a model)."""

    run: str | None = None
    call: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    prompt: str | None = None
    llm: str | None = None
    needs: list[str] = Field(default_factory=list)
    timeout: Duration | None = None
    retry: RetrySpec | None = None
    weight: float = Field(1.0, ge=0)
    reads: list[str] = Field(default_factory=list)
    writes: list[str] = Field(default_factory=list)
    idempotent: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> TaskSpec:
        kinds = [k for k in ("run", "call", "prompt") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"a task needs exactly one of run, call or prompt (found: {found})")
        if self.call is not None and not re.match(r"^[\w.]+:[\w.]+$", self.call):
            raise ValueError(f"call must look like package.module:function; got {self.call!r}")
        if self.with_ and self.call is None:
            raise ValueError("with: gives arguments to a call: task only")
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
    timeout: Duration | None = None
    deadline: Duration | None = None
    max_concurrency: int | None = Field(16, ge=1)
    retry: RetrySpec | None = None
    hedge: HedgeSpec | None = None
    rate_limit: RateLimitSpec | None = None
    audit: Literal["error", "warn", "off", "strict"] = "error"
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    aggregate: AggregateSpec | None = None


class WorkflowError(ValueError):
    """A workflow file that cannot be used: says file, line and field.

    Attributes:
        path: the file. ``line``: 1-based, or ``None``. ``field``: the dotted
        path of the field, or ``""``.
    """

    def __init__(self, path: str, line: int | None, field: str, message: str) -> None:
        where = f"{path}:{line}" if line else path
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)
        self.path = path
        self.line = line
        self.field = field


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line of the YAML node at ``loc``, or of the closest parent that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key or (key == "with_" and k.value == "with"):
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
        if key == "with_":
            key = "with"
        parts.append(f"[{key}]" if isinstance(key, int) else str(key))
    return ".".join(parts).replace(".[", "[")


def _set_param(params: dict[str, Any], assignment: str, path: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise WorkflowError(path, None, "--set", f"expected key=value; got {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    params[key] = value if isinstance(value, str | int | float | bool) else raw


class Loaded:
    """A validated workflow with its source, to name lines in later errors."""

    def __init__(self, workflow: Workflow, path: str, root: yaml.Node | None, text: str) -> None:
        self.workflow = workflow
        self.path = path
        self.root = root
        self.text = text

    def error(self, loc: tuple[Any, ...], message: str) -> WorkflowError:
        """A :class:`WorkflowError` for the field at ``loc``."""
        return WorkflowError(self.path, _line_of(self.root, loc), _field(loc), message)


def load(path: str | Path, overrides: list[str] | None = None) -> Loaded:
    """Read and validate a workflow file; ``overrides`` are ``--set key=value`` params.

    Raises:
        WorkflowError: a missing or unreadable file, a YAML syntax error, or
            an invalid field — naming the file, the line and the field.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(name, None, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(name, None, "", f"cannot read it: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise WorkflowError(name, line, "", f"YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise WorkflowError(name, None, "", f"YAML error: {exc}") from None
    if not isinstance(data, dict):
        raise WorkflowError(name, 1, "", "a workflow is a mapping with at least 'tasks:'")
    if overrides:
        params = dict(data.get("params") or {}) if isinstance(data.get("params"), dict) else {}
        for assignment in overrides:
            _set_param(params, assignment, name)
        data["params"] = params
    try:
        return Loaded(Workflow.model_validate(data), name, root, text)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        elif error["type"] == "missing":
            message = "this field is required"
        elif "input" in error and error["type"] not in ("value_error",):
            message = f"{message} (got {error['input']!r:.60})"
        raise WorkflowError(name, _line_of(root, loc), _field(loc), message) from None


def json_schema() -> str:
    """The JSON Schema of the workflow format."""
    return json.dumps(Workflow.model_json_schema(by_alias=True), indent=2)
