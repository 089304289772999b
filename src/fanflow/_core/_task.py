"""Tasks: one independent unit of work in a fan-out."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from .._policies._retry import Retry

__all__ = ["Ref", "Task", "TaskFunction", "task"]

P = ParamSpec("P")
R = TypeVar("R")


def _check_timeout(value: float | None, what: str) -> float | None:
    """Validate a timeout-like number; ``None`` passes through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds or None; got {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be >= 0 seconds; got {value!r}")
    return float(value)


def _resources(value: Iterable[str] | str, what: str, name: str) -> frozenset[str]:
    # A lone string is one resource name, not an iterable of characters.
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise TypeError(
                f"task {name!r}: {what} must be resource names (non-empty strings); got {item!r}"
            )
    return frozenset(items)


class Ref:
    """Stands for another task's value in a task's ``args``/``kwargs``.

    ``ff.Ref("a")`` anywhere in a task's ``args`` or ``kwargs`` (also inside
    a list, tuple or dict) is replaced by task ``a``'s value when the task
    starts, and makes ``a`` one of the task's needs: the task starts only
    once ``a`` has succeeded. ``ff.Ref("a", "key")`` takes ``value["key"]``
    (any number of keys or indexes: ``ff.Ref("a", "rows", 0)``).

    Args:
        task: the name of the task whose value this stands for.
        *path: keys or indexes to look up in that value, in turn.

    Raises:
        TypeError: ``task`` is not a non-empty string.
    """

    __slots__ = ("path", "task")

    def __init__(self, task: str, *path: Any) -> None:
        if not isinstance(task, str) or not task:
            raise TypeError(f"ff.Ref needs a task name (a non-empty string); got {task!r}")
        self.task = task
        self.path = path

    def resolve(self, value: Any) -> Any:
        """Look this reference's path up in ``value`` (the task's value).

        Raises:
            LookupError: a key or index on the path is missing (the message
                names the reference).
        """
        for step in self.path:
            try:
                value = value[step]
            except (LookupError, TypeError) as exc:
                raise LookupError(
                    f"{self!r}: the value of task {self.task!r} has no [{step!r}] "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
        return value

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and (other.task, other.path) == (self.task, self.path)

    def __hash__(self) -> int:
        return hash((Ref, self.task, self.path))

    def __repr__(self) -> str:
        return f"Ref({', '.join(repr(p) for p in (self.task, *self.path))})"


_SCANNED = frozenset((list, tuple, dict))


def _refs_in(value: Any, found: list[Ref]) -> None:
    """Collect the :class:`Ref` objects in ``value`` (through lists, tuples and dicts).

    One loop, no recursion: a deep structure cannot overflow the stack, and
    a task's arguments cost one call to scan.
    """
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is Ref:
            found.append(item)
        elif kind in _SCANNED:
            todo.extend(reversed(item.values() if kind is dict else item))


def fill_refs(value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` with every :class:`Ref` replaced by its task's value (copies containers).

    Raises:
        LookupError: a reference's key path is missing from the value.
    """
    kind = type(value)
    if kind is Ref:
        return value.resolve(values[value.task])
    if kind is list:
        return [fill_refs(item, values) for item in value]
    if kind is tuple:
        return tuple(fill_refs(item, values) for item in value)
    if kind is dict:
        return {key: fill_refs(item, values) for key, item in value.items()}
    return value


_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


class Task:
    """One independent unit of work: a function and the arguments to call it with.

    Args:
        name: unique within one fan-out; it names the task's result.
        fn: a coroutine function, or a plain callable. Plain callables run
            off the event loop (in a worker thread) so they never block it.
            A plain callable that returns an awaitable (``lambda: fetch(x)``)
            has that awaitable run on the loop, within the same attempt.
        args: positional arguments for ``fn`` (a tuple).
        kwargs: keyword arguments for ``fn``.
        timeout: per-attempt timeout in seconds, overriding the fan-out's
            ``timeout``. ``None`` inherits it; ``math.inf`` disables it for
            this task.
        retry: an ``ff.Retry`` policy overriding the fan-out's.
        weight: how much this task counts in coverage and weighted votes.
        reads: names of shared resources the task reads (for the
            independence audit).
        writes: names of shared resources the task writes.
        idempotent: ``False`` forbids retries and hedges of this task.
        tokens: estimated tokens one attempt spends, counted against a
            ``RateLimit(tokens_per_minute=...)``; 0 when not given.
        needs: names of tasks of the same fan-out that must succeed before
            this one starts (if one fails, times out or is skipped, this one
            ends ``skipped``, the reason naming it). Each :class:`Ref` in
            ``args``/``kwargs`` adds its task to the needs.

    Raises:
        TypeError: ``fn`` is not callable (or is a coroutine object rather
            than a function), or an argument has the wrong type.
        ValueError: an empty name, a negative timeout or weight.
    """

    __slots__ = (
        "args",
        "fn",
        "has_refs",
        "idempotent",
        "kwargs",
        "name",
        "needs",
        "reads",
        "retry",
        "timeout",
        "tokens",
        "weight",
        "writes",
    )

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    timeout: float | None
    retry: Retry | None
    weight: float
    reads: frozenset[str]
    writes: frozenset[str]
    idempotent: bool
    tokens: float
    needs: tuple[str, ...]
    has_refs: bool

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retry: Retry | None = None,
        weight: float = 1.0,
        reads: Iterable[str] | str = (),
        writes: Iterable[str] | str = (),
        idempotent: bool = True,
        tokens: float = 0,
        needs: Iterable[str] | str = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise (TypeError if not isinstance(name, str) else ValueError)(
                f"task name must be a non-empty string; got {name!r}"
            )
        if not callable(fn):
            if inspect.iscoroutine(fn) or inspect.isawaitable(fn):
                raise TypeError(
                    f"task {name!r}: fn is an awaitable object ({fn!r}), not a function. "
                    f"HINT: pass the function and its arguments, "
                    f"e.g. ff.Task({name!r}, fetch, args=(x,)) rather than fetch(x)"
                )
            raise TypeError(f"task {name!r}: fn must be callable; got {fn!r}")
        if type(args) is not tuple:
            if isinstance(args, list):
                args = tuple(args)
            else:
                raise TypeError(
                    f"task {name!r}: args must be a tuple; got {type(args).__name__} {args!r}. "
                    f"HINT: a one-element tuple needs a trailing comma: args=(x,)"
                )
        if kwargs is None:
            kwargs = _NO_KWARGS
        elif not isinstance(kwargs, Mapping):
            raise TypeError(f"task {name!r}: kwargs must be a mapping; got {kwargs!r}")
        if timeout is not None:
            timeout = _check_timeout(timeout, f"task {name!r}: timeout")
        if weight != 1.0:
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise TypeError(f"task {name!r}: weight must be a number; got {weight!r}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"task {name!r}: weight must be finite and >= 0; got {weight!r}")
            weight = float(weight)
        self.name = name
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.timeout = timeout
        self.retry = retry
        self.weight = weight
        self.reads = _resources(reads, "reads", name) if reads else frozenset()
        self.writes = _resources(writes, "writes", name) if writes else frozenset()
        self.idempotent = bool(idempotent)
        if tokens:
            if isinstance(tokens, bool) or not isinstance(tokens, int | float):
                raise TypeError(f"task {name!r}: tokens must be a number; got {tokens!r}")
            if not math.isfinite(tokens) or tokens < 0:
                raise ValueError(f"task {name!r}: tokens must be finite and >= 0; got {tokens!r}")
        self.tokens = float(tokens)
        if retry is not None and not (
            callable(getattr(retry, "should_retry", None))
            and callable(getattr(retry, "delay", None))
        ):
            raise TypeError(f"task {name!r}: retry must be an ff.Retry or None; got {retry!r}")
        self.has_refs = False
        if needs or args or kwargs:
            self.needs = self._needs(name, needs, args, kwargs)
        else:
            self.needs = ()

    def _needs(
        self, name: str, needs: Iterable[str] | str, args: tuple[Any, ...], kwargs: Any
    ) -> tuple[str, ...]:
        given = (needs,) if isinstance(needs, str) else tuple(needs)
        for need in given:
            if not isinstance(need, str) or not need:
                raise TypeError(
                    f"task {name!r}: needs must be task names (non-empty strings); got {need!r}"
                )
        refs: list[Ref] = []
        _refs_in(args, refs)
        if kwargs:
            _refs_in(list(kwargs.values()), refs)
        self.has_refs = bool(refs)
        # Distinct, in the order given, then the order referenced.
        return tuple(dict.fromkeys([*given, *(ref.task for ref in refs)]))

    def __repr__(self) -> str:
        fn_name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        return f"Task({self.name!r}, {fn_name})"


def _default_name(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [_short_repr(a) for a in args]
    parts += [f"{k}={_short_repr(v)}" for k, v in kwargs.items()]
    return f"{getattr(fn, '__name__', 'task')}({', '.join(parts)})"


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TaskFunction(Generic[P, R]):
    """A function decorated with :func:`task`: calling it makes a :class:`Task`.

    ``search("cats")`` returns ``Task("search('cats')", search_fn, args=("cats",))``
    with the options given to the decorator. ``search.named("arxiv")("cats")``
    sets the name; ``search.fn`` is the undecorated function.
    """

    def __init__(self, fn: Callable[P, R], name: str | None, options: dict[str, Any]) -> None:
        self.fn = fn
        self._name = name
        self._options = options
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Task:
        name = self._name or _default_name(self.fn, args, kwargs)
        return Task(name, self.fn, args, kwargs, **self._options)

    def named(self, name: str) -> Callable[P, Task]:
        """Return a task maker that gives its task the name ``name``."""

        def make(*args: P.args, **kwargs: P.kwargs) -> Task:
            return Task(name, self.fn, args, kwargs, **self._options)

        return make


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    weight: float = 1.0,
    reads: Iterable[str] | str = (),
    writes: Iterable[str] | str = (),
    idempotent: bool = True,
    tokens: float = 0,
    needs: Iterable[str] | str = (),
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    weight: float = 1.0,
    reads: Iterable[str] | str = (),
    writes: Iterable[str] | str = (),
    idempotent: bool = True,
    tokens: float = 0,
    needs: Iterable[str] | str = (),
) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Decorate a function so that calling it makes a :class:`Task`.

    Use bare (``@ff.task``) or with the options of :class:`Task`
    (``@ff.task(timeout=5, weight=2)``). Calling the decorated function does
    not run it: it returns a task named after the call, e.g. ``search('cats')``,
    for :func:`fan_out`. ``name=`` fixes the name instead.

    Raises:
        ValueError, TypeError: an option is invalid (checked at decoration).
    """
    _check_timeout(timeout, "timeout")
    options: dict[str, Any] = {
        "timeout": timeout,
        "retry": retry,
        "weight": weight,
        "reads": reads,
        "writes": writes,
        "idempotent": idempotent,
        "tokens": tokens,
        "needs": needs,
    }

    def decorate(f: Callable[P, R]) -> TaskFunction[P, R]:
        if not callable(f):
            raise TypeError(f"@ff.task decorates a function; got {f!r}")
        return TaskFunction(f, name, options)

    if fn is not None:
        return decorate(fn)
    return decorate
