"""A simulated LLM service on loopback HTTP, for tests, benchmarks and the demo.

Serves the OpenAI chat-completions API (``POST /v1/chat/completions``,
``GET /v1/models``) and Anthropic's Messages API (``POST /v1/messages``) with
aiohttp, so both SDK providers are exercised over real HTTP. Latency is drawn
from a lognormal distribution; errors and 429s (with ``Retry-After``) come at
configured rates; answers follow scripted distributions per prompt pattern,
drawn reproducibly from ``(seed, prompt, request seed)``. Every response's
model name starts with ``simulated:``: nothing here is a real model.

Beyond plain text it speaks the structured and tool-calling parts of both
APIs:

* Conversations with tool calls are accepted: OpenAI assistant messages with
  ``tool_calls`` (``content`` null or absent) and ``role: "tool"`` results;
  Anthropic ``text``/``tool_use``/``tool_result`` content blocks. As the real
  services do, every tool call must be answered by a result (and every result
  must answer a call) or the request gets a 400. The text scripts match on is
  the conversation's text, tool results included.
* Structured output: OpenAI ``response_format`` (``json_schema`` or
  ``json_object``) and Anthropic forced tools (``tools`` plus
  ``tool_choice={"type": "tool", "name": ...}``). The matching
  :class:`Script`'s answer is used (JSON text); with no match the answer is
  :func:`minimal_instance` of the schema.
* Agents: an :class:`AgentScript` in ``SimConfig.agents`` makes the model
  call tools turn by turn, then give a final answer, for requests that offer
  ``tools`` and whose first user message matches the script's pattern.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AgentScript",
    "Latency",
    "Script",
    "SimConfig",
    "Simulator",
    "minimal_instance",
    "serve",
]


@dataclasses.dataclass(frozen=True)
class Latency:
    """Response time: lognormal with this median (seconds) and sigma, clamped to [low, high]."""

    median: float = 0.05
    sigma: float = 0.5
    low: float = 0.0
    high: float = 30.0

    def draw(self, rng: random.Random) -> float:
        """One response time in seconds, drawn from ``rng``."""
        if self.median <= 0:
            return 0.0
        value = rng.lognormvariate(math.log(self.median), self.sigma) if self.sigma else self.median
        return min(self.high, max(self.low, value))


@dataclasses.dataclass(frozen=True)
class Script:
    """Answers for prompts that match ``pattern`` (a regular expression, searched).

    ``answers`` maps each answer to its probability (they are normalised),
    e.g. ``{"42": 0.7, "41": 0.2, "I am not sure": 0.1}``. For structured
    requests (OpenAI ``response_format``, Anthropic forced tools) the answers
    are JSON text, e.g. ``{'{"verdict": "yes"}': 1.0}``.

    Raises:
        re.error: ``pattern`` is not a regular expression.
        ValueError: no answers, or a negative weight.
    """

    pattern: str
    answers: Mapping[str, float]

    def __post_init__(self) -> None:
        re.compile(self.pattern)
        if not self.answers or any(w < 0 for w in self.answers.values()):
            raise ValueError(f"Script({self.pattern!r}) needs answers with weights >= 0")


@dataclasses.dataclass(frozen=True)
class AgentScript:
    """A scripted tool-using model, for conversations whose first user message matches.

    A request that offers ``tools`` and whose FIRST user message's text
    matches ``pattern`` (``re.search``) is answered by this script: with ``k``
    the number of assistant turns with tool calls already in the
    conversation, the model calls the tools of ``steps[k]`` while
    ``k < len(steps)``, and answers ``answer`` (plain text) after that.

    Args:
        pattern: a regular expression searched in the first user message.
        steps: per turn, the tool calls made at once, each
            ``{"name": str, "arguments": {...}}`` (``arguments`` may be
            left out for ``{}``); several calls in one turn are parallel
            tool calls.
        answer: the final text answer, once every step has been made.
        step_latency: the latency for this script's requests, instead of
            ``SimConfig.latency``.

    Raises:
        re.error: ``pattern`` is not a regular expression.
        ValueError: a step is empty, a call has no string ``name``, or its
            ``arguments`` are not a JSON-serialisable mapping.
    """

    pattern: str
    steps: Sequence[Sequence[Mapping[str, Any]]]
    answer: str
    step_latency: Latency | None = None

    def __post_init__(self) -> None:
        re.compile(self.pattern)
        for k, step in enumerate(self.steps):
            if isinstance(step, Mapping) or not isinstance(step, Sequence) or not step:
                raise ValueError(
                    f"AgentScript({self.pattern!r}): steps[{k}] must be a non-empty list of calls"
                )
            for i, call in enumerate(step):
                where = f"AgentScript({self.pattern!r}): steps[{k}][{i}]"
                if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
                    raise ValueError(f"{where} must be a mapping with a string 'name'")
                arguments = call.get("arguments", {})
                if not isinstance(arguments, Mapping):
                    raise ValueError(f"{where}: 'arguments' must be a mapping")
                try:
                    json.dumps(dict(arguments))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{where}: 'arguments' are not JSON: {exc}") from exc

    def calls(self, turn: int) -> list[tuple[str, dict[str, Any]]] | None:
        """The ``(name, arguments)`` calls of turn ``turn``; ``None`` once the steps are done."""
        if turn >= len(self.steps):
            return None
        return [(str(c["name"]), dict(c.get("arguments", {}))) for c in self.steps[turn]]


@dataclasses.dataclass
class SimConfig:
    """How the simulated service behaves.

    Attributes:
        latency: the response-time distribution.
        error_rate: share of requests answered with HTTP 500.
        rate_limit_rate: share of requests answered with HTTP 429.
        retry_after: the ``Retry-After`` seconds sent with each 429.
        capacity: answer 429 whenever more requests than this are in flight.
        fail_first: answer the first this-many requests with ``fail_status``
            (deterministic failures for tests).
        fail_status: the status for ``fail_first`` (429, 500, 400...).
        scripts: answer distributions, first matching pattern wins.
        default_answer: the answer when no script matches (``{prompt}`` is
            replaced by the prompt's first 60 characters).
        seed: makes answers, latencies and failures reproducible.
        agents: scripted tool-calling models, first matching pattern wins
            (see :class:`AgentScript`).
    """

    latency: Latency = dataclasses.field(default_factory=Latency)
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 0.05
    capacity: int | None = None
    fail_first: int = 0
    fail_status: int = 429
    scripts: Sequence[Script] = ()
    default_answer: str = "Simulated answer to: {prompt}"
    seed: int = 0
    agents: Sequence[AgentScript] = ()

    def scripted(self, prompt: str, sample: object) -> str | None:
        """The first matching script's answer to ``prompt``, drawn for ``sample``, or ``None``."""
        for script in self.scripts:
            if re.search(script.pattern, prompt):
                rng = random.Random(f"{self.seed}|{prompt}|{sample}")
                choices = list(script.answers)
                return rng.choices(choices, weights=[script.answers[c] for c in choices])[0]
        return None

    def answer(self, prompt: str, sample: object) -> str:
        """The answer to ``prompt``: a script's, drawn for ``sample``, else the default answer."""
        found = self.scripted(prompt, sample)
        return found if found is not None else self.default_answer.replace("{prompt}", prompt[:60])

    def agent_for(self, first_user_message: str) -> AgentScript | None:
        """The first agent script whose pattern is found in ``first_user_message``, if any."""
        for agent in self.agents:
            if re.search(agent.pattern, first_user_message):
                return agent
        return None


_STRING_FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "email": "sim@example.com",
    "uri": "http://example.com/",
    "url": "http://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def minimal_instance(schema: Mapping[str, Any] | bool) -> Any:
    """A small JSON value valid for the JSON Schema ``schema``.

    Objects get their required properties (recursively), strings
    ``"simulated"`` (or a fixed value for the common ``format``\\ s, padded or
    cut to ``minLength``/``maxLength``), integers and numbers 0 (moved into
    ``minimum``/``maximum``), booleans ``false``, arrays ``[]`` (or
    ``minItems`` items), ``enum``/``const`` their first value and
    ``anyOf``/``oneOf`` their first branch; ``$ref`` to ``#/...`` (such as
    pydantic's ``#/$defs/Name``) is resolved. A schema that allows anything
    gets ``null``.

    Raises:
        ValueError: a reference that is not local or does not resolve, an
            empty ``enum``, or a recursion that never ends (a required
            property that refers back to its own object).
    """
    return _instance(schema, schema, 0)


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local references are supported, not {ref!r}")
    node = root
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise ValueError(f"the reference {ref!r} does not resolve")
    return node


def _bounded(schema: Mapping[str, Any], value: float, integer: bool) -> float:
    step = 1 if integer else 1e-6
    if "minimum" in schema and value < schema["minimum"]:
        value = math.ceil(schema["minimum"]) if integer else schema["minimum"]
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        low = schema["exclusiveMinimum"]
        value = math.floor(low) + 1 if integer else low + step
    if "maximum" in schema and value > schema["maximum"]:
        value = math.floor(schema["maximum"]) if integer else schema["maximum"]
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        high = schema["exclusiveMaximum"]
        value = math.ceil(high) - 1 if integer else high - step
    return value


def _instance(schema: Any, root: Any, depth: int) -> Any:
    if depth > 64:
        raise ValueError("the schema has no finite instance (a required recursive reference?)")
    if schema is True or schema is None:
        return None
    if schema is False or not isinstance(schema, Mapping):
        raise ValueError(f"not a usable schema: {schema!r}")
    if "$ref" in schema:
        return _instance(_resolve(root, str(schema["$ref"])), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        if not schema["enum"]:
            raise ValueError("an empty 'enum' has no instance")
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _instance(schema[key][0], root, depth + 1)
    if schema.get("allOf"):
        parts = [_instance(s, root, depth + 1) for s in schema["allOf"]]
        if all(isinstance(p, dict) for p in parts):
            return {k: v for p in parts for k, v in p.items()}
        return parts[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
        else:
            return None
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: _instance(properties.get(name, True), root, depth + 1)
            for name in schema.get("required", ())
        }
    if kind == "array":
        prefix = [_instance(s, root, depth + 1) for s in schema.get("prefixItems", ())]
        missing = max(0, int(schema.get("minItems", 0)) - len(prefix))
        items = schema.get("items", True)
        return prefix + [_instance(items, root, depth + 1) for _ in range(missing)]
    if kind == "string":
        text = _STRING_FORMATS.get(str(schema.get("format")), "simulated")
        if len(text) < int(schema.get("minLength", 0)):
            text = text.ljust(int(schema["minLength"]), "x")
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text
    if kind == "integer":
        return int(_bounded(schema, 0, integer=True))
    if kind == "number":
        value = _bounded(schema, 0, integer=False)
        return int(value) if float(value).is_integer() else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    raise ValueError(f"unknown schema type {kind!r}")


class _BadRequest(Exception):
    """A request the real service would refuse with a 400; the message says why."""


@dataclasses.dataclass
class _Conversation:
    text: str  # every message's text, one per line (tool results included)
    first_user: str  # the first user message's text
    tool_turns: int  # assistant turns that called tools


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return "" if content is None else str(content)


_SHAPE = "'messages' must be a non-empty list of {role, content}"


def _conversation(messages: Any) -> _Conversation:
    """Read either API's messages.

    Raises:
        _BadRequest: not a list of messages, or tool calls and results that
            do not answer each other.
    """
    if not isinstance(messages, list) or not messages:
        raise _BadRequest(_SHAPE)
    parts: list[str] = []
    first_user: str | None = None
    tool_turns = 0
    pending: dict[str, str] = {}  # tool call id -> name, awaiting its result
    pending_anthropic = False
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _BadRequest(_SHAPE)
        role = m["role"]
        tool_calls = m.get("tool_calls") or []
        if "content" not in m and not tool_calls:
            raise _BadRequest(_SHAPE)
        content = m.get("content")
        calls: list[tuple[str, str]] = []  # (id, name) of the calls this message makes
        results: list[str] = []  # the call ids this message answers
        if not isinstance(tool_calls, list):
            raise _BadRequest(f"messages[{n}].tool_calls must be a list")
        for i, call in enumerate(tool_calls):
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(call, dict)
                or not isinstance(call.get("id"), str)
                or not isinstance(function, dict)
                or not isinstance(function.get("name"), str)
            ):
                raise _BadRequest(
                    f"messages[{n}].tool_calls[{i}] needs an 'id' and a 'function' with a 'name'"
                )
            calls.append((call["id"], function["name"]))
        if role == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                raise _BadRequest(f"messages[{n}]: a 'tool' message needs a 'tool_call_id'")
            results.append(m["tool_call_id"])
        if isinstance(content, list):  # content blocks
            texts = []
            for b in content:
                if not isinstance(b, dict):
                    continue
                kind = b.get("type")
                if kind == "tool_use":
                    if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                        raise _BadRequest(f"messages[{n}]: a tool_use block needs 'id' and 'name'")
                    calls.append((b["id"], b["name"]))
                elif kind == "tool_result":
                    if not isinstance(b.get("tool_use_id"), str):
                        raise _BadRequest(
                            f"messages[{n}]: a tool_result block needs a 'tool_use_id'"
                        )
                    results.append(b["tool_use_id"])
                    texts.append(_result_text(b.get("content")))
                else:
                    texts.append(str(b.get("text", "")))
            text = "".join(texts)
        else:
            text = _result_text(content)
        # Tool calls must be answered before the conversation goes on, as the real APIs demand.
        for call_id in results:
            if call_id not in pending:
                raise _BadRequest(
                    f"messages[{n}] answers the tool call {call_id!r}, "
                    "which no preceding assistant message made"
                )
            del pending[call_id]
        if pending and (role != "tool" or pending_anthropic):
            names = ", ".join(f"{i} ({f})" for i, f in pending.items())
            raise _BadRequest(
                f"messages[{n}]: tool calls without results before it: {names}; "
                "every tool call must be answered by a tool result right after it"
            )
        if calls:
            if role != "assistant":
                raise _BadRequest(f"messages[{n}]: only assistant messages can call tools")
            tool_turns += 1
            pending = dict(calls)
            pending_anthropic = not tool_calls
        if role == "user" and first_user is None:
            first_user = text
        parts.append(text)
    if pending:
        names = ", ".join(f"{i} ({f})" for i, f in pending.items())
        raise _BadRequest(f"the conversation ends with tool calls without results: {names}")
    return _Conversation("\n".join(parts), first_user or "", tool_turns)


def _prompt_text(messages: Any) -> str | None:
    """The conversation's text (tool results included); ``None`` if it is not valid."""
    try:
        return _conversation(messages).text
    except _BadRequest:
        return None


class _Service:
    """The request handlers and their counters."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.stats: Counter[str] = Counter()
        self._sample_counter: Counter[str] = Counter()

    def _failure(self) -> tuple[int, str] | None:
        c = self.config
        if self.stats["requests"] <= c.fail_first:
            return c.fail_status, f"simulated failure {self.stats['requests']} of {c.fail_first}"
        if c.capacity is not None and self.in_flight > c.capacity:
            return 429, "simulated overload: too many requests in flight"
        roll = self.rng.random()
        if roll < c.rate_limit_rate:
            return 429, "simulated rate limit"
        if roll < c.rate_limit_rate + c.error_rate:
            return 500, "simulated server error"
        return None

    async def _admit(self, latency: Latency | None = None) -> tuple[int, str] | None:
        """Count the request, wait its latency; the injected failure, or ``None`` to answer."""
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.stats["requests"] += 1
        try:
            failure = self._failure()
            await asyncio.sleep(
                (latency or self.config.latency).draw(self.rng) / (4 if failure else 1)
            )
            if failure is not None:
                self.stats[str(failure[0])] += 1
                return failure
            self.stats["200"] += 1
            return None
        finally:
            self.in_flight -= 1

    def _sample(self, prompt: str, sample: object) -> object:
        if sample is None:
            self._sample_counter[prompt] += 1
            return self._sample_counter[prompt]
        return sample

    async def _serve(self, prompt: str, sample: object) -> tuple[int, str]:
        failure = await self._admit()
        if failure is not None:
            return failure
        return 200, self.config.answer(prompt, self._sample(prompt, sample))


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _openai_tools(tools: Any) -> set[str] | None:
    """The function names a chat-completions request offers; ``None`` when it offers none."""
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise _BadRequest("'tools' must be a list")
    names = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _BadRequest(f"tools[{i}] must be an object")
        if tool.get("type", "function") != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _BadRequest(f"tools[{i}].function.name is required")
        names.add(function["name"])
    return names


def _anthropic_tools(tools: Any) -> dict[str, Any] | None:
    """The tools a Messages request offers, name to input schema; ``None`` when it offers none."""
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise _BadRequest("tools: must be a list")
    offered = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _BadRequest(f"tools.{i}.name: field required")
        offered[tool["name"]] = tool.get("input_schema", {"type": "object"})
    return offered


def _check_offered(calls: list[tuple[str, dict[str, Any]]], offered: Any, turn: int) -> None:
    for name, _ in calls:
        if name not in offered:
            raise _BadRequest(
                f"the agent script's steps[{turn}] calls the tool {name!r}, which the request "
                f"does not offer (tools offered: {sorted(offered)})"
            )


def _forced_input(answer: str | None, fallback: dict[str, Any]) -> dict[str, Any]:
    if answer is None:
        return fallback
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"text": answer}


def _app(service: _Service) -> Any:
    from aiohttp import web

    config = service.config

    def openai_error(status: int, message: str) -> web.Response:
        kind = {429: "rate_limit_error"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        headers = {"Retry-After": f"{config.retry_after:g}"} if status == 429 else None
        body = {"error": {"message": message, "type": kind, "code": kind}}
        return web.json_response(body, status=status, headers=headers)

    def anthropic_error(status: int, message: str) -> web.Response:
        kind = {429: "rate_limit_error"}.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        headers = {"retry-after": f"{config.retry_after:g}"} if status == 429 else None
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return web.json_response(body, status=status, headers=headers)

    async def read_json(request: web.Request) -> dict[str, Any] | None:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def openai_completion(
        model: str, prompt: str, message: dict[str, Any], finish: str, out: str
    ) -> web.Response:
        return web.json_response(
            {
                "id": f"simcmpl-{service.stats['requests']}",
                "object": "chat.completion",
                "created": 0,
                "model": f"simulated:{model}",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": _tokens(prompt),
                    "completion_tokens": _tokens(out),
                    "total_tokens": _tokens(prompt) + _tokens(out),
                },
            }
        )

    def openai_schema(data: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Whether the request asks for JSON, and the minimal instance of its schema."""
        response_format = data.get("response_format")
        if response_format is None:
            return False, None
        if not isinstance(response_format, dict):
            raise _BadRequest("'response_format' must be an object")
        kind = response_format.get("type")
        if kind == "json_object":
            return True, None
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise _BadRequest("'response_format.json_schema' needs a 'name'")
            schema = spec.get("schema")
            if schema is None:
                return True, None
            if not isinstance(schema, dict):
                raise _BadRequest("'response_format.json_schema.schema' must be an object")
            try:
                return True, {"instance": minimal_instance(schema)}
            except ValueError as exc:
                raise _BadRequest(f"'response_format.json_schema.schema': {exc}") from exc
        if kind == "text":
            return False, None
        raise _BadRequest(f"'response_format.type' {kind!r} is not supported")

    async def chat(request: web.Request) -> web.Response:
        data = await read_json(request)
        if data is None:
            return openai_error(400, "the body must be a JSON object")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            return openai_error(400, "'model' is required")
        try:
            conv = _conversation(data.get("messages"))
            offered = _openai_tools(data.get("tools"))
            wants_json, schema = openai_schema(data)
            choice = data.get("tool_choice")
            agent = (
                config.agent_for(conv.first_user)
                if offered is not None and choice != "none"
                else None
            )
            calls = agent.calls(conv.tool_turns) if agent is not None else None
            if calls is not None:
                _check_offered(calls, offered, conv.tool_turns)
        except _BadRequest as exc:
            return openai_error(400, str(exc))
        prompt, seed = conv.text, data.get("seed")
        if agent is not None:
            failure = await service._admit(agent.step_latency)
            if failure is not None:
                return openai_error(*failure)
            service.stats["agent_turns"] += 1
            if calls is None:
                reply: dict[str, Any] = {"role": "assistant", "content": agent.answer}
                return openai_completion(model, prompt, reply, "stop", agent.answer)
            service.stats["tool_calls"] += len(calls)
            k = conv.tool_turns
            tool_calls = [
                {
                    "id": f"call_{k}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(calls)
            ]
            reply = {"role": "assistant", "content": None, "tool_calls": tool_calls}
            return openai_completion(model, prompt, reply, "tool_calls", json.dumps(tool_calls))
        if schema is not None:
            failure = await service._admit()
            if failure is not None:
                return openai_error(*failure)
            service.stats["structured"] += 1
            text = config.scripted(prompt, service._sample(prompt, seed))
            if text is None:
                text = json.dumps(schema["instance"])
            reply = {"role": "assistant", "content": text}
            return openai_completion(model, prompt, reply, "stop", text)
        # Plain text, and JSON without a schema: the scripts' answers or the default.
        status, text = await service._serve(prompt, seed)
        if status != 200:
            return openai_error(status, text)
        if wants_json:
            service.stats["structured"] += 1
        return openai_completion(
            model, prompt, {"role": "assistant", "content": text}, "stop", text
        )

    def anthropic_message(
        model: str, prompt: str, content: list[dict[str, Any]], stop: str, out: str
    ) -> web.Response:
        return web.json_response(
            {
                "id": f"simmsg_{service.stats['requests']}",
                "type": "message",
                "role": "assistant",
                "model": f"simulated:{model}",
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": _tokens(prompt), "output_tokens": _tokens(out)},
            }
        )

    def forced_tool(data: dict[str, Any], offered: dict[str, Any] | None) -> tuple[str, Any] | None:
        """The forced tool's name and the minimal instance of its input schema, if one is forced."""
        choice = data.get("tool_choice")
        if choice is None:
            return None
        if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
            raise _BadRequest("tool_choice: must be an object with a 'type'")
        if choice["type"] != "tool":
            return None
        name = choice.get("name")
        if offered is None or name not in offered:
            raise _BadRequest(
                f"tool_choice: the tool {name!r} is not among the tools offered "
                f"({sorted(offered or ())})"
            )
        try:
            instance = minimal_instance(offered[name])
        except ValueError as exc:
            raise _BadRequest(f"tools: the input_schema of {name!r}: {exc}") from exc
        if not isinstance(instance, dict):
            raise _BadRequest(f"tools: the input_schema of {name!r} must describe an object")
        return name, instance

    def system_text(system: Any) -> str:
        if isinstance(system, list):
            return _result_text(system)
        return system if isinstance(system, str) else ""

    async def messages(request: web.Request) -> web.Response:
        data = await read_json(request)
        if data is None:
            return anthropic_error(400, "the body must be a JSON object")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            return anthropic_error(400, "model: field required")
        if not isinstance(data.get("max_tokens"), int):
            return anthropic_error(400, "max_tokens: field required")
        try:
            conv = _conversation(data.get("messages"))
        except _BadRequest as exc:
            text = "messages: must be a non-empty list" if str(exc) == _SHAPE else str(exc)
            return anthropic_error(400, text)
        try:
            offered = _anthropic_tools(data.get("tools"))
            forced = forced_tool(data, offered)
            choice = data.get("tool_choice")
            none = isinstance(choice, dict) and choice.get("type") == "none"
            agent = (
                config.agent_for(conv.first_user)
                if offered is not None and forced is None and not none
                else None
            )
            calls = agent.calls(conv.tool_turns) if agent is not None else None
            if calls is not None:
                _check_offered(calls, offered, conv.tool_turns)
        except _BadRequest as exc:
            return anthropic_error(400, str(exc))
        prompt = conv.text
        system = system_text(data.get("system"))
        if system:
            prompt = f"{system}\n{prompt}"
        if agent is not None:
            failure = await service._admit(agent.step_latency)
            if failure is not None:
                return anthropic_error(*failure)
            service.stats["agent_turns"] += 1
            if calls is None:
                content: list[dict[str, Any]] = [{"type": "text", "text": agent.answer}]
                return anthropic_message(model, prompt, content, "end_turn", agent.answer)
            service.stats["tool_calls"] += len(calls)
            k = conv.tool_turns
            content = [
                {"type": "tool_use", "id": f"toolu_{k}_{i}", "name": name, "input": args}
                for i, (name, args) in enumerate(calls)
            ]
            return anthropic_message(model, prompt, content, "tool_use", json.dumps(content))
        if forced is not None:
            failure = await service._admit()
            if failure is not None:
                return anthropic_error(*failure)
            service.stats["structured"] += 1
            name, instance = forced
            answer = config.scripted(prompt, service._sample(prompt, None))
            arguments = _forced_input(answer, instance)
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_sim_{service.stats['requests']}",
                    "name": name,
                    "input": arguments,
                }
            ]
            return anthropic_message(model, prompt, content, "tool_use", json.dumps(arguments))
        status, text = await service._serve(prompt, None)
        if status != 200:
            return anthropic_error(status, text)
        return anthropic_message(model, prompt, [{"type": "text", "text": text}], "end_turn", text)

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "simulated", "object": "model", "owned_by": "fanflow"}],
            }
        )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                **service.stats,
                "in_flight": service.in_flight,
                "peak_in_flight": service.peak_in_flight,
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    return app


