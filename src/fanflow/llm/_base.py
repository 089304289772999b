"""The provider protocol: ``await llm.complete(prompt_or_messages, **params) -> Completion``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .._usage import begin_request

__all__ = ["LLM", "Completion", "Message", "TokenUsage", "estimate_tokens", "to_messages"]

Message = Mapping[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": text}``."""


@dataclasses.dataclass(frozen=True)
class TokenUsage:
    """Tokens one completion used, as the service reported them."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class Completion:
    """A model's answer.

    Attributes:
        text: the answer's text.
        model: the model that answered, as the service named it.
        usage: the tokens it took (:class:`TokenUsage`).
        latency: seconds from sending the request to the whole answer.
    """

    text: str
    model: str
    usage: TokenUsage
    latency: float

    def __str__(self) -> str:
        return self.text


@runtime_checkable
class LLM(Protocol):
    """What fanflow needs of a model: a name and ``complete``.

    ``complete`` takes a prompt string (sent as one user message) or a list
    of chat messages, plus provider parameters (``temperature``,
    ``max_tokens``, ``seed``...), and raises ``ff.RateLimited``,
    ``ff.TransientError`` or ``ff.PermanentError`` on failure.
    """

    name: str

    async def complete(self, prompt: str | Sequence[Message], **params: Any) -> Completion:
        """Ask the model; return its :class:`Completion`."""
        ...


def to_messages(prompt: str | Sequence[Message]) -> list[dict[str, str]]:
    """Normalise a prompt to a list of chat messages.

    Raises:
        TypeError: not a string or a list of ``{"role", "content"}`` mappings.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for i, m in enumerate(prompt):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise TypeError(f"messages[{i}] must be a mapping with 'role' and 'content'; got {m!r}")
        messages.append({"role": str(m["role"]), "content": str(m["content"])})
    if not messages:
        raise TypeError("a prompt needs at least one message")
    return messages


def estimate_tokens(prompt: str | Sequence[Message]) -> int:
    """A rough token count (about 4 characters a token), for rate limits and waste."""
    if isinstance(prompt, str):
        chars = len(prompt)
    else:
        chars = sum(len(str(m.get("content", ""))) + 4 for m in prompt)
    return max(1, chars // 4)


class _Metered:
    """Times a request and books it to the enclosing fan-out's usage ledger."""

    __slots__ = ("_request", "_start")

    def __init__(self, model: str, messages: list[dict[str, str]]) -> None:
        self._request = begin_request(model, estimate_tokens(messages))
        self._start = time.perf_counter()

    def done(self, input_tokens: int | None, output_tokens: int | None) -> float:
        if self._request is not None:
            self._request.finish(input_tokens, output_tokens)
        return time.perf_counter() - self._start
