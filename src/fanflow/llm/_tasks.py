"""LLM calls as tasks, and helpers to pull answers out of free text."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any

from .._core._task import Task
from .._policies._retry import Retry
from ._base import LLM, Message, estimate_tokens
from ._structured import complete_structured, output_schema

__all__ = ["answer_line", "last_number", "prompt_task"]


def prompt_task(
    name: str,
    llm: LLM,
    prompt: str | Sequence[Message],
    *,
    timeout: float | None = None,
    retry: Retry | None = None,
    weight: float = 1.0,
    reads: Sequence[str] = (),
    writes: Sequence[str] = (),
    schema: Any = None,
    repair: int = 1,
    **params: Any,
) -> Task:
    """A :class:`~fanflow.Task` that sends ``prompt`` to ``llm`` and returns the answer's text.

    With ``schema`` (a pydantic model class or a JSON Schema dict) the
    task's value is the answer parsed and validated (``Completion.parsed``:
    a model instance, or JSON data); an answer that does not validate gets
    ``repair`` rounds with the errors, then the task fails with
    :class:`~fanflow.llm.SchemaError` (permanent: not retried). Models
    without native structured output get the schema in a system message
    (:func:`~fanflow.llm.complete_structured`).

    ``params`` go to ``llm.complete`` (``temperature``, ``max_tokens``,
    ``seed``...). The task's ``tokens`` estimate (for
    ``RateLimit(tokens_per_minute=...)``) is the prompt's size plus
    ``max_tokens`` (256 when not given). Model calls are idempotent, so the
    task may be retried and hedged; its spending shows in ``result.usage``.
    In a journal (``journal=``) the task is identified by its prompt, model
    and parameters: change one and it runs again.
    """

    if schema is not None:
        spec = output_schema(schema)  # a bad schema fails here, before anything runs

        async def ask() -> Any:
            completion = await complete_structured(llm, prompt, spec, repair=repair, **params)
            return completion.parsed

        if spec.model is not None:
            # In a journal a model instance is stored as its JSON data and
            # replayed as an instance again.
            model = spec.model
            ask.__fanflow_codec__ = (  # type: ignore[attr-defined]
                lambda value: value.model_dump(mode="json"),
                model.model_validate,
            )

    else:

        async def ask() -> Any:
            completion = await llm.complete(prompt, **params)
            return completion.text

    ask.__qualname__ = ask.__name__ = f"prompt[{getattr(llm, 'name', llm)}]"
    # In a journal (journal=), the task is what it asks: prompt, model, parameters.
    ask.__fanflow_fingerprint__ = lambda: {  # type: ignore[attr-defined]
        "prompt": prompt,
        "model": model_identity(llm),
        "params": params,
        **({"schema": spec.json_schema, "repair": repair} if schema is not None else {}),
    }
    prompt_tokens = estimate_tokens(prompt)
    max_tokens = int(params.get("max_tokens", 256))
    tokens = prompt_tokens + max_tokens
    # Under a spend budget (budget=) the attempt reserves this, priced as
    # this model's prompt plus answer.
    model = getattr(llm, "model", None)
    if not isinstance(model, str) or not model:
        model = getattr(llm, "name", None)
    ask.__fanflow_model__ = (  # type: ignore[attr-defined]
        model if isinstance(model, str) and model else None,
        prompt_tokens,
        max_tokens,
    )
    return Task(
        name,
        ask,
        timeout=timeout,
        retry=retry,
        weight=weight,
        reads=reads,
        writes=writes,
        tokens=tokens,
    )


def model_identity(llm: Any) -> Any:
    """What identifies a model in a journal: its own ``__fanflow_fingerprint__()``,
    else its type, ``name`` and ``model``."""
    hook = getattr(llm, "__fanflow_fingerprint__", None)
    if hook is not None:
        return hook()
    kind = type(llm)
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "name": str(getattr(llm, "name", "")),
        "model": str(getattr(llm, "model", "")),
    }


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER = re.compile(r"^\s*(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def last_number(text: Any) -> Hashable:
    """A vote key: the last number in ``text`` (commas dropped), else the text normalised.

    ``"... so 6 x 7 = 42."`` counts as ``"42"``; ``"42.0"`` as ``"42"``.
    """
    found = _NUMBER.findall(str(text))
    if not found:
        return " ".join(str(text).split()).casefold()
    number: str = found[-1].replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number


def answer_line(text: Any) -> Hashable:
    """A vote key: what follows the last ``Answer:`` line, normalised; else the whole text."""
    found = _ANSWER.findall(str(text))
    chosen = found[-1] if found else str(text)
    return " ".join(chosen.strip().rstrip(".").split()).casefold()
