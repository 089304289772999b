"""The independence audit: find hidden dependencies before fanning out.

The pattern's first principle is that parallel tasks are independent. Two
things break it without anyone noticing:

* declared shared resources: two tasks that write the same resource, or one
  that writes what another reads (``Task(reads=..., writes=...)``);
* shared mutable arguments: the same list, dict, set, bytearray or
  (non-frozen) dataclass object handed to more than one task, directly or
  one level down inside a container argument.

Only *data* containers count as shared mutable arguments. Objects such as
HTTP clients, sessions, locks or loggers are built to be shared by
concurrent callers and are not flagged. Immutable values (str, bytes,
numbers, None, tuples and frozensets of immutables, frozen dataclasses,
``types.MappingProxyType``) are always fine.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from ._exceptions import FanOutError
from ._task import Task

__all__ = [
    "AuditReport",
    "Conflict",
    "HiddenDependencyError",
    "HiddenDependencyWarning",
    "Mutation",
    "audit",
]

AuditMode = Literal["error", "warn", "off", "strict"]
_MODES = ("error", "warn", "off", "strict")

_IMMUTABLE_ATOMS = (str, bytes, int, float, complex, bool, type(None), range, frozenset)
_MUTABLE_BUILTINS = (list, dict, set, bytearray, collections.deque)
_FIX = (
    "HINT: give each task its own copy (copy.deepcopy), pass an immutable value "
    "(a tuple, a frozenset, types.MappingProxyType), or split the work into stages "
    "(a later stage needs the earlier one); if the sharing is intended and safe, "
    "pass audit='warn' or audit='off'."
)


class HiddenDependencyError(FanOutError):
    """Raised before any task starts when the audit finds a hidden dependency.

    Attributes:
        report: the :class:`AuditReport` with every conflict found.
    """

    def __init__(self, message: str, report: AuditReport) -> None:
        super().__init__(message)
        self.report = report


class HiddenDependencyWarning(UserWarning):
    """Issued for audit findings under ``audit="warn"``, and for mutations seen by ``"strict"``."""


@dataclasses.dataclass(frozen=True)
class Conflict:
    """One hidden dependency between tasks.

    Attributes:
        kind: ``"write/write"``, ``"read/write"`` or ``"shared argument"``.
        subject: the resource name, or a description of the shared object.
        tasks: the tasks involved (writers first for ``"read/write"``).
        detail: where each task touches it, in words.
    """

    kind: str
    subject: str
    tasks: tuple[str, ...]
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} conflict on {self.subject}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class Mutation:
    """A shared argument that a task changed while it ran (``audit="strict"``)."""

    task: str
    subject: str

    def __str__(self) -> str:
        return f"task {self.task!r} mutated {self.subject}"


@dataclasses.dataclass
class AuditReport:
    """What the independence audit found.

    Attributes:
        conflicts: the hidden dependencies found before the run.
        mutations: under ``audit="strict"``, each shared argument a task
            changed while it ran, attributed to that task.
        mode: the audit mode the fan-out ran with.
    """

    conflicts: list[Conflict] = dataclasses.field(default_factory=list)
    mutations: list[Mutation] = dataclasses.field(default_factory=list)
    mode: str = "error"

    @property
    def ok(self) -> bool:
        """``True`` when nothing was found."""
        return not self.conflicts and not self.mutations

    def __str__(self) -> str:
        if self.ok:
            return "independence audit: no hidden dependencies found"
        lines = [
            f"independence audit found {len(self.conflicts) + len(self.mutations)} problem(s):"
        ]
        lines += [f"  - {c}" for c in self.conflicts]
        lines += [f"  - {m}" for m in self.mutations]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "mode": self.mode,
            "ok": self.ok,
            "conflicts": [
                {"kind": c.kind, "subject": c.subject, "tasks": list(c.tasks), "detail": c.detail}
                for c in self.conflicts
            ],
            "mutations": [{"task": m.task, "subject": m.subject} for m in self.mutations],
        }


def _is_mutable_data(value: Any) -> bool:
    kind = type(value)
    if kind in _IMMUTABLE_ATOMS:
        return False
    if isinstance(value, _MUTABLE_BUILTINS):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        params = getattr(kind, "__dataclass_params__", None)
        return not getattr(params, "frozen", False)
    return isinstance(
        value,
        collections.abc.MutableMapping
        | collections.abc.MutableSequence
        | collections.abc.MutableSet,
    )


def _mutable_arguments(task: Task) -> Iterator[tuple[str, Any]]:
    """Mutable data among ``task``'s arguments, also one level inside a container.

    Location strings are built only for what is found: this runs once per
    task of every audited fan-out.
    """
    atoms = _IMMUTABLE_ATOMS
    items: Iterable[tuple[Any, Any]] = enumerate(task.args)
    if task.kwargs:
        items = [*items, *((repr(k), v) for k, v in task.kwargs.items())]
    for place, value in items:
        if type(value) in atoms:
            continue
        where = f"args[{place}]" if isinstance(place, int) else f"kwargs[{place}]"
        if _is_mutable_data(value):
            yield where, value
        if isinstance(value, collections.abc.Mapping):
            inner: Iterable[tuple[Any, Any]] = ((repr(k), v) for k, v in value.items())
        elif isinstance(value, list | tuple | set | frozenset | collections.deque):
            inner = enumerate(value)
        else:
            continue
        for key, item in inner:
            if type(item) not in atoms and _is_mutable_data(item):
                yield f"{where}[{key}]", item


def _describe(value: Any) -> str:
    return f"the same {type(value).__name__} object (id {id(value):#x})"


def _shared_arguments(tasks: Sequence[Task]) -> dict[int, tuple[Any, list[tuple[str, str]]]]:
    """Mutable data objects seen in more than one task: id -> (object, [(task, where)])."""
    seen: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
    for task in tasks:
        if not task.args and not task.kwargs:
            continue
        for where, value in _mutable_arguments(task):
            entry = seen.get(id(value))
            if entry is None:
                seen[id(value)] = (value, [(task.name, where)])
            elif entry[1][-1][0] != task.name:
                entry[1].append((task.name, where))
    return {k: v for k, v in seen.items() if len(v[1]) > 1}


def _names(tasks: list[str], limit: int = 4) -> str:
    shown = ", ".join(repr(t) for t in tasks[:limit])
    return shown + (f" and {len(tasks) - limit} more" if len(tasks) > limit else "")


def _ancestors(needs: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Every task each task transitively needs (the graph has no cycles)."""
    memo: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in memo:
            memo[name] = set()
            found: set[str] = set()
            for dep in needs.get(name, ()):
                found.add(dep)
                found |= visit(dep)
            memo[name] = found
        return memo[name]

    for name in needs:
        visit(name)
    return memo


