"""The needs path at scale: long chains and cycles without recursion, and a linear audit."""

from __future__ import annotations

import pytest

import fanflow as ff
from fanflow._core._graph import check_graph
from fanflow._policies import _audit

CHAIN = 20_000


def chain_needs(names: list[str]) -> dict[str, list[str]]:
    # Listed last task first: a depth-first walk in this order goes the whole
    # chain deep at once, which is what overflowed recursive code.
    return {names[i]: [names[i - 1]] for i in range(len(names) - 1, 0, -1)}


async def test_a_long_chain_runs_in_order_without_recursion() -> None:
    names = [f"t{i}" for i in range(CHAIN)]
    order: list[str] = []

    def make(name: str) -> ff.Task:
        async def step() -> None:
            order.append(name)

        return ff.Task(name, step, writes="log", needs=needs.get(name, ()))

    needs = chain_needs(names)  # ordered writers: no conflict
    result = await ff.fan_out([make(n) for n in names])
    assert result.ok
    assert order == names


async def test_a_failure_at_the_head_skips_a_long_chain_without_recursion() -> None:
    names = [f"t{i}" for i in range(CHAIN)]

    async def fail() -> None:
        raise RuntimeError("head")

    async def step() -> None:
        return None

    needs = chain_needs(names)
    tasks = [ff.Task(names[0], fail), *(ff.Task(n, step, needs=needs[n]) for n in names[1:])]
    result = await ff.fan_out(tasks, raise_on_failure=False)
    by_name = {r.name: r for r in result.results}
    assert by_name["t0"].status is ff.Status.ERROR
    assert all(by_name[n].status is ff.Status.SKIPPED for n in names[1:])
    assert by_name["t1"].reason == "never started: it needs 't0', which ended error"
    assert by_name[names[-1]].reason == (
        f"never started: it needs {names[-2]!r}, which ended skipped"
    )


async def test_a_cycle_of_two_is_spelled_out() -> None:
    async def step() -> None:
        return None

    tasks = [ff.Task("a", step, needs="b"), ff.Task("b", step, needs="a")]
    with pytest.raises(ValueError, match=r"^the needs form a cycle: a -> b -> a$"):
        await ff.fan_out(tasks)


def test_a_cycle_of_ten_thousand_is_spelled_out() -> None:
    n = 10_000
    names = [f"c{i}" for i in range(n)]
    needs = {names[i]: [names[(i + 1) % n]] for i in range(n)}
    needs["lead"] = [names[0]]  # leads into the cycle, is not on it
    with pytest.raises(ValueError, match=r"^the needs form a cycle: c0 -> c1 -> ") as caught:
        check_graph(["lead", *names], needs)
    assert str(caught.value) == "the needs form a cycle: " + " -> ".join([*names, names[0]])


def test_the_audit_keeps_no_transitive_closure() -> None:
    assert not hasattr(_audit, "_ancestors")


def test_ordered_writers_on_a_long_chain_cost_linear_work() -> None:
    names = [f"t{i}" for i in range(CHAIN)]
    order = _audit._Order(chain_needs(names))
    assert order.unordered(names) == []
    assert order.searched <= 3 * CHAIN  # a closure would be ~CHAIN**2 / 2


def test_two_unordered_writers_among_many_ordered_are_refused_in_linear_work() -> None:
    names = [f"t{i}" for i in range(CHAIN)]
    needs = chain_needs(names)
    needs["x"] = [names[-1]]
    needs["y"] = [names[-1]]  # x and y both follow the chain, in no order

    async def step() -> None:
        return None

    tasks = [ff.Task(n, step, writes="r") for n in [*names, "x", "y"]]
    order = _audit._Order(needs)
    assert order.unordered([t.name for t in tasks]) == ["x", "y"]
    assert order.searched <= 5 * CHAIN  # up to the stray pair, then one pass each way
    (conflict,) = ff.audit(tasks, needs).conflicts
    assert conflict.kind == "write/write"
    assert conflict.tasks == ("x", "y")


def test_two_writers_in_parallel_branches_are_refused_and_ordered_ones_accepted() -> None:
    async def step() -> None:
        return None

    # a -> (b, c) -> d: b and c are unordered; a and d are ordered with all.
    needs = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
    writes = [ff.Task(n, step, writes="r") for n in "abcd"]
    (conflict,) = ff.audit(writes, needs).conflicts
    assert conflict.tasks == ("b", "c")
    ordered = [ff.Task(n, step, writes="r") for n in "abd"]
    assert ff.audit(ordered, needs).ok
