"""The HTML run report: escaping, malformed reports, the timeline's scale, ``fanflow report``."""

from __future__ import annotations

import copy
import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fanflow as ff
from fanflow._cli.workflow import report as report_command
from fanflow._core._result import AttemptRecord, FanInResult, TaskResult
from fanflow._core._types import Status
from fanflow._core._usage import ModelUsage, Usage
from fanflow._workflow._report import LEFT, WIDTH, ReportError, render_html, run_report

T0 = 1_750_000_000.0

PAYLOADS = [
    "<script>document.title='PWNED'</script>",
    '"><img src=x onerror="document.title=\'PWNED\'">',
    "'><svg onload=\"document.title='PWNED'\">",
    "</style><script>document.title='PWNED'</script>",
    "</title><script>document.title='PWNED'</script>",
    "</svg></table><script>document.title='PWNED'</script>",
    "<!-- ]]> &amp; &lt; \u202e ünïcödé 🚀 \u0000",
]
# Everything the page may contain: its own markup and nothing a value can add.
PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "svg", "line", "text",
    "rect", "table", "thead", "tbody", "tr", "th", "td", "span", "code", "pre",
}  # fmt: skip


class Page(HTMLParser):
    """Parses a page the way a browser's tokenizer does: tags, attributes, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[tuple[str, str]] = []
        self._open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        self.text.append((self._open[-1] if self._open else "", data))

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]

    def texts(self, tag: str) -> list[str]:
        return [data for t, data in self.text if t == tag]


def attempt(number: int, start: float, end: float, status: Status, **kw: Any) -> AttemptRecord:
    return AttemptRecord(number, T0 + start, T0 + end, status, **kw)


def sample_report(
    *, deadline: float | None = 120.0, aggregate: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A real run report of a 0.6 s run: retries, a hedge, a timeout, a skip."""
    results = [
        TaskResult(
            "fast",
            Status.OK,
            "fast answer",
            attempts=1,
            started_at=T0 + 0.01,
            finished_at=T0 + 0.2,
            duration=0.19,
            index=0,
            history=(attempt(1, 0.01, 0.2, Status.OK),),
        ),
        TaskResult(
            "flaky",
            Status.ERROR,
            error=ConnectionError("refused"),
            attempts=2,
            started_at=T0 + 0.01,
            finished_at=T0 + 0.3,
            duration=0.29,
            index=1,
            history=(
                attempt(1, 0.01, 0.1, Status.ERROR, error="ConnectionError: refused"),
                attempt(2, 0.15, 0.3, Status.ERROR, error="ConnectionError: refused"),
            ),
        ),
        TaskResult(
            "hedged",
            Status.OK,
            {"n": 3},
            attempts=2,
            started_at=T0 + 0.01,
            finished_at=T0 + 0.5,
            duration=0.49,
            hedged=True,
            index=2,
            history=(
                attempt(1, 0.01, 0.5, Status.CANCELLED),
                attempt(2, 0.3, 0.5, Status.OK, hedge=True),
            ),
        ),
        TaskResult(
            "hung",
            Status.TIMEOUT,
            error=TimeoutError("timed out after 0.6 s"),
            attempts=1,
            started_at=T0 + 0.0,
            finished_at=T0 + 0.6,
            duration=0.6,
            index=3,
            history=(attempt(1, 0.0, 0.6, Status.TIMEOUT, error="timed out"),),
        ),
        TaskResult("later", Status.SKIPPED, reason="a need failed: flaky", index=4),
    ]
    usage = Usage({"m": ModelUsage(3, 120, 40)}, {"m": ModelUsage(1, 30, 0)})
    result = FanInResult(
        {"fast": "fast answer", "hedged": {"n": 3}}, results, True, "BestEffort(min_success=1)",
        0.4, 0.6, reason="2 of 5 ok", usage=usage,
    )  # fmt: skip
    data = run_report("sample", "ab" * 32, result, started_at=T0, deadline=deadline,
                      aggregate=aggregate)  # fmt: skip
    data["finished_at"] = T0 + 0.62
    return data


def hostile_report(payload: str) -> dict[str, Any]:
    data = sample_report(aggregate={"kind": "synthesize", "text": f"summary {payload}"})
    data["workflow"] = payload
    data["spec_sha256"] = payload
    result = data["result"]
    result["reason"] = result["strategy"] = result["confidence_level"] = payload
    for i, task in enumerate(result["results"]):
        task["name"] = f"{payload}{i}"
        task["status"] = payload
        task["reason"] = payload
        task["value"] = {"out": payload}
        if task["error"] is not None:
            task["error"]["message"] = payload
        for a in task["history"]:
            a["status"] = payload
            a["error"] = payload
    return data


