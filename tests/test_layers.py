"""The layout shows the layers: the core looks down only (issue #16, item 7)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fanflow"


def _runtime_imports(path: Path) -> list[str]:
    """Absolute names imported at run time (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    names = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.append(module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((SRC / "_core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_only_the_standard_library_and_itself(path: Path) -> None:
    allowed_prefixes = ("fanflow._core", "fanflow.executors._base")
    for name in _runtime_imports(path):
        if name.startswith("fanflow"):
            assert name.startswith(allowed_prefixes), f"{path.name} imports {name}"
        else:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "__future__", (
                f"{path.name} imports {name}, not in the standard library"
            )


@pytest.mark.parametrize("path", sorted((SRC / "_policies").glob("*.py")), ids=lambda p: p.name)
def test_policies_look_down_only(path: Path) -> None:
    for name in _runtime_imports(path):
        if name.startswith("fanflow."):
            assert name.startswith(("fanflow._core", "fanflow._policies")), (
                f"{path.name} imports {name}"
            )


def test_the_layers_are_where_the_docs_say() -> None:
    for folder in ("_core", "_policies", "_bulk", "_shell", "_workflow", "_cli", "executors"):
        assert (SRC / folder / "__init__.py").exists(), folder
    for gone in ("_engine.py", "_task.py", "_strategies.py", "_map.py", "_simulator.py"):
        assert not (SRC / gone).exists(), gone
