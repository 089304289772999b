"""An OpenAI-compatible chat provider on the official ``openai`` SDK.

``base_url`` reaches any server that speaks the chat-completions API: vLLM,
Ollama, llama.cpp's server, LM Studio, the fanflow simulator. The SDK's own
retries are off: fanflow's :class:`~fanflow.Retry` owns retrying.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .._exceptions import PermanentError, ServiceError, TransientError
from ._base import Completion, Message, TokenUsage, _Metered, to_messages
from ._errors import from_status

__all__ = ["OpenAIChat"]


def map_openai_error(exc: Exception) -> ServiceError:
    """Map an ``openai`` SDK exception to fanflow's error kinds."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else None
        return from_status(exc.status_code, _message(exc), headers, "openai")
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return TransientError(f"openai: {type(exc).__name__}: {exc}")
    return PermanentError(f"openai: {type(exc).__name__}: {exc}")


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", None) or exc)


class OpenAIChat:
    """A chat model behind an OpenAI-compatible API.

    Args:
        model: the model name sent to the service.
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``; ``None``
            for OpenAI itself.
        api_key_env: the environment variable holding the API key. The key
            is read from the environment when the first request is made and
            is never stored in a repr, a log, an event or a report. Servers
            given by ``base_url`` may need no key.
        timeout: seconds for one HTTP request (fanflow's task timeout also applies).
        params: default parameters for every request (``temperature``...).

    Raises:
        ImportError: the ``openai`` package is missing (``pip install 'fanflow[llm]'``).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string; got {model!r}")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.params = dict(params or {})
        self.name = name or (f"openai:{model}" + (f"@{base_url}" if base_url else ""))
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.model!r}, base_url={self.base_url!r})"

    def _client(self) -> Any:
        # An SDK client holds a connection pool bound to one event loop.
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "OpenAIChat needs the openai package: pip install 'fanflow[llm]'"
            ) from exc
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if not key:
            if self.base_url is None:
                raise PermanentError(
                    f"openai: the environment variable {self.api_key_env} is not set"
                )
            key = "no-key"  # local OpenAI-compatible servers usually need none
        client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout
        )
        self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
        self._clients[id(loop)] = (loop, client)
        return client

    async def complete(self, prompt: str | Sequence[Message], **params: Any) -> Completion:
        """Send a chat completion request; return the answer.

        Raises:
            RateLimited: HTTP 429 (``retry_after`` from the response).
            TransientError: 5xx, 408/409/425, connection problems.
            PermanentError: other 4xx, a missing API key.
        """
        import openai

        messages = to_messages(prompt)
        client = self._client()
        meter = _Metered(self.model, messages)
        try:
            response = await client.chat.completions.create(
                model=self.model, messages=messages, **{**self.params, **params}
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        usage = getattr(response, "usage", None)
        input_tokens = getattr(usage, "prompt_tokens", None)
        output_tokens = getattr(usage, "completion_tokens", None)
        latency = meter.done(input_tokens, output_tokens)
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice is not None else None) or ""
        return Completion(
            text,
            response.model or self.model,
            TokenUsage(input_tokens or 0, output_tokens or 0),
            latency,
        )

    async def aclose(self) -> None:
        """Close the HTTP client this provider opened on the running loop."""
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry[1].close()

    async def __aenter__(self) -> OpenAIChat:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
