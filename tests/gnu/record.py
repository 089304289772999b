"""Re-record GNU parallel's results for tests/gnu/examples.yaml.

    python tests/gnu/record.py            # run GNU parallel, fill stdout/stderr_empty/exit
    python tests/gnu/record.py --gaps     # run fanflow map, rewrite the `gap:` of each example
    python tests/gnu/record.py --only ID  # just these examples (repeatable)

Each example runs twice under GNU parallel; an example whose two runs differ
is reported as unstable (fix the example: it must be deterministic, sorted
if need be). `--gaps` records the current baseline of fanflow map: an
example that fails gets a `gap:` naming why (the reason pytest's strict
xfail shows), an example that passes loses its `gap:`. Out-of-scope
examples keep their hand-written reason; `refusal_gap` is the same for the
"does not support --X yet" check.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.gnu import harness
from tests.gnu.categorize import categorize, refusal_problem

HEADER = """\
# GNU parallel's documented examples (parallel_tutorial(7), parallel_examples(7),
# parallel(1)), run in an empty temp dir after `setup`; stdout/stderr_empty/exit
# are GNU parallel 20221122's. GENERATED FIELDS: stdout, stderr_empty, exit
# (python tests/gnu/record.py) and gap / refusal_gap (python tests/gnu/record.py
# --gaps, from a run of fanflow map). Everything else is hand-written.
# See tests/gnu/README.md. `gap:` is the one list of what fanflow map does not
# do yet, and why: tests/test_gnu_conformance.py marks those xfail(strict).
"""

ORDER = [
    "id",
    "source",
    "setup",
    "command",
    "after",
    "sorted",
    "in_scope",
    "unsupported",
    "stdout",
    "stderr_empty",
    "exit",
    "gap",
    "refusal_gap",
]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value.rstrip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: dict[str, Any]) -> None:
    examples = [
        {k: e[k] for k in ORDER if k in e} | {k: v for k, v in e.items() if k not in ORDER}
        for e in data["examples"]
    ]
    body = yaml.dump(
        {"threshold": data["threshold"], "examples": examples},
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=1000,
    )
    harness.DATA.write_text(HEADER + body, encoding="utf-8")


def record_gnu(examples: list[dict[str, Any]]) -> int:
    def both(e: dict[str, Any]) -> tuple[harness.Outcome, harness.Outcome]:
        return harness.run(e, harness.GNU), harness.run(e, harness.GNU)

    unstable = 0
    with ThreadPoolExecutor(3) as pool:
        for e, (a, b) in zip(examples, pool.map(both, examples), strict=True):
            na, nb = (
                harness.normalize(a.stdout, e["sorted"]),
                harness.normalize(b.stdout, e["sorted"]),
            )
            if (na, a.exit) != (nb, b.exit):
                unstable += 1
                print(f"UNSTABLE {e['id']}: {na!r} exit {a.exit} vs {nb!r} exit {b.exit}")
            e["stdout"] = na.decode("utf-8", "surrogateescape")
            e["stderr_empty"] = a.stderr == b""
            e["exit"] = a.exit
            print(f"{e['id']:32} exit {a.exit:3} stdout {len(na):5} B stderr {len(a.stderr)} B")
    return unstable


def record_gaps(examples: list[dict[str, Any]]) -> None:
    runner = harness.fanflow_map()
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda e: harness.run(e, runner), examples))
    passed = 0
    for e, out in zip(examples, outcomes, strict=True):
        if harness.passes(e, out):
            passed += e["in_scope"]
            e.pop("gap", None)
        elif e["in_scope"] or not e.get("gap"):
            e["gap"] = categorize(e, out)
        if e.get("unsupported"):
            problem = refusal_problem(e, runner)
            if problem:
                e["refusal_gap"] = problem
            else:
                e.pop("refusal_gap", None)
        print(f"{e['id']:32} {e.get('gap', 'ok')}")
    total = sum(e["in_scope"] for e in examples)
    print(f"in scope: {passed}/{total} pass")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gaps", action="store_true", help="record fanflow map's gaps instead")
    parser.add_argument("--only", action="append", default=[], metavar="ID")
    args = parser.parse_args()
    data = harness.load()
    chosen = [e for e in data["examples"] if not args.only or e["id"] in args.only]
    if args.gaps:
        record_gaps(chosen)
        unstable = 0
    else:
        unstable = record_gnu(chosen)
    dump(data)
    print(f"{len(chosen)} examples written to {harness.DATA}")
    return 1 if unstable else 0


if __name__ == "__main__":
    sys.exit(main())