def _unordered(names: list[str], before: dict[str, set[str]]) -> list[str]:
    """The tasks of ``names`` not ordered (by needs) against every other one of them."""
    if not before:
        return names
    return [
        a
        for a in names
        if any(b != a and a not in before.get(b, ()) and b not in before.get(a, ()) for b in names)
    ]


def audit(tasks: Iterable[Task], needs: Mapping[str, Sequence[str]] | None = None) -> AuditReport:
    """Check tasks for hidden dependencies; return what was found.

    Finds write/write and read/write conflicts on declared resources
    (``Task(reads=..., writes=...)``; tasks that only read the same resource
    are fine) and mutable data objects passed to more than one task. Tasks
    ordered by ``needs`` (one needs the other, directly or not) run one
    after the other, so they do not conflict.

    Raises:
        TypeError: an item of ``tasks`` is not a :class:`Task`.
    """
    before = _ancestors(needs) if needs else {}
    task_list = list(tasks)
    for i, t in enumerate(task_list):
        if not isinstance(t, Task):
            raise TypeError(f"tasks[{i}] must be an ff.Task; got {t!r}")
    report = AuditReport()
    writers: dict[str, list[str]] = {}
    readers: dict[str, list[str]] = {}
    for t in task_list:
        if t.writes:
            for r in t.writes:
                writers.setdefault(r, []).append(t.name)
        if t.reads:
            for r in t.reads - t.writes:
                readers.setdefault(r, []).append(t.name)
    for resource, names in writers.items():
        names = _unordered(names, before) if before else names
        if len(names) > 1:
            report.conflicts.append(
                Conflict(
                    "write/write",
                    f"resource {resource!r}",
                    tuple(names),
                    f"tasks {_names(names)} all write {resource!r}. "
                    f"HINT: declare one writer, give each its own resource, or split into stages.",
                )
            )
        if resource in readers and names:
            reading = [
                r
                for r in readers[resource]
                if any(w not in before.get(r, ()) and r not in before.get(w, ()) for w in names)
            ]
            if not reading:
                continue
            report.conflicts.append(
                Conflict(
                    "read/write",
                    f"resource {resource!r}",
                    tuple(names + reading),
                    f"task {names[0]!r} writes {resource!r} while {_names(reading)} "
                    f"read{'s' if len(reading) == 1 else ''} it: what they read depends on "
                    "timing. HINT: split into stages (the readers need the writer).",
                )
            )
    for value, uses in _shared_arguments(task_list).values():
        names = _unordered([name for name, _ in uses], before)
        if len(names) < 2:
            continue
        uses = [u for u in uses if u[0] in names]
        where = ", ".join(f"{name!r} ({place})" for name, place in uses[:4])
        more = f" and {len(uses) - 4} more" if len(uses) > 4 else ""
        report.conflicts.append(
            Conflict(
                "shared argument",
                _describe(value),
                tuple(names),
                f"{_describe(value)} is passed to tasks {where}{more}; a change by one is seen "
                f"by the others. {_FIX}",
            )
        )
    return report


