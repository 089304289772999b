"""The providers against a server fanflow did not write: fakellm, a mock OpenAI/Anthropic API.

One fakellm process serves the module, on a free loopback port, configured
by rules (``fakellm.yaml``): which prompt gets which answer or which error
status. Nothing leaves 127.0.0.0/8: the server and the code under test have
``NO_PROXY`` set to loopback and every proxy variable pointing at a loopback
port that refuses connections, so a request for anywhere else fails at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff
from fanflow.llm import AnthropicChat, OpenAIChat

pytest.importorskip("fakellm")
pytest.importorskip("litellm")

from fanflow.llm._litellm import LiteLLMChat

# Warnings litellm silences at its import (litellm/_process_defaults.py),
# which pytest's per-test filters turn back into errors when litellm imports
# a module lazily, mid-request.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*conflict with protected namespace.*"),
    pytest.mark.filterwarnings("ignore:Pydantic serializer warnings"),
]

RULES = """\
version: 1
defaults:
  fallback: deterministic_echo
rules:
  - name: once-429
    when:
      messages_contain: "once-429"
      turn: 1
    respond:
      status: 429
      error: "slow down (mock)"
  - name: recovered
    when:
      messages_contain: "once-429"
    respond:
      content: "recovered"
  - name: always-429
    when:
      messages_contain: "always-429"
    respond:
      status: 429
      error: "rate limit exceeded (mock)"
  - name: always-500
    when:
      messages_contain: "always-500"
    respond:
      status: 500
      error: "internal error (mock)"
  - name: always-503
    when:
      messages_contain: "always-503"
    respond:
      status: 503
      error: "overloaded (mock)"
  - name: always-401
    when:
      messages_contain: "always-401"
    respond:
      status: 401
      error: "invalid api key (mock)"
  - name: always-400
    when:
      messages_contain: "always-400"
    respond:
      status: 400
      error: "bad request (mock)"
  - name: tools-only
    when:
      messages_contain: "tools-only"
    respond:
      content: ""
      tool_calls:
        - name: lookup
          arguments: {"q": 1}
  - name: answer
    when:
      messages_contain: "answer-me"
    respond:
      content: "forty-two"
