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
import itertools
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from .._core._exceptions import HiddenDependencyError, HiddenDependencyWarning
from .._core._task import Task
from .._core._validate import check_choice

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


class _Order:
    """Whether two tasks are ordered by ``needs``, found only for the pairs asked about.

    A full transitive closure costs quadratic time and memory on a long chain;
    the audit only needs reachability between tasks that share something. A
    topological index bounds each search: a task can only need (transitively)
    tasks earlier in that order, so a search for ``b`` from ``a`` never goes
    below ``b``'s index.
    """

    def __init__(self, needs: Mapping[str, Sequence[str]]) -> None:
        self._needs = needs
        dependents: dict[str, list[str]] = {}
        unmet: dict[str, int] = {}
        for name, deps in needs.items():
            distinct = set(deps)
            unmet[name] = len(distinct)
            for dep in distinct:
                unmet.setdefault(dep, 0)
                dependents.setdefault(dep, []).append(name)
        index: dict[str, int] = {}
        ready = [name for name, count in unmet.items() if not count]
        while ready:  # Kahn: needs get smaller indices than their dependents
            node = ready.pop()
            index[node] = len(index)
            for dependent in dependents.get(node, ()):
                unmet[dependent] -= 1
                if not unmet[dependent]:
                    ready.append(dependent)
        # A cycle (only when audit() is called directly; the engine refuses
        # them first) leaves tasks without an index: then bound nothing.
        self._bounded = len(index) == len(unmet)
        for name in unmet:
            index.setdefault(name, len(index))
        self._index = index
        self._dependents = dependents
        self._by_index = sorted(index, key=index.__getitem__)
        # Searches already made: source -> (lowest index searched to, tasks reached).
        self._reached: dict[str, tuple[int, set[str]]] = {}
        self.searched = 0  # tasks visited by searches (the tests count the work)

    def _reach(self, source: str, floor: int) -> set[str]:
        """Everything ``source`` transitively needs, at least down to index ``floor``."""
        if not self._bounded:
            floor = -1
        known = self._reached.get(source)
        if known is not None and known[0] <= floor:
            return known[1]
        index, needs = self._index, self._needs
        found: set[str] = set()
        todo = [source]
        while todo:
            for dep in needs.get(todo.pop(), ()):
                if dep not in found and index[dep] >= floor:
                    found.add(dep)
                    todo.append(dep)
        self.searched += len(found) + 1
        self._reached[source] = (floor, found)
        return found

    def ordered(self, a: str, b: str) -> bool:
        """Whether one of ``a`` and ``b`` needs the other, directly or not."""
        index = self._index
        ia, ib = index.get(a), index.get(b)
        if ia is None or ib is None or a == b:
            return False
        if not self._bounded:
            return b in self._reach(a, -1) or a in self._reach(b, -1)
        # Only the later task (by index) can need the earlier one.
        later, earlier = (a, b) if ia > ib else (b, a)
        return earlier in self._reach(later, min(ia, ib))

    def unordered(self, names: list[str]) -> list[str]:
        """The tasks of ``names`` not ordered (by needs) against every other one of them."""
        index = self._index
        if len(names) < 2:
            return []
        if self._bounded and all(n in index for n in names):
            # Ordering is transitive: if each task (in topological order) needs
            # the one before, all are ordered. Those searches cover disjoint
            # index ranges, so this common case costs one pass over the graph.
            line = sorted(names, key=index.__getitem__)
            if all(self.ordered(a, b) for a, b in itertools.pairwise(line)):
                return []
            seen = self._comparable_counts(line)
            others = len(seen) - 1
            return [a for a in names if seen[a] < others]
        return [a for a in names if any(b != a and not self.ordered(a, b) for b in names)]

    def _comparable_counts(self, line: list[str]) -> dict[str, int]:
        """For each task of ``line`` (in topological order), how many others are ordered with it.

        A search per task would be quadratic on a long chain of writers with
        one stray. Instead one pass up and one down the index range carry,
        as bits, which of these tasks are below (above) each task: in a graph
        without cycles the two sets are disjoint, so a task is ordered against
        all others exactly when their sizes add up to the others' number.
        Bits of a task are dropped once all its neighbours in range used them.
        """
        index, needs, dependents = self._index, self._needs, self._dependents
        bit = {name: 1 << i for i, name in enumerate(dict.fromkeys(line))}
        low, high = index[line[0]], index[line[-1]]
        span = self._by_index[low : high + 1]
        seen: dict[str, int] = dict.fromkeys(line, 0)
        for edges, nodes in ((needs, span), (dependents, span[::-1])):
            # How many nodes in range will still read each node's bits.
            readers: dict[str, int] = {}
            for node in nodes:
                for other in edges.get(node, ()):
                    if low <= index[other] <= high:
                        readers[other] = readers.get(other, 0) + 1
            carried: dict[str, int] = {}
            for node in nodes:
                bits = 0
                for other in edges.get(node, ()):
                    if low <= index[other] <= high:
                        bits |= carried.get(other, 0) | bit.get(other, 0)
                        readers[other] -= 1
                        if not readers[other]:
                            carried.pop(other, None)
                if node in seen:
                    seen[node] += bits.bit_count()
                if bits and readers.get(node):
                    carried[node] = bits
                self.searched += 1
        return seen


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
    order = _Order(needs) if needs else None
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
        names = order.unordered(names) if order is not None else names
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
                if order is None or any(not order.ordered(w, r) for w in names)
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
        names = [name for name, _ in uses]
        names = order.unordered(names) if order is not None else names
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
        TypeError: a mode that is not a string.
        ValueError: an unknown mode.
        HiddenDependencyError: conflicts under ``"error"`` (and resource
            conflicts under ``"strict"``, which watches shared arguments instead).
    """
    check_choice(mode, "audit", _MODES)
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
