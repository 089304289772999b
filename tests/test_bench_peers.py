"""The peer benchmark harness (bench/peers) end to end, on its cheapest workload.

Figures are not checked (tests never assert speed); what is checked is that
each peer's child process reports its cells and the table says what each
peer can and cannot do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).parent.parent / "bench" / "peers" / "run.py"


def test_w4_on_fanflow_and_asyncio(tmp_path: Path) -> None:
    out = tmp_path / "cells.json"
    args = ["--only", "W4", "--peers", "fanflow", "asyncio", "--runs", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    cells = {(c["w"], c["peer"], c["how"]): c for c in json.loads(out.read_text())}
    fan = cells[("W4", "fanflow", "fan_out (default BestEffort)")]
    assert fan["fields"] == {"built_in": True, "ok": "86", "failed": "14"}
    assert (
        cells[("W4", "fanflow map", "100 commands, every 7th exits 1; --joblog")]["fields"]["ok"]
        == "86"
    )
    wrapped = cells[("W4", "asyncio", "TaskGroup + try/except wrapper")]
    assert wrapped["fields"]["built_in"] is False
    assert cells[("W4", "asyncio", "gather(return_exceptions=True)")]["fields"]["baseline"]
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if "fan_out (default BestEffort)" in line)
    assert "| yes " in row and "ok/failed 86/14" in row
    assert row.split("|")[5].strip().endswith("x")  # a ratio to the gather baseline
    assert any("| hand-written " in line and "TaskGroup" in line for line in lines)
