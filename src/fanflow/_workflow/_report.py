"""Run reports: the JSON a run writes, and a self-contained HTML page drawn from it."""

from __future__ import annotations

import html
import json
import time
from typing import Any

from .._jsonable import to_jsonable
from .._result import FanInResult

__all__ = ["render_html", "run_report"]

_COLOURS = {
    "ok": "#2e9d57",
    "error": "#d64545",
    "timeout": "#e08a1e",
    "cancelled": "#8c8c8c",
    "skipped": "#cfcfcf",
}


def run_report(
    name: str,
    spec_hash: str,
    result: FanInResult,
    *,
    started_at: float,
    deadline: float | None,
    aggregate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run report: ``FanInResult.to_dict()`` plus the workflow, its hash and timings."""
    from .. import __version__

    return {
        "fanflow": __version__,
        "workflow": name,
        "spec_sha256": spec_hash,
        "started_at": started_at,
        "finished_at": time.time(),
        "deadline": deadline,
        "result": result.to_dict(),
        "aggregate": to_jsonable(aggregate) if aggregate is not None else None,
    }


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (no scripts, no fetches): timeline and results table.

    Raises:
        KeyError, TypeError: ``report`` is not a fanflow run report.
    """
    result = report["result"]
    tasks = result["results"]
    attempts = [(t, a) for t in tasks for a in t["history"]]
    starts = [a["started_at"] for _, a in attempts] or [report["started_at"]]
    ends = [a["finished_at"] for _, a in attempts] or [report["finished_at"]]
    t0 = min([report["started_at"], *starts])
    t1 = max(ends)
    if report.get("deadline"):
        t1 = max(t1, report["started_at"] + report["deadline"])
    span = max(t1 - t0, 1e-3)
    left, width, row = 160, 760, 26
    height = row * len(tasks) + 40
    e = html.escape

    def x(t: float) -> float:
        return float(left + (t - t0) / span * width)

    parts = [
        f'<svg class="timeline" width="{left + width + 70}" height="{height}" '
        f'viewBox="0 0 {left + width + 70} {height}" xmlns="http://www.w3.org/2000/svg" '
        'role="img" aria-label="timeline of attempts">'
    ]
    for i in range(6):
        tick = t0 + span * i / 5
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="20" x2="{x(tick):.1f}" y2="{height}" class="grid"/>'
            f'<text x="{x(tick):.1f}" y="14" class="tick">{_fmt(tick - t0)}</text>'
        )
    for i, task in enumerate(tasks):
        y = 28 + i * row
        parts.append(f'<text x="8" y="{y + 14}" class="name">{e(task["name"][:24])}</text>')
        for attempt in task["history"]:
            start, end = attempt["started_at"], attempt["finished_at"]
            status = attempt["status"]
            w = max(2.0, x(end) - x(start))
            tip = (
                f"{task['name']} attempt {attempt['number']}"
                f"{' (hedge)' if attempt['hedge'] else ''}: {status}, {_fmt(end - start)}"
                f"{' - ' + attempt['error'] if attempt['error'] else ''}"
            )
            parts.append(
                f'<rect class="attempt{" hedge" if attempt["hedge"] else ""}" '
                f'data-task="{e(task["name"])}" data-attempt="{attempt["number"]}" '
                f'data-status="{status}" x="{x(start):.1f}" y="{y}" width="{w:.1f}" '
                f'height="{row - 8}" fill="{_COLOURS.get(status, "#999")}">'
                f"<title>{e(tip)}</title></rect>"
            )
            if attempt["number"] > 1 or attempt["hedge"]:
                label = "H" if attempt["hedge"] else f"#{attempt['number']}"
                parts.append(
                    f'<text x="{x(start) + 3:.1f}" y="{y + 13}" class="label">{label}</text>'
                )
        if not task["history"]:
            parts.append(f'<text x="{left}" y="{y + 14}" class="none">{e(task["status"])}</text>')
    if report.get("deadline"):
        dx = x(report["started_at"] + report["deadline"])
        parts.append(
            f'<line class="deadline" x1="{dx:.1f}" y1="18" x2="{dx:.1f}" y2="{height}"/>'
            f'<text x="{dx + 3:.1f}" y="{height - 4}" class="tick">deadline</text>'
        )
    parts.append("</svg>")
    rows = []
    for task in tasks:
        value = task["error"]["message"] if task["error"] else json.dumps(task["value"])
        note = task["reason"] or ""
        rows.append(
            "<tr>"
            f"<td>{e(task['name'])}</td>"
            f'<td><span class="status" style="background:{_COLOURS.get(task["status"], "#999")}">'
            f"{e(task['status'])}</span></td>"
            f"<td>{task['attempts']}</td><td>{_fmt(task['duration'])}</td>"
            f"<td>{'yes' if task['hedged'] else ''}</td>"
            f"<td><code>{e(value[:200])}</code></td><td>{e(note)}</td>"
            "</tr>"
        )
    aggregate = report.get("aggregate")
    aggregate_html = ""
    if aggregate:
        text = aggregate.get("text") or json.dumps(aggregate.get("value"), indent=2)
        aggregate_html = f"<h2>Aggregate</h2><pre>{e(str(text))}</pre>"
    verdict = "ok" if result["ok"] else "failed"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>fanflow run: {e(report["workflow"])}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} .meta {{ color: #555; }}
.grid {{ stroke: #eee; }} .tick {{ font-size: 11px; fill: #777; }}
.name {{ font-size: 12px; fill: #333; }} .label {{ font-size: 10px; fill: #fff; }}
.none {{ font-size: 11px; fill: #999; font-style: italic; }}
rect.hedge {{ stroke: #222; stroke-dasharray: 3 2; }}
.deadline {{ stroke: #d64545; stroke-width: 2; stroke-dasharray: 6 4; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
td, th {{ border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left; }}
.status {{ color: #fff; border-radius: 3px; padding: 1px 6px; }}
</style></head><body>
<h1>fanflow run: {e(report["workflow"])} - {verdict}</h1>
<p class="meta">strategy {e(result["strategy"])} - {e(result["reason"])} - coverage
{result["coverage"]:.0%}, confidence {result["confidence"]:.2f} ({e(result["confidence_level"])})
- {_fmt(result["elapsed"])} - spec sha256 {e(report["spec_sha256"][:12])}</p>
{"".join(parts)}
<table><thead><tr><th>task</th><th>status</th><th>attempts</th><th>time</th><th>hedged</th>
<th>value / error</th><th>note</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
{aggregate_html}
</body></html>
"""
