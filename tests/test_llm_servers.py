"""The SDK providers against loopback servers that misbehave on purpose.

Each server here is a small aiohttp app bound to 127.0.0.1 on a free port;
the official ``openai`` and ``anthropic`` SDKs talk to it over real HTTP.
Every test runs for both providers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

import fanflow as ff
from fanflow.llm import AnthropicChat, OpenAIChat, _sdk, from_uri

PROVIDERS = ["openai", "anthropic"]
REAL_KEY = {"openai": "sk-REAL-openai-0123456789abcdef", "anthropic": "sk-ant-REAL-0123456789abcd"}
MY_KEY = "my-named-key-for-this-server"
Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """A loopback HTTP server answering every request with ``reply``; it records headers."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({k.lower(): v for k, v in request.headers.items()})
        self.paths.append(request.path)
        await request.read()
        return await self.reply(request)

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def url(self, provider: str) -> str:
        # OpenAI-compatible servers live under /v1; Anthropic's SDK adds /v1 itself.
        root = f"http://127.0.0.1:{self.port}"
        return f"{root}/v1" if provider == "openai" else root

    def keys_seen(self) -> list[str]:
        return [h.get("authorization", "") + "|" + h.get("x-api-key", "") for h in self.requests]


def answer(provider: str, text: str = "hello", usage: dict[str, Any] | None = None) -> Any:
    """A well-formed answer body of ``provider``'s API."""
    if provider == "openai":
        return {
            "id": "c1",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": usage if usage is not None else {"prompt_tokens": 3, "completion_tokens": 5},
        }
    return {
        "id": "m1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": usage if usage is not None else {"input_tokens": 3, "output_tokens": 5},
    }


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return reply


def raw_reply(text: str, content_type: str, status: int = 200) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(body=text.encode(), status=status, content_type=content_type)

    return reply


def model(provider: str, url: str | None, **options: Any) -> Any:
    cls = OpenAIChat if provider == "openai" else AnthropicChat
    return cls("m", base_url=url, **options)


