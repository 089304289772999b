"""Server-given waits (Retry-After) have a ceiling: they never park a task or a rate limit."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import fanflow as ff

from .conftest import Flaky


async def _healthy_fan_out(limiter: ff.RateLimit, deadline: float) -> ff.FanInResult:
    async def job() -> str:
        return "fine"

    return await ff.fan_out(
        [ff.Task(f"t{i}", job) for i in range(3)],
        rate_limit=limiter,
        deadline=deadline,
        raise_on_failure=False,
    )


# -- the retry's own wait -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after",
    [
        pytest.param(99999.0, id="retry-after-99999"),
        pytest.param(1e12 / 1000.0, id="retry-after-ms-1e12"),
    ],
)
def test_retry_after_is_capped_by_max_backoff(retry_after: float) -> None:
    policy = ff.Retry(backoff=0.1, max_backoff=5.0)
    assert policy.delay(1, ff.RateLimited(retry_after=retry_after)) == 5.0


@pytest.mark.parametrize("retry_after", [math.inf, -math.inf, math.nan, -5.0, "soon"])
def test_unusable_retry_after_is_no_hint(retry_after: Any) -> None:
    policy = ff.Retry(backoff=1.0, max_backoff=5.0, jitter=False)
    error = ff.RateLimited()
    error.retry_after = retry_after
    assert policy.delay(1, error) == 1.0  # plain backoff, as if there were no header


@pytest.mark.looptime
async def test_huge_retry_after_waits_at_most_max_backoff() -> None:
    flaky = Flaky(1, ff.RateLimited("429", retry_after=99999))
    events: list[ff.Event] = []
    result = await ff.fan_out(
        [ff.Task("f", flaky, timeout=10)],
        retry=ff.Retry(backoff=0.01, max_backoff=5.0),
        on_event=events.append,
    )
    assert result["f"].ok and result["f"].attempts == 2
    assert flaky.calls[1] - flaky.calls[0] <= 5.0 + 1e-6
    (retrying,) = [e for e in events if isinstance(e, ff.TaskRetrying)]
    assert retrying.delay == pytest.approx(5.0)


@pytest.mark.looptime
async def test_wait_crossing_the_deadline_ends_the_task_now_with_its_error() -> None:
    error = ff.RateLimited("429", retry_after=99999)
    flaky = Flaky(1, error)
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await ff.fan_out(
        [ff.Task("f", flaky)],
        retry=ff.Retry(max_backoff=30.0),
        deadline=10,
        raise_on_failure=False,
    )
    assert result["f"].status == "error" and result["f"].error is error
    assert len(flaky.calls) == 1
    assert loop.time() - start < 1  # did not sleep towards the deadline


# -- the pause a RateLimited error puts on a shared RateLimit -----------------------------------


@pytest.mark.looptime
async def test_infinite_retry_after_does_not_pause_a_shared_limit_forever() -> None:
    limiter = ff.RateLimit(per_second=100)
    broken = Flaky(5, ff.RateLimited("429", retry_after=math.inf))
    await ff.fan_out(
        [ff.Task("broken", broken)],
        rate_limit=limiter,
        retry=ff.Retry(attempts=2, backoff=0.01),
        raise_on_failure=False,
    )
    # A later fan-out to a healthy server on the same limit is not held back.
    later = await _healthy_fan_out(limiter, deadline=10)
    assert [r.status.value for r in later.results] == ["ok", "ok", "ok"]


@pytest.mark.looptime
async def test_shared_pause_is_capped_by_the_retry_max_backoff() -> None:
    limiter = ff.RateLimit(per_second=100)
    loop = asyncio.get_running_loop()
    refused = Flaky(1, ff.RateLimited("429", retry_after=99999))
    # attempts=1: no retry to sit out the wait, so only the shared pause is left.
    first = await ff.fan_out(
        [ff.Task("f", refused)],
        rate_limit=limiter,
        retry=ff.Retry(attempts=1, max_backoff=2.0),
        raise_on_failure=False,
    )
    assert first["f"].status == "error"
    t0 = loop.time()
    later = await _healthy_fan_out(limiter, deadline=10)
    assert [r.status.value for r in later.results] == ["ok", "ok", "ok"]
    assert loop.time() - t0 <= 2.0 + 1e-6


@pytest.mark.looptime
async def test_shared_pause_without_retry_is_capped_by_max_pause() -> None:
    limiter = ff.RateLimit(per_second=100, max_pause=5.0)
    loop = asyncio.get_running_loop()
    refused = Flaky(1, ff.RateLimited("429", retry_after=1e9))
    first = await ff.fan_out(
        [ff.Task("f", refused)], rate_limit=limiter, retry=None, raise_on_failure=False
    )
    assert first["f"].status == "error"
    t0 = loop.time()
    later = await _healthy_fan_out(limiter, deadline=10)
    assert [r.status.value for r in later.results] == ["ok", "ok", "ok"]
    assert loop.time() - t0 <= 5.0 + 1e-6


def test_rate_limit_pause_has_a_default_ceiling_and_ignores_bad_values() -> None:
    limiter = ff.RateLimit(per_second=1000)
    assert limiter.max_pause == 60.0
    limiter.pause(0.0, 1e9)
    assert limiter.reserve(0.0) == 60.0
    fresh = ff.RateLimit(per_second=1000)
    for bad in (math.inf, math.nan, -3.0):
        fresh.pause(0.0, bad)
    assert fresh.reserve(0.0) == 0.0
    with pytest.raises(ValueError, match="max_pause"):
        ff.RateLimit(per_second=1, max_pause=math.inf)


# -- end to end: a real (loopback) server's headers ---------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"},
            id="http-date-2100",
        ),
        pytest.param({"retry-after-ms": "1e12"}, id="retry-after-ms-1e12"),
        pytest.param({"Retry-After": "99999"}, id="retry-after-99999"),
    ],
)
async def test_server_retry_after_header_does_not_park_the_task(headers: dict[str, str]) -> None:
    pytest.importorskip("openai")
    from aiohttp import web

    served: list[int] = []

    async def chat(request: web.Request) -> web.Response:
        served.append(1)
        if len(served) == 1:
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit"}},
                status=429,
                headers=headers,
            )
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "42"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    llm = ff.llm.from_uri(f"sim:m@http://127.0.0.1:{port}/v1")
    try:
        async with asyncio.timeout(20):  # the old code sat out the header: bound the hang
            result = await ff.fan_out(
                [ff.llm.prompt_task("q", llm, "what?")],
                retry=ff.Retry(attempts=3, backoff=0.01, max_backoff=0.2),
            )
    finally:
        await llm.aclose()  # type: ignore[attr-defined]
        await runner.cleanup()
    assert result["q"].ok and result["q"].attempts == 2
    assert len(served) == 2
