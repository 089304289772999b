"""The litellm provider: URIs, keys, errors, fingerprints, and usage against the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

import fanflow as ff
from fanflow.llm import from_uri
from fanflow.llm._litellm import LiteLLMChat, map_litellm_error
from fanflow.testing import Latency, SimConfig, Simulator

litellm = pytest.importorskip("litellm")

# Warnings litellm silences at its import (litellm/_process_defaults.py),
# which pytest's per-test filters turn back into errors when litellm imports
# a module lazily, mid-request.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*conflict with protected namespace.*"),
    pytest.mark.filterwarnings("ignore:Pydantic serializer warnings"),
]

FAST = Latency(median=0.005, sigma=0.1)
SECRET = "sk-test-SECRET-1234567890abcdef"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests reach the loopback simulator directly; anything else hits a refusing port."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    """Models to close (litellm's cached clients on this loop) after the test."""
    models: list[Any] = []
    yield models
    for llm in models:
        await llm.aclose()


def test_importing_fanflow_does_not_import_litellm() -> None:
    code = (
        "import sys, fanflow, fanflow.llm, fanflow.llm._litellm; "
        "fanflow.llm.from_uri('litellm:openai/m@http://127.0.0.1:1/v1'); "
        "assert 'litellm' not in sys.modules, 'litellm was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("uri", "model", "base_url", "key_env"),
    [
        ("litellm:bedrock/anthropic.claude-3", "bedrock/anthropic.claude-3", None, None),
        ("litellm:openai/m@http://127.0.0.1:8000/v1", "openai/m", "http://127.0.0.1:8000/v1", None),
        (
            "litellm:ollama/llama3:8b@http://127.0.0.1:11434",
            "ollama/llama3:8b",
            "http://127.0.0.1:11434",
            None,
        ),
        (
            "litellm:openai/m@http://127.0.0.1:8000/v1?key_env=MY_KEY",
            "openai/m",
            "http://127.0.0.1:8000/v1",
            "MY_KEY",
        ),
    ],
)
def test_uris(uri: str, model: str, base_url: str | None, key_env: str | None) -> None:
    llm = from_uri(uri)
    assert isinstance(llm, LiteLLMChat)
    assert (llm.model, llm.base_url, llm.api_key_env) == (model, base_url, key_env)
    assert llm.name == f"litellm:{model}" + (f"@{base_url}" if base_url else "")


def test_bad_uris_and_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="names no model"):
        from_uri("litellm:")
    with pytest.raises(ValueError, match="key_env"):
        from_uri("litellm:openai/m@http://127.0.0.1:1/v1?key_env=not-a-name")
    with pytest.raises(ValueError, match="timeout"):
        LiteLLMChat("openai/m", timeout=0)
    with pytest.raises(ValueError, match="api_key_env"):
        LiteLLMChat("openai/m", api_key_env="has space")


def test_a_missing_litellm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "litellm" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'fanflow\[litellm\]'"):
        from_uri("litellm:openai/m")


def test_the_fingerprint_is_stable_and_names_neither_url_nor_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LITELLM_TEST_KEY", SECRET)
    a = LiteLLMChat(
        "openai/m",
        base_url="http://127.0.0.1:8000/v1",
        api_key_env="LITELLM_TEST_KEY",
        params={"temperature": 0.2},
    )
    b = LiteLLMChat("openai/m", base_url="http://127.0.0.1:9999/v1", params={"temperature": 0.2})
    assert a.__fanflow_fingerprint__() == b.__fanflow_fingerprint__()
    assert a.__fanflow_fingerprint__() == {
        "provider": "litellm",
        "model": "openai/m",
        "params": {"temperature": 0.2},
    }
    text = json.dumps(a.__fanflow_fingerprint__()) + repr(a)
    assert "8000" not in json.dumps(a.__fanflow_fingerprint__()) and SECRET not in text
    assert a.__fanflow_fingerprint__() != LiteLLMChat("openai/other").__fanflow_fingerprint__()


