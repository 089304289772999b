"""Declarative workflows: a YAML file of tasks, run as a fan-out (or a ``needs:`` graph)."""

from __future__ import annotations

from ._build import Plan, build
from ._spec import Workflow, WorkflowError, json_schema, load

__all__ = ["Plan", "Workflow", "WorkflowError", "build", "json_schema", "load"]
