"""The LLM layer over real loopback HTTP to the simulator."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import fanflow as ff
from fanflow.llm import AnthropicChat, OpenAIChat, from_uri
from fanflow.testing import Latency, Script, ScriptedLLM, SimConfig, Simulator

FAST = Latency(median=0.005, sigma=0.1)


@pytest.fixture(autouse=True)
async def close_providers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Close every provider a test opened (their connection pools hold sockets)."""
    opened: list[Any] = []
    for cls in (OpenAIChat, AnthropicChat):
        original = cls._client

        def tracking(self: Any, _original: Any = original) -> Any:
            opened.append(self)
            return _original(self)

        monkeypatch.setattr(cls, "_client", tracking)
    yield
    for llm in opened:
        await llm.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(
        latency=FAST, scripts=[Script(r"6 x 7", {"42": 0.7, "41": 0.2, "I am not sure": 0.1})]
    )
    async with Simulator(config) as server:
        yield server


async def test_openai_provider_completes_with_usage_and_latency(sim: Simulator) -> None:
    llm = OpenAIChat("tiny", base_url=sim.url)
    completion = await llm.complete("what is 6 x 7?", seed=1)
    assert completion.text in {"42", "41", "I am not sure"}
    assert completion.model == "simulated:tiny"
    assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0
    assert completion.latency > 0
    assert str(completion) == completion.text
    await llm.aclose()


async def test_answers_are_reproducible_per_seed(sim: Simulator) -> None:
    llm = from_uri(f"sim:tiny@{sim.url}")
    first = [(await llm.complete("what is 6 x 7?", seed=s)).text for s in range(10)]
    again = [(await llm.complete("what is 6 x 7?", seed=s)).text for s in range(10)]
    assert first == again and len(set(first)) > 1


async def test_anthropic_provider_over_http() -> None:
    config = SimConfig(latency=FAST, scripts=[Script("brief", {"ok, briefly": 1.0})])
    async with Simulator(config) as server:
        llm = AnthropicChat("claude-sim", base_url=server.url.removesuffix("/v1"))
        completion = await llm.complete(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
        )
        assert completion.text == "ok, briefly"  # the system prompt reached the service
        assert completion.model == "simulated:claude-sim"
        assert completion.usage.output_tokens > 0
        await llm.aclose()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ff.RateLimited),
        (500, ff.TransientError),
        (529, ff.TransientError),
        (400, ff.PermanentError),
        (401, ff.PermanentError),
    ],
)
async def test_status_codes_map_to_error_kinds(provider: str, status: int, kind: type) -> None:
    config = SimConfig(latency=FAST, fail_first=1, fail_status=status, retry_after=0.25)
    async with Simulator(config) as server:
        if provider == "openai":
            llm: Any = OpenAIChat("m", base_url=server.url)
        else:
            llm = AnthropicChat("m", base_url=server.url.removesuffix("/v1"))
        with pytest.raises(kind) as info:
            await llm.complete("hi")
        assert type(info.value) is kind
        assert f"HTTP {status}" in str(info.value)
        if status == 429:
            assert info.value.retry_after == pytest.approx(0.25)
        await llm.aclose()


async def test_429_is_retried_after_at_least_retry_after() -> None:
    config = SimConfig(latency=FAST, fail_first=1, fail_status=429, retry_after=0.3)
    async with Simulator(config) as server:
        llm = from_uri(f"sim:m@{server.url}")
        events: list[ff.Event] = []
        result = await ff.fan_out(
            [ff.llm.prompt_task("q", llm, "hi")],
            retry=ff.Retry(backoff=0.001),
            on_event=events.append,
        )
        assert result.ok and result["q"].attempts == 2
        first, second = result["q"].history
        assert second.started_at - first.finished_at >= 0.3 - 0.01
        (retrying,) = [e for e in events if isinstance(e, ff.TaskRetrying)]
        assert isinstance(retrying.error, ff.RateLimited) and retrying.delay >= 0.3


