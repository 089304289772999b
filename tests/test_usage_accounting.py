"""Spend accounting: refused requests cost a request, not tokens; the synthesis is counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

import fanflow as ff
from fanflow.llm._base import Completion, _Metered, estimate_tokens, to_messages
from fanflow.testing import Latency, ScriptedLLM, SimConfig, Simulator

pytest.importorskip("openai")

PROMPTS = ["What is six times seven?", "Name a prime above ninety.", "Spell the word cat."]
FAST = Latency(median=0.0)


def _estimate(prompt: str) -> int:
    return estimate_tokens(to_messages(prompt))


class _RefuseThenHang:
    """A model whose first request is refused (429) and whose later ones never answer."""

    name = "m"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, prompt: str, **params: object) -> Completion:
        _Metered(self.name, to_messages(prompt))  # books the request, as providers do
        self.calls += 1
        if self.calls == 1:
            raise ff.RateLimited("429")
        await asyncio.sleep(30)
        raise AssertionError("not reached: the attempt times out")


async def _spend(config: SimConfig) -> tuple[ff.Usage, int]:
    """Three prompts against a simulator: what fanflow counted, and the requests it served."""
    async with Simulator(config) as sim:
        llm = ff.llm.from_uri(f"sim:m@{sim.url}")
        try:
            result = await ff.fan_out(
                [ff.llm.prompt_task(f"q{i}", llm, p) for i, p in enumerate(PROMPTS)],
                retry=ff.Retry(attempts=4, backoff=0.001, max_backoff=0.01),
            )
        finally:
            await llm.aclose()  # type: ignore[attr-defined]
        assert result.usage is not None
        return result.usage, sim.stats["requests"]


@pytest.mark.parametrize("status", [429, 500])
async def test_refused_requests_count_as_requests_not_tokens(status: int) -> None:
    clean, clean_served = await _spend(SimConfig(latency=FAST))
    usage, served = await _spend(SimConfig(latency=FAST, fail_first=2, fail_status=status))
    assert (clean_served, served) == (3, 5)
    assert usage.requests == served  # every request the server saw is counted...
    assert usage.input_tokens == clean.input_tokens  # ...but the refused ones cost no tokens
    assert usage.output_tokens == clean.output_tokens
    assert usage.wasted == {}  # refused, not cancelled: nothing was cut off in flight


async def test_a_refused_then_answered_request_in_one_attempt_books_one_answer() -> None:
    llm = ScriptedLLM("m").enqueue(ff.RateLimited("429"), "42")

    async def ask_twice() -> str:
        with contextlib.suppress(ff.RateLimited):  # the task's own retry, in one attempt
            await llm.complete("question?")
        return (await llm.complete("question?")).text

    result = await ff.fan_out([ff.Task("q", ask_twice)])
    assert result.usage is not None
    use = result.usage.by_model["m"]
    assert use.requests == 2
    assert use.input_tokens == _estimate("question?")  # the answered request only


async def test_retried_attempts_book_the_refusal_as_a_request_only() -> None:
    llm = ScriptedLLM("m").enqueue(ff.TransientError("503"), ff.RateLimited("429"), "42")
    result = await ff.fan_out(
        [ff.llm.prompt_task("q", llm, "question?")], retry=ff.Retry(attempts=3, backoff=0.001)
    )
    assert result["q"].value == "42" and result["q"].attempts == 3
    assert result.usage is not None
    use = result.usage.by_model["m"]
    assert (use.requests, use.input_tokens) == (3, _estimate("question?"))


async def test_requests_cancelled_in_flight_still_waste_their_estimate() -> None:
    prompt = "a prompt of some length"
    estimate = _estimate(prompt)
    result = await ff.fan_out(
        [
            ff.llm.prompt_task("fast", ScriptedLLM("fast", default="1"), prompt),
            ff.llm.prompt_task("slow", ScriptedLLM("slow", default="2", delay=30), prompt),
        ],
        strategy=ff.FirstN(1),
    )
    assert result.usage is not None
    assert result.usage.wasted["slow"] == ff.ModelUsage(1, estimate, 0)
    assert "fast" not in result.usage.wasted
    # Refused first, then the retry is cut off by its timeout: only the cut-off one is waste.
    llm = _RefuseThenHang()
    hung = await ff.fan_out(
        [ff.llm.prompt_task("q", llm, prompt, timeout=0.1)],
        retry=ff.Retry(attempts=2, backoff=0.001, retry_timeouts=False),
        raise_on_failure=False,
    )
    assert [a.status.value for a in hung["q"].history] == ["error", "timeout"]
    assert hung.usage is not None
    assert hung.usage.by_model["m"] == ff.ModelUsage(2, estimate, 0)
    assert hung.usage.wasted["m"] == ff.ModelUsage(1, estimate, 0)


async def test_run_report_counts_the_synthesis_call(tmp_path: Path) -> None:
    from fanflow._cli.workflow import _load, _run
    from fanflow._workflow._report import render_html

    async with Simulator(SimConfig(latency=FAST)) as sim:
        workflow = tmp_path / "wf.yaml"
        workflow.write_text(
            f"name: acct\nllm: 'sim:m@{sim.url}'\n"
            "tasks:\n"
            "  a: {prompt: 'first question'}\n"
            "  b: {prompt: 'second question'}\n"
            "  c: {prompt: 'third question'}\n"
            "aggregate:\n  synthesize: {}\n"
        )
        plan = _load(str(workflow), ())
        code, report = await _run(plan)
        served = sim.stats["requests"]
    assert code == 0, report
    assert served == 4  # three tasks and the synthesis

    def requests(usage: dict[str, object]) -> int:
        by_model = usage["by_model"]
        assert isinstance(by_model, dict)
        return sum(u["requests"] for u in by_model.values())

    assert requests(report["result"]["usage"]) == 3  # the fan-out's own, unchanged
    assert requests(report["aggregate"]["usage"]) == 1
    assert requests(report["usage"]) == served
    assert report["usage"]["input_tokens"] == (
        report["result"]["usage"]["input_tokens"] + report["aggregate"]["usage"]["input_tokens"]
    )
    render_html(json.loads(json.dumps(report)))  # the report still renders (fanflow report)
