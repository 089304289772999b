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

from collections.abc import Mapping, Sequence
from typing import Any

from .._core._exceptions import PermanentError, ServiceError, TransientError
from ._base import Completion, Message, TokenUsage, _Metered, estimate_tokens, to_messages
from ._errors import RETRY_AFTER_CEILING, from_status, redact_keys
from ._sdk import PROVIDER_KEY, SDKChat, _ProviderKey, _usage_tokens

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


class AnthropicChat(SDKChat):
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

    async def complete(self, prompt: str | Sequence[Message], **params: Any) -> Completion:
        """Send a Messages API request; return the answer.

        Raises:
            RateLimited: HTTP 429 (``retry_after`` from the response's headers).
            TransientError: 5xx (529 "overloaded" included), 408/409/425,
                connection problems, no whole answer within ``timeout``, a
                200 whose body is not JSON or holds no text.
            PermanentError: other 4xx, a missing API key, a 200 whose JSON
                is not a Messages API response.
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
        meter = _Metered(self.model, messages, options.get("max_tokens"))
        try:
            status, body = await self._send(
                lambda: client.messages.with_raw_response.create(
                    model=self.model, messages=chat, **options
                )
            )
            # Nothing is booked until the answer is known to be one.
            data = self._json(status, body, "content")
            text = self._text(status, body, data)
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
        model = data.get("model")
        return Completion(
            text,
            model if isinstance(model, str) and model else self.model,
            TokenUsage(
                estimate_tokens(messages) if input_tokens is None else input_tokens,
                output_tokens or 0,
            ),
            latency,
        )

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