@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_field_is_escaped(payload: str) -> None:
    data = hostile_report(payload)
    page = render_html(data)
    assert not re.search(r"<\s*(script|img|iframe)|\son\w+\s*=\s*\"document", page, re.I)
    parsed = Page(page)
    assert {tag for tag, _ in parsed.tags} <= PAGE_TAGS
    assert len(parsed.all("style")) == 1 and len(parsed.all("svg")) == 1
    for _, attrs in parsed.tags:
        assert not any(name.startswith("on") for name in attrs)
    names = [t["name"] for t in data["result"]["results"]]
    # Attributes and text come back exactly as given: escaped, not mangled.
    rects = parsed.all("rect")
    assert rects and {r["data-task"] for r in rects} <= set(names)
    assert {r["data-status"] for r in rects} == {payload}
    assert parsed.texts("td")[0] == names[0]
    assert parsed.texts("pre") == [f"summary {payload}"]
    assert parsed.texts("title")[0] == f"fanflow run: {payload}"


def test_an_html_report_round_trips_through_json_with_hostile_values(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps(hostile_report(PAYLOADS[0])))
    out = CliRunner().invoke(
        report_command, [str(tmp_path / "r.json"), "-o", str(tmp_path / "r.html")]
    )
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r.html").read_text()
    assert "<script" not in page and "&lt;script&gt;" in page


# --- malformed reports --------------------------------------------------------------------


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*prefix, i))
    return found


BASE = sample_report(aggregate={"kind": "merge", "value": {"k": [1, 2]}})
PATHS = paths(BASE)
DELETE = object()
MUTATIONS: list[Any] = [
    DELETE, None, "", "x", "<b>", 0, -1, 1.5, 10**30, -(10**30), 1e308, -1e308, math.nan,
    math.inf, -math.inf, True, False, [], [1, "a"], {}, {"a": None}, "\ud800", "y" * 5000,
]  # fmt: skip


def mutate(base: Any, changes: list[tuple[int, int]]) -> Any:
    data = copy.deepcopy(base)
    for which, how in changes:
        path = PATHS[which % len(PATHS)]
        try:
            parent = data
            for key in path[:-1]:
                parent = parent[key]
            last = path[-1]
            parent[last]  # the path may be gone after an earlier change
        except (KeyError, IndexError, TypeError):
            continue
        change = MUTATIONS[how % len(MUTATIONS)]
        if change is DELETE:
            del parent[last]
        else:
            parent[last] = copy.deepcopy(change)
    return data


CHANGES = st.lists(
    st.tuples(st.integers(0, len(PATHS) - 1), st.integers(0, len(MUTATIONS) - 1)),
    min_size=1,
    max_size=3,
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(CHANGES)
def test_a_mutated_report_renders_or_raises_report_error(changes: list[tuple[int, int]]) -> None:
    data = mutate(BASE, changes)
    try:
        page = render_html(data)
    except ReportError as exc:
        message = str(exc)
    else:
        message = ""
    assert "\n" not in message
    if message:
        return
    page.encode("utf-8")  # always writable
    assert "<script" not in page


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(CHANGES, st.booleans())
def test_fanflow_report_of_a_mutated_report_renders_or_exits_2_in_one_line(
    tmp_path: Path, changes: list[tuple[int, int]], at_top: bool
) -> None:
    data: Any = mutate(BASE, changes)
    if at_top:  # the whole report, or its result, replaced
        data = mutate({"r": data}, changes)
    source = tmp_path / "run.json"
    source.write_text(json.dumps(data), encoding="utf-8")  # NaN and Infinity as JSON allows
    out = CliRunner().invoke(report_command, [str(source), "-o", str(tmp_path / "run.html")])
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert out.exit_code in (0, 2)
    if out.exit_code == 2:
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "result: missing"),
        ("[]", "expected an object, got a list"),
        ('{"result": {"results": [{"name": 1}]}}', "result.results[0].name: expected a string"),
        ('{"result": {"results": [], "coverage": NaN}}', "result.coverage: nan"),
        ("1" * 5000, "not a fanflow run report"),
        ("[" * 100_000 + "]" * 100_000, "not a fanflow run report"),
        ("{", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_fanflow_report_errors_are_one_line(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    source = tmp_path / "run.json"
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    out = CliRunner().invoke(report_command, [str(source), "-o", str(tmp_path / "x.html")])
    assert out.exit_code == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: ") and message in line


@pytest.mark.parametrize("where", ["missing/dir/r.html", ".", "dir"])
def test_fanflow_report_to_a_path_it_cannot_write_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "run.json").write_text(json.dumps(sample_report()))
    out = CliRunner().invoke(
        report_command, [str(tmp_path / "run.json"), "-o", str(tmp_path / where)]
    )
    assert out.exit_code == 2, out.output
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path / where}: cannot write: ")


