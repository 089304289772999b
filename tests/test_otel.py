"""OpenTelemetry: one span per fan-out, a child span per attempt."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import fanflow as ff
from fanflow.otel import Tracing


async def flaky(tries: list[int]) -> str:
    tries.append(1)
    await asyncio.sleep(0.01)
    if len(tries) < 2:
        raise ff.TransientError("first try fails")
    return "ok"


async def test_spans_per_fan_out_and_attempt() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[str] = []
    tracing = Tracing(provider.get_tracer("test"), then=lambda e: seen.append(type(e).__name__))
    tasks = [
        ff.Task("retried", flaky, args=([],)),
        ff.Task("hung", asyncio.sleep, args=(10,), timeout=0.02),
    ]
    result = await ff.fan_out(
        tasks, retry=ff.Retry(attempts=2, backoff=0.001, retry_timeouts=False), on_event=tracing
    )
    spans = exporter.get_finished_spans()
    (parent,) = [s for s in spans if s.name == "fanflow.fan_out"]
    children = [s for s in spans if s.name == "fanflow.attempt"]
    assert len(children) == sum(r.attempts for r in result.results) == 3
    assert all(
        c.parent is not None and c.parent.span_id == parent.context.span_id for c in children
    )
    by = {(c.attributes["fanflow.task"], c.attributes["fanflow.attempt"]): c for c in children}
    assert by[("retried", 1)].status.status_code is StatusCode.ERROR
    assert by[("retried", 2)].attributes["fanflow.status"] == "ok"
    assert by[("hung", 1)].attributes["fanflow.status"] == "timeout"
    assert parent.attributes["fanflow.tasks"] == 2 and parent.attributes["fanflow.ok"] is True
    assert parent.start_time <= min(c.start_time for c in children)
    assert parent.end_time >= max(c.end_time for c in children)
    assert by[("retried", 1)].end_time <= by[("retried", 2)].start_time
    assert seen[-1] == "FanOutFinished"  # events passed on
