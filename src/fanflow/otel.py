"""OpenTelemetry tracing for fan-outs (``pip install 'fanflow[otel]'``).

Pass ``on_event=fanflow.otel.Tracing()``: when the fan-out finishes it emits
one span for it (``fanflow.fan_out``) and a child span per attempt
(``fanflow.attempt``), with the attempts' real start and end times, their
status, and the task, attempt number and hedge flag as attributes. Spans go
to the tracer provider you configured; nothing is sent anywhere by fanflow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._core._events import Event, FanOutFinished

__all__ = ["Tracing"]


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Tracing:
    """An ``on_event`` handler that turns a finished fan-out into spans.

    Args:
        tracer: an OpenTelemetry ``Tracer``; by default
            ``trace.get_tracer("fanflow")``.
        then: another handler to pass every event on to (e.g. progress).

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, tracer: Any = None, then: Callable[[Event], Any] | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError("tracing needs opentelemetry: pip install 'fanflow[otel]'") from exc
        self._trace = trace
        self.tracer = tracer or trace.get_tracer("fanflow")
        self.then = then

    def __call__(self, event: Event) -> Any:
        if isinstance(event, FanOutFinished):
            self._emit(event)
        if self.then is not None:
            return self.then(event)
        return None

    def _emit(self, event: FanOutFinished) -> None:
        trace = self._trace
        result = event.result
        history = [a for task in result.results for a in task.history]
        # The fan-out spans every attempt (its clock and the events' differ
        # by microseconds).
        end = max([event.at, *(a.finished_at for a in history)])
        start = min([event.at - result.elapsed, *(a.started_at for a in history)])
        parent = self.tracer.start_span(
            "fanflow.fan_out",
            start_time=_ns(start),
            attributes={
                "fanflow.strategy": result.strategy,
                "fanflow.ok": result.ok,
                "fanflow.tasks": len(result.results),
                "fanflow.succeeded": len(result.succeeded),
                "fanflow.coverage": result.coverage,
                "fanflow.confidence": result.confidence,
                "fanflow.stopped_early": result.stopped_early,
            },
        )
        context = trace.set_span_in_context(parent)
        for task in result.results:
            for attempt in task.history:
                span = self.tracer.start_span(
                    "fanflow.attempt",
                    context=context,
                    start_time=_ns(attempt.started_at),
                    attributes={
                        "fanflow.task": task.name,
                        "fanflow.attempt": attempt.number,
                        "fanflow.hedge": attempt.hedge,
                        "fanflow.status": attempt.status.value,
                    },
                )
                if attempt.status.value in ("error", "timeout"):
                    span.set_status(trace.Status(trace.StatusCode.ERROR, attempt.error or ""))
                span.end(end_time=_ns(attempt.finished_at))
        if not result.ok:
            parent.set_status(trace.Status(trace.StatusCode.ERROR, result.reason))
        parent.end(end_time=_ns(end))