def _need_aiohttp() -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError("the simulator needs aiohttp: pip install 'fanflow[sim]'") from exc


class Simulator:
    """Run the simulated service on loopback in the current event loop.

    ``async with Simulator(SimConfig(...)) as sim:`` starts it on a free port
    of 127.0.0.1; ``sim.url`` is the API root to give a provider (e.g.
    ``ff.llm.from_uri(f"sim:my-model@{sim.url}")``), ``sim.stats`` counts
    requests by outcome and ``sim.peak_in_flight`` the most at once.
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0):
        _need_aiohttp()
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self._service = _Service(self.config)
        self._runner: Any = None

    @property
    def url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def stats(self) -> Counter[str]:
        """Requests served, by outcome (``"requests"``, ``"200"``, ``"429"``, ``"500"``).

        Also ``"structured"`` (answers to JSON requests: OpenAI
        ``response_format``, Anthropic forced tools), ``"agent_turns"``
        (answers from an :class:`AgentScript`, tool calls and final answers)
        and ``"tool_calls"`` (the tool calls those answers made).
        Requests refused with a 400 before being served are not counted.
        """
        return self._service.stats

    @property
    def peak_in_flight(self) -> int:
        """The most requests in flight at once."""
        return self._service.peak_in_flight

    async def start(self) -> Simulator:
        """Start serving; returns ``self``."""
        from aiohttp import web

        runner = web.AppRunner(_app(self._service), access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (``fanflow simulate``)."""
    _need_aiohttp()
    from aiohttp import web

    web.run_app(
        _app(_Service(config)),
        host=host,
        port=port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )
