"""The provider protocol: ``await llm.complete(prompt_or_messages, **params) -> Completion``."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from .._core._usage import _PROBE, begin_request, probe

__all__ = [
    "LLM",
    "Completion",
    "Message",
    "TokenUsage",
    "ToolCall",
    "estimate_tokens",
    "record_usage",
    "to_messages",
]

Message = Mapping[str, Any]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": text}``.

In a tool-calling conversation an assistant message may also carry
``"tool_calls"`` (a list of :class:`ToolCall`, or of ``{"id", "name",
"arguments"}`` mappings), and a tool's result is ``{"role": "tool",
"tool_call_id": id, "name": tool, "content": text, "is_error": bool}``.
Each provider turns these into its own API's shape.
"""


@dataclasses.dataclass(frozen=True)
class TokenUsage:
    """Tokens one completion used, as the service reported them."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """A tool call: asked for by a model, and (in an agent's record) its outcome.

    Attributes:
        id: the call's id, as the service gave it (a tool result names it).
        name: the tool's name.
        arguments: the arguments the model gave (JSON data). Arguments that
            were not a JSON object come as ``{}``, with ``error`` saying so.
        result: what the tool returned (``ff.llm.agent_task``'s record).
        error: why the call failed: bad arguments, or the tool's exception.
    """

    id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Completion:
    """A model's answer.

    Attributes:
        text: the answer's text ("" when the model only called tools).
        model: the model that answered, as the service named it.
        usage: the tokens it took (:class:`TokenUsage`); with ``schema=``,
            those of every round (a repair round is a request too).
        latency: seconds from sending the request to the whole answer.
        parsed: with ``schema=``, the answer validated: an instance of the
            pydantic model, or the JSON data a JSON Schema accepted.
        tool_calls: with ``tools=``, the calls the model asks for
            (:class:`ToolCall`); empty when it answered.
    """

    text: str
    model: str
    usage: TokenUsage
    latency: float
    parsed: Any = None
    tool_calls: tuple[ToolCall, ...] = ()

    def __str__(self) -> str:
        return self.text


@runtime_checkable
class LLM(Protocol):
    """What fanflow needs of a model: a name and ``complete``.

    ``complete`` takes a prompt string (sent as one user message) or a list
    of chat messages, plus provider parameters (``temperature``,
    ``max_tokens``, ``seed``...), and raises ``ff.RateLimited``,
    ``ff.TransientError`` or ``ff.PermanentError`` on failure.

    Token accounting (``FanInResult.usage``): a provider reports what a
    request spent in the :class:`Completion` it returns — ``usage=
    TokenUsage(input_tokens, output_tokens)`` as the service counted them.
    Providers registered with :func:`~fanflow.llm.register_provider` have
    that usage booked to the fan-out they run in, with nothing else to do.
    A provider used directly (not through ``from_uri``) calls
    :func:`record_usage` once per request instead.
    """

    name: str

    async def complete(self, prompt: str | Sequence[Message], **params: Any) -> Completion:
        """Ask the model; return its :class:`Completion`."""
        ...


def to_messages(prompt: str | Sequence[Message]) -> list[dict[str, Any]]:
    """Normalise a prompt to a list of chat messages.

    Text contents are strings; an assistant message's ``tool_calls`` become
    ``{"id", "name", "arguments"}`` dicts; a tool result keeps its
    ``tool_call_id``, ``name`` and ``is_error``.

    Raises:
        TypeError: not a string or a list of ``{"role", "content"}`` mappings.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(prompt):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise TypeError(f"messages[{i}] must be a mapping with 'role' and 'content'; got {m!r}")
        content = m["content"]
        message: dict[str, Any] = {
            "role": str(m["role"]),
            "content": "" if content is None else str(content),
        }
        calls = m.get("tool_calls")
        if calls:
            message["tool_calls"] = [_call_dict(i, c) for c in calls]
        if message["role"] == "tool":
            message["tool_call_id"] = str(m.get("tool_call_id", ""))
            message["name"] = str(m.get("name", ""))
            message["is_error"] = bool(m.get("is_error", False))
        messages.append(message)
    if not messages:
        raise TypeError("a prompt needs at least one message")
    return messages


def _call_dict(i: int, call: Any) -> dict[str, Any]:
    if isinstance(call, ToolCall):
        return {"id": call.id, "name": call.name, "arguments": call.arguments}
    if isinstance(call, Mapping) and "id" in call and "name" in call:
        return {
            "id": str(call["id"]),
            "name": str(call["name"]),
            "arguments": dict(call.get("arguments") or {}),
        }
    raise TypeError(f"messages[{i}]: a tool call must be a ToolCall or {{id, name, arguments}}")


def tool_calls_from(raw: Sequence[tuple[Any, Any, Any]]) -> tuple[ToolCall, ...]:
    """Tool calls from a service's ``(id, name, arguments)``: JSON text or an object.

    Arguments that are not a JSON object become ``{}`` with the call's
    ``error`` saying what came (the model hears it back as the tool's error).
    """
    calls = []
    for call_id, name, arguments in raw:
        error = None
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                error = f"the arguments are not valid JSON ({exc.msg}): {arguments[:200]!r}"
                arguments = {}
        if not isinstance(arguments, dict):
            error = error or f"the arguments must be a JSON object; got {arguments!r:.200}"
            arguments = {}
        calls.append(ToolCall(str(call_id), str(name), arguments, error=error))
    return tuple(calls)


def estimate_tokens(prompt: str | Sequence[Message]) -> int:
    """A rough token count (about 4 characters a token), for rate limits and waste."""
    if isinstance(prompt, str):
        chars = len(prompt)
    else:
        chars = sum(len(str(m.get("content") or "")) + 4 for m in prompt)
        for m in prompt:
            for call in m.get("tool_calls") or ():
                arguments = call.arguments if isinstance(call, ToolCall) else call.get("arguments")
                chars += len(json.dumps(arguments, default=str)) + 16
    return max(1, chars // 4)


class _Metered:
    """Times a request and books it to the enclosing fan-out's usage ledger.

    Under a spend budget (``budget=``) it also holds the request's
    reservation; creating it raises :class:`~fanflow.BudgetExceeded` (before
    anything is sent) when the request does not fit.
    """

    __slots__ = ("_request", "_start")

    def __init__(self, model: str, messages: list[dict[str, Any]], max_tokens: Any = None) -> None:
        expected = _count(max_tokens)
        self._request = begin_request(model, estimate_tokens(messages), expected)
        self._start = time.perf_counter()

    def done(self, input_tokens: int | None, output_tokens: int | None) -> float:
        if self._request is not None:
            self._request.finish(input_tokens, output_tokens)
        return time.perf_counter() - self._start

    def failed(self) -> None:
        """The service answered with an error: book a request, no tokens.

        Optional: the ledger also infers it when the attempt ends by itself
        (or begins another request) with this one unfinished.
        """
        if self._request is not None:
            self._request.fail()

    def cut(self) -> None:
        """The request was cancelled in flight: its estimated prompt is spent."""
        if self._request is not None:
            self._request.cut()


def record_usage(model: str, input_tokens: int, output_tokens: int) -> None:
    """Book one finished model request to the enclosing fan-out's ``result.usage``.

    For providers of your own: call it once per request, with the tokens
    the service reported. Outside a fan-out it does nothing. Providers
    registered with :func:`~fanflow.llm.register_provider` need not call
    it (the ``usage`` of their completions is booked for them); when they
    do, their request is not counted twice.

    Args:
        model: the model name to book the tokens under.
        input_tokens: prompt tokens.
        output_tokens: completion tokens.

    Raises:
        TypeError, ValueError: a token count is not an int >= 0.
    """
    for what, count in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"record_usage({what}=...) must be an int; got {count!r}")
        if count < 0:
            raise ValueError(f"record_usage({what}=...) must be >= 0; got {count!r}")
    request = begin_request(str(model), input_tokens, reserve=False)
    if request is not None:
        request.finish(input_tokens, output_tokens)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


async def _booked_complete(
    complete: Callable[..., Any], model: str, prompt: str | Sequence[Message], params: Any
) -> Completion:
    """Call a provider's ``complete`` and book the usage its completion reports.

    Before the request it books an estimate of the prompt's tokens (so a
    request cancelled in flight still counts as waste, as with the built-in
    providers); after it, the ``usage`` the completion reports. A request
    that raises instead (a 429, a 5xx) counts as a request without tokens. When the
    provider booked the request itself (it is built on ``OpenAIChat`` or
    ``AnthropicChat``, or calls :func:`record_usage`), its own booking
    stands and this one is taken back.
    """
    try:
        estimate = estimate_tokens(prompt)
    except (TypeError, AttributeError):
        estimate = 1  # the provider will say what is wrong with the prompt
    mine = begin_request(model, estimate, _count(params.get("max_tokens")))
    counter, token = probe()
    counter.request = mine  # the provider's own booking takes over its reservation
    try:
        completion: Completion = await complete(prompt, **params)
    except Exception:
        if mine is not None:
            if counter.requests:
                mine.discard()
            else:
                mine.fail()  # refused (429, 5xx...): a request, no tokens
        raise
    except BaseException:
        # Cancelled in flight: the estimate stands, booked as waste.
        if mine is not None:
            if counter.requests:
                mine.discard()
            else:
                mine.cut()
        raise
    finally:
        _PROBE.reset(token)
    if mine is not None:
        if counter.requests:
            mine.discard()
        else:
            usage = getattr(completion, "usage", None)
            mine.finish(
                _count(getattr(usage, "input_tokens", None)),
                _count(getattr(usage, "output_tokens", None)),
            )
    return completion


class _UsageBooking:
    """A stand-in for a model whose ``complete`` cannot be replaced (slots, frozen).

    Every attribute but ``complete`` is the model's own.
    """

    def __init__(self, llm: Any, model: str) -> None:
        self.__wrapped__ = llm
        self.name: str = str(getattr(llm, "name", model))
        self._model = model

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "__wrapped__":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attribute)
        return getattr(self.__wrapped__, attribute)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    async def __aenter__(self) -> _UsageBooking:
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        leave = getattr(self.__wrapped__, "__aexit__", None)
        return None if leave is None else await leave(*exc_info)

    async def complete(self, prompt: str | Sequence[Message], **params: Any) -> Completion:
        """The model's ``complete``, with its reported usage booked."""
        return await _booked_complete(self.__wrapped__.complete, self._model, prompt, params)


def book_usage(factory: Callable[[str, str | None], Any]) -> Callable[[str, str | None], LLM]:
    """Wrap a provider factory so the models it builds book their completions' usage.

    The model itself is returned, its ``complete`` replaced on the instance
    by one that books (so ``isinstance`` and every attribute stay as they
    are); a model that does not allow that comes back behind a stand-in.
    """

    def build(model: str, base_url: str | None) -> LLM:
        llm = factory(model, base_url)
        complete = getattr(llm, "complete", None)
        if complete is None or getattr(complete, "_fanflow_books_usage", False):
            return cast(LLM, llm)  # not a model (its caller will find out), or done already

        async def booked(prompt: str | Sequence[Message], **params: Any) -> Completion:
            return await _booked_complete(complete, model, prompt, params)

        booked._fanflow_books_usage = True  # type: ignore[attr-defined]
        booked.__doc__ = getattr(complete, "__doc__", None)
        try:
            llm.complete = booked
        except (AttributeError, TypeError):
            return _UsageBooking(llm, model)
        return cast(LLM, llm)

    build.__wrapped__ = factory  # type: ignore[attr-defined]
    return build


class _Identity:
    """``repr`` and journal identity of a provider with ``provider``, ``model``,
    ``base_url`` and ``params`` attributes."""

    provider: str
    model: str
    base_url: str | None
    params: dict[str, Any]

    def __repr__(self) -> str:
        # Never the key: only where it comes from.
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    def __fanflow_fingerprint__(self) -> dict[str, Any]:
        """What identifies this model in a journal: provider, model, default parameters.

        Not the server's address (a local proxy's port changes between
        runs) and never the key.
        """
        return {"provider": self.provider, "model": self.model, "params": self.params}


def answered(
    text: str,
    reported_model: Any,
    model: str,
    messages: Sequence[Message],
    usage: tuple[int | None, int | None],
    latency: float,
    tool_calls: tuple[ToolCall, ...] = (),
) -> Completion:
    """A provider's :class:`Completion`: the service's model name if it gave one,
    and the prompt's estimate for input tokens it did not report."""
    input_tokens, output_tokens = usage
    return Completion(
        text,
        reported_model if isinstance(reported_model, str) and reported_model else model,
        TokenUsage(
            estimate_tokens(messages) if input_tokens is None else input_tokens,
            output_tokens or 0,
        ),
        latency,
        tool_calls=tool_calls,
    )