"""

PROVIDERS = ["openai", "anthropic", "litellm", "litellm-uri", "litellm-anthropic"]
# What each provider books its requests under (result.usage.by_model).
BOOKED = {
    "openai": "gpt-x",
    "anthropic": "claude-x",
    "litellm": "openai/gpt-x",
    "litellm-uri": "openai/gpt-x",
    "litellm-anthropic": "anthropic/claude-x",
}
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_LOOPBACK = "127.0.0.1,localhost"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeLLM:
    """A running fakellm server."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.root = f"http://127.0.0.1:{port}"
        self.log = log
        # urllib without the environment's proxies: straight to loopback.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def stats(self) -> dict[str, int]:
        """Requests so far, by the rule that answered them."""
        with self._opener.open(f"{self.root}/_fakellm/stats", timeout=5) as response:
            data: dict[str, Any] = json.load(response)
        return dict(data["by_rule"])

    def answered(self) -> bool:
        try:
            self.stats()
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fakellm(tmp_path_factory: pytest.TempPathFactory, refusing_port: int) -> Iterator[FakeLLM]:
    root = tmp_path_factory.mktemp("fakellm")
    (root / "fakellm.yaml").write_text(RULES)
    env = dict(os.environ)
    env.update({"NO_PROXY": _LOOPBACK, "no_proxy": _LOOPBACK})
    env.update({name: f"http://127.0.0.1:{refusing_port}" for name in _PROXY_VARS})
    # fakellm counts tokens with tiktoken, which downloads its encoding on
    # first use: point it at the copy litellm bundles (else the download
    # is refused by the proxy above and fakellm falls back to len // 4).
    spec = importlib.util.find_spec("litellm")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location) / "litellm_core_utils" / "tokenizers"
        if bundled.is_dir():
            env["TIKTOKEN_CACHE_DIR"] = str(bundled)
    log = root / "fakellm.log"
    for _ in range(3):  # the free port may be taken between choosing and binding it
        port = _free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "fakellm.cli", "serve", "--host", "127.0.0.1"),
                    *("--port", str(port), "--config", "fakellm.yaml"),
                ],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = FakeLLM(proc, port, log)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and not server.answered():
            time.sleep(0.05)
        if proc.poll() is None and server.answered():
            break
        proc.kill()
        proc.wait()
    else:
        raise AssertionError(f"fakellm did not start: {log.read_text()}")
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch, refusing_port: int) -> None:
    """The code under test reaches loopback directly and nothing else at all."""
    monkeypatch.setenv("NO_PROXY", _LOOPBACK)
    monkeypatch.setenv("no_proxy", _LOOPBACK)
    for name in _PROXY_VARS:
        monkeypatch.setenv(name, f"http://127.0.0.1:{refusing_port}")
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def make(fakellm: FakeLLM) -> AsyncIterator[Any]:
    """``make(provider)``: a model of that kind talking to the fakellm server."""
    opened: list[Any] = []

    def build(provider: str) -> Any:
        llm: Any
        if provider == "openai":
            llm = OpenAIChat("gpt-x", base_url=f"{fakellm.root}/v1")
        elif provider == "anthropic":
            llm = AnthropicChat("claude-x", base_url=fakellm.root)
        elif provider == "litellm":
            llm = LiteLLMChat("openai/gpt-x", base_url=f"{fakellm.root}/v1")
        elif provider == "litellm-uri":
            llm = ff.llm.from_uri(f"litellm:openai/gpt-x@{fakellm.root}/v1")
        elif provider == "litellm-anthropic":
            llm = LiteLLMChat("anthropic/claude-x", base_url=fakellm.root)
        else:  # pragma: no cover
            raise AssertionError(provider)
        opened.append(llm)
        return llm

    yield build
    for llm in opened:
        close = getattr(llm, "aclose", None)
        if close is not None:
            await close()


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_fan_out_gets_the_rules_answers_and_counts_the_requests(
    provider: str, fakellm: FakeLLM, make: Any
) -> None:
    llm = make(provider)
    before = fakellm.stats()
    tasks = [ff.llm.prompt_task(f"q{i}", llm, f"{provider} answer-me {i}") for i in range(4)]
    result = await ff.fan_out(tasks, strategy=ff.AllOrNothing())
    assert result.value == {f"q{i}": "forty-two" for i in range(4)}
    assert _delta(before, fakellm.stats()) == {"answer": 4}
    usage = result.usage
    assert usage is not None and set(usage.by_model) == {BOOKED[provider]}
    booked = usage.by_model[BOOKED[provider]]
    assert booked.requests == 4  # not counted twice through from_uri
    assert booked.input_tokens > 0 and booked.output_tokens > 0
    assert usage.wasted == {}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_429_is_rate_limited(provider: str, fakellm: FakeLLM, make: Any) -> None:
    llm = make(provider)
    before = fakellm.stats()
    with pytest.raises(ff.RateLimited):
        await llm.complete(f"{provider} always-429")
    assert _delta(before, fakellm.stats()) == {"always-429": 1}  # no retries of its own


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_429_once_is_retried_by_fanflow(provider: str, fakellm: FakeLLM, make: Any) -> None:
    llm = make(provider)
    before = fakellm.stats()
    # fakellm counts turns per first user message: one prompt per provider.
    task = ff.llm.prompt_task("q", llm, f"{provider} once-429")
    result = await ff.fan_out([task], retry=ff.Retry(attempts=3, backoff=0.001))
    assert result.value == {"q": "recovered"}
    assert result.results[0].attempts == 2
    assert _delta(before, fakellm.stats()) == {"once-429": 1, "recovered": 1}
    assert result.usage is not None
    booked = result.usage.by_model[BOOKED[provider]]
    assert booked.requests == 2 and booked.output_tokens > 0  # the 429 spent no output


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [500, 503])
async def test_a_5xx_is_transient(provider: str, status: int, fakellm: FakeLLM, make: Any) -> None:
    llm = make(provider)
    before = fakellm.stats()
    with pytest.raises(ff.TransientError) as caught:
        await llm.complete(f"{provider} always-{status}")
    assert not isinstance(caught.value, ff.RateLimited)
    assert _delta(before, fakellm.stats()) == {f"always-{status}": 1}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [400, 401])
async def test_a_4xx_is_permanent_and_not_retried(
    provider: str, status: int, fakellm: FakeLLM, make: Any
) -> None:
    llm = make(provider)
    before = fakellm.stats()
    task = ff.llm.prompt_task("q", llm, f"{provider} always-{status}")
    result = await ff.fan_out(
        [task], retry=ff.Retry(attempts=3, backoff=0.001), raise_on_failure=False
    )
    assert not result.ok
    assert isinstance(result.results[0].error, ff.PermanentError)
    assert result.results[0].attempts == 1
    assert _delta(before, fakellm.stats()) == {f"always-{status}": 1}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "litellm", "litellm-anthropic"])
async def test_tool_calls_from_a_foreign_server_are_read(
    provider: str, fakellm: FakeLLM, make: Any
) -> None:
    # fakellm answers with a tool call and no text: each provider reads it
    # into Completion.tool_calls (an agent's next step), not as an empty answer.
    llm = make(provider)
    tool = {"name": "lookup", "description": "Look up.", "parameters": {"type": "object"}}
    completion = await llm.complete(f"{provider} tools-only", tools=[tool])
    assert completion.text == ""
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("lookup", {"q": 1})]


async def test_the_key_goes_to_the_server_named_for_it_and_never_into_errors(
    fakellm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-SECRET-1234567890abcdef"
    monkeypatch.setenv("FOREIGN_TEST_KEY", secret)
    llm = LiteLLMChat("openai/gpt-x", base_url=f"{fakellm.root}/v1", api_key_env="FOREIGN_TEST_KEY")
    assert (await llm.complete("litellm-key answer-me")).text == "forty-two"
    for status in (401, 429, 500):
        with pytest.raises(ff.ServiceError) as caught:
            await llm.complete(f"litellm-key always-{status}")
        assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert secret not in repr(llm) and secret not in json.dumps(llm.__fanflow_fingerprint__())