@pytest.mark.parametrize(("status", "calls"), [(500, 2), (400, 1)])
async def test_transient_retried_permanent_not(status: int, calls: int) -> None:
    config = SimConfig(latency=FAST, fail_first=1, fail_status=status)
    async with Simulator(config) as server:
        llm = from_uri(f"sim:m@{server.url}")
        result = await ff.fan_out(
            [ff.llm.prompt_task("q", llm, "hi")],
            retry=ff.Retry(backoff=0.001),
            raise_on_failure=False,
        )
        assert server.stats["requests"] == calls
        assert result.ok == (status == 500)


async def test_twenty_prompts_at_thirty_percent_429_all_end_ok() -> None:
    config = SimConfig(latency=FAST, rate_limit_rate=0.3, retry_after=0.02, seed=7)
    async with Simulator(config) as server:
        llm = from_uri(f"sim:m@{server.url}")
        tasks = [ff.llm.prompt_task(f"p{i}", llm, f"question {i}") for i in range(20)]
        result = await ff.fan_out(
            tasks,
            retry=ff.Retry(attempts=10, backoff=0.01),
            rate_limit=ff.RateLimit(per_second=200),
            strategy=ff.AllOrNothing(),
        )
        assert len(result.succeeded) == 20
        assert server.stats["429"] > 0  # the limits were really hit, and survived


async def test_usage_sums_and_wasted_counts_cancelled_requests(sim: Simulator) -> None:
    slow_config = SimConfig(latency=Latency(median=5.0, sigma=0.0))
    async with Simulator(slow_config) as slow_server:
        fast = from_uri(f"sim:fast@{sim.url}")
        slow = from_uri(f"sim:slow@{slow_server.url}")
        tasks = [
            ff.llm.prompt_task("f1", fast, "what is 6 x 7?"),
            ff.llm.prompt_task("f2", fast, "what is 6 x 7?"),
            ff.llm.prompt_task("s1", slow, "a slow question"),
        ]
        result = await ff.fan_out(tasks, strategy=ff.FirstN(2))
        usage = result.usage
        assert usage is not None
        assert usage.by_model["fast"].requests == 2 and usage.by_model["slow"].requests == 1
        assert usage.by_model["fast"].output_tokens > 0
        assert "fast" not in usage.wasted
        assert usage.wasted["slow"].requests == 1 and usage.wasted["slow"].input_tokens > 0
        assert usage.wasted["slow"].output_tokens == 0  # cancelled in flight: unknown, not counted
        assert usage.cost({"fast": (1.0, 2.0), "slow": (1.0, 2.0)}) > 0
        data = json.loads(json.dumps(result.to_dict()))
        assert data["usage"]["wasted"]["slow"]["requests"] == 1


async def test_no_usage_when_no_model_is_called() -> None:
    async def plain() -> int:
        return 1

    result = await ff.fan_out([ff.Task("p", plain)])
    assert result.usage is None


async def test_nested_fan_out_spending_is_booked_upstream() -> None:
    llm = ScriptedLLM("inner", default="x")

    async def inner() -> int:
        sub = await ff.fan_out([ff.llm.prompt_task(f"i{k}", llm, "q") for k in range(3)])
        return len(sub.succeeded)

    result = await ff.fan_out([ff.Task("outer", inner)])
    assert result.usage is not None and result.usage.by_model["inner"].requests == 3


