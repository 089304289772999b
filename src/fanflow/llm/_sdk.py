"""What the SDK-backed providers share: settings, the key, a client per event loop.

Where the API key goes: a provider sends its own key (``OPENAI_API_KEY``,
``ANTHROPIC_API_KEY``) only to its own host over https (``api.openai.com``,
``api.anthropic.com``). A server named by ``base_url`` (or the SDK's
``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``) gets the placeholder
``no-key`` unless the caller names the variable whose key it should get
(``api_key_env=``, ``?key_env=NAME`` in a model URI).

Each request has a total deadline, ``timeout`` seconds from sending it to
the whole answer: the SDK's own timeout is per read, so a server dripping a
byte a second would never trip it. A request past its deadline raises
:class:`~fanflow.TransientError` naming the timeout.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Self
from urllib.parse import urlsplit

from .._core._exceptions import PermanentError, ServiceError, TransientError
from ._base import _Identity
from ._errors import RETRY_AFTER_CEILING, bad_body, redact_keys

__all__ = ["PROVIDER_KEY", "SDKChat"]

_log = logging.getLogger("fanflow.llm")


class _ProviderKey:
    """The default of ``api_key_env``: the provider's own variable, for its own host only."""

    def __repr__(self) -> str:
        return "PROVIDER_KEY"


PROVIDER_KEY: Final = _ProviderKey()
"""``api_key_env``'s default: the provider's own key, sent to the provider's own host only."""

_warned: set[tuple[str, str]] = set()
# No request spends a trillion tokens: a bigger count is a broken field, not spending.
_MAX_TOKENS = 10**12


def _usage_tokens(
    provider: str, data: Mapping[str, Any], input_field: str, output_field: str
) -> tuple[int | None, int | None]:
    """The input and output token counts of a response's ``usage`` (see :func:`_tokens`)."""
    usage = data.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    return (
        _tokens(provider, input_field, usage.get(input_field)),
        _tokens(provider, output_field, usage.get(output_field)),
    )


def _tokens(provider: str, field: str, value: Any) -> int | None:
    """A token count as reported, or ``None`` when it is not one (warned once per field).

    Counts are ints from 0 to a trillion; whole numbers written as floats
    or digit strings pass too. Anything else is unknown: accounting never fails a request.
    """
    if value is None:
        return None
    count: int | None = None
    if isinstance(value, bool):
        count = None
    elif isinstance(value, int):
        count = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        count = int(value)
    elif isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) < 20:
        count = int(value.strip())
    if count is not None and 0 <= count <= _MAX_TOKENS:
        return count
    if (provider, field) not in _warned:
        _warned.add((provider, field))
        _log.warning(
            "%s: the response's usage.%s is %s, not a token count; counting it as unknown "
            "(the prompt's estimate stands in)",
            provider,
            field,
            redact_keys(repr(value)[:40]),
        )
    return None


