"""Run reports: the JSON a run writes, and a self-contained HTML page drawn from it.

The page comes from a Jinja2 template with autoescaping on. Everything in a
report — task names, outputs, errors, reasons, the aggregate — may hold
markup (a model's answer, a file a task read, a hand-edited report), so every
value is escaped wherever it lands, text or attribute; the template marks
nothing safe. A report is read through :class:`_Fields`, which checks each
field's type, so a malformed report is one :class:`ReportError` naming the
field rather than an exception from deep inside the drawing.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from .._core._exceptions import ReportError
from .._core._jsonable import to_jsonable
from .._core._result import FanInResult

__all__ = ["ReportError", "render_html", "run_report"]

_COLOURS = {
    "ok": "#2e9d57",
    "error": "#d64545",
    "timeout": "#e08a1e",
    "cancelled": "#8c8c8c",
    "skipped": "#cfcfcf",
}
_OTHER_COLOUR = "#999999"

# Timeline geometry, in SVG pixels: the name column, the plot and a margin
# on the right for the deadline's label.
LEFT, WIDTH, RIGHT, ROW = 160, 760, 70, 26

# Past this, numbers in a report are not timings fanflow wrote: refusing
# them keeps every coordinate and label finite and short.
_LIMIT = 1e15


def run_report(
    name: str,
    spec_hash: str,
    result: FanInResult,
    *,
    started_at: float,
    deadline: float | None,
    aggregate: dict[str, Any] | None = None,
    budget: Any = None,
) -> dict[str, Any]:
    """The run report: ``FanInResult.to_dict()`` plus the workflow, its hash and timings.

    With a ``budget`` (an ``ff.Budget``), a ``"budget"`` entry: its limits,
    what was spent and what is left (``Budget.to_dict()``), and how many
    tasks the budget stopped — ``skipped`` (never started) and
    ``not_retried``.

    An agent task's ``value`` is its answer (the parsed one with a schema,
    else the text); its ``"agent"`` entry holds ``steps`` (model calls) and
    ``tool_calls``, each ``{"name", "arguments", "result", "error"}``.
    """
    from .. import __version__

    data = result.to_dict()
    for task, entry in zip(result.results, data["results"], strict=True):
        _agent_entry(task.value, entry)
    report: dict[str, Any] = {
        "fanflow": __version__,
        "workflow": name,
        "spec_sha256": spec_hash,
        "started_at": started_at,
        "finished_at": time.time(),
        "deadline": deadline,
        "result": data,
        "aggregate": to_jsonable(aggregate) if aggregate is not None else None,
    }
    if budget is not None:
        stopped = [r for r in result.results if r.reason and "budget" in r.reason]
        report["budget"] = {
            **budget.to_dict(),
            "skipped": sum(1 for r in stopped if r.status.value == "skipped"),
            "not_retried": sum(1 for r in stopped if r.status.value != "skipped"),
        }
    return report


def _agent_entry(value: Any, entry: dict[str, Any]) -> None:
    """An agent's answer as the task's ``value``, its steps and tool calls under ``"agent"``."""
    from ..llm._agent import AgentResult

    if not isinstance(value, AgentResult):
        return
    entry["value"] = to_jsonable(value.text if value.parsed is None else value.parsed)
    entry["agent"] = {
        "steps": value.steps,
        "tool_calls": [
            {
                "name": call.name,
                "arguments": to_jsonable(call.arguments),
                "result": to_jsonable(call.result),
                "error": call.error,
            }
            for call in value.tool_calls
        ],
    }


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


_REQUIRED: Any = object()


class _Fields:
    """Typed access to one object of a run report; a mistake names the field's path.

    A field that is missing or null takes its default; a field that is
    required (no default) or of the wrong type raises :class:`ReportError`.
    """

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ReportError(f"{path or 'the report'}: expected an object, got {_kind(data)}")
        self.data = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key)
        if value is None and default is _REQUIRED:
            raise ReportError(f"{self.where(key)}: missing")
        return value

    def obj(self, key: str) -> _Fields:
        return _Fields(self._get(key, _REQUIRED), self.where(key))

    def maybe_obj(self, key: str) -> _Fields | None:
        value = self._get(key, None)
        return None if value is None else _Fields(value, self.where(key))

    def items(self, key: str, default: Any = _REQUIRED) -> list[Any]:
        value = self._get(key, default)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise ReportError(f"{self.where(key)}: expected a list, got {_kind(value)}")
        return list(value)

    def text(self, key: str, default: Any = "") -> str:
        value = self._get(key, default)
        if value is None:
            return str(default)
        if not isinstance(value, str):
            raise ReportError(f"{self.where(key)}: expected a string, got {_kind(value)}")
        return value

    def number(self, key: str, default: Any = None) -> float | None:
        value = self._get(key, default)
        if value is None:
            return None if default is None else float(default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReportError(f"{self.where(key)}: expected a number, got {_kind(value)}")
        if not (math.isfinite(value) and abs(value) <= _LIMIT):
            raise ReportError(f"{self.where(key)}: {value!r} is not a usable number")
        return float(value)

    def integer(self, key: str, default: int) -> int:
        value = self._get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ReportError(f"{self.where(key)}: expected a whole number, got {_kind(value)}")
        if abs(value) > _LIMIT:
            raise ReportError(f"{self.where(key)}: {value} is out of range")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise ReportError(f"{self.where(key)}: expected true or false, got {_kind(value)}")
        return value


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 1 else f"{seconds:.2f} s"


def _step(span: float) -> float:
    """A 1-2-5 tick interval giving four to ten ticks over ``span`` seconds."""
    raw = span / 5
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5):
        if m * magnitude >= raw * 0.999:
            return m * magnitude
    return 10 * magnitude


def _tick_label(value: float, step: float) -> str:
    if step < 1:
        digits = max(0, -math.floor(math.log10(step * 1000) + 1e-9))
        return f"{value * 1000:.{digits}f} ms"
    if step >= 60 and step % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"


def _json_text(value: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        # A report built in Python (not read from JSON) may hold anything.
        return f"<a value JSON cannot show: {type(value).__name__}>"


def _budget_view(budget: _Fields | None) -> dict[str, Any] | None:
    """The budget table: limits, spent and remaining per measure, and the tasks it stopped."""
    if budget is None:
        return None
    limits, spent, remaining = budget.obj("limits"), budget.obj("spent"), budget.obj("remaining")
    lines = []
    for what in ("tokens", "dollars", "requests"):

        def show(fields: _Fields, what: str = what) -> str:
            value = fields.number(what)
            if value is None:
                return "-"
            return f"${value:,.4f}" if what == "dollars" else f"{value:,.0f}"

        lines.append(
            {
                "what": what,
                "limit": show(limits),
                "spent": show(spent),
                "remaining": show(remaining),
            }
        )
    return {
        "lines": lines,
        "skipped": budget.integer("skipped", 0),
        "not_retried": budget.integer("not_retried", 0),
    }


def _view(report: Any) -> dict[str, Any]:
    """Check ``report`` field by field and lay out everything the page shows."""
    top = _Fields(report, "")
    result = top.obj("result")
    tasks = [_Fields(t, f"result.results[{i}]") for i, t in enumerate(result.items("results"))]
    started_at = top.number("started_at")
    elapsed = result.number("elapsed")
    deadline = top.number("deadline")

    rows: list[dict[str, Any]] = []
    times: list[float] = []
    for task in tasks:
        name = task.text("name", _REQUIRED)
        status = task.text("status", "unknown")
        history = [
            _Fields(a, f"{task.where('history')}[{j}]")
            for j, a in enumerate(task.items("history", []))
        ]
        attempts = []
        for j, attempt in enumerate(history):
            start = attempt.number("started_at", _REQUIRED)
            end = attempt.number("finished_at", _REQUIRED)
            assert start is not None and end is not None
            times += [start, end]
            attempts.append(
                {
                    "number": attempt.integer("number", j + 1),
                    "start": start,
                    "end": max(start, end),
                    "status": attempt.text("status", "unknown"),
                    "hedge": attempt.flag("hedge"),
                    "error": attempt.text("error"),
                }
            )
        error = task.maybe_obj("error")
        if error is not None:
            shown = error.text("message") or error.text("type")
        else:
            value = task.data.get("value")
            # Text as it is (a command's output, a model's answer); the rest as JSON.
            shown = value if isinstance(value, str) else _json_text(value)
        note = task.text("reason")
        agent = task.maybe_obj("agent")
        if agent is not None:
            calls = [
                _Fields(c, f"{agent.where('tool_calls')}[{k}]")
                for k, c in enumerate(agent.items("tool_calls", []))
            ]
            names = ", ".join(
                c.text("name") + (" (error)" if c.data.get("error") is not None else "")
                for c in calls
            )
            said = f"{len(calls)} tool call(s){': ' + names if names else ''}"
            note = f"{note}; {said}" if note else said
        rows.append(
            {
                "name": name,
                "status": status,
                "colour": _COLOURS.get(status, _OTHER_COLOUR),
                "attempts": task.integer("attempts", len(attempts)),
                "time": _fmt(task.number("duration")),
                "hedged": task.flag("hedged"),
                "value": shown[:200] + ("..." if len(shown) > 200 else ""),
                "note": note,
                "history": attempts,
            }
        )

    # The view spans the run itself — its start to its last attempt's end —
    # not the deadline: a 0.6 s run under a 2-minute deadline must not be a
    # column of slivers. The deadline is drawn only when it falls in view.
    t0 = min([*times, *([started_at] if started_at is not None else [])], default=0.0)
    if times:
        t1 = max(times)
    elif started_at is not None and elapsed is not None:
        t1 = started_at + elapsed
    else:
        t1 = t0
    deadline_at = None
    if deadline is not None and deadline > 0 and started_at is not None:
        deadline_at = started_at + deadline
    # A deadline that cut the run lands at (or a hair after) its last end.
    deadline_in_view = deadline_at is not None and t0 <= deadline_at <= t1 + 0.05 * (t1 - t0)
    if deadline_in_view:
        assert deadline_at is not None
        t1 = max(t1, deadline_at)
    span = max(t1 - t0, 1e-3)

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * WIDTH

    step = _step(span)
    ticks = []
    # Timestamps near 1.7e9 carry ~1e-7 s of rounding: a tick within 0.1 %
    # of the right edge is the edge.
    for k in range(int(span / step + 1e-3) + 1):
        ticks.append({"x": f"{x(t0 + k * step):.1f}", "label": _tick_label(k * step, step)})
    for i, row in enumerate(rows):
        y = 28 + i * ROW
        row["y"], row["text_y"] = y, y + 14
        for attempt in row["history"]:
            left = x(attempt["start"])
            attempt.update(
                x=f"{left:.1f}",
                width=f"{max(2.0, x(attempt['end']) - left):.1f}",
                label_x=f"{left + 3:.1f}",
                colour=_COLOURS.get(attempt["status"], _OTHER_COLOUR),
                label=(
                    "H"
                    if attempt["hedge"]
                    else (f"#{attempt['number']}" if attempt["number"] > 1 else "")
                ),
                tip=(
                    f"{row['name']} attempt {attempt['number']}"
                    f"{' (hedge)' if attempt['hedge'] else ''}: {attempt['status']}, "
                    f"{_fmt(attempt['end'] - attempt['start'])}"
                    f"{' - ' + attempt['error'] if attempt['error'] else ''}"
                ),
            )
    height = ROW * len(rows) + 40
    deadline_note = ""
    if deadline is not None and deadline > 0:
        deadline_note = f"deadline {_fmt(deadline)}" + (
            "" if deadline_in_view else " (not reached)"
        )

    aggregate = top.maybe_obj("aggregate")
    aggregate_text = None
    if aggregate is not None:
        text = aggregate.data.get("text")
        if isinstance(text, str) and text:
            aggregate_text = text
        elif "value" in aggregate.data:
            aggregate_text = _json_text(aggregate.data["value"], indent=2)
    coverage = result.number("coverage", 0.0)
    confidence = result.number("confidence", 0.0)
    assert coverage is not None and confidence is not None
    return {
        "budget": _budget_view(top.maybe_obj("budget")),
        "workflow": top.text("workflow", "(unnamed)"),
        "verdict": "ok" if result.flag("ok") else "failed",
        "strategy": result.text("strategy"),
        "reason": result.text("reason"),
        "coverage": f"{coverage:.0%}",
        "confidence": f"{confidence:.2f}",
        "confidence_level": result.text("confidence_level"),
        "elapsed": _fmt(elapsed),
        "spec": top.text("spec_sha256")[:12],
        "deadline_note": deadline_note,
        "svg_width": LEFT + WIDTH + RIGHT,
        "left": LEFT,
        "bar_height": ROW - 8,
        "height": height,
        "ticks": ticks,
        "rows": rows,
        "deadline_x": f"{x(deadline_at):.1f}" if deadline_in_view and deadline_at else None,
        "deadline_label_y": height - 4,
        "aggregate": aggregate_text,
    }


_TEMPLATE = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>fanflow run: {{ workflow }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; overflow-wrap: anywhere; } .meta { color: #555; overflow-wrap: anywhere; }
.grid { stroke: #eee; } .tick { font-size: 11px; fill: #777; }
.name { font-size: 12px; fill: #333; } .label { font-size: 10px; fill: #fff; }
.none { font-size: 11px; fill: #999; font-style: italic; }
rect.hedge { stroke: #222; stroke-dasharray: 3 2; }
.deadline { stroke: #d64545; stroke-width: 2; stroke-dasharray: 6 4; }
table { border-collapse: collapse; margin-top: 16px; max-width: 100%; }
td, th { border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left; vertical-align: top; }
td.fixed { white-space: nowrap; }
td.task { min-width: 8em; max-width: 16em; overflow-wrap: anywhere; }
td.value { max-width: 480px; overflow-wrap: anywhere; } td.value code { white-space: pre-wrap; }
td.note { overflow-wrap: anywhere; }
.status { color: #fff; border-radius: 3px; padding: 1px 6px; }
pre.aggregate { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 100%;
  background: #f7f7f7; padding: 10px 12px; border-radius: 4px; }
</style></head><body>
<h1>fanflow run: {{ workflow }} - {{ verdict }}</h1>
<p class="meta">strategy {{ strategy }} - {{ reason }} - coverage {{ coverage }},
confidence {{ confidence }} ({{ confidence_level }}) - {{ elapsed }}
{%- if deadline_note %} - {{ deadline_note }}{% endif %} - spec sha256 {{ spec }}</p>
<svg class="timeline" width="{{ svg_width }}" height="{{ height }}" \
viewBox="0 0 {{ svg_width }} {{ height }}" xmlns="http://www.w3.org/2000/svg" \
role="img" aria-label="timeline of attempts">
{%- for tick in ticks %}
<line x1="{{ tick.x }}" y1="20" x2="{{ tick.x }}" y2="{{ height }}" class="grid"/>\
<text x="{{ tick.x }}" y="14" class="tick">{{ tick.label }}</text>
{%- endfor %}
{%- for row in rows %}
<text x="8" y="{{ row.text_y }}" class="name">{{ row.name[:24] }}</text>
{%- for a in row.history %}
<rect class="attempt{{ ' hedge' if a.hedge else '' }}" data-task="{{ row.name }}" \
data-attempt="{{ a.number }}" data-status="{{ a.status }}" x="{{ a.x }}" y="{{ row.y }}" \
width="{{ a.width }}" height="{{ bar_height }}" fill="{{ a.colour }}">\
<title>{{ a.tip }}</title></rect>
{%- if a.label %}
<text x="{{ a.label_x }}" y="{{ row.y + 13 }}" class="label">{{ a.label }}</text>
{%- endif %}
{%- else %}
<text x="{{ left }}" y="{{ row.text_y }}" class="none">{{ row.status }}</text>
{%- endfor %}
{%- endfor %}
{%- if deadline_x %}
<line class="deadline" x1="{{ deadline_x }}" y1="18" x2="{{ deadline_x }}" y2="{{ height }}"/>\
<text x="{{ deadline_x }}" dx="3" y="{{ deadline_label_y }}" class="tick">deadline</text>
{%- endif %}
</svg>
<table><thead><tr><th>task</th><th>status</th><th>attempts</th><th>time</th><th>hedged</th>
<th>value / error</th><th>note</th></tr></thead><tbody>
{%- for row in rows %}
<tr><td class="task">{{ row.name }}</td>\
<td class="fixed"><span class="status" style="background:{{ row.colour }}">{{ row.status }}\
</span></td><td class="fixed">{{ row.attempts }}</td><td class="fixed">{{ row.time }}</td>\
<td class="fixed">{{ 'yes' if row.hedged else '' }}</td>\
<td class="value"><code>{{ row.value }}</code></td><td class="note">{{ row.note }}</td></tr>
{%- endfor %}
</tbody></table>
{%- if budget is not none %}
<h2>Budget</h2>
<table class="budget"><thead><tr><th></th><th>limit</th><th>spent</th><th>remaining</th></tr>
</thead><tbody>
{%- for line in budget.lines %}
<tr><td>{{ line.what }}</td><td>{{ line.limit }}</td><td>{{ line.spent }}</td>\
<td>{{ line.remaining }}</td></tr>
{%- endfor %}
</tbody></table>
<p class="meta">{{ budget.skipped }} task(s) skipped for the budget\
{%- if budget.not_retried %}, {{ budget.not_retried }} not retried for it{% endif %}</p>
{%- endif %}
{%- if aggregate is not none %}
<h2>Aggregate</h2>
<pre class="aggregate">{{ aggregate }}</pre>
{%- endif %}
</body></html>
"""


@functools.cache
def _template() -> Any:
    # Imported here: only drawing a page needs Jinja2, and importing fanflow
    # stays light.
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE)


def render_html(report: Any) -> str:
    """One self-contained HTML page (no scripts, no fetches): timeline and results table.

    The timeline spans the run, from its start to its last attempt's end;
    the deadline is marked when it falls within that span and otherwise
    named in the header. Every value from ``report`` is HTML-escaped.

    Args:
        report: a run report, as :func:`run_report` makes it (or as read
            back from ``fanflow run --json``).

    Raises:
        ReportError: ``report`` is not a fanflow run report, or a field of
            it has the wrong type or an unusable value (the message names it).
    """
    page: str = _template().render(**_view(report))
    # A lone surrogate (valid in JSON text, not in UTF-8) would make the
    # page impossible to write: replace what cannot be encoded.
    return page.encode("utf-8", "replace").decode("utf-8")
