"""A scripted in-memory model: queue answers, then inspect what was asked."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..llm._base import Completion, Message, TokenUsage, _Metered, estimate_tokens, to_messages

__all__ = ["ScriptedLLM"]


class ScriptedLLM:
    """A fake model for tests: answers from a queue, records every request.

    ``enqueue("text")`` (or an exception, which is raised) adds an answer;
    when the queue is empty, ``default`` is returned. ``history`` holds the
    messages of every call, in order. ``delay`` seconds pass before answering.
    """

    def __init__(self, name: str = "scripted", *, default: str = "", delay: float = 0.0) -> None:
        self.name = name
        self.default = default
        self.delay = delay
        self._queue: deque[str | BaseException] = deque()
        self.history: list[list[dict[str, str]]] = []

    def enqueue(self, *answers: str | BaseException) -> ScriptedLLM:
        """Queue answers (strings) or failures (exceptions); returns ``self``."""
        self._queue.extend(answers)
        return self

    async def complete(self, prompt: str | Sequence[Message], **params: Any) -> Completion:
        """Answer with the next queued item."""
        messages = to_messages(prompt)
        self.history.append(messages)
        meter = _Metered(self.name, messages, params.get("max_tokens"))
        if self.delay:
            try:
                await asyncio.sleep(self.delay)
            except BaseException:
                meter.cut()  # cancelled in flight
                raise
        item = self._queue.popleft() if self._queue else self.default
        if isinstance(item, BaseException):
            meter.failed()
            raise item
        tokens = estimate_tokens(item)
        latency = meter.done(estimate_tokens(messages), tokens)
        return Completion(item, self.name, TokenUsage(estimate_tokens(messages), tokens), latency)