@pytest.fixture(autouse=True)
def real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The providers' own variables hold "real" keys; no SDK base-URL override."""
    monkeypatch.setenv("OPENAI_API_KEY", REAL_KEY["openai"])
    monkeypatch.setenv("ANTHROPIC_API_KEY", REAL_KEY["anthropic"])
    monkeypatch.setenv("MY_KEY", MY_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setattr(_sdk, "_warned", set(), raising=False)


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    """Models a test appends here are closed after it (their pools hold sockets)."""
    models: list[Any] = []
    yield models
    for llm in models:
        await llm.aclose()


# --- one malformed usage field ------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("reported", "counted"),
    [("many", None), ("12", 12), (-4, None), (1e300, None), ([1], None), (True, None)],
)
async def test_malformed_usage_never_fails_a_task(
    provider: str,
    reported: Any,
    counted: int | None,
    closing: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    field, out_field = (
        ("prompt_tokens", "completion_tokens")
        if provider == "openai"
        else ("input_tokens", "output_tokens")
    )
    body = answer(provider, usage={field: reported, out_field: 5})
    async with Server(json_reply(body)) as server:
        llm = model(provider, server.url(provider))
        closing.append(llm)
        tasks = [ff.llm.prompt_task(f"q{i}", llm, "a question of some length") for i in range(3)]
        with caplog.at_level(logging.WARNING, logger="fanflow.llm"):
            result = await asyncio.wait_for(ff.fan_out(tasks, raise_on_failure=False), 20)
    assert result.ok and [r.status for r in result.results] == ["ok"] * 3
    assert [r.value for r in result.results] == ["hello"] * 3
    usage = result.usage
    assert usage is not None and usage.by_model["m"].requests == 3
    assert usage.by_model["m"].output_tokens == 15  # what could be counted was
    estimate = ff.llm.estimate_tokens([{"role": "user", "content": "a question of some length"}])
    assert usage.by_model["m"].input_tokens == 3 * (estimate if counted is None else counted)
    warnings = [r for r in caplog.records if field in r.getMessage()]
    assert len(warnings) == (0 if counted is not None else 1)  # once, not per request


# --- bad 200 answers ----------------------------------------------------------------------

# (name, body per provider or raw (text, content type), expected kind)
BAD_JSON: list[tuple[str, dict[str, Any], type[ff.ServiceError]]] = [
    ("empty object", {"openai": {}, "anthropic": {}}, ff.PermanentError),
    (
        "empty choices",
        {"openai": {"choices": []}, "anthropic": {"content": []}},
        ff.TransientError,
    ),
    (
        "null choices",
        {"openai": {"choices": None}, "anthropic": {"content": None}},
        ff.TransientError,
    ),
    (
        "null content",
        {
            "openai": {"choices": [{"message": {"role": "assistant", "content": None}}]},
            "anthropic": {"content": [{"type": "text", "text": None}]},
        },
        ff.TransientError,
    ),
    ("a list", {"openai": [1, 2], "anthropic": [1, 2]}, ff.PermanentError),
]
BAD_RAW: list[tuple[str, str, str]] = [
    ("invalid json", '{"choices": [{"message": ', "application/json"),
    ("html", "<html><body><h1>502 Bad Gateway</h1> nginx</body></html>", "text/html"),
    ("plain text", "upstream connect error or disconnect/reset before headers", "text/plain"),
    ("empty", "", "application/json"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("case", "bodies", "kind"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
async def test_a_200_without_an_answer_is_an_error_not_ok(
    provider: str, case: str, bodies: dict[str, Any], kind: type, closing: list[Any]
) -> None:
    async with Server(json_reply(bodies[provider])) as server:
        llm = model(provider, server.url(provider))
        closing.append(llm)
        with pytest.raises(ff.ServiceError) as info:
            await asyncio.wait_for(llm.complete("hi"), 20)
    assert type(info.value) is kind, str(info.value)
    assert str(info.value).startswith(f"{provider}: HTTP 200 but ")
    assert "body: '" in str(info.value)  # a snippet of what came back


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("case", "text", "content_type"), BAD_RAW, ids=[c[0] for c in BAD_RAW])
async def test_a_200_that_is_not_json_is_transient_with_a_snippet(
    provider: str, case: str, text: str, content_type: str, closing: list[Any]
) -> None:
    async with Server(raw_reply(text, content_type)) as server:
        llm = model(provider, server.url(provider))
        closing.append(llm)
        with pytest.raises(ff.ServiceError) as info:
            await asyncio.wait_for(llm.complete("hi"), 20)
    assert type(info.value) is ff.TransientError, repr(info.value)
    message = str(info.value)
    assert message.startswith(f"{provider}: HTTP 200 but ")
    assert text[:20] in message
    if case == "html":
        assert "HTML" in message


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_bad_body_echoing_the_key_never_shows_it(provider: str, closing: list[Any]) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        sent = request.headers.get("authorization", "") + " " + request.headers.get("x-api-key", "")
        return web.Response(text=f"<html>you sent {sent}</html>", content_type="text/html")

    async with Server(echo) as server:
        llm = model(provider, server.url(provider), api_key_env="MY_KEY")
        closing.append(llm)
        with pytest.raises(ff.TransientError) as info:
            await asyncio.wait_for(llm.complete("hi"), 20)
    assert MY_KEY in server.keys_seen()[0]  # the server did get (and echo) it
    assert MY_KEY not in str(info.value) and "you sent" in str(info.value)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_bad_answers_in_a_fan_out_keep_the_rest(provider: str, closing: list[Any]) -> None:
    calls = 0

    async def reply(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        body = {"choices": []} if provider == "openai" else {"content": []}
        return web.json_response(body if calls == 1 else answer(provider))

    async with Server(reply) as server:
        llm = model(provider, server.url(provider))
        closing.append(llm)
        tasks = [ff.llm.prompt_task(f"q{i}", llm, "hi") for i in range(3)]
        result = await asyncio.wait_for(
            ff.fan_out(tasks, max_concurrency=1, raise_on_failure=False), 20
        )
    assert [r.status for r in result.results] == ["error", "ok", "ok"]
    assert isinstance(result.results[0].error, ff.TransientError)
    assert result.usage is not None and result.usage.by_model["m"].output_tokens == 10


# --- gateway headers ----------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"llm_provider-retry-after": "60"}, 60.0),  # LiteLLM's proxy on its rpm 429s
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "2"}, 2.0),
        ({"x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "1m30s"}, 1.0),
        (
            {
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "1m30s",
                "x-ratelimit-remaining-tokens": "0",
            },
            90.0,
        ),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "1e12"}, 600.0),
        ({"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"}, 600.0),
        ({"retry-after": "inf", "llm_provider-retry-after": "7"}, 7.0),
    ],
)
async def test_rate_limit_waits_come_from_gateway_headers_within_bounds(
    provider: str, headers: dict[str, str], wait: float | None, closing: list[Any]
) -> None:
    error = {"error": {"message": "rpm limit", "type": "rate_limit_error"}}
    async with Server(json_reply(error, status=429, headers=headers)) as server:
        llm = model(provider, server.url(provider))
        closing.append(llm)
        with pytest.raises(ff.RateLimited) as info:
            await asyncio.wait_for(llm.complete("hi"), 20)
    assert "HTTP 429" in str(info.value)
    if wait is None:
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after == pytest.approx(wait, abs=0.01)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_retry_after_ceiling_is_the_providers(provider: str, closing: list[Any]) -> None:
    headers = {"retry-after": "1e12"}
    async with Server(json_reply({}, status=429, headers=headers)) as server:
        llm = model(provider, server.url(provider))
        llm.max_retry_after = 30.0
        closing.append(llm)
        with pytest.raises(ff.RateLimited) as info:
            await asyncio.wait_for(llm.complete("hi"), 20)
    assert info.value.retry_after == 30.0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_429_with_a_usage_body_books_no_response_usage(
    provider: str, closing: list[Any]
) -> None:
    # A guard: a rejected request raises before any answer's usage is booked.
    body = answer(provider, usage={"prompt_tokens": 10**6, "input_tokens": 10**6})
    async with Server(json_reply(body, status=429)) as server:
        llm = model(provider, server.url(provider))
        closing.append(llm)
        result = await asyncio.wait_for(
            ff.fan_out([ff.llm.prompt_task("q", llm, "hi")], raise_on_failure=False), 20
        )
    assert isinstance(result["q"].error, ff.RateLimited)
    assert result.usage is not None and result.usage.input_tokens < 100