class SDKChat(_Identity, abc.ABC):
    """Base of the providers built on an official SDK.

    Subclasses set ``provider`` (``"openai"``...), ``key_env`` (the
    provider's own key variable), ``root`` (its API root, on its own host)
    and ``base_url_env`` (the SDK's variable for another root), and implement
    ``_new_client(key, base_url)`` and ``complete``.

    Attributes:
        max_retry_after: the longest wait, in seconds, a rate-limit
            response's headers may ask for; longer asks are cut to it.
    """

    provider = "sdk"
    key_env = ""
    root = ""
    base_url_env = ""
    max_retry_after = RETRY_AFTER_CEILING

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key_env: str | _ProviderKey | None,
        timeout: float,
        params: Mapping[str, Any] | None,
        name: str | None,
    ) -> None:
        check_model_and_timeout(model, timeout)
        if not (api_key_env is None or api_key_env is PROVIDER_KEY or isinstance(api_key_env, str)):
            raise TypeError(f"api_key_env must be a variable name or None; got {api_key_env!r}")
        self.model = model
        self.base_url = base_url
        # Named by the caller: that key goes wherever base_url says.
        self._key_named = api_key_env is not PROVIDER_KEY
        self.api_key_env: str | None = (
            self.key_env if isinstance(api_key_env, _ProviderKey) else api_key_env
        )
        self.timeout = float(timeout)
        self.params = dict(params or {})
        self.name = name or (f"{self.provider}:{model}" + (f"@{base_url}" if base_url else ""))
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        self._secrets: tuple[str, ...] = ()

    @abc.abstractmethod
    def _new_client(self, key: str, base_url: str) -> Any:
        """A new SDK client using ``key`` at ``base_url``, with the SDK's retries off."""

    def _root(self) -> str:
        """The API root requests go to: ``base_url``, the SDK's variable, or the provider's own."""
        return (
            self.base_url
            or (os.environ.get(self.base_url_env) if self.base_url_env else None)
            or self.root
        )

    def _own_host(self, url: str) -> bool:
        try:
            parts, own = urlsplit(url), urlsplit(self.root)
            return (
                parts.scheme == "https"
                and parts.hostname == own.hostname
                and parts.port in (None, 443)
            )
        except ValueError:
            return False

    def _key(self, root: str) -> str:
        if self._key_named:
            if self.api_key_env is None:
                return "no-key"
            key = os.environ.get(self.api_key_env)
            if not key:
                raise PermanentError(
                    f"{self.provider}: the environment variable {self.api_key_env} is not set"
                )
            return key
        if not self._own_host(root):
            return "no-key"  # not the provider's host: its key stays home
        key = os.environ.get(self.key_env)
        if not key:
            raise PermanentError(
                f"{self.provider}: the environment variable {self.key_env} is not set"
            )
        return key

    def _client(self) -> Any:
        # An SDK client holds a connection pool bound to one event loop.
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        root = self._root()
        key = self._key(root)
        if key != "no-key":
            self._secrets = tuple({*self._secrets, key})
        client = self._new_client(key, root)
        self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
        self._clients[id(loop)] = (loop, client)
        return client

    @property
    def _sdk_timeout(self) -> float | None:
        return None if math.isinf(self.timeout) else self.timeout

    async def _send(self, send: Callable[[], Awaitable[Any]]) -> tuple[int, bytes]:
        """Send a request (``send`` returns the SDK's raw response); its status and body.

        The whole exchange, body included, must end within ``timeout``.

        Raises:
            TransientError: no complete answer within ``timeout`` seconds.
        """
        deadline = asyncio.timeout(self._sdk_timeout)
        try:
            async with deadline:
                raw = await send()
                http = raw.http_response
                body: bytes = await http.aread()
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise TransientError(
                f"{self.provider}: no complete answer within timeout={self.timeout:g} s"
            ) from exc
        return int(http.status_code), body

    def _json(self, status: int, body: bytes, needed: str) -> Mapping[str, Any]:
        """The body as a JSON object that has ``needed``, or the error it deserves."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            head = body.lstrip()[:1]
            why = (
                "an empty body"
                if not head
                else "an HTML page, not JSON (a proxy or gateway in the way?)"
                if head == b"<"
                else "a body that is not JSON (truncated or invalid)"
            )
            raise self._bad(status, why, body) from None
        if not isinstance(data, dict) or needed not in data:
            raise self._bad(
                status,
                f"JSON without {needed!r}: not a {self.provider} API response",
                body,
                permanent=True,
            )
        return data

    def _bad(self, status: int, why: str, body: bytes, *, permanent: bool = False) -> ServiceError:
        return bad_body(
            self.provider, status, why, body, permanent=permanent, secrets=self._secrets
        )

    async def aclose(self) -> None:
        """Close the HTTP client this provider opened on the running loop."""
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry[1].close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def check_model_and_timeout(model: Any, timeout: Any) -> None:
    """A provider's ``model`` and ``timeout`` arguments.

    Raises:
        ValueError: ``model`` is empty or not a string, ``timeout`` is not a
            number of seconds > 0.
    """
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string; got {model!r}")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"timeout must be a number of seconds > 0; got {timeout!r}")