def test_fanflow_report_of_a_directory_or_missing_file_is_one_line(tmp_path: Path) -> None:
    for source, message in ((tmp_path, "cannot read"), (tmp_path / "nope.json", "no such file")):
        out = CliRunner().invoke(report_command, [str(source), "-o", str(tmp_path / "x.html")])
        assert out.exit_code == 2
        (line,) = out.stderr.splitlines()
        assert message in line


def test_the_docs_show_the_report_command_as_it_is() -> None:
    # The workflows guide (the README's former home of this) names its options.
    guide = Path(__file__).resolve().parent.parent / "docs" / "guide" / "workflows.md"
    readme = guide.read_text()
    shown = re.search(r"`fanflow report ([^`]*)`( \(or `(--?[a-z]+)`\))?", readme)
    assert shown is not None
    options = [w for w in shown.group(1).split() if w.startswith("-")]
    options += [shown.group(3)] if shown.group(3) else []
    assert options == ["-o"]
    help_text = CliRunner().invoke(report_command, ["--help"]).output
    assert all(re.search(rf"(^|\s){o}\b", help_text) for o in options)


# --- the timeline ---------------------------------------------------------------------------


def geometry(page: str) -> tuple[list[tuple[float, float]], list[float], list[float]]:
    parsed = Page(page)
    bars = [(float(r["x"] or 0), float(r["x"] or 0) + float(r["width"] or 0))
            for r in parsed.all("rect")]  # fmt: skip
    deadline = [float(line["x1"] or 0) for line in parsed.all("line")
                if line.get("class") == "deadline"]  # fmt: skip
    ticks = [float(line["x1"] or 0) for line in parsed.all("line") if line.get("class") == "grid"]
    return bars, deadline, ticks


def test_a_short_run_under_a_long_deadline_fills_the_timeline() -> None:
    page = render_html(sample_report(deadline=120.0))
    bars, deadline, ticks = geometry(page)
    assert len(bars) == 6
    assert min(a for a, _ in bars) == pytest.approx(LEFT, abs=1)
    assert max(b for _, b in bars) == pytest.approx(LEFT + WIDTH, abs=1)
    # The 0.19 s attempt is a quarter of the 0.6 s view, not a sliver.
    fast = bars[0][1] - bars[0][0]
    assert fast == pytest.approx(WIDTH * 0.19 / 0.6, rel=0.02)
    assert deadline == []  # two minutes away: out of view, and said in words
    assert "deadline 120.00 s (not reached)" in Page(page).texts("p")[0]
    assert all(LEFT - 0.1 <= t <= LEFT + WIDTH + 0.1 for t in ticks) and 4 <= len(ticks) <= 11
    labels = Page(page).texts("text")
    assert "600 ms" in labels and "0 ms" in labels


def test_a_deadline_that_cut_the_run_is_marked_where_it_fell() -> None:
    bars, deadline, _ = geometry(render_html(sample_report(deadline=0.6)))
    assert deadline == [pytest.approx(LEFT + WIDTH, abs=1)]
    bars, deadline, _ = geometry(render_html(sample_report(deadline=0.3)))
    assert deadline == [pytest.approx(LEFT + WIDTH / 2, abs=1)]
    assert max(b for _, b in bars) == pytest.approx(LEFT + WIDTH, abs=1)


def test_the_aggregate_wraps() -> None:
    text = "word " * 400 + "x" * 3000
    page = render_html(sample_report(aggregate={"kind": "synthesize", "text": text}))
    parsed = Page(page)
    assert parsed.texts("pre") == [text]
    assert parsed.all("pre") == [{"class": "aggregate"}]
    (css,) = parsed.texts("style")
    rule = re.search(r"pre\.aggregate\s*\{([^}]*)\}", css)
    assert rule is not None
    declarations = {
        k.strip(): v.strip()
        for k, v in (d.split(":") for d in rule.group(1).split(";") if ":" in d)
    }
    assert declarations["white-space"] == "pre-wrap"
    assert declarations["overflow-wrap"] == "anywhere"


def test_a_report_with_no_attempts_renders() -> None:
    result = FanInResult(None, [TaskResult("a", Status.SKIPPED, reason="deadline")], False,
                         "AllOrNothing()", 0.0, 0.0)  # fmt: skip
    page = render_html(run_report("w", "", result, started_at=T0, deadline=None))
    assert Page(page).all("rect") == [] and "skipped" in Page(page).texts("text")


async def test_a_real_run_report_renders() -> None:
    async def work(n: int) -> int:
        return n

    started = time.time()
    result = await ff.fan_out([ff.Task(f"t{i}", work, args=(i,)) for i in range(3)])
    page = render_html(run_report("real", "0" * 64, result, started_at=started, deadline=5.0))
    assert len(Page(page).all("rect")) == 3
