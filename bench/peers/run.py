"""Side-by-side benchmarks: the same seven workloads on fanflow and on what users pick instead.

Run with ``make bench-peers`` (or ``python bench/peers/run.py [--runs N]
[--only W1 W3] [--peers asyncio fanflow]``). Each peer runs in a child
process of its own, so that one peer's imports and background threads
(Ray's above all) cannot slow another down; the driver prints one table.
Every figure is a median over ``--runs`` runs (default 5) and is divided by
a baseline measured in the same run: the ideal where one exists, bare
asyncio otherwise, GNU parallel for shell jobs. docs/benchmarks.md records
a run and how to read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import W2_IDEAL, W3_IDEAL, W5_IDEAL, Cell

# Each name is a module p_<name>.py here, run in this order.
PEERS = ["fanflow", "asyncio", "aiometer", "langchain", "langgraph", "ray", "shell"]
# The table's order of the names the modules report.
SHOWN = [
    "fanflow",
    "fanflow map",
    "fanflow on Ray",
    "asyncio",
    "aiometer",
    "LangChain",
    "LangGraph",
    "Ray",
    "GNU parallel",
    "xargs",
]
WORKLOADS = {
    "W1": "10,000 no-op tasks: per-task overhead (x asyncio.gather)",
    "W2": "1,000 x 20 ms at 100 in flight (x Semaphore + gather; eff = 0.2 s ideal / wall)",
    "W3": f"first 10 of 100 lognormal tasks (x ideal = 10th latency {W3_IDEAL * 1e3:.1f} ms)",
    "W4": "100 x 10 ms, every 7th raises: successes and failures back (x gather(return_exc.))",
    "W5": "100 tasks, 5 hang, 0.2 s per-task timeout (x ideal 0.2 s)",
    "W6": "1,000 tasks, 2 % of attempts stall 2 s: p99 task latency (x unhedged asyncio)",
    "W7": "2,000 shell jobs 'true', 8 at a time: ms per job (x GNU parallel)",
}


def _child(peer: str, runs: int, only: list[str]) -> None:
    """Run one peer's workloads and print each cell as a JSON line."""
    try:
        mod = importlib.import_module(f"p_{peer}")
    except ImportError as exc:
        print(json.dumps({"version": f"{peer}: not installed ({exc.name})"}), flush=True)
        for w in only:
            cell = Cell(
                w, peer, "-", cannot=f"not installed ({exc.name}): pip install -e '.[bench]'"
            )
            print(json.dumps(dataclasses.asdict(cell)), flush=True)
        return
    print(json.dumps({"version": mod.VERSION()}), flush=True)
    for w in only:
        t0 = time.perf_counter()
        if w in mod.CANNOT:
            cells = [Cell(w, mod.PEER, "-", cannot=mod.CANNOT[w])]
        else:
            cells = getattr(mod, w.lower())(runs)
        for cell in cells:
            print(json.dumps(dataclasses.asdict(cell)), flush=True)
        took = time.perf_counter() - t0
        print(f"  [{mod.PEER} {w}: {took:.1f} s]", file=sys.stderr, flush=True)
    if hasattr(mod, "shutdown"):
        mod.shutdown()


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def _row(cell: Cell, base: dict[str, float]) -> list[str]:
    """Table columns: W, peer, how, figure, ratio, built in, notes."""
    f = cell.fields
    if cell.cannot:
        return [cell.w, cell.peer, "-", "-", "-", "no", cell.cannot]
    assert cell.value is not None
    value, figure, ratio, notes = cell.value, _ms(cell.value), "", []
    b = f.get("built_in")
    built = "yes" if b is True else "hand-written" if b is False else str(b or "")

    def over(b: float | None) -> str:
        return _ratio(value / b) if b else "-"

    if cell.w == "W1":
        ratio = over(base.get("W1"))
        notes.append(f"{value / 10_000 * 1e6:.1f} us/task")
    elif cell.w == "W2":
        ratio = over(base.get("W2"))
        notes.append(f"eff {W2_IDEAL / value:.2f}")
    elif cell.w == "W3":
        ratio = over(W3_IDEAL)
        notes.append(f"losers run to completion: {f['completed']}")
        notes.append(f"left running at return: {f['left_running']}")
    elif cell.w == "W4":
        ratio = over(base.get("W4"))
        notes.append(f"ok/failed {f['ok']}/{f['failed']}")
    elif cell.w == "W5":
        ratio = over(W5_IDEAL)
        notes.append(f"ok/timed out {f['ok']}/{f['failed']}")
        notes.append(f"hung tasks left running: {f['left_running']} at return")
        notes.append(f"{f['left_later']} 0.5 s later")
    elif cell.w == "W6":
        figure = f"p99 {_ms(value)}"
        ratio = over(base.get("W6"))
        notes.append(f"{f['extra']:.1%} extra attempts")
        if base.get("W6") and value < base["W6"]:
            notes.append(f"p99 cut {base['W6'] / value:.1f}x")
    elif cell.w == "W7":
        figure = f"{value / 2000 * 1e3:.2f} ms/job"
        ratio = over(base.get("W7"))
    if f.get("note"):
        notes.append(str(f["note"]))
    return [cell.w, cell.peer, cell.how, figure, ratio, built, "; ".join(notes)]


def _table(rows: list[list[str]]) -> str:
    head = ["W", "peer", "how", "median", "ratio", "built in", "notes"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median; >= 5)")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="these workloads")
    parser.add_argument("--peers", nargs="*", choices=PEERS, help="these peers")
    parser.add_argument("--json", type=Path, help="also write every cell to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    only = args.only or list(WORKLOADS)
    if args.child:
        _child(args.child, args.runs, only)
        return

    started = time.perf_counter()
    cells: list[Cell] = []
    versions: list[str] = []
    for peer in args.peers or PEERS:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--child", peer, "--runs", str(args.runs), "--only", *only]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)
        for raw in proc.stdout.splitlines():
            data: dict[str, Any] = json.loads(raw)
            if "version" in data:
                versions.append(data["version"])
            else:
                cells.append(Cell(**data))
        if proc.returncode:
            sys.exit(f"bench/peers: the {peer} run failed (exit {proc.returncode}); see above")
        print(f"[{peer}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)

    base = {c.w: c.value for c in cells if c.fields.get("baseline") and c.value}
    order = {p: i for i, p in enumerate(SHOWN)}
    cells.sort(key=lambda c: (c.w, order.get(c.peer, 99)))
    print(
        f"fanflow peer benchmarks - Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs; median of {args.runs} runs; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    for w in only:
        print(f"  {w}: {WORKLOADS[w]}")
    print("  measured: " + "; ".join(versions))
    print()
    print(_table([_row(c, base) for c in cells]))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(c) for c in cells], indent=1))


if __name__ == "__main__":
    main()
