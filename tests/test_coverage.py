"""One coverage rule: FanInResult.coverage and the strategies' confidence agree."""

from __future__ import annotations

import fanflow as ff
from fanflow._core._types import Status


def _result(name: str, ok: bool) -> ff.TaskResult:
    status = Status.OK if ok else Status.ERROR
    return ff.TaskResult(name, status, 1 if ok else None, None if ok else ValueError("x"), 1)


def _fan_in(results: list[ff.TaskResult], weights: dict[str, float]) -> ff.FanInResult:
    return ff.FanInResult(
        value=None,
        results=results,
        ok=False,
        strategy="BestEffort()",
        confidence=0.0,
        elapsed=0.0,
        _weights=weights,
    )


def test_strategy_confidence_and_fan_in_coverage_use_one_rule() -> None:
    # Regression: BestEffort's coverage gave a result whose task was not
    # among the weighted tasks weight 0.0 and counted the total over the
    # tasks; FanInResult.coverage gave it 1.0 and counted over the results.
    tasks = [ff.Task("a", print, weight=2.0), ff.Task("b", print)]
    results = [_result("a", False), _result("b", True), _result("extra", True)]
    strategy = ff.BestEffort(min_success=0)
    strategy.start(tasks)
    verdict = strategy.finish(results)
    fan_in = _fan_in(results, {t.name: t.weight for t in tasks})
    assert verdict.confidence == fan_in.coverage == 0.5  # (1 + 1) / (2 + 1 + 1)


def test_the_rule() -> None:
    from fanflow._core._result import coverage

    ok, bad = _result("a", True), _result("b", False)
    assert coverage([ok, bad], {"a": 3.0, "b": 1.0}) == 0.75
    assert coverage([ok, bad], {}) == 0.5  # a missing weight is 1.0
    assert coverage([ok, bad], {"a": 0.0, "b": 0.0}) == 0.5  # all weightless: by count
    assert coverage([bad], {"b": 0.0}) == 0.0
    assert coverage([ok, bad], {"a": 0.0}) == 0.0  # only weightless tasks succeeded
    assert coverage([], {}) == 0.0
    assert _fan_in([ok, bad], {"a": 3.0}).coverage == 0.75
