"""An OpenAI-compatible chat provider on the official ``openai`` SDK.

``base_url`` reaches any server that speaks the chat-completions API: vLLM,
Ollama, llama.cpp's server, LM Studio, the fanflow simulator. The SDK's own
retries are off: fanflow's :class:`~fanflow.Retry` owns retrying.

The response body is read by fanflow, not trusted to the SDK's lenient
models: a ``200`` without an answer is an error, never an empty ``ok``
(``fanflow.llm._errors`` says which kind: a body that is not JSON — HTML
from a proxy, truncated JSON, plain text — or ``choices`` empty or null, or
a null ``content``, is :class:`~fanflow.TransientError`; JSON without
``choices``, such as ``{}``, is :class:`~fanflow.PermanentError`). A
``usage`` count that is not a count (``"prompt_tokens": "many"``) is
unknown — the prompt's estimate stands in, with a warning logged once —
and never fails the request. ``timeout`` is a total deadline per request
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

__all__ = ["OpenAIChat"]


def map_openai_error(
    exc: Exception, *, ceiling: float = RETRY_AFTER_CEILING, secrets: tuple[str, ...] = ()
) -> ServiceError:
    """Map an ``openai`` SDK exception to fanflow's error kinds.

    ``ceiling`` caps a 429's ``retry_after``; ``secrets`` never appear in the message.
    """
    import openai

    if isinstance(exc, openai.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else None
        return from_status(
            exc.status_code, _message(exc), headers, "openai", ceiling=ceiling, secrets=secrets
        )
    text = redact_keys(f"openai: {type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return TransientError(text)
    return PermanentError(text)


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", None) or exc)


class OpenAIChat(StructuredChat, SDKChat):
    """A chat model behind an OpenAI-compatible API.

    Args:
        model: the model name sent to the service.
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``; ``None``
            for OpenAI itself.
        api_key_env: the environment variable holding the API key. By
            default ``OPENAI_API_KEY``, sent only to ``https://api.openai.com``:
            a server given by ``base_url`` (or ``OPENAI_BASE_URL``) gets the
            placeholder ``no-key`` unless its key variable is named here.
            ``None``: no key. The key is read from the environment when the
            first request is made and never shown in a repr, a log, an
            event, an error or a report.
        timeout: seconds for one whole request, the answer's last byte
            included (a total deadline, ``math.inf`` for none; fanflow's task
            timeout also applies).
        params: default parameters for every request (``temperature``...).

    Raises:
        ImportError: the ``openai`` package is missing (``pip install 'fanflow[llm]'``).
        ValueError: ``timeout`` is not a number > 0.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | _ProviderKey | None = PROVIDER_KEY,
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

    provider = "openai"
    key_env = "OPENAI_API_KEY"
    root = "https://api.openai.com/v1"
    base_url_env = "OPENAI_BASE_URL"

    def _new_client(self, key: str, base_url: str) -> Any:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "OpenAIChat needs the openai package: pip install 'fanflow[llm]'"
            ) from exc
        return openai.AsyncOpenAI(
            api_key=key, base_url=base_url, max_retries=0, timeout=self._sdk_timeout
        )

    async def _request(
        self,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        tools: Sequence[Mapping[str, Any]] | None,
        spec: OutputSchema | None,
    ) -> Completion:
        import openai

        client = self._client()
        options = {**self.params, **params}
        if tools:
            options["tools"] = wire_tools(tools)
        if spec is not None:
            # In extra_body, not as the typed response_format parameter: the
            # SDK walks a typed parameter recursively on every request (the
            # whole schema), which cost structured prompts ~8% of throughput.
            options["extra_body"] = {
                **(options.get("extra_body") or {}),
                "response_format": response_format(spec),
            }
        wire = [_wire(m) for m in messages]
        meter = _Metered(
            self.model,
            messages,
            options.get("max_tokens", options.get("max_completion_tokens")),
        )
        try:
            status, body = await self._send(
                lambda: client.chat.completions.with_raw_response.create(
                    model=self.model, messages=wire, **options
                )
            )
            # Nothing is booked until the answer is known to be one.
            data = self._json(status, body, "choices")
            text, calls = self._answer(status, body, data)
        except openai.OpenAIError as exc:
            meter.failed()
            raise map_openai_error(
                exc, ceiling=self.max_retry_after, secrets=self._secrets
            ) from exc
        except Exception:
            meter.failed()
            raise
        except BaseException:
            meter.cut()  # cancelled in flight
            raise
        input_tokens, output_tokens = _usage_tokens(
            "openai", data, "prompt_tokens", "completion_tokens"
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

    def _answer(
        self, status: int, body: bytes, data: Mapping[str, Any]
    ) -> tuple[str, tuple[Any, ...]]:
        choices = data["choices"]
        if not isinstance(choices, list) or not choices:
            raise self._bad(status, f"no choices ({choices!r:.20})", body)
        message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
        raw = message.get("tool_calls") if isinstance(message, Mapping) else None
        if isinstance(raw, list) and raw:
            found = []
            for call in raw:
                function = call.get("function") if isinstance(call, Mapping) else None
                if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                    raise self._bad(status, "a tool call without a function name", body)
                found.append((call.get("id", ""), function["name"], function.get("arguments")))
            content = message.get("content") if isinstance(message, Mapping) else None
            return (content if isinstance(content, str) else ""), tool_calls_from(found)
        return self._text(status, body, data), ()

    def _text(self, status: int, body: bytes, data: Mapping[str, Any]) -> str:
        choices = data["choices"]
        if not isinstance(choices, list) or not choices:
            raise self._bad(status, f"no choices ({choices!r:.20})", body)
        message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, Mapping) else None
            why = "a refusal" if refusal else "no text"
            raise self._bad(status, f"the first choice has {why} (content {content!r:.20})", body)
        return content


def _wire(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message in the chat-completions shape (tool calls and results included)."""
    role = message["role"]
    if role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.get("tool_call_id", ""),
            "content": message["content"],
        }
    calls = message.get("tool_calls")
    if role == "assistant" and calls:
        return {
            "role": "assistant",
            "content": message["content"] or None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                }
                for c in calls
            ],
        }
    return {"role": role, "content": message["content"]}


def wire_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tools (``{"name", "description", "parameters"}``) in the chat-completions shape."""
    return [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


def response_format(spec: OutputSchema) -> dict[str, Any]:
    """The chat-completions ``response_format`` asking for ``spec``'s JSON."""
    return {"type": "json_schema", "json_schema": {"name": spec.name, "schema": spec.json_schema}}
