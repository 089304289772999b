"""Token accounting for providers of one's own: ``register_provider`` and ``record_usage``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

import fanflow as ff
from fanflow.llm import _uri
from fanflow.llm._base import record_usage
from fanflow.testing import Latency, ScriptedLLM, SimConfig, Simulator


@pytest.fixture(autouse=True)
def providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemes registered by a test are gone after it."""
    monkeypatch.setattr(_uri, "_PROVIDERS", dict(_uri._PROVIDERS))


class EchoModel:
    """A provider of one's own: no fanflow internals, just the protocol."""

    def __init__(self, model: str, delay: float = 0.0) -> None:
        self.name = f"echo:{model}"
        self.model = model
        self.delay = delay
        self.calls = 0

    async def complete(self, prompt: str | Sequence[Any], **params: Any) -> ff.llm.Completion:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return ff.llm.Completion(
            f"echo {prompt}", self.model, ff.llm.TokenUsage(input_tokens=11, output_tokens=7), 0.0
        )


async def test_a_registered_providers_tokens_appear_in_result_usage() -> None:
    ff.llm.register_provider("echo", lambda model, url: EchoModel(model))
    llm = ff.llm.from_uri("echo:tiny")
    tasks = [ff.llm.prompt_task(f"t{i}", llm, f"question {i}") for i in range(3)]
    result = await ff.fan_out(tasks)
    assert result.usage is not None
    assert result.usage.by_model["tiny"].requests == 3
    assert result.usage.by_model["tiny"].input_tokens == 33
    assert result.usage.by_model["tiny"].output_tokens == 21
    assert result.usage.wasted == {}
    assert result.to_dict()["usage"]["input_tokens"] == 33


async def test_a_registered_provider_cancelled_in_flight_counts_as_waste() -> None:
    slow = EchoModel("slow", delay=30)
    ff.llm.register_provider(
        "echo", lambda model, url: slow if model == "slow" else EchoModel(model)
    )
    tasks = [
        ff.llm.prompt_task("fast", ff.llm.from_uri("echo:fast"), "q"),
        ff.llm.prompt_task("slow", ff.llm.from_uri("echo:slow"), "a long prompt " * 10),
    ]
    result = await ff.fan_out(tasks, strategy=ff.FirstN(1))
    assert result.usage is not None
    assert result.usage.by_model["fast"].output_tokens == 7
    wasted = result.usage.wasted["slow"]
    assert wasted.requests == 1 and wasted.input_tokens > 0 and wasted.output_tokens == 0


async def test_a_provider_that_books_itself_is_not_counted_twice() -> None:
    # ScriptedLLM books its requests the way OpenAIChat and AnthropicChat do.
    ff.llm.register_provider("scripted", lambda model, url: ScriptedLLM(model, default="x"))

    class SelfReporting(EchoModel):
        async def complete(self, prompt: str | Sequence[Any], **params: Any) -> ff.llm.Completion:
            completion = await super().complete(prompt, **params)
            record_usage(self.model, 100, 50)
            return completion

    ff.llm.register_provider("self", lambda model, url: SelfReporting(model))
    scripted, own = ff.llm.from_uri("scripted:s"), ff.llm.from_uri("self:m")
    result = await ff.fan_out(
        [ff.llm.prompt_task("a", scripted, "q"), ff.llm.prompt_task("b", own, "q")]
    )
    assert result.usage is not None
    assert result.usage.by_model["s"].requests == 1
    assert result.usage.by_model["m"].requests == 1
    assert result.usage.by_model["m"].input_tokens == 100  # its own figures, not Completion's


async def test_from_uri_returns_the_providers_own_object() -> None:
    shared = ScriptedLLM("s", default="x")
    ff.llm.register_provider("scripted", lambda model, url: shared)
    llm = ff.llm.from_uri("scripted:s")
    assert llm is shared and ff.llm.from_uri("scripted:s") is shared  # booked once, not twice
    assert (await llm.complete("hello")).text == "x"
    shared.enqueue(ff.PermanentError("no"))
    with pytest.raises(ff.PermanentError):  # errors pass through
        await llm.complete("again")
    result = await ff.fan_out([ff.llm.prompt_task("t", llm, "q")])
    assert result.usage is not None and result.usage.requests == 1


class Frozen:
    """A model whose attributes cannot be set."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "frozen"

    async def complete(self, prompt: str | Sequence[Any], **params: Any) -> ff.llm.Completion:
        return ff.llm.Completion("ok", "f", ff.llm.TokenUsage(3, 4), 0.0)

    async def aclose(self) -> None:
        pass


async def test_a_model_that_cannot_be_changed_is_booked_behind_a_stand_in() -> None:
    ff.llm.register_provider("frozen", lambda model, url: Frozen())
    llm = ff.llm.from_uri("frozen:f")
    assert isinstance(llm, ff.llm.LLM) and llm.name == "frozen"
    async with llm:  # type: ignore[attr-defined]
        result = await ff.fan_out([ff.llm.prompt_task("t", llm, "q")])
    await llm.aclose()  # type: ignore[attr-defined]
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(latency=Latency(median=0.005, sigma=0.0))) as server:
        yield server


class HTTPModel:
    """A provider of one's own over HTTP (aiohttp), reporting the service's token counts."""

    def __init__(self, model: str, url: str) -> None:
        import aiohttp

        self.name = model
        self.model = model
        self.url = url
        self.session = aiohttp.ClientSession()

    async def complete(self, prompt: str | Sequence[Any], **params: Any) -> ff.llm.Completion:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
        async with self.session.post(f"{self.url}/chat/completions", json=body) as response:
            data = await response.json()
        usage = ff.llm.TokenUsage(
            data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]
        )
        return ff.llm.Completion(
            data["choices"][0]["message"]["content"], data["model"], usage, 0.0
        )

    async def aclose(self) -> None:
        await self.session.close()


async def test_a_custom_http_provider_against_the_simulator(sim: Simulator) -> None:
    ff.llm.register_provider("mine", lambda model, url: HTTPModel(model, url or sim.url))
    llm = ff.llm.from_uri("mine:house-model")
    try:
        result = await ff.fan_out(
            [ff.llm.prompt_task(f"t{i}", llm, "what is caffeine?") for i in range(4)]
        )
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
    assert result.usage is not None
    use = result.usage.by_model["house-model"]
    assert use.requests == 4 == sim.stats["200"]
    assert use.input_tokens == 4 * max(1, len("what is caffeine?") // 4)
    assert use.output_tokens > 0


async def test_record_usage_books_inside_a_fan_out_and_checks_its_arguments() -> None:
    record_usage("m", 1, 2)  # outside a fan-out: nothing to book, no error

    async def task() -> str:
        record_usage("m", 5, 6)
        record_usage("m", 1, 0)
        return "done"

    result = await ff.fan_out([ff.Task("t", task)])
    assert result.usage is not None
    assert (result.usage.by_model["m"].requests, result.usage.input_tokens) == (2, 6)
    with pytest.raises(TypeError):
        record_usage("m", 1.5, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        record_usage("m", 1, -1)
