"""Every exception and warning fanflow raises, in one place.

The tree (each class under the built-in it extends, so ``except`` clauses
written against the built-ins keep catching them)::

    Exception
    ├── FanOutError                  an operational failure of a fan-out
    │   ├── StrategyFailed           the strategy's success condition was not met
    │   │                            (``.result`` keeps every task's result)
    │   ├── HiddenDependencyError    the independence audit found a conflict,
    │   │                            before any task started (``.report``)
    │   ├── PlanError                the model's plan is unusable after a repair
    │   │                            round (``.problems``, ``.text``); nothing ran
    │   └── JournalError             a journal that cannot be used: another job's,
    │       │                        unreadable, or a value it cannot store
    │       └── JournalMismatchError the item at a recorded position changed
    │
    ├── ServiceError                 what a called service (an API, a model) said
    │   ├── TransientError           worth retrying: 5xx, connection reset, overload
    │   │   └── RateLimited          429 / quota: retry after ``retry_after`` seconds
    │   └── PermanentError           never retried: bad request, auth, not found
    │       ├── BudgetExceeded       a request that does not fit in the ``ff.Budget``
    │       │                        in force; refused before it is sent
    │       ├── SchemaError          ``schema=``: the answer still does not validate
    │       │                        after the repair rounds (``.errors``, ``.answer``)
    │       └── AgentError           an agent task made ``max_steps`` model calls
    │                                without an answer (``.tool_calls``)
    │
    ├── ShellError                   a shell task's command exited non-zero or was
    │                                killed by a signal (``.output``)
    ├── RemoteTraceback              the text of a worker process's traceback, set as
    │                                the ``__cause__`` of the error it came with
    ├── RuntimeError
    │   ├── TaskExit                 task code called ``sys.exit()``: that task's
    │   │                            error, never the program's end (``.code``)
    │   └── RemoteError              an exception from a worker process that could
    │                                not come back as itself (``.type_name``)
    ├── TimeoutError
    │   └── ShellTimeoutError        a shell command ran out of time; its process
    │                                group was stopped (``.output``)
    └── ValueError
        ├── WorkflowError            a workflow file that cannot be used: names
        │                            file, line and field
        ├── TemplateError            a template with a syntax error, an unknown
        │                            name or filter
        └── ReportError              a run report that cannot be drawn: names
                                     the field

    Warning
    └── UserWarning
        └── HiddenDependencyWarning  audit findings under ``audit="warn"``, and
                                     mutations ``audit="strict"`` saw

Task code raises the ``ServiceError`` kinds (the LLM providers map SDK errors
onto them, see ``fanflow.llm._errors``) so that retries, backoff and adaptive
concurrency know what happened.

Misuse (bad arguments) is reported with the built-in ``TypeError`` (a value
of the wrong type) and ``ValueError`` (a value of the right type that is out
of range or not one of the choices), naming the option and the value, before
any task starts, so ``except FanOutError`` never hides a programming mistake.

Where they are public: ``fanflow.X`` for the ``FanOutError`` and
``ServiceError`` trees, ``TaskExit`` and ``HiddenDependencyWarning``;
``fanflow.executors.RemoteError`` and ``fanflow.executors.RemoteTraceback``.
``WorkflowError``, ``TemplateError``, ``ReportError``, ``ShellError`` and
``ShellTimeoutError`` reach users of workflow files and the command line; each
is also importable from the module that raises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from .._policies._audit import AuditReport
    from .._shell._run import ShellOutput
    from ._result import FanInResult

__all__ = [
    "AgentError",
    "BudgetExceeded",
    "FanOutError",
    "HiddenDependencyError",
    "HiddenDependencyWarning",
    "JournalError",
    "JournalMismatchError",
    "PermanentError",
    "PlanError",
    "RateLimited",
    "RemoteError",
    "RemoteTraceback",
    "ReportError",
    "SchemaError",
    "ServiceError",
    "ShellError",
    "ShellTimeoutError",
    "StrategyFailed",
    "TaskExit",
    "TemplateError",
    "TransientError",
    "WorkflowError",
]


# -- FanOutError: operational failures of a fan-out ---------------------------------------------


class FanOutError(Exception):
    """Base class of the operational errors a fan-out raises."""


class StrategyFailed(FanOutError):
    """Raised when a fan-out's strategy could not be satisfied.

    Attributes:
        result: the full :class:`FanInResult`, with every task's
            :class:`TaskResult` (the successes included), so partial work is
            never lost. ``__cause__`` is the first task error, if any.
    """

    def __init__(self, message: str, result: FanInResult) -> None:
        super().__init__(message)
        self.result = result


class HiddenDependencyError(FanOutError):
    """Raised before any task starts when the audit finds a hidden dependency.

    Attributes:
        report: the :class:`AuditReport` with every conflict found.
    """

    def __init__(self, message: str, report: AuditReport) -> None:
        super().__init__(message)
        self.report = report


class PlanError(FanOutError):
    """The model's plan could not be used, even after a repair round.

    Attributes:
        problems: what is wrong, one message each.
        text: the model's last answer.
    """

    def __init__(self, problems: list[str], text: str) -> None:
        super().__init__("the plan is not usable: " + "; ".join(problems))
        self.problems = problems
        self.text = text


class JournalError(FanOutError):
    """A journal that cannot be used: another job's, unreadable, or a value it cannot store."""


class JournalMismatchError(JournalError):
    """The item at a recorded position is not the item the journal recorded there.

    Attributes:
        index: the position (0-based).
        recorded: the item the journal recorded there (as far as it was kept).
        given: the item now at that position.
    """

    def __init__(self, path: Path, index: int, recorded: Any, given: Any) -> None:
        super().__init__(
            f"{path}: item {index} is {given!r}, but the journal recorded {recorded!r} at "
            "that position: the input changed. Nothing was skipped or overwritten; rerun "
            "with the original input, or use another journal file"
        )
        self.index = index
        self.recorded = recorded
        self.given = given


