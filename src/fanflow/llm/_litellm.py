"""A provider on the ``litellm`` SDK, for services that speak neither OpenAI's nor Anthropic's API.

``LiteLLMChat("bedrock/...")``, ``LiteLLMChat("vertex_ai/...")``,
``LiteLLMChat("ollama/llama3", base_url=...)``: litellm translates one
chat-completions call into each provider's own protocol. fanflow owns
retrying (litellm's ``num_retries`` and the SDK's ``max_retries`` are 0),
books each request's tokens to the fan-out it runs in, and raises its own
error kinds: :class:`~fanflow.RateLimited`, :class:`~fanflow.TransientError`,
:class:`~fanflow.PermanentError`.

litellm is imported at the first request, not with fanflow, and is told to
stay offline (its bundled model-cost map, no fetched catalogs) and quiet
(no debug banners, no message logging, no callbacks of its own).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Self

from .._core._exceptions import PermanentError, ServiceError, TransientError
from ._base import (
    Completion,
    _Identity,
    _Metered,
    answered,
    tool_calls_from,
)
from ._errors import RETRY_AFTER_CEILING, from_status, redact_keys
from ._sdk import _usage_tokens, check_model_and_timeout
from ._structured import OutputSchema, StructuredChat

__all__ = ["LiteLLMChat", "map_litellm_error"]

_PROVIDER = "litellm"
_log = logging.getLogger("fanflow.llm")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A server given by base_url gets this, not whatever key litellm would find in
# the environment for the provider (OPENAI_API_KEY...): that key stays home.
_NO_KEY = "no-key"


def _litellm() -> Any:
    """The ``litellm`` module, imported offline and quiet.

    Raises:
        ImportError: litellm is not installed (names the extra).
    """
    # Before the first import: litellm fetches its model-cost map (and other
    # catalogs) from GitHub at import time unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    try:
        # Imported by name: litellm is big, and typed loosely enough to be Any here.
        module: Any = importlib.import_module("litellm")
    except ImportError as exc:
        raise ImportError(
            "LiteLLMChat needs the litellm package: pip install 'fanflow[litellm]'"
        ) from exc
    if not getattr(module, "_fanflow_quiet", False):
        module.telemetry = False  # older versions phone home unless told not to
        module.suppress_debug_info = True  # the "Give Feedback / Get Help" banner
        module.disable_hf_tokenizer_download = True
        module._fanflow_quiet = True
    return module


def _headers(exc: BaseException) -> dict[str, str]:
    """The response headers an exception carries (for a 429's ``retry_after``)."""
    headers: dict[str, str] = {}
    response = getattr(exc, "response", None)
    raw = getattr(response, "headers", None) if response is not None else None
    sources: tuple[Any, ...] = (
        raw,
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
    )
    for source in sources:
        items = getattr(source, "items", None)
        if items is None:
            continue
        try:
            headers.update({str(k).lower(): str(v) for k, v in items()})
        except (TypeError, ValueError, AttributeError):
            continue
    return headers


def map_litellm_error(
    exc: BaseException, *, ceiling: float = RETRY_AFTER_CEILING, secrets: tuple[str, ...] = ()
) -> ServiceError:
    """Map a ``litellm`` exception to fanflow's error kinds.

    ``RateLimitError`` (429) is :class:`~fanflow.RateLimited`, with
    ``retry_after`` from the response's headers (at most ``ceiling``);
    timeouts, connection errors, ``ServiceUnavailableError``,
    ``InternalServerError`` and every 5xx are
    :class:`~fanflow.TransientError`; authentication, bad requests, unknown
    models and anything else are :class:`~fanflow.PermanentError`.
    ``secrets`` (the API key) never appear in the message.
    """
    litellm = _litellm()
    message = redact_keys(str(getattr(exc, "message", None) or exc), secrets)
    if isinstance(exc, litellm.RateLimitError):
        return from_status(429, message, _headers(exc), _PROVIDER, ceiling=ceiling, secrets=secrets)
    transient = (
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.ServiceUnavailableError,
        litellm.InternalServerError,
        litellm.BadGatewayError,
    )
    if isinstance(exc, transient):
        return TransientError(redact_keys(f"{_PROVIDER}: {type(exc).__name__}: {message}", secrets))
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return from_status(
            status, message, _headers(exc), _PROVIDER, ceiling=ceiling, secrets=secrets
        )
    return PermanentError(redact_keys(f"{_PROVIDER}: {type(exc).__name__}: {message}", secrets))


class LiteLLMChat(StructuredChat, _Identity):
    """A chat model reached through ``litellm.acompletion``.

    Args:
        model: litellm's model name, provider first: ``"bedrock/..."``,
            ``"vertex_ai/gemini-..."``, ``"ollama/llama3"``, ``"openai/NAME"``.
        base_url: the API root (litellm's ``api_base``); ``None`` for the
            provider's own.
        api_key_env: the environment variable holding the API key, read
            when a request is made (a :class:`~fanflow.PermanentError` if it
            is not set then). ``None``: no key from fanflow — litellm finds the
            provider's credentials its own way (its usual environment
            variables, AWS/GCP credentials); but a server named by
            ``base_url`` gets the placeholder ``no-key`` instead, so a
            provider's key never goes to another host. The key is never
            shown in a repr, a log, an error or a report.
        timeout: seconds for one whole request (a total deadline;
            ``math.inf`` for none; fanflow's task timeout also applies).
        params: default parameters for every request (``temperature``,
            ``max_tokens``, ``response_format``, ``tools``...).
        name: the name in reports; by default ``litellm:MODEL[@BASE_URL]``.

    Raises:
        ValueError: ``model`` is empty, ``timeout`` is not a number > 0, or
            ``api_key_env`` is not a variable name.
    """

    provider = _PROVIDER
    max_retry_after = RETRY_AFTER_CEILING

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        check_model_and_timeout(model, timeout)
        if api_key_env is not None and (
            not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env)
        ):
            raise ValueError(f"api_key_env must be a variable name or None; got {api_key_env!r}")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.params = dict(params or {})
        self.name = name or (f"{_PROVIDER}:{model}" + (f"@{base_url}" if base_url else ""))
        self._secrets: tuple[str, ...] = ()

    def _key(self) -> str | None:
        if self.api_key_env is None:
            return _NO_KEY if self.base_url else None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise PermanentError(
                f"{_PROVIDER}: the environment variable {self.api_key_env} is not set"
            )
        if key not in self._secrets:
            self._secrets = (*self._secrets, key)
        return key

    async def _request(
        self,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        tools: Sequence[Mapping[str, Any]] | None,
        spec: OutputSchema | None,
    ) -> Completion:
        """One request through ``litellm.acompletion`` (see the class).

        Raises:
            RateLimited: HTTP 429 (``retry_after`` from the response's headers).
            TransientError: 5xx, timeouts (``timeout`` or litellm's own),
                connection problems, an answer without text or tool calls.
            PermanentError: other 4xx (bad key, bad request, unknown model),
                a missing API key, anything else litellm raises.
            ImportError: litellm is not installed (``pip install 'fanflow[litellm]'``).
        """
        from ._openai import _wire, response_format, wire_tools

        litellm = _litellm()
        key = self._key()
        options = {**self.params, **params}
        if tools:
            options["tools"] = wire_tools(tools)
        if spec is not None:
            options["response_format"] = response_format(spec)
        wire = [_wire(m) for m in messages]
        meter = _Metered(
            self.model,
            messages,
            options.get("max_tokens", options.get("max_completion_tokens")),
        )
        seconds = None if math.isinf(self.timeout) else self.timeout
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                response = await litellm.acompletion(
                    model=self.model,
                    messages=wire,
                    api_base=self.base_url,
                    api_key=key,
                    timeout=seconds,
                    num_retries=0,
                    max_retries=0,
                    **options,
                )
            text, calls = self._answer(response)
        except TimeoutError as exc:
            meter.failed()
            if not deadline.expired():
                raise
            raise TransientError(
                f"{_PROVIDER}: no complete answer within timeout={self.timeout:g} s"
            ) from exc
        except ServiceError:
            meter.failed()
            raise
        except Exception as exc:
            meter.failed()
            raise map_litellm_error(
                exc, ceiling=self.max_retry_after, secrets=self._secrets
            ) from exc
        except BaseException:
            meter.cut()  # cancelled in flight
            raise
        usage = getattr(response, "usage", None)
        counts = {
            "prompt_tokens": getattr(usage, "prompt_tokens", None),
            "completion_tokens": getattr(usage, "completion_tokens", None),
        }
        input_tokens, output_tokens = _usage_tokens(
            _PROVIDER, {"usage": counts}, "prompt_tokens", "completion_tokens"
        )
        latency = meter.done(input_tokens, output_tokens)
        return answered(
            text,
            getattr(response, "model", None),
            self.model,
            messages,
            (input_tokens, output_tokens),
            latency,
            calls,
        )

    async def aclose(self) -> None:
        """Close the HTTP clients litellm opened on the running loop.

        litellm keeps its clients in one cache shared by all its callers, a
        client per event loop: this closes (and forgets) the running loop's,
        so call it when no request is in flight on this loop. The next
        request opens new ones.
        """
        litellm = sys.modules.get("litellm")
        cache = getattr(litellm, "in_memory_llm_clients_cache", None)
        clients = getattr(cache, "cache_dict", None)
        if litellm is None or not isinstance(clients, dict):
            return
        try:
            closer: Any = importlib.import_module("litellm.caching.evicted_client_closer")
            suffix = f"-{closer.running_loop_token()}"
        except (ImportError, AttributeError):  # pragma: no cover - another litellm version
            return
        for key in [k for k in clients if isinstance(k, str) and k.endswith(suffix)]:
            client = clients.pop(key, None)
            ttl = getattr(cache, "ttl_dict", None)
            if isinstance(ttl, dict):
                ttl.pop(key, None)
            close = getattr(client, "aclose", None) or getattr(client, "close", None)
            if close is None:
                continue
            try:
                closing = close()
                if inspect.isawaitable(closing):
                    await closing
            except Exception:  # closing is best effort: the client is forgotten anyway
                _log.debug("litellm: closing a cached client failed", exc_info=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _answer(self, response: Any) -> tuple[str, tuple[Any, ...]]:
        """The first choice's text and tool calls, or a TransientError (a 200 with neither)."""
        choices = getattr(response, "choices", None)
        if not choices:
            raise TransientError(f"{_PROVIDER}: HTTP 200 but no choices in the answer")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        raw = getattr(message, "tool_calls", None)
        if raw:
            found = []
            for call in raw:
                function = getattr(call, "function", None)
                name = getattr(function, "name", None)
                if not isinstance(name, str):
                    raise TransientError(f"{_PROVIDER}: a tool call without a function name")
                found.append((getattr(call, "id", ""), name, getattr(function, "arguments", None)))
            return (content if isinstance(content, str) else ""), tool_calls_from(found)
        if not isinstance(content, str):
            tools = getattr(message, "tool_calls", None)
            why = "tool calls but no text" if tools else f"no text (content {content!r:.20})"
            raise TransientError(f"{_PROVIDER}: HTTP 200 but the first choice has {why}")
        return content, ()
