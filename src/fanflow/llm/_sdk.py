"""What the SDK-backed providers share: settings, the key, a client per event loop."""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Mapping
from typing import Any, Self

from .._exceptions import PermanentError

__all__ = ["SDKChat"]


class SDKChat(abc.ABC):
    """Base of the providers built on an official SDK.

    Subclasses set ``provider`` (``"openai"``...) and implement
    ``_new_client(key)`` and ``complete``.
    """

    provider = "sdk"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key_env: str | None,
        timeout: float,
        params: Mapping[str, Any] | None,
        name: str | None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string; got {model!r}")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.params = dict(params or {})
        self.name = name or (f"{self.provider}:{model}" + (f"@{base_url}" if base_url else ""))
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    def __repr__(self) -> str:
        # Never the key: only where it comes from.
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @abc.abstractmethod
    def _new_client(self, key: str) -> Any:
        """A new SDK client using ``key``, with the SDK's retries off."""

    def _client(self) -> Any:
        # An SDK client holds a connection pool bound to one event loop.
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if not key:
            if self.base_url is None:
                raise PermanentError(
                    f"{self.provider}: the environment variable {self.api_key_env} is not set"
                )
            key = "no-key"  # local compatible servers usually need none
        client = self._new_client(key)
        self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
        self._clients[id(loop)] = (loop, client)
        return client

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