def check_before_run(
    tasks: Sequence[Task], mode: str, needs: Mapping[str, Sequence[str]] | None = None
) -> AuditReport | None:
    """Run the audit for ``fan_out(audit=mode)``: raise, warn, or return the report.

    Raises:
        ValueError: an unknown mode.
        HiddenDependencyError: conflicts under ``"error"`` (and resource
            conflicts under ``"strict"``, which watches shared arguments instead).
    """
    if mode not in _MODES:
        raise ValueError(f"audit must be one of {', '.join(map(repr, _MODES))}; got {mode!r}")
    if mode == "off":
        return None
    report = audit(tasks, needs)
    report.mode = mode
    blocking = report.conflicts
    if mode == "strict":
        blocking = [c for c in report.conflicts if c.kind != "shared argument"]
    if blocking and mode in ("error", "strict"):
        lines = "\n".join(f"  - {c}" for c in blocking)
        raise HiddenDependencyError(
            f"hidden dependencies between tasks; nothing was started:\n{lines}", report
        )
    if report.conflicts and mode == "warn":
        warnings.warn(str(report), HiddenDependencyWarning, stacklevel=4)
    return report


def _fingerprint(value: Any) -> Any:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        try:
            return copy.deepcopy(value)
        except Exception:
            return repr(value)


class MutationWatch:
    """Snapshots of shared arguments, checked after each step of the tasks that hold them."""

    def __init__(self, tasks: Sequence[Task], report: AuditReport) -> None:
        self.report = report
        self._objects: dict[int, tuple[Any, str]] = {}
        self._prints: dict[int, Any] = {}
        self._by_task: dict[str, list[int]] = {}
        for key, (value, uses) in _shared_arguments(tasks).items():
            self._objects[key] = (value, _describe(value))
            self._prints[key] = _fingerprint(value)
            for name, _ in uses:
                self._by_task.setdefault(name, []).append(key)
        self._blamed: set[tuple[str, int]] = set()

    @property
    def has_objects(self) -> bool:
        """Whether any argument is shared at all."""
        return bool(self._objects)

    def watches(self, task: str) -> bool:
        """Whether ``task`` holds a shared argument."""
        return task in self._by_task

    def check(self, task: str) -> None:
        """Compare ``task``'s shared arguments with their last snapshot; blame ``task``."""
        for key in self._by_task.get(task, ()):
            value, subject = self._objects[key]
            now = _fingerprint(value)
            if now != self._prints[key]:
                self._prints[key] = now
                if (task, key) not in self._blamed:
                    self._blamed.add((task, key))
                    self.report.mutations.append(Mutation(task, subject))

    def wrap(self, task: str, coro: Any) -> Any:
        """Run ``coro`` with a check after each of its steps (exact attribution)."""
        return _watched(coro, lambda: self.check(task))


class _Stepper:
    """Drives a coroutine step by step, calling ``after`` after each step."""

    def __init__(self, coro: Any, after: Callable[[], None]) -> None:
        self.coro = coro
        self.after = after

    def __await__(self) -> Any:
        coro = self.coro
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                self.after()
                return stop.value
            except BaseException:
                self.after()
                raise
            self.after()
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # delivered into the coroutine next turn
                value, error = None, exc


async def _watched(coro: Any, after: Callable[[], None]) -> Any:
    return await _Stepper(coro, after)
