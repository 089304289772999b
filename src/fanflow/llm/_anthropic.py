"""A provider on the official ``anthropic`` SDK (the Messages API).

The response body is read by fanflow, not trusted to the SDK's lenient
models: a ``200`` without an answer is an error, never an empty ``ok``
(``fanflow.llm._errors`` says which kind: a body that is not JSON — HTML
from a proxy, truncated JSON, plain text — or ``content`` empty or null, or
no text block with text, is :class:`~fanflow.TransientError`; JSON without
``content``, such as ``{}``, is :class:`~fanflow.PermanentError`). A
``usage`` count that is not a count (``"input_tokens": "many"``) is unknown
— the prompt's estimate stands in, with a warning logged once — and never
fails the request. ``timeout`` is a total deadline per request
(``fanflow.llm._sdk``); the key goes only where ``fanflow.llm._sdk`` says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._core._exceptions import PermanentError, ServiceError, TransientError
from ._base import (
    Completion,
    _Metered,
    answered,
    tool_calls_from,
)
from ._errors import RETRY_AFTER_CEILING, from_status, redact_keys
from ._sdk import PROVIDER_KEY, SDKChat, _ProviderKey, _usage_tokens
from ._structured import OutputSchema, StructuredChat

__all__ = ["AnthropicChat"]


def map_anthropic_error(
    exc: Exception, *, ceiling: float = RETRY_AFTER_CEILING, secrets: tuple[str, ...] = ()
) -> ServiceError:
    """Map an ``anthropic`` SDK exception to fanflow's error kinds.

    ``ceiling`` caps a 429's ``retry_after``; ``secrets`` never appear in the message.
    """
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else None
        message = str(getattr(exc, "message", None) or exc)
        return from_status(
            exc.status_code, message, headers, "anthropic", ceiling=ceiling, secrets=secrets
        )
    text = redact_keys(f"anthropic: {type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APIResponseValidationError):
        return TransientError(text)
    return PermanentError(text)


class AnthropicChat(StructuredChat, SDKChat):
    """A Claude model through the Messages API.

    Args:
        model: the model name.
        base_url: the API root; ``None`` for Anthropic itself.
        api_key_env: the environment variable holding the key. By default
            ``ANTHROPIC_API_KEY``, sent only to ``https://api.anthropic.com``:
            a server given by ``base_url`` (or ``ANTHROPIC_BASE_URL``) gets
            the placeholder ``no-key`` unless its key variable is named
            here. ``None``: no key. Read at the first request, never shown
            in reprs, logs, events, errors or reports.
        max_tokens: the default answer length (the Messages API requires one).
        timeout: seconds for one whole request, the answer's last byte
            included (a total deadline, ``math.inf`` for none).
        params: default parameters for every request.

    System messages are passed as the API's ``system`` parameter.

    Raises:
        ImportError: the ``anthropic`` package is missing
            (``pip install 'fanflow[anthropic]'``).
        ValueError: ``timeout`` is not a number > 0.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | _ProviderKey | None = PROVIDER_KEY,
        max_tokens: int = 1024,
        timeout: float = 60.0,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            model,
            base_url=base_url,
            api_key_env=api_key_env,
            timeout=timeout,
            params=params,
            name=name,
        )
        self.max_tokens = max_tokens

    provider = "anthropic"
    key_env = "ANTHROPIC_API_KEY"
    root = "https://api.anthropic.com"
    base_url_env = "ANTHROPIC_BASE_URL"

    def _new_client(self, key: str, base_url: str) -> Any:
        try:
            import anthropic
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "AnthropicChat needs the anthropic package: pip install 'fanflow[anthropic]'"
            ) from exc
        return anthropic.AsyncAnthropic(
            api_key=key, base_url=base_url, max_retries=0, timeout=self._sdk_timeout
        )

    async def _request(
        self,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        tools: Sequence[Mapping[str, Any]] | None,
        spec: OutputSchema | None,
    ) -> Completion:
        import anthropic

        # Structured output: a tool whose input is the answer, forced.
        answer_tool = None if spec is None else _answer_tool(spec)
        if answer_tool is not None:
            params = {**params, "tool_choice": {"type": "tool", "name": answer_tool["name"]}}
            tools = None

        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = _wire([m for m in messages if m["role"] != "system"])
        options = {"max_tokens": self.max_tokens, **self.params, **params}
        options.pop("seed", None)  # the Messages API has no seed
        if system:
            options["system"] = system
        wire_tools = [
            {
                "name": t["name"],
                "description": t.get("description", ""),
                "input_schema": t.get("parameters") or {"type": "object", "properties": {}},
            }
            for t in tools or ()
        ]
        if answer_tool is not None:
            wire_tools.append(dict(answer_tool))
        if wire_tools:
            options["tools"] = wire_tools
        client = self._client()
        meter = _Metered(self.model, messages, options.get("max_tokens"))
        try:
            status, body = await self._send(
                lambda: client.messages.with_raw_response.create(
                    model=self.model, messages=chat, **options
                )
            )
            # Nothing is booked until the answer is known to be one.
            data = self._json(status, body, "content")
            if answer_tool is not None:
                text, calls = self._tool_input(status, body, data, answer_tool), ()
            else:
                text, calls = self._answer(status, body, data, bool(tools))
        except anthropic.AnthropicError as exc:
            meter.failed()
            raise map_anthropic_error(
                exc, ceiling=self.max_retry_after, secrets=self._secrets
            ) from exc
        except Exception:
            meter.failed()
            raise
        except BaseException:
            meter.cut()  # cancelled in flight
            raise
        input_tokens, output_tokens = _usage_tokens(
            "anthropic", data, "input_tokens", "output_tokens"
        )
        latency = meter.done(input_tokens, output_tokens)
        return answered(
            text,
            data.get("model"),
            self.model,
            messages,
            (input_tokens, output_tokens),
            latency,
            calls,
        )

    def _tool_input(
        self, status: int, body: bytes, data: Mapping[str, Any], tool: Mapping[str, Any]
    ) -> str:
        """The forced answer tool's input, as JSON text (unwrapped when it was wrapped)."""
        blocks = data["content"]
        if not isinstance(blocks, list):
            raise self._bad(status, f"no content blocks ({blocks!r:.20})", body)
        for block in blocks:
            if (
                isinstance(block, Mapping)
                and block.get("type") == "tool_use"
                and block.get("name") == tool["name"]
            ):
                value = block.get("input")
                schema = tool["input_schema"]
                if (
                    isinstance(value, Mapping)
                    and schema.get("required") == ["answer"]
                    and list(schema.get("properties", {})) == ["answer"]
                    and "answer" in value
                ):
                    value = value["answer"]
                return json.dumps(value)
        # No tool input: the text (if any) is validated, and repaired, instead.
        return self._text(status, body, data)

    def _answer(
        self, status: int, body: bytes, data: Mapping[str, Any], tools: bool
    ) -> tuple[str, tuple[Any, ...]]:
        blocks = data["content"]
        if tools and isinstance(blocks, list):
            uses = [
                (b.get("id", ""), b.get("name"), b.get("input"))
                for b in blocks
                if isinstance(b, Mapping) and b.get("type") == "tool_use"
            ]
            if uses:
                if not all(isinstance(name, str) for _, name, _ in uses):
                    raise self._bad(status, "a tool_use block without a name", body)
                texts = [
                    b.get("text")
                    for b in blocks
                    if isinstance(b, Mapping) and b.get("type") == "text"
                ]
                return "".join(t for t in texts if isinstance(t, str)), tool_calls_from(uses)
        return self._text(status, body, data), ()

    def _text(self, status: int, body: bytes, data: Mapping[str, Any]) -> str:
        blocks = data["content"]
        if not isinstance(blocks, list) or not blocks:
            raise self._bad(status, f"no content blocks ({blocks!r:.20})", body)
        texts = [
            b.get("text") for b in blocks if isinstance(b, Mapping) and b.get("type") == "text"
        ]
        if not texts or not all(isinstance(t, str) for t in texts):
            raise self._bad(status, "no text block with text", body)
        return "".join(t for t in texts if isinstance(t, str))


def _answer_tool(spec: OutputSchema) -> dict[str, Any]:
    """The tool whose input is the answer; a schema that is not an object is wrapped."""
    schema = spec.json_schema
    if schema.get("type") != "object":
        schema = {"type": "object", "properties": {"answer": schema}, "required": ["answer"]}
    return {
        "name": spec.name,
        "description": "Give your answer as this tool's input.",
        "input_schema": schema,
    }


def _wire(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages in the Messages API's shape: tool calls as ``tool_use`` blocks,
    tool results as ``tool_result`` blocks of one user turn."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id", ""),
                "content": m["content"],
                "is_error": bool(m.get("is_error")),
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(result)  # results of one turn go together
            else:
                out.append({"role": "user", "content": [result]})
            continue
        calls = m.get("tool_calls")
        if role == "assistant" and calls:
            blocks: list[dict[str, Any]] = []
            if m["content"]:
                blocks.append({"type": "text", "text": m["content"]})
            blocks.extend(
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                for c in calls
            )
            out.append({"role": "assistant", "content": blocks})
            continue
        out.append({"role": role, "content": m["content"]})
    return out
