"""Structured output: ``llm.complete(prompt, schema=Model)`` → ``Completion.parsed``.

A schema is a pydantic model class or a JSON Schema (a dict). The providers
ask for it natively — OpenAI's ``response_format`` with the JSON schema,
Anthropic's forced tool whose input is the answer — and every answer is
validated here, whatever the service promised: a model can still answer
with JSON that does not fit (a missing field, a wrong type, a value outside
an enum). Such an answer gets ``repair`` rounds (default 1): the model sees
its answer and the validation errors and answers again. If the last round
still does not validate, :class:`SchemaError` quotes the errors. Each round
is a request of its own, booked as such (``result.usage``, budgets).

A model without native support (a provider of your own) gets the schema in
a system message and the same validation and repair rounds
(:func:`complete_structured`).
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import json
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .._core._exceptions import SchemaError
from ._base import Completion, Message, TokenUsage, to_messages

__all__ = [
    "OutputSchema",
    "SchemaError",
    "StructuredChat",
    "complete_structured",
    "output_schema",
]

#: The validation errors a repair prompt and a SchemaError quote, at most.
_MAX_ERRORS = 10

_BY_CLASS: weakref.WeakKeyDictionary[type, OutputSchema] = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class OutputSchema:
    """A schema ready to send and to validate with.

    Attributes:
        name: a name the APIs accept (letters, digits, ``_``, ``-``).
        json_schema: the JSON Schema sent to the service.
        model: the pydantic model class, or ``None`` for a JSON Schema dict.
    """

    name: str
    json_schema: dict[str, Any]
    model: Any = None

    def validate(self, text: str) -> tuple[Any, list[str]]:
        """Parse and validate an answer: ``(value, [])`` or ``(None, errors)``."""
        data, problem = _parse_json(text)
        if problem is not None:
            return None, [problem]
        if self.model is not None:
            from pydantic import ValidationError

            try:
                return self.model.model_validate(data), []
            except ValidationError as exc:
                return None, [_pydantic_error(e) for e in exc.errors()][:_MAX_ERRORS]
        import jsonschema  # type: ignore[import-untyped]

        validator = jsonschema.Draft202012Validator(self.json_schema)
        found = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if found:
            return None, [_jsonschema_error(e) for e in found][:_MAX_ERRORS]
        return data, []


def output_schema(schema: Any) -> OutputSchema:
    """Make an :class:`OutputSchema` of a pydantic model class or a JSON Schema dict.

    Raises:
        TypeError: ``schema`` is neither.
        ValueError: the dict is not a valid JSON Schema (the problem is named).
    """
    if isinstance(schema, OutputSchema):
        return schema
    if inspect.isclass(schema) and hasattr(schema, "model_json_schema"):
        # Built once per class: a fan-out of a thousand prompt tasks with one
        # model would otherwise generate its JSON Schema a thousand times.
        found = _BY_CLASS.get(schema)
        if found is None:
            found = OutputSchema(_name(schema.__name__), schema.model_json_schema(), schema)
            _BY_CLASS[schema] = found
        return found
    if isinstance(schema, Mapping):
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(dict(schema))
        except jsonschema.SchemaError as exc:
            raise ValueError(f"schema= is not a valid JSON Schema: {exc.message}") from None
        title = schema.get("title")
        return OutputSchema(_name(title if isinstance(title, str) else "answer"), dict(schema))
    raise TypeError(
        f"schema must be a pydantic model class or a JSON Schema dict; got {schema!r:.80}"
    )


def _name(text: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", text)[:64]
    return name or "answer"


def _parse_json(text: str) -> tuple[Any, str | None]:
    body = text.strip()
    # A fenced block (```json ... ```) is the usual wrapping of a JSON answer.
    fenced = re.fullmatch(r"```[a-zA-Z]*\s*\n(.*?)\n?```", body, re.DOTALL)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return json.loads(body), None
    except json.JSONDecodeError as exc:
        return None, f"the answer is not JSON ({exc.msg} at char {exc.pos}): {text[:120]!r}"


def _pydantic_error(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())) or "(the answer)"
    return f"{where}: {error.get('msg', 'invalid')}"


def _jsonschema_error(error: Any) -> str:
    where = ".".join(str(part) for part in error.absolute_path) or "(the answer)"
    return f"{where}: {error.message}"


def repair_message(errors: Sequence[str]) -> str:
    """The user turn that asks for a corrected answer, listing what was wrong."""
    listed = "\n".join(f"- {e}" for e in errors)
    return (
        "Your answer does not match the required JSON schema:\n"
        f"{listed}\n"
        "Answer again with the corrected JSON only, matching the schema."
    )


async def rounds(
    send: Callable[[list[dict[str, Any]]], Awaitable[Completion]],
    messages: list[dict[str, Any]],
    spec: OutputSchema,
    repair: int,
) -> Completion:
    """Ask, validate, and repair up to ``repair`` times; the validated completion.

    ``send`` makes one request of the conversation and returns the answer's
    text as JSON. The returned completion's ``usage`` and ``latency`` are
    those of every round together.

    Raises:
        SchemaError: the last round's answer still does not validate.
    """
    if isinstance(repair, bool) or not isinstance(repair, int) or repair < 0:
        raise ValueError(f"repair must be an int >= 0; got {repair!r}")
    input_tokens = output_tokens = 0
    latency = 0.0
    errors: list[str] = []
    text = ""
    for _ in range(repair + 1):
        completion = await send(messages)
        input_tokens += completion.usage.input_tokens
        output_tokens += completion.usage.output_tokens
        latency += completion.latency
        text = completion.text
        parsed, errors = spec.validate(text)
        if not errors:
            return dataclasses.replace(
                completion,
                parsed=parsed,
                usage=TokenUsage(input_tokens, output_tokens),
                latency=latency,
            )
        messages = [
            *messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": repair_message(errors)},
        ]
    tries = "after a repair round" if repair == 1 else f"after {repair} repair rounds"
    if repair == 0:
        tries = "(no repair round)"
    raise SchemaError(
        f"the answer does not match schema {spec.name!r} {tries}: " + "; ".join(errors),
        errors,
        text,
    )


def supports_schema(llm: Any) -> bool:
    """Whether ``llm.complete`` takes ``schema=`` itself (fanflow's providers do)."""
    return bool(getattr(llm, "supports_schema", False))


async def complete_structured(
    llm: Any,
    prompt: str | Sequence[Message],
    schema: Any,
    *,
    repair: int = 1,
    **params: Any,
) -> Completion:
    """``llm.complete(prompt, schema=...)`` for any model.

    A model whose ``complete`` takes ``schema=`` (``supports_schema =
    True``: fanflow's providers and :class:`~fanflow.testing.ScriptedLLM`)
    is asked natively; any other gets the schema in a system message, and
    the same validation and repair rounds.

    Raises:
        SchemaError: the answer still does not validate after ``repair`` rounds.
        TypeError, ValueError: a bad ``schema`` or ``repair``.
    """
    spec = output_schema(schema)
    if supports_schema(llm):
        completion: Completion = await llm.complete(prompt, schema=spec, repair=repair, **params)
        return completion
    instruction = (
        "Answer with JSON only (no prose, no code fence), matching this JSON Schema:\n"
        + json.dumps(spec.json_schema)
    )
    messages = [{"role": "system", "content": instruction}, *to_messages(prompt)]

    async def send(conversation: list[dict[str, Any]]) -> Completion:
        answer: Completion = await llm.complete(conversation, **params)
        return answer

    return await rounds(send, messages, spec, repair)


class StructuredChat(abc.ABC):
    """``complete(prompt, *, schema=, repair=, tools=, **params)`` for a provider.

    A provider implements ``_request(messages, params, tools, spec)``: one
    request, asking natively for ``spec``'s JSON when it is given and
    returning the answer's JSON as the completion's text. This class adds
    the validation and the repair rounds.
    """

    supports_schema = True

    @abc.abstractmethod
    async def _request(
        self,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        tools: Sequence[Mapping[str, Any]] | None,
        spec: OutputSchema | None,
    ) -> Completion:
        """Make one request; with ``spec``, the answer's JSON is the completion's text."""

    async def complete(
        self,
        prompt: str | Sequence[Message],
        *,
        schema: Any = None,
        repair: int = 1,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> Completion:
        """Send a request; return the answer.

        Args:
            prompt: a string (one user message) or chat messages.
            schema: a pydantic model class or a JSON Schema dict: the answer
                is asked for natively (OpenAI ``response_format``, an
                Anthropic forced tool), validated, and returned in
                ``Completion.parsed``.
            repair: rounds an answer that does not validate gets (with the
                errors) before :class:`~fanflow.llm.SchemaError`.
            tools: tools the model may call, ``{"name", "description",
                "parameters"}`` (a JSON Schema); the calls it asks for come
                back in ``Completion.tool_calls``.
            params: request parameters (``temperature``, ``max_tokens``...).

        Raises:
            RateLimited: HTTP 429 (``retry_after`` from the response's headers).
            TransientError: 5xx, 408/409/425, connection problems, no whole
                answer within ``timeout``, a 200 without an answer.
            PermanentError: other 4xx, a missing API key, a 200 whose JSON
                is not the API's.
            SchemaError: with ``schema``, no answer validated.
        """
        messages = to_messages(prompt)
        if schema is None:
            return await self._request(messages, params, tools, None)
        spec = output_schema(schema)

        async def send(conversation: list[dict[str, Any]]) -> Completion:
            return await self._request(conversation, params, tools, spec)

        return await rounds(send, messages, spec, repair)
