"""Write docs/gnu-parallel.md from examples.yaml: the conformance count and every gap.

.venv/bin/python tests/gnu/docs.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    data = yaml.safe_load((ROOT / "tests/gnu/examples.yaml").read_text())
    examples = data["examples"]
    scope = [e for e in examples if e["in_scope"]]
    passing = [e for e in scope if "gap" not in e]
    outside = [e for e in examples if not e["in_scope"]]
    lines = [
        "# `fanflow map` and GNU parallel's documented examples",
        "",
        "`tests/test_gnu_conformance.py` runs GNU parallel's own examples",
        "(`man parallel_tutorial`, `man parallel_examples`, `man parallel`; GNU",
        "parallel 20221122, outputs recorded in `tests/gnu/examples.yaml`) through",
        "`fanflow map` and compares stdout byte for byte (sorted where GNU does not",
        "promise an order) and the exit status. See `tests/gnu/README.md`.",
        "",
        f"* In scope (every feature used is one `fanflow map` claims, SPEC §8.6): "
        f"**{len(passing)} of {len(scope)}** print the same "
        f"({100 * len(passing) / len(scope):.0f} %; the suite requires "
        f"{100 * data['threshold']:.0f} %).",
        f"* Everyday examples just outside that claim: "
        f"{sum('gap' not in e for e in outside)} of {len(outside)} print the same; "
        "the others are listed below with why.",
        "",
        "| example | where it comes from | why it differs |",
        "|---|---|---|",
    ]
    for e in examples:
        if "gap" in e:
            gap = e["gap"].replace("|", "\\|")
            source = e["source"].replace("|", "\\|")
            lines.append(f"| `{e['id']}` | {source} | {gap} |")
    lines.append("")
    lines.append("Regenerate: `.venv/bin/python tests/gnu/record.py --gaps` then")
    lines.append("`.venv/bin/python tests/gnu/docs.py`.")
    (ROOT / "docs/gnu-parallel.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
