"""The ``needs`` graph: check it before anything starts, release tasks as needs settle.

Linear in tasks + needs, and without recursion: a chain of 100,000 tasks,
or a failure at the head of one, never walks the stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from ._types import Status

__all__ = ["NeedsGraph", "check_graph"]


def check_graph(names: Sequence[str], needs: Mapping[str, Sequence[str]]) -> None:
    """Refuse unknown names and cycles in a ``needs`` graph.

    Raises:
        ValueError: a task needs an unknown task, or the needs form a cycle
            (the message spells the cycle out: ``a -> b -> a``).
    """
    known = set(names)
    for name, deps in needs.items():
        if name not in known:
            raise ValueError(f"needs names an unknown task {name!r}")
        for dep in deps:
            if dep not in known:
                raise ValueError(f"task {name!r} needs {dep!r}, which is not a task")
            if dep == name:
                raise ValueError(f"task {name!r} needs itself")
    # Kahn's counting: a task is ready once all its distinct needs are.
    unmet: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    for name, deps in needs.items():
        distinct = set(deps)
        if distinct:
            unmet[name] = len(distinct)
            for dep in distinct:
                dependents.setdefault(dep, []).append(name)
    ready = [name for name in known if name not in unmet]
    while ready:
        for dependent in dependents.get(ready.pop(), ()):
            unmet[dependent] -= 1
            if not unmet[dependent]:
                ready.append(dependent)
    left = {name for name, count in unmet.items() if count}
    if not left:
        return
    # Each task left over waits on a need also left over, so following those
    # needs from the first one (in task order) must come back round: a cycle.
    node = next(name for name in names if name in left)
    path: list[str] = []
    seen: dict[str, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(dep for dep in needs[node] if dep in left)
    cycle = [*path[seen[node] :], node]
    raise ValueError(f"the needs form a cycle: {' -> '.join(cycle)}")


class NeedsGraph:
    """Which blocked tasks a settled task releases (to run) or dooms (to skip)."""

    __slots__ = ("_blocked", "_dependents", "_frames", "_unmet", "index")

    def __init__(self, names: Sequence[str], needs: Mapping[str, Sequence[str]]) -> None:
        check_graph(names, needs)
        #: position of each task by name
        self.index = {name: i for i, name in enumerate(names)}
        self._unmet: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        for name, deps in needs.items():
            distinct = set(deps)
            if distinct:
                self._unmet[name] = len(distinct)
                for dep in distinct:
                    self._dependents.setdefault(dep, []).append(name)
        self._blocked = set(self._unmet)
        self._frames: list[tuple[str, Status, Iterator[str]]] | None = None

    def blocked(self, name: str) -> bool:
        """Whether ``name`` waits for needs (true until they all succeed)."""
        return name in self._blocked

    def has_dependents(self, name: str) -> bool:
        return name in self._dependents

    def blocked_names(self) -> list[str]:
        """Every task still waiting for its needs; forgets them (the fan-out stops)."""
        names = list(self._blocked)
        self._blocked.clear()
        return names

    def settle(
        self,
        name: str,
        status: Status,
        ready: Callable[[str], None],
        doomed: Callable[[str, str], None],
    ) -> None:
        """``name`` ended with ``status``: call ``ready(t)`` or ``doomed(t, why)`` per dependent.

        ``doomed`` settles its task as skipped and calls :meth:`settle` for it
        in turn; such a nested call pushes onto the walk in progress instead
        of recursing, so a failure at the head of a long chain is one loop
        (depth-first), never a deep stack.
        """
        frames = self._frames
        frame = (name, status, iter(self._dependents[name]))
        if frames is not None:
            frames.append(frame)
            return
        frames = self._frames = [frame]
        try:
            while frames:
                name, status, todo = frames[-1]
                dependent = next(todo, None)
                if dependent is None:
                    frames.pop()
                    continue
                if dependent not in self._blocked:
                    continue
                if status is Status.OK:
                    self._unmet[dependent] -= 1
                    if self._unmet[dependent] == 0:
                        self._blocked.discard(dependent)
                        ready(dependent)
                else:
                    self._blocked.discard(dependent)
                    doomed(
                        dependent, f"never started: it needs {name!r}, which ended {status.value}"
                    )
        finally:
            self._frames = None