async def test_api_key_never_reaches_reprs_reports_events_or_logs(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-SECRET-1234567890abcdef"
    monkeypatch.setenv("FANFLOW_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    llm = OpenAIChat("tiny", base_url=sim.url, api_key_env="FANFLOW_TEST_KEY")
    events: list[ff.Event] = []
    tasks = [ff.llm.prompt_task(f"q{i}", llm, "what is 6 x 7?", seed=i) for i in range(3)]
    result = await ff.fan_out(tasks, on_event=events.append)
    seen = [
        repr(llm),
        llm.name,
        repr(tasks),
        repr(result),
        json.dumps(result.to_dict()),
        *map(repr, events),
        caplog.text,
    ]
    for text in seen:
        assert secret not in text
    await llm.aclose()


async def test_missing_key_names_the_variable_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ff.PermanentError, match="OPENAI_API_KEY is not set"):
        await OpenAIChat("gpt-4o-mini").complete("hi")


@pytest.mark.parametrize(
    ("uri", "kind", "model", "base_url"),
    [
        ("openai:gpt-4o-mini", OpenAIChat, "gpt-4o-mini", None),
        (
            "openai:llama3:8b@http://127.0.0.1:11434/v1",
            OpenAIChat,
            "llama3:8b",
            "http://127.0.0.1:11434/v1",
        ),
        ("anthropic:claude-x", AnthropicChat, "claude-x", None),
        ("sim:tiny@http://127.0.0.1:9/v1", OpenAIChat, "tiny", "http://127.0.0.1:9/v1"),
    ],
)
async def test_from_uri(uri: str, kind: type, model: str, base_url: str | None) -> None:
    llm = from_uri(uri)
    assert isinstance(llm, kind) and llm.model == model and llm.base_url == base_url


async def test_sim_uri_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANFLOW_SIM_URL", "http://127.0.0.1:8123/v1")
    llm = from_uri("sim:tiny")
    assert isinstance(llm, OpenAIChat) and llm.base_url == "http://127.0.0.1:8123/v1"


@pytest.mark.parametrize("uri", ["gpt-4", "nope:model", "openai:", 42])
async def test_from_uri_rejects_bad_uris(uri: Any) -> None:
    with pytest.raises(ValueError, match=r"URI|provider|model") as info:
        from_uri(uri)
    assert repr(uri) in str(info.value) or str(uri) in str(info.value)


async def test_register_provider() -> None:
    ff.llm.register_provider("fake", lambda model, url: ScriptedLLM(model))
    llm = from_uri("fake:abc")
    assert isinstance(llm, ScriptedLLM) and llm.name == "abc"


async def test_ensemble_majority_with_fewer_calls() -> None:
    config = SimConfig(latency=FAST, scripts=[Script("6 x 7", {"42": 0.7, "41": 0.2, "43": 0.1})])
    async with Simulator(config) as server:
        result = await ff.ensemble(
            "what is 6 x 7?", f"sim:m@{server.url}", samples=40, max_concurrency=4
        )
        assert result.value == "42" and result.ok
        assert server.stats["requests"] < 40
        assert result.stopped_early and "exact" in result.reason
        # Every request the server saw is counted; a sample cancelled while its
        # request was still connecting may be counted (as wasted) and never arrive.
        assert result.usage is not None
        seen, counted = server.stats["requests"], result.usage.requests
        assert seen <= counted <= seen + sum(m.requests for m in result.usage.wasted.values())


async def test_ensemble_over_several_models_and_key_helpers() -> None:
    a = ScriptedLLM("a").enqueue("so the answer is 42.", "Answer: 42", "42")
    b = ScriptedLLM("b").enqueue("6*7=42.0", "I think 41", "Answer: 42")
    result = await ff.ensemble("q", [a, b], samples=3, key=ff.llm.last_number, early_stop=False)
    assert result.value in {"so the answer is 42.", "Answer: 42", "42", "6*7=42.0"}
    assert result.votes == {"42": 5.0, "41": 1.0}
    assert ff.llm.answer_line("work...\nAnswer: Paris.\n") == "paris"


async def test_scripted_llm_records_history() -> None:
    llm = ScriptedLLM(default="d").enqueue("one", ff.TransientError("boom"))
    assert (await llm.complete("a")).text == "one"
    with pytest.raises(ff.TransientError):
        await llm.complete("b")
    assert (await llm.complete("c")).text == "d"
    assert [h[0]["content"] for h in llm.history] == ["a", "b", "c"]
