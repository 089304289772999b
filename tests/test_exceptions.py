"""Every exception and warning lives in fanflow._core._exceptions and is in its docstring's tree."""

from __future__ import annotations

import ast
import builtins
import inspect
import pickle
import re
from types import ModuleType

import pytest

import fanflow
import fanflow._core._exceptions as exceptions
import fanflow.executors
import fanflow.llm


def _public_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    modules: list[ModuleType] = [fanflow, fanflow.llm, fanflow.executors]
    for module in modules:
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                found[f"{module.__name__}.{name}"] = obj
    return found


def _tree_names() -> set[str]:
    doc = exceptions.__doc__ or ""
    tree = doc.split("::", 1)[1].split("\n\n", 3)
    return set(re.findall(r"[├└]── (\w+)", "\n\n".join(tree)))


def test_every_public_exception_is_defined_in_the_exceptions_module() -> None:
    found = _public_exceptions()
    assert found, "no exception class found among the public names"
    for where, cls in found.items():
        # fanflow/__init__ renames public classes' __module__ to "fanflow", so
        # compare the objects: the one in fanflow._core._exceptions is the same class.
        assert getattr(exceptions, cls.__name__, None) is cls, (
            f"{where} is not defined in fanflow._core._exceptions"
        )
        assert cls.__name__ in exceptions.__all__, where


def test_every_exception_class_is_in_the_docstring_tree_and_every_name_exists() -> None:
    defined = {
        name
        for name, obj in vars(exceptions).items()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        and not name.startswith("_")
        and obj.__module__ in ("fanflow._core._exceptions", "fanflow", "fanflow.executors")
    }
    named = _tree_names()
    builtin = {"RuntimeError", "TimeoutError", "ValueError", "Warning", "UserWarning"}
    assert defined == set(exceptions.__all__)
    assert defined <= named
    assert named - defined <= builtin
    for name in named - builtin:
        assert hasattr(exceptions, name), name


def test_the_tree_shows_each_class_under_its_real_base() -> None:
    doc = exceptions.__doc__ or ""
    lines = [line for line in doc.split("::", 1)[1].splitlines() if "── " in line]
    stack: list[tuple[int, str]] = []  # (depth, name) of the open branches
    roots = {"Exception": Exception, "Warning": Warning}
    for line in lines:
        depth = line.index("── ")
        name = line.split("── ", 1)[1].split()[0]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        cls = getattr(exceptions, name, None) or getattr(builtins, name)
        parent = stack[-1][1] if stack else None
        if parent is not None:
            base = getattr(exceptions, parent, None) or getattr(builtins, parent)
            assert base in cls.__bases__, f"{name} is shown under {parent}"
        else:
            assert any(issubclass(cls, root) for root in roots.values()), name
        stack.append((depth, name))


@pytest.mark.parametrize(
    ("old_module", "name"),
    [
        ("fanflow.llm._plan", "PlanError"),
        ("fanflow._bulk._journal", "JournalError"),
        ("fanflow._bulk._journal", "JournalMismatchError"),
        ("fanflow._core._threads", "TaskExit"),
        ("fanflow._workflow._report", "ReportError"),
        ("fanflow._workflow._spec", "WorkflowError"),
        ("fanflow._shell._run", "ShellError"),
        ("fanflow._shell._run", "ShellTimeoutError"),
        ("fanflow._template", "TemplateError"),
        ("fanflow._policies._audit", "HiddenDependencyError"),
        ("fanflow._policies._audit", "HiddenDependencyWarning"),
        ("fanflow.executors", "RemoteError"),
        ("fanflow.executors", "RemoteTraceback"),
    ],
)
def test_old_import_paths_still_work(old_module: str, name: str) -> None:
    import importlib

    assert getattr(importlib.import_module(old_module), name) is getattr(exceptions, name)


def test_bases_are_unchanged() -> None:
    assert issubclass(exceptions.WorkflowError, ValueError)
    assert issubclass(exceptions.TemplateError, ValueError)
    assert issubclass(exceptions.ReportError, ValueError)
    assert issubclass(exceptions.TaskExit, RuntimeError)
    assert issubclass(exceptions.RemoteError, RuntimeError)
    assert issubclass(exceptions.ShellTimeoutError, TimeoutError)
    assert issubclass(exceptions.HiddenDependencyWarning, UserWarning)
    for name in ("PlanError", "JournalError", "HiddenDependencyError", "StrategyFailed"):
        assert issubclass(getattr(exceptions, name), exceptions.FanOutError)


def test_exceptions_that_cross_processes_pickle_with_their_attributes() -> None:
    exit_ = pickle.loads(pickle.dumps(fanflow.TaskExit(3)))
    assert type(exit_) is fanflow.TaskExit and exit_.code == 3
    assert str(exit_) == "the task called sys.exit(3)"
    remote = pickle.loads(pickle.dumps(fanflow.executors.RemoteError("m.Boom", "bad", "tb")))
    assert (remote.type_name, remote.message, remote.traceback) == ("m.Boom", "bad", "tb")
    trace = pickle.loads(pickle.dumps(fanflow.executors.RemoteTraceback("tb")))
    assert trace.text == "tb"
    limited = pickle.loads(pickle.dumps(fanflow.RateLimited("slow down", retry_after=2.0)))
    assert isinstance(limited, fanflow.RateLimited)


def test_the_exceptions_module_imports_nothing_from_fanflow_at_run_time() -> None:
    # Everything imports it: a run-time import of fanflow would be a cycle.
    tree = ast.parse(inspect.getsource(exceptions))
    for node in tree.body:  # imports under `if TYPE_CHECKING:` are nested, not here
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("fanflow"), node.module
