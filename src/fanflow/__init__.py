"""fanflow: fan independent subtasks out concurrently, fan them back in.

Run tasks at once with :func:`fan_out` (or :func:`run` from sync code, or
:func:`as_completed` to stream), and choose how their results combine with a
strategy: :class:`AllOrNothing`, :class:`BestEffort`, :class:`FirstN` or
:class:`Vote`. Failures, timeouts and the deadline become per-task results,
never exceptions from another task's slot. :class:`Retry`, :class:`Hedge`,
:class:`RateLimit` and :class:`AdaptiveConcurrency` handle what goes wrong.
"""

from __future__ import annotations

from contextlib import suppress as _suppress

from ._api import as_completed as as_completed
from ._api import fan_out as fan_out
from ._api import run as run
from ._bulk._journal import Journal as Journal
from ._bulk._journal import JournalError as JournalError
from ._bulk._journal import JournalMismatchError as JournalMismatchError
from ._bulk._map import fan_map as fan_map
from ._core._events import Event as Event
from ._core._events import FanOutFinished as FanOutFinished
from ._core._events import TaskFinished as TaskFinished
from ._core._events import TaskHedged as TaskHedged
from ._core._events import TaskRetrying as TaskRetrying
from ._core._events import TaskStarted as TaskStarted
from ._core._exceptions import BudgetExceeded as BudgetExceeded
from ._core._exceptions import FanOutError as FanOutError
from ._core._exceptions import PermanentError as PermanentError
from ._core._exceptions import RateLimited as RateLimited
from ._core._exceptions import ServiceError as ServiceError
from ._core._exceptions import StrategyFailed as StrategyFailed
from ._core._exceptions import TransientError as TransientError
from ._core._result import AttemptRecord as AttemptRecord
from ._core._result import FanInResult as FanInResult
from ._core._result import TaskResult as TaskResult
from ._core._task import Ref as Ref
from ._core._task import Task as Task
from ._core._task import TaskFunction as TaskFunction
from ._core._task import task as task
from ._core._threads import TaskExit as TaskExit
from ._core._types import Status as Status
from ._core._usage import ModelUsage as ModelUsage
from ._core._usage import Usage as Usage
from ._policies._audit import AuditReport as AuditReport
from ._policies._audit import Conflict as Conflict
from ._policies._audit import HiddenDependencyError as HiddenDependencyError
from ._policies._audit import HiddenDependencyWarning as HiddenDependencyWarning
from ._policies._audit import Mutation as Mutation
from ._policies._audit import audit as audit
from ._policies._budget import Budget as Budget
from ._policies._budget import Spend as Spend
from ._policies._hedge import Hedge as Hedge
from ._policies._limits import AdaptiveConcurrency as AdaptiveConcurrency
from ._policies._limits import RateLimit as RateLimit
from ._policies._retry import Retry as Retry
from ._policies._strategies import AllOrNothing as AllOrNothing
from ._policies._strategies import BestEffort as BestEffort
from ._policies._strategies import FirstN as FirstN
from ._policies._strategies import Strategy as Strategy
from ._policies._strategies import Verdict as Verdict
from ._policies._vote import BetaStop as BetaStop
from ._policies._vote import Vote as Vote
from ._version import __version__ as __version__
from .llm._aggregate import AGGREGATOR_TEMPLATE as AGGREGATOR_TEMPLATE
from .llm._aggregate import Gap as Gap
from .llm._aggregate import MergeConflict as MergeConflict
from .llm._aggregate import Merged as Merged
from .llm._aggregate import Synthesis as Synthesis
from .llm._aggregate import merge as merge
from .llm._aggregate import synthesize as synthesize
from .llm._ensemble import ensemble as ensemble
from .llm._plan import Plan as Plan
from .llm._plan import PlanError as PlanError
from .llm._plan import Subtask as Subtask
from .llm._plan import ask as ask
from .llm._plan import plan as plan


def __getattr__(name: str) -> object:
    # ff.llm and ff.testing load on first use: importing fanflow stays light.
    if name in ("llm", "testing"):
        import importlib

        return importlib.import_module(f"fanflow.{name}")
    raise AttributeError(f"module 'fanflow' has no attribute {name!r}")


__all__ = [
    "AdaptiveConcurrency",
    "AGGREGATOR_TEMPLATE",
    "AllOrNothing",
    "as_completed",
    "ask",
    "AttemptRecord",
    "audit",
    "AuditReport",
    "BestEffort",
    "BetaStop",
    "Budget",
    "BudgetExceeded",
    "Conflict",
    "ensemble",
    "Event",
    "fan_map",
    "fan_out",
    "FanInResult",
    "FanOutError",
    "FanOutFinished",
    "FirstN",
    "Gap",
    "Hedge",
    "HiddenDependencyError",
    "HiddenDependencyWarning",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "merge",
    "MergeConflict",
    "Merged",
    "ModelUsage",
    "Mutation",
    "PermanentError",
    "plan",
    "Plan",
    "PlanError",
    "RateLimit",
    "RateLimited",
    "Ref",
    "Retry",
    "run",
    "ServiceError",
    "Spend",
    "Status",
    "Strategy",
    "StrategyFailed",
    "Subtask",
    "Synthesis",
    "synthesize",
    "task",
    "Task",
    "TaskExit",
    "TaskFinished",
    "TaskFunction",
    "TaskHedged",
    "TaskResult",
    "TaskRetrying",
    "TaskStarted",
    "TransientError",
    "Usage",
    "Verdict",
    "Vote",
]

# Public names report themselves as fanflow.X (in reprs and tracebacks),
# not as the private module that defines them.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("fanflow._"):
        with _suppress(AttributeError, TypeError):
            _obj.__module__ = "fanflow"
del _name, _obj, _suppress
