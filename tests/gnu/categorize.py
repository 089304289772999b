"""Name why fanflow map fails an example: the `gap:` reasons in examples.yaml.

A reason is "<category>: <detail>", the category from a known signature in
fanflow's stderr, else from what differs (exit status or stdout), the detail
always what was seen against what GNU parallel printed.
"""

from __future__ import annotations

import re
from typing import Any

from tests.gnu import harness

# Out-of-scope examples without an `unsupported` option: what they use.
OUT_OF_SCOPE = {
    "t-linkplus-abc-ghi": ":::+ / ::::+ (linked input sources)",
    "t-linkplus-ghi-def": ":::+ / ::::+ (linked input sources)",
    "t-linkplus-short": ":::+ / ::::+ (linked input sources)",
    "e-a-to-b": ":::+ / ::::+ (linked input sources)",
    "t-args-are-commands": "no command: the arguments are the commands",
    "e-cat-sh": "no command: the arguments are the commands",
    "t-perl-expr": "{= perl expression =} replacement strings",
    "t-perl-total-jobs": "{= perl expression =} replacement strings",
    "t-perl-skip": "{= perl expression =} replacement strings",
    "e-perl-mkdir": "{= perl expression =} replacement strings",
    "e-log-rotate": "{= perl expression =} replacement strings",
    "t-timeout": "--timeout with GNU's semantics",
    "m-quoting-parallel-seq": "$PARALLEL_SEQ in the job's environment",
}

_SIGNATURES = [
    (re.compile(r"fanflow map does not support (\S+) yet"), "option refused: {0}"),
    (
        re.compile(r"-([Nn]) '0': must be at least 1"),
        "-{0}0 refused (GNU: read one argument per job, insert none)",
    ),
    (
        re.compile(r"(/dev/fd/\d+): no such file"),
        "process substitution <(...) refused as an input file ({0})",
    ),
    (re.compile(r"unexpected '([^']*)'"), "unquoted command / arguments: unexpected {0!r}"),
    (re.compile(r"[Nn]o such option:? (\S+)"), "option unknown to click: {0}"),
]


def _first_diff(gnu: bytes, ours: bytes) -> str:
    a, b = gnu.split(b"\n"), ours.split(b"\n")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            gnu_line, our_line = x.decode(errors="replace"), y.decode(errors="replace")
            return f"line {i + 1}: GNU {gnu_line!r}, fanflow {our_line!r}"
    if len(a) > len(b):
        return f"fanflow stops after {len(b) - 1} lines of GNU's {len(a) - 1}"
    extra = b[len(a) - 1].decode(errors="replace")
    return f"fanflow prints {len(b) - len(a)} extra line(s): {extra!r}"


def categorize(example: dict[str, Any], out: harness.Outcome) -> str:
    if not example["in_scope"]:
        feature = example.get("unsupported") or OUT_OF_SCOPE.get(example["id"], "?")
        return f"out of scope (not in SPEC 8.6): {feature}"
    stderr = out.stderr.decode(errors="replace")
    got = harness.normalize(out.stdout, example["sorted"])
    want = harness.expected(example)
    exit_note = f"exit {out.exit}, GNU {example['exit']}" if out.exit != example["exit"] else ""
    for pattern, category in _SIGNATURES:
        m = pattern.search(stderr)
        if m:
            return category.format(*m.groups()) + (f" ({exit_note})" if exit_note else "")
    if got == want:
        return f"exit status: {exit_note}"
    detail = _first_diff(want, got)
    return f"stdout differs: {detail}" + (f"; {exit_note}" if exit_note else "")


def refusal_problem(example: dict[str, Any], runner: str) -> str | None:
    """Why fanflow map does not refuse the example's out-of-scope option as GNU asks, or None."""
    out = harness.run(example, runner)
    if harness.passes(example, out):
        return None  # implemented after all, and like GNU: nothing to refuse
    message = f"fanflow map does not support {example['unsupported']} yet"
    if message.encode() not in out.stderr:
        last = out.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"no {message!r} on stderr (got {last[0][:120]!r}, exit {out.exit})"
    if simple(example) and out.exit != 255:
        return f"refused with exit {out.exit}, not 255"
    return None


def simple(example: dict[str, Any]) -> bool:
    """Whether the command is one `parallel` call, so its exit status is the script's."""
    command = example["command"]
    return command.startswith("parallel ") and not re.search(r"[|;\n]", command)
