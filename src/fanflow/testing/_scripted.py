"""A scripted in-memory model: queue answers, then inspect what was asked."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ..llm._base import (
    Completion,
    TokenUsage,
    ToolCall,
    _Metered,
    estimate_tokens,
)
from ..llm._structured import OutputSchema, StructuredChat

__all__ = ["ScriptedLLM"]

Answer = str | BaseException | ToolCall | Sequence[ToolCall] | Mapping[str, Any]


class ScriptedLLM(StructuredChat):
    """A fake model for tests: answers from a queue, records every request.

    ``enqueue(...)`` adds answers, one per request:

    * a string — the answer's text;
    * a dict — JSON data, answered as its JSON text (for ``schema=``);
    * a :class:`~fanflow.llm.ToolCall` or a list of them — the model asks
      for these tool calls (for ``tools=``; ``ff.llm.agent_task``);
    * an exception — raised.

    When the queue is empty, ``default`` is answered. ``history`` holds the
    messages of every request, in order, and ``requests`` their other
    arguments (``schema`` as the JSON Schema sent, ``tools``, parameters).
    ``delay`` seconds pass before each answer. Like the real providers it
    takes ``schema=`` (validated, with repair rounds) and ``tools=``.
    """

    def __init__(self, name: str = "scripted", *, default: str = "", delay: float = 0.0) -> None:
        self.name = name
        self.default = default
        self.delay = delay
        self._queue: deque[Answer] = deque()
        self.history: list[list[dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []

    def enqueue(self, *answers: Answer) -> ScriptedLLM:
        """Queue answers (see the class); returns ``self``."""
        self._queue.extend(answers)
        return self

    async def _request(
        self,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        tools: Sequence[Mapping[str, Any]] | None,
        spec: OutputSchema | None,
    ) -> Completion:
        """Answer one request with the next queued item (or raise it)."""
        schema = None if spec is None else spec.json_schema
        # A request the budget refuses is never sent: not in the history.
        meter = _Metered(self.name, messages, params.get("max_tokens"))
        self.history.append(messages)
        self.requests.append({"schema": schema, "tools": tools, **params})
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
        calls: tuple[ToolCall, ...] = ()
        if isinstance(item, ToolCall):
            calls, text = (item,), ""
        elif isinstance(item, Mapping):
            text = json.dumps(item)
        elif isinstance(item, str):
            text = item
        else:
            calls, text = tuple(item), ""
        spent = estimate_tokens(text) if text else 8 * len(calls)
        latency = meter.done(estimate_tokens(messages), spent)
        return Completion(
            text,
            self.name,
            TokenUsage(estimate_tokens(messages), spent),
            latency,
            tool_calls=calls,
        )
