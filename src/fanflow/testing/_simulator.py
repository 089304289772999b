"""A simulated LLM service on loopback HTTP, for tests, benchmarks and the demo.

Serves the OpenAI chat-completions API (``POST /v1/chat/completions``,
``GET /v1/models``) and Anthropic's Messages API (``POST /v1/messages``) with
aiohttp, so both SDK providers are exercised over real HTTP. Latency is drawn
from a lognormal distribution; errors and 429s (with ``Retry-After``) come at
configured rates; answers follow scripted distributions per prompt pattern,
drawn reproducibly from ``(seed, prompt, request seed)``. Every response's
model name starts with ``simulated:``: nothing here is a real model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Latency", "Script", "SimConfig", "Simulator", "serve"]


@dataclasses.dataclass(frozen=True)
class Latency:
    """Response time: lognormal with this median (seconds) and sigma, clamped to [low, high]."""

    median: float = 0.05
    sigma: float = 0.5
    low: float = 0.0
    high: float = 30.0

    def draw(self, rng: random.Random) -> float:
        if self.median <= 0:
            return 0.0
        value = rng.lognormvariate(math.log(self.median), self.sigma) if self.sigma else self.median
        return min(self.high, max(self.low, value))


@dataclasses.dataclass(frozen=True)
class Script:
    """Answers for prompts that match ``pattern`` (a regular expression, searched).

    ``answers`` maps each answer to its probability (they are normalised),
    e.g. ``{"42": 0.7, "41": 0.2, "I am not sure": 0.1}``.
    """

    pattern: str
    answers: Mapping[str, float]

    def __post_init__(self) -> None:
        re.compile(self.pattern)
        if not self.answers or any(w < 0 for w in self.answers.values()):
            raise ValueError(f"Script({self.pattern!r}) needs answers with weights >= 0")


@dataclasses.dataclass
class SimConfig:
    """How the simulated service behaves.

    Attributes:
        latency: the response-time distribution.
        error_rate: share of requests answered with HTTP 500.
        rate_limit_rate: share of requests answered with HTTP 429.
        retry_after: the ``Retry-After`` seconds sent with each 429.
        capacity: answer 429 whenever more requests than this are in flight.
        fail_first: answer the first this-many requests with ``fail_status``
            (deterministic failures for tests).
        fail_status: the status for ``fail_first`` (429, 500, 400...).
        scripts: answer distributions, first matching pattern wins.
        default_answer: the answer when no script matches (``{prompt}`` is
            replaced by the prompt's first 60 characters).
        seed: makes answers, latencies and failures reproducible.
    """

    latency: Latency = dataclasses.field(default_factory=Latency)
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 0.05
    capacity: int | None = None
    fail_first: int = 0
    fail_status: int = 429
    scripts: Sequence[Script] = ()
    default_answer: str = "Simulated answer to: {prompt}"
    seed: int = 0

    def answer(self, prompt: str, sample: object) -> str:
        for script in self.scripts:
            if re.search(script.pattern, prompt):
                rng = random.Random(f"{self.seed}|{prompt}|{sample}")
                choices = list(script.answers)
                return rng.choices(choices, weights=[script.answers[c] for c in choices])[0]
        return self.default_answer.replace("{prompt}", prompt[:60])


class _Service:
    """The request handlers and their counters."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.stats: Counter[str] = Counter()
        self._sample_counter: Counter[str] = Counter()

    def _failure(self) -> tuple[int, str] | None:
        c = self.config
        if self.stats["requests"] <= c.fail_first:
            return c.fail_status, f"simulated failure {self.stats['requests']} of {c.fail_first}"
        if c.capacity is not None and self.in_flight > c.capacity:
            return 429, "simulated overload: too many requests in flight"
        roll = self.rng.random()
        if roll < c.rate_limit_rate:
            return 429, "simulated rate limit"
        if roll < c.rate_limit_rate + c.error_rate:
            return 500, "simulated server error"
        return None

    async def _serve(self, prompt: str, sample: object) -> tuple[int, str]:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.stats["requests"] += 1
        try:
            failure = self._failure()
            await asyncio.sleep(self.config.latency.draw(self.rng) / (4 if failure else 1))
            if failure is not None:
                self.stats[str(failure[0])] += 1
                return failure
            if sample is None:
                self._sample_counter[prompt] += 1
                sample = self._sample_counter[prompt]
            self.stats["200"] += 1
            return 200, self.config.answer(prompt, sample)
        finally:
            self.in_flight -= 1


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _prompt_text(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return None
    parts = []
    for m in messages:
        if not isinstance(m, dict) or "content" not in m or "role" not in m:
            return None
        content = m["content"]
        if isinstance(content, list):  # content blocks
            content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
        parts.append(str(content))
    return "\n".join(parts)


def _app(service: _Service) -> Any:
    from aiohttp import web

    def openai_error(status: int, message: str) -> web.Response:
        kind = {429: "rate_limit_error"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        headers = {"Retry-After": f"{service.config.retry_after:g}"} if status == 429 else None
        body = {"error": {"message": message, "type": kind, "code": kind}}
        return web.json_response(body, status=status, headers=headers)

    def anthropic_error(status: int, message: str) -> web.Response:
        kind = {429: "rate_limit_error"}.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        headers = {"retry-after": f"{service.config.retry_after:g}"} if status == 429 else None
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return web.json_response(body, status=status, headers=headers)

    async def read_json(request: web.Request) -> dict[str, Any] | None:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    async def chat(request: web.Request) -> web.Response:
        data = await read_json(request)
        if data is None:
            return openai_error(400, "the body must be a JSON object")
        model = data.get("model")
        prompt = _prompt_text(data.get("messages"))
        if not isinstance(model, str) or not model:
            return openai_error(400, "'model' is required")
        if prompt is None:
            return openai_error(400, "'messages' must be a non-empty list of {role, content}")
        status, text = await service._serve(prompt, data.get("seed"))
        if status != 200:
            return openai_error(status, text)
        return web.json_response(
            {
                "id": f"simcmpl-{service.stats['requests']}",
                "object": "chat.completion",
                "created": 0,
                "model": f"simulated:{model}",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": _tokens(prompt),
                    "completion_tokens": _tokens(text),
                    "total_tokens": _tokens(prompt) + _tokens(text),
                },
            }
        )

    async def messages(request: web.Request) -> web.Response:
        data = await read_json(request)
        if data is None:
            return anthropic_error(400, "the body must be a JSON object")
        model = data.get("model")
        prompt = _prompt_text(data.get("messages"))
        if not isinstance(model, str) or not model:
            return anthropic_error(400, "model: field required")
        if not isinstance(data.get("max_tokens"), int):
            return anthropic_error(400, "max_tokens: field required")
        if prompt is None:
            return anthropic_error(400, "messages: must be a non-empty list")
        system = data.get("system")
        if isinstance(system, str) and system:
            prompt = f"{system}\n{prompt}"
        status, text = await service._serve(prompt, None)
        if status != 200:
            return anthropic_error(status, text)
        return web.json_response(
            {
                "id": f"simmsg_{service.stats['requests']}",
                "type": "message",
                "role": "assistant",
                "model": f"simulated:{model}",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": _tokens(prompt), "output_tokens": _tokens(text)},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "simulated", "object": "model", "owned_by": "fanflow"}],
            }
        )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                **service.stats,
                "in_flight": service.in_flight,
                "peak_in_flight": service.peak_in_flight,
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    return app


def _need_aiohttp() -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError("the simulator needs aiohttp: pip install 'fanflow[sim]'") from exc


class Simulator:
    """Run the simulated service on loopback in the current event loop.

    ``async with Simulator(SimConfig(...)) as sim:`` starts it on a free port
    of 127.0.0.1; ``sim.url`` is the API root to give a provider (e.g.
    ``ff.llm.from_uri(f"sim:my-model@{sim.url}")``), ``sim.stats`` counts
    requests by outcome and ``sim.peak_in_flight`` the most at once.
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0):
        _need_aiohttp()
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self._service = _Service(self.config)
        self._runner: Any = None

    @property
    def url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def stats(self) -> Counter[str]:
        """Requests served, by outcome (``"requests"``, ``"200"``, ``"429"``, ``"500"``)."""
        return self._service.stats

    @property
    def peak_in_flight(self) -> int:
        """The most requests in flight at once."""
        return self._service.peak_in_flight

    async def start(self) -> Simulator:
        """Start serving; returns ``self``."""
        from aiohttp import web

        runner = web.AppRunner(_app(self._service), access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (``fanflow simulate``)."""
    _need_aiohttp()
    from aiohttp import web

    web.run_app(
        _app(_Service(config)),
        host=host,
        port=port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )
