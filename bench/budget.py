"""Spend budgets: 100 concurrent prompt tasks against the simulator (its own process)
under a token budget of 30 % of their total estimate.

Every attempt reserves its estimate before it starts, so the budget can be
overshot by no more than the estimates' error of the attempts in flight.
Two runs: honest estimates (``max_tokens`` covers the answer), and
estimates that undercount the answer (``max_tokens=1``), where the bound
is what is measured.
"""

from __future__ import annotations

import asyncio

import fanflow as ff
from fanflow.llm import prompt_task
from fanflow.testing import SimulatorProcess

Row = tuple[str, str, str, str]


def bench_budget(n: int = 100, share: float = 0.3) -> list[Row]:
    """Spent vs budget, overshoot, the estimates' error, and what was skipped."""
    rows: list[Row] = []
    with SimulatorProcess("--latency", "0.05", "--sigma", "0.2") as sim:
        for label, max_tokens in (("honest estimates", 64), ("answer undercounted", 1)):

            async def run(max_tokens: int = max_tokens) -> tuple[ff.FanInResult, ff.Budget, int]:
                llm = ff.llm.OpenAIChat("m", base_url=sim.url, api_key_env=None)
                tasks = [
                    prompt_task(
                        f"q{i}", llm, f"question {i}: " + "words " * 40, max_tokens=max_tokens
                    )
                    for i in range(n)
                ]
                total = sum(t.tokens for t in tasks)
                budget = ff.Budget(tokens=int(total * share))
                try:
                    result = await ff.fan_out(
                        tasks, budget=budget, max_concurrency=n, strategy=ff.BestEffort()
                    )
                finally:
                    await llm.aclose()
                return result, budget, tasks[0].tokens

            result, budget, estimate = asyncio.run(run())
            assert budget.tokens is not None
            ok = [r for r in result.results if r.ok]
            skipped = [
                r
                for r in result.results
                if r.status is ff.Status.SKIPPED and "budget" in (r.reason or "")
            ]
            spent = budget.spent.tokens
            # All attempts that ran were in flight together (max_concurrency=n).
            reserved = estimate * len(ok)
            error = spent - reserved  # > 0: the estimates undercounted
            overshoot = max(spent - budget.tokens, 0)
            strategy_ok = result.ok and len(result.value) == len(ok)
            rows += [
                (
                    "budget",
                    f"{label}: spent vs budget",
                    f"{spent:,.0f} / {budget.tokens:,.0f} tokens ({spent / budget.tokens:.1%})",
                    f"{n} concurrent prompt tasks, budget {share:.0%} of their estimates; "
                    f"{len(ok)} ran, {len(skipped)} skipped with reason 'budget'",
                ),
                (
                    "budget",
                    f"{label}: overshoot",
                    f"{overshoot:,.0f} tokens",
                    f"estimation error of the {len(ok)} attempts in flight: {error:+,.0f} tokens "
                    f"(real {spent:,.0f} vs reserved {reserved:,.0f}); "
                    f"overshoot <= max(error, 0): {overshoot <= max(error, 0)}",
                ),
                (
                    "budget",
                    f"{label}: strategy on what fit",
                    "ok" if strategy_ok else "FAILED",
                    f"BestEffort returned {len(result.value)} values, "
                    f"{len(result.results)} results kept",
                ),
            ]
    return rows


if __name__ == "__main__":
    for row in bench_budget():
        print(" | ".join(row))