# --- a slow-drip server -------------------------------------------------------------------


def drip(stop: asyncio.Event) -> Reply:
    """Headers at once, then the body one byte every 0.2 s (never a read timeout)."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = 10_000
        await response.prepare(request)
        for _ in range(100):  # bounded: 20 s at most
            if stop.is_set():
                break
            try:
                await response.write(b" ")
            except (ConnectionError, RuntimeError):
                break
            await asyncio.sleep(0.2)
        return response

    return reply


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_timeout_is_a_total_deadline_against_a_slow_drip(
    provider: str, closing: list[Any]
) -> None:
    stop = asyncio.Event()
    async with Server(drip(stop)) as server:
        llm = model(provider, server.url(provider), timeout=1.0)
        closing.append(llm)
        try:
            with pytest.raises(ff.TransientError) as info:
                async with asyncio.timeout(8):  # the bound on a hang, not a speed claim
                    await llm.complete("hi")
        finally:
            stop.set()
    assert str(info.value) == f"{provider}: no complete answer within timeout=1 s"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_default_timeout_is_finite_and_bad_ones_are_refused(provider: str) -> None:
    assert model(provider, None).timeout == 60.0
    for bad in (0, -1, float("nan"), "5"):
        with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
            model(provider, None, timeout=bad)


# --- where keys go ------------------------------------------------------------------------


def ok_server(provider: str) -> Server:
    return Server(json_reply(answer(provider)))


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_custom_url_never_gets_the_providers_own_key(
    provider: str, closing: list[Any]
) -> None:
    async with ok_server(provider) as server:
        direct = model(provider, server.url(provider))
        via_uri = from_uri(f"{provider}:m@{server.url(provider)}")
        closing.extend([direct, via_uri])
        for llm in (direct, via_uri):
            assert (await asyncio.wait_for(llm.complete("hi"), 20)).text == "hello"
    assert len(server.requests) == 2
    for seen in server.keys_seen():
        assert REAL_KEY[provider] not in seen and "no-key" in seen


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("how", ["api_key_env", "uri"])
async def test_a_named_key_variable_goes_to_that_url(
    provider: str, how: str, closing: list[Any]
) -> None:
    async with ok_server(provider) as server:
        if how == "api_key_env":
            llm = model(provider, server.url(provider), api_key_env="MY_KEY")
        else:
            llm = from_uri(f"{provider}:m@{server.url(provider)}?key_env=MY_KEY")
        closing.append(llm)
        await asyncio.wait_for(llm.complete("hi"), 20)
    (seen,) = server.keys_seen()
    assert MY_KEY in seen and REAL_KEY[provider] not in seen
    assert llm.base_url == server.url(provider)  # the query is fanflow's, not the server's


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_sdks_base_url_variable_does_not_carry_the_key_away(
    provider: str, closing: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ok_server(provider) as server:
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", server.url(provider))
        llm = model(provider, None)
        closing.append(llm)
        assert (await asyncio.wait_for(llm.complete("hi"), 20)).text == "hello"
    (seen,) = server.keys_seen()
    assert REAL_KEY[provider] not in seen


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_named_but_unset_variable_is_a_permanent_error(provider: str) -> None:
    llm = model(provider, "http://127.0.0.1:9/v1", api_key_env="FANFLOW_NO_SUCH_KEY")
    with pytest.raises(ff.PermanentError, match="FANFLOW_NO_SUCH_KEY is not set"):
        await llm.complete("hi")


@pytest.mark.parametrize(
    ("url", "own"),
    [
        (None, True),
        ("https://api.openai.com/v1", True),
        ("https://api.openai.com:443/v1", True),
        ("http://api.openai.com/v1", False),  # plain HTTP
        ("https://api.openai.com.evil.example/v1", False),
        ("https://api.openai.com@evil.example/v1", False),
        ("https://api.openai.com:8443/v1", False),
        ("http://127.0.0.1:9/v1", False),
    ],
)
def test_only_the_providers_own_https_host_gets_its_key(url: str | None, own: bool) -> None:
    llm = OpenAIChat("m", base_url=url)
    assert llm._key(llm._root()) == (REAL_KEY["openai"] if own else "no-key")
    claude = AnthropicChat("m", base_url=url and url.replace("openai", "anthropic"))
    assert claude._key(claude._root()) == (REAL_KEY["anthropic"] if own else "no-key")


def test_a_bad_key_env_in_a_uri_is_refused() -> None:
    with pytest.raises(ValueError, match="key_env"):
        from_uri("openai:m@http://127.0.0.1:8000/v1?key_env=$(whoami)")
    with pytest.raises(ValueError, match="key_env"):
        from_uri("openai:m@http://127.0.0.1:8000/v1?key_env=A&key_env=B")


def test_key_env_keeps_the_rest_of_the_query() -> None:
    llm = from_uri("openai:m@http://127.0.0.1:8000/v1?api-version=2&key_env=MY_KEY")
    assert llm.base_url == "http://127.0.0.1:8000/v1?api-version=2"
    assert llm.api_key_env == "MY_KEY"  # type: ignore[attr-defined]
    assert MY_KEY not in repr(llm)
