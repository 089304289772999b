"""A provider on the official ``anthropic`` SDK (the Messages API)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._exceptions import PermanentError, ServiceError, TransientError
from ._base import Completion, Message, TokenUsage, _Metered, to_messages
from ._errors import from_status
from ._sdk import SDKChat

__all__ = ["AnthropicChat"]


def map_anthropic_error(exc: Exception) -> ServiceError:
    """Map an ``anthropic`` SDK exception to fanflow's error kinds."""
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else None
        message = str(getattr(exc, "message", None) or exc)
        return from_status(exc.status_code, message, headers, "anthropic")
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APIResponseValidationError):
        return TransientError(f"anthropic: {type(exc).__name__}: {exc}")
    return PermanentError(f"anthropic: {type(exc).__name__}: {exc}")


class AnthropicChat(SDKChat):
    """A Claude model through the Messages API.

    Args:
        model: the model name.
        base_url: the API root; ``None`` for Anthropic itself.
        api_key_env: the environment variable holding the key (read at the
            first request, never stored in reprs, logs, events or reports).
        max_tokens: the default answer length (the Messages API requires one).
        timeout: seconds for one HTTP request.
        params: default parameters for every request.

    System messages are passed as the API's ``system`` parameter.

    Raises:
        ImportError: the ``anthropic`` package is missing
            (``pip install 'fanflow[anthropic]'``).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
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

    def _new_client(self, key: str) -> Any:
        try:
            import anthropic
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "AnthropicChat needs the anthropic package: pip install 'fanflow[anthropic]'"
            ) from exc
        return anthropic.AsyncAnthropic(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout
        )

    async def complete(self, prompt: str | Sequence[Message], **params: Any) -> Completion:
        """Send a Messages API request; return the answer.

        Raises:
            RateLimited: HTTP 429 (``retry_after`` from the response).
            TransientError: 5xx (529 "overloaded" included), 408/409/425,
                connection problems.
            PermanentError: other 4xx, a missing API key.
        """
        import anthropic

        messages = to_messages(prompt)
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = [m for m in messages if m["role"] != "system"]
        options = {"max_tokens": self.max_tokens, **self.params, **params}
        options.pop("seed", None)  # the Messages API has no seed
        if system:
            options["system"] = system
        client = self._client()
        meter = _Metered(self.model, messages)
        try:
            response = await client.messages.create(model=self.model, messages=chat, **options)
        except anthropic.AnthropicError as exc:
            raise map_anthropic_error(exc) from exc
        usage = getattr(response, "usage", None)
        input_tokens = getattr(usage, "input_tokens", None)
        output_tokens = getattr(usage, "output_tokens", None)
        latency = meter.done(input_tokens, output_tokens)
        text = "".join(
            getattr(block, "text", "") for block in response.content if block.type == "text"
        )
        return Completion(
            text,
            response.model or self.model,
            TokenUsage(input_tokens or 0, output_tokens or 0),
            latency,
        )
