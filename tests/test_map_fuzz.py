"""fanflow map never shows a traceback for a command line, whatever it holds (issue #17)."""

from __future__ import annotations

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanflow._cli import main

WORDS = [
    ":::",
    "::::",
    ":::+",
    "::::+",
    "--",
    "-j",
    "-j0",
    "-j50%",
    "-j+1",
    "-k",
    "--tag",
    "-v",
    "-t",
    "-q",
    "-0",
    "-N",
    "-N2",
    "-n",
    "-m",
    "-X",
    "--colsep",
    "--link",
    "-a",
    "--halt",
    "now,fail=1",
    "soon,success=50%",
    "--retries",
    "--timeout",
    "--delay",
    "--rate",
    "--hedge",
    "p95",
    "--joblog",
    "--resume",
    "--results",
    "--shell",
    "--first",
    "--journal",
    "--dry-run",
    "--bar",
    "-d",
    "{}",
    "{.}",
    "{//}",
    "{1}",
    "{-1/.}",
    "{%}",
    "{#}",
    "echo",
    "x",
    "",
    "3",
    "-1",
    "nan",
    "1e9",
    "--nope",
    "-Z",
    "{",
    "}",
    "'",
    '"',
    "\\",
    ";",
    "|",
    "\x00",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=6)), max_size=12))
def test_any_command_line_ends_in_a_status_not_a_traceback(words: list[str]) -> None:
    # --dry-run first: nothing is run, only read, checked and printed.
    argv = ["map", "--dry-run", *words]
    result = CliRunner().invoke(main, argv, input="a\nb\n", catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception} for {argv!r}"
    )
    assert result.exit_code in (0, 2, 255), (result.exit_code, argv, result.output)
    assert "Traceback" not in result.output
