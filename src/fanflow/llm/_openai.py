"""An OpenAI-compatible chat provider on the official ``openai`` SDK.

``base_url`` reaches any server that speaks the chat-completions API: vLLM,
Ollama, llama.cpp's server, LM Studio, the fanflow simulator. The SDK's own
retries are off: fanflow's :class:`~fanflow.Retry` owns retrying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._exceptions import PermanentError, ServiceError, TransientError
from ._base import Completion, Message, TokenUsage, _Metered, to_messages
from ._errors import from_status
from ._sdk import SDKChat

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


class OpenAIChat(SDKChat):
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
        super().__init__(
            model,
            base_url=base_url,
            api_key_env=api_key_env,
            timeout=timeout,
            params=params,
            name=name,
        )

    provider = "openai"

    def _new_client(self, key: str) -> Any:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "OpenAIChat needs the openai package: pip install 'fanflow[llm]'"
            ) from exc
        return openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout
        )

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
