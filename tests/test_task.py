from __future__ import annotations

import math

import pytest

import fanflow as ff


async def fetch(x: int) -> int:
    return x


def test_task_defaults() -> None:
    t = ff.Task("a", fetch, args=(1,))
    assert (t.name, t.args, dict(t.kwargs), t.timeout, t.weight, t.idempotent) == (
        "a",
        (1,),
        {},
        None,
        1.0,
        True,
    )
    assert t.reads == frozenset() and t.writes == frozenset()


def test_single_string_resource_is_one_name() -> None:
    t = ff.Task("a", fetch, reads="db", writes=["cache", "log"])
    assert t.reads == {"db"} and t.writes == {"cache", "log"}


@pytest.mark.parametrize(
    ("kwargs", "exc", "text"),
    [
        pytest.param({"name": "", "fn": fetch}, ValueError, "non-empty", id="empty-name"),
        pytest.param({"name": 3, "fn": fetch}, TypeError, "3", id="name-not-str"),
        pytest.param({"name": "a", "fn": 42}, TypeError, "callable; got 42", id="not-callable"),
        pytest.param({"name": "a", "fn": fetch, "timeout": -1}, ValueError, "-1", id="neg-timeout"),
        pytest.param(
            {"name": "a", "fn": fetch, "timeout": math.nan}, ValueError, "nan", id="nan-timeout"
        ),
        pytest.param(
            {"name": "a", "fn": fetch, "timeout": "5"}, TypeError, "'5'", id="str-timeout"
        ),
        pytest.param({"name": "a", "fn": fetch, "weight": -2}, ValueError, "-2", id="neg-weight"),
        pytest.param(
            {"name": "a", "fn": fetch, "args": "abc"}, TypeError, "trailing comma", id="args-str"
        ),
        pytest.param({"name": "a", "fn": fetch, "reads": [1]}, TypeError, "1", id="bad-resource"),
    ],
)
def test_bad_task_arguments_name_the_value(kwargs: dict, exc: type, text: str) -> None:
    with pytest.raises(exc, match=None) as info:
        ff.Task(**kwargs)
    assert text in str(info.value)


def test_coroutine_object_instead_of_function_gets_a_hint() -> None:
    coro = fetch(1)
    try:
        with pytest.raises(TypeError, match="HINT"):
            ff.Task("a", coro)  # type: ignore[arg-type]
    finally:
        coro.close()


def test_list_args_are_accepted_as_tuple() -> None:
    assert ff.Task("a", fetch, args=[1]).args == (1,)  # type: ignore[arg-type]


def test_task_decorator_makes_named_tasks() -> None:
    @ff.task(timeout=5, weight=2)
    async def search(q: str, limit: int = 3) -> str:
        return q

    t = search("cats", limit=2)
    assert isinstance(t, ff.Task)
    assert t.name == "search('cats', limit=2)"
    assert t.args == ("cats",) and dict(t.kwargs) == {"limit": 2}
    assert t.timeout == 5 and t.weight == 2
    assert search.named("arxiv")("dogs").name == "arxiv"
    assert search.fn.__name__ == "search"


def test_bare_task_decorator() -> None:
    @ff.task
    def add(a: int, b: int) -> int:
        return a + b

    t = add(1, 2)
    assert t.name == "add(1, 2)" and t.fn(1, 2) == 3


def test_task_decorator_checks_options_early() -> None:
    with pytest.raises(ValueError, match="-3"):
        ff.task(timeout=-3)