# -- ServiceError: what a called service said ---------------------------------------------------


class ServiceError(Exception):
    """Base class of errors a called service reports (see the tree above)."""


class TransientError(ServiceError):
    """A failure worth retrying (a 5xx, a dropped connection, an overload)."""


class RateLimited(TransientError):
    """The service refused for now (HTTP 429, a quota).

    Args:
        message: what the service said.
        retry_after: seconds the service asked to wait (e.g. from a
            ``Retry-After`` header), or ``None``. :class:`Retry` waits at
            least this long; a shared :class:`RateLimit` pauses every fan-out
            using it for that long.
    """

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.retry_after is not None:
            return f"{text} (retry after {self.retry_after:g} s)"
        return text


class PermanentError(ServiceError):
    """A failure that retrying cannot fix (bad request, auth); never retried."""


class BudgetExceeded(PermanentError):
    """A model request does not fit in the spend budget in force (``budget=``).

    Raised before the request is sent, by a request that holds no
    reservation of its own attempt (a task without a ``tokens`` estimate, an
    agent's second call, ``synthesize``/``plan`` calls), or by any request
    to a model without a price under a dollar limit. A
    :class:`PermanentError`, so it is not retried. The message says
    "budget" and gives the numbers (what was needed, what is left).
    """


class SchemaError(PermanentError):
    """A model's answer did not match the schema, after every repair round (``schema=``).

    A :class:`PermanentError`: retrying the same request would not help
    (the repair rounds already asked again with the errors).

    Attributes:
        errors: the validation errors of the last answer (``"field: what"``).
        answer: the last answer's text.
    """

    def __init__(self, message: str, errors: Sequence[str] = (), answer: str = "") -> None:
        super().__init__(message)
        self.errors = list(errors)
        self.answer = answer


class AgentError(PermanentError):
    """An agent task ended without an answer: ``max_steps`` model calls were made.

    Attributes:
        tool_calls: the calls made (``ff.llm.ToolCall``), with their results or errors.
    """

    def __init__(self, message: str, tool_calls: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.tool_calls = tuple(tool_calls)


# -- what a task's code or process did ----------------------------------------------------------


class TaskExit(RuntimeError):
    """Task code called ``sys.exit()``: the task's error, not the program's end.

    Attributes:
        code: the exit code it asked for.
    """

    def __init__(self, code: object) -> None:
        super().__init__(f"the task called sys.exit({code!r})")
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # args holds the message, not the code: rebuild from the code.
        return (type(self), (self.code,))


class RemoteError(RuntimeError):
    """An exception raised in a worker process that could not come back as itself.

    Its class does not pickle in the worker, or does not unpickle here (an
    ``__init__`` with required arguments that ``BaseException.args`` does not
    hold, a class the parent cannot import, ...): this stands in for it,
    with what is known of it. ``str()`` is ``"type_name: message"``.

    Attributes:
        type_name: the remote exception's qualified class name
            (``module.Class``; builtins and ``__main__`` classes unprefixed).
        message: ``str()`` of the remote exception.
        traceback: the remote traceback's text.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple[Any, ...]:
        # Three arguments, so the default (``cls(*self.args)``) would not rebuild it.
        return (type(self), (self.type_name, self.message, self.traceback))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class ShellError(Exception):
    """A command exited with a non-zero status (or was killed by a signal).

    Attributes:
        output: the :class:`ShellOutput`, with what the command printed.
    """

    def __init__(self, output: ShellOutput) -> None:
        code = output.exit_code
        why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        super().__init__(f"command {why}: {output.command}")
        self.output = output


class ShellTimeoutError(TimeoutError):
    """A command ran out of time; its process group was stopped.

    Attributes:
        output: a :class:`ShellOutput` with what it printed until then
            (``exit_code`` is -9, "killed", whichever signal ended it).
    """

    def __init__(self, message: str, output: ShellOutput) -> None:
        super().__init__(message)
        self.output = output


# -- files the user wrote: workflows, templates, reports (ValueErrors) -------------------------


class WorkflowError(ValueError):
    """A workflow file that cannot be used: says file, line and field.

    One exception may carry several mistakes (``fanflow validate`` reports
    them all): ``str()`` is one line per mistake, the first one's
    attributes are those of the exception.

    Attributes:
        path: the file. ``line``: 1-based, or ``None``. ``field``: the dotted
        path of the field, or ``""``. ``message``: what is wrong.
        ``errors``: every mistake found, this one first.
    """

    def __init__(
        self,
        path: str,
        line: int | None,
        field: str,
        message: str,
        *,
        others: Sequence[WorkflowError] = (),
    ) -> None:
        where = f"{path}:{line}" if line else path
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        self.text = text
        super().__init__("\n".join([text, *(o.text for o in others)]))
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        self.errors: list[WorkflowError] = [self, *others]

    @classmethod
    def combine(cls, errors: Sequence[WorkflowError]) -> WorkflowError:
        """One exception carrying ``errors`` (each flattened), the first one's attributes."""
        flat = [e for error in errors for e in error.errors]
        first = flat[0]
        return cls(first.path, first.line, first.field, first.message, others=flat[1:])


class TemplateError(ValueError):
    """A template that cannot be used: a syntax error, an unknown name or filter."""


class ReportError(ValueError):
    """A run report that cannot be drawn; the message names the field and what is wrong."""


# -- warnings -----------------------------------------------------------------------------------


class HiddenDependencyWarning(UserWarning):
    """Issued for audit findings under ``audit="warn"``, and for mutations seen by ``"strict"``."""