async def test_a_named_but_unset_key_variable_is_a_permanent_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LITELLM_UNSET_KEY", raising=False)
    llm = LiteLLMChat("openai/m", base_url="http://127.0.0.1:1/v1", api_key_env="LITELLM_UNSET_KEY")
    with pytest.raises(ff.PermanentError, match="LITELLM_UNSET_KEY is not set"):
        await llm.complete("hi")


class _Recorder:
    """Stands in for ``litellm.acompletion``: records the call, then raises or answers."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return litellm.ModelResponse(
            model="m-served",
            choices=[{"message": {"role": "assistant", "content": "ok"}}],
            usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        )


async def test_the_key_goes_where_it_is_named_and_params_pass_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(litellm, "acompletion", recorder)
    monkeypatch.setenv("LITELLM_TEST_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-provider-own-key-0000")
    named = LiteLLMChat(
        "openai/m",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="LITELLM_TEST_KEY",
        params={"temperature": 0.5},
    )
    completion = await named.complete("hi", max_tokens=7, response_format={"type": "json_object"})
    assert completion.text == "ok" and completion.model == "m-served"
    assert completion.usage == ff.llm.TokenUsage(3, 1)
    sent = recorder.calls[-1]
    assert sent["api_key"] == SECRET and sent["api_base"] == "http://127.0.0.1:1/v1"
    assert sent["num_retries"] == 0 and sent["max_retries"] == 0
    assert (sent["temperature"], sent["max_tokens"]) == (0.5, 7)
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    # Another server gets a placeholder, never the provider's own key.
    await LiteLLMChat("openai/m", base_url="http://127.0.0.1:1/v1").complete("hi")
    assert recorder.calls[-1]["api_key"] == "no-key"
    # The provider's own host: litellm finds the key its own way.
    await LiteLLMChat("openai/m").complete("hi")
    assert recorder.calls[-1]["api_key"] is None and recorder.calls[-1]["api_base"] is None


def _errors() -> list[tuple[BaseException, type[ff.ServiceError]]]:
    args = {"llm_provider": "openai", "model": "m"}
    return [
        (litellm.RateLimitError(f"slow down {SECRET}", **args), ff.RateLimited),
        (litellm.InternalServerError(f"boom {SECRET}", **args), ff.TransientError),
        (litellm.ServiceUnavailableError(f"busy {SECRET}", **args), ff.TransientError),
        (litellm.APIConnectionError(f"refused {SECRET}", **args), ff.TransientError),
        (litellm.Timeout(f"slow {SECRET}", **args), ff.TransientError),
        (litellm.AuthenticationError(f"bad key {SECRET}", **args), ff.PermanentError),
        (litellm.BadRequestError(f"bad {SECRET}", **args), ff.PermanentError),
        (litellm.NotFoundError(f"no such model {SECRET}", **args), ff.PermanentError),
        (RuntimeError(f"unexpected {SECRET}"), ff.PermanentError),
    ]


@pytest.mark.parametrize("case", range(len(_errors())))
async def test_errors_map_to_fanflows_kinds_without_the_key(
    case: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    error, kind = _errors()[case]
    monkeypatch.setattr(litellm, "acompletion", _Recorder(error))
    monkeypatch.setenv("LITELLM_TEST_KEY", SECRET)
    llm = LiteLLMChat("openai/m", base_url="http://127.0.0.1:1/v1", api_key_env="LITELLM_TEST_KEY")
    with pytest.raises(ff.ServiceError) as caught:
        await llm.complete("hi")
    assert type(caught.value) is kind
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert caught.value.__cause__ is error


def test_a_429s_retry_after_comes_from_its_headers() -> None:
    import httpx

    response = httpx.Response(
        429, headers={"retry-after": "7"}, request=httpx.Request("POST", "http://x")
    )
    error = litellm.RateLimitError("slow down", llm_provider="openai", model="m", response=response)
    mapped = map_litellm_error(error)
    assert isinstance(mapped, ff.RateLimited) and mapped.retry_after == 7.0
    assert map_litellm_error(error, ceiling=2.0).retry_after == 2.0  # type: ignore[attr-defined]


async def test_a_200_without_text_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    async def empty(**kwargs: Any) -> Any:
        return litellm.ModelResponse(
            model="m", choices=[{"message": {"role": "assistant", "content": None}}]
        )

    monkeypatch.setattr(litellm, "acompletion", empty)
    with pytest.raises(ff.TransientError, match="no text"):
        await LiteLLMChat("openai/m").complete("hi")


async def test_a_fan_out_against_the_simulator_books_usage_once(closing: list[Any]) -> None:
    async with Simulator(SimConfig(latency=FAST)) as sim:
        llm = from_uri(f"litellm:openai/tiny@{sim.url}")
        closing.append(llm)
        tasks = [ff.llm.prompt_task(f"q{i}", llm, f"question {i}") for i in range(3)]
        result = await ff.fan_out(tasks, strategy=ff.AllOrNothing())
        assert result.value == {f"q{i}": f"Simulated answer to: question {i}" for i in range(3)}
        assert sim.stats["requests"] == 3
        assert result.usage is not None
        usage = result.usage.by_model["openai/tiny"]
        assert usage.requests == 3 and usage.input_tokens > 0 and usage.output_tokens > 0


async def test_a_429_from_the_simulator_is_rate_limited_with_its_wait(closing: list[Any]) -> None:
    config = SimConfig(latency=FAST, fail_first=1, fail_status=429, retry_after=0.25)
    async with Simulator(config) as sim:
        llm = LiteLLMChat("openai/tiny", base_url=sim.url)
        closing.append(llm)
        with pytest.raises(ff.RateLimited) as caught:
            await llm.complete("hi")
        assert caught.value.retry_after == 0.25
        assert (await llm.complete("hi")).text == "Simulated answer to: hi"
        assert sim.stats["requests"] == 2


async def test_a_request_cancelled_in_flight_is_booked_as_wasted(closing: list[Any]) -> None:
    slow_config = SimConfig(latency=Latency(median=5.0, sigma=0.0))
    async with (
        Simulator(SimConfig(latency=FAST)) as fast_sim,
        Simulator(slow_config) as slow_sim,
    ):
        fast = LiteLLMChat("openai/fast", base_url=fast_sim.url)
        slow = LiteLLMChat("openai/slow", base_url=slow_sim.url)
        closing.extend([fast, slow])
        tasks = [
            ff.llm.prompt_task("f1", fast, "what is 6 x 7?"),
            ff.llm.prompt_task("s1", slow, "a slow question"),
        ]
        result = await ff.fan_out(tasks, strategy=ff.FirstN(1))
        usage = result.usage
        assert usage is not None
        assert usage.by_model["openai/fast"].requests == 1
        assert "openai/fast" not in usage.wasted
        wasted = usage.wasted["openai/slow"]
        assert wasted.requests == 1 and wasted.input_tokens > 0 and wasted.output_tokens == 0


async def test_structured_answers_and_an_agent_through_litellm(closing: list[Any]) -> None:
    from pydantic import BaseModel

    from fanflow.testing import AgentScript, Script

    class Verdict(BaseModel):
        verdict: str
        score: int

    def double(x: int) -> int:
        """Double a number."""
        return 2 * x

    config = SimConfig(
        latency=FAST,
        scripts=[Script("judge", {'{"verdict": "yes", "score": 2}': 1.0})],
        agents=[AgentScript("compute", [[{"name": "double", "arguments": {"x": 21}}]], "42")],
    )
    async with Simulator(config) as sim:
        llm = LiteLLMChat("openai/tiny", base_url=sim.url)
        closing.append(llm)
        completion = await llm.complete("judge this", schema=Verdict)
        assert completion.parsed == Verdict(verdict="yes", score=2)
        result = await ff.fan_out([ff.llm.agent_task("a", llm, "compute it", tools=[double])])
        value = result.results[0].value
        assert value.text == "42" and [(c.name, c.result) for c in value.tool_calls] == [
            ("double", 42)
        ]
        assert sim.stats["tool_calls"] == 1
