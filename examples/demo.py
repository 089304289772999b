"""make demo: the research and ensemble workflows, offline, with an HTML report.

Starts fanflow's simulated model service on a free loopback port (scripted
answers: nothing here is a real model), runs ``fanflow run
examples/research.yaml`` against it, and writes ``demo-output/research.json``
and ``demo-output/research.html``. Then runs the library tour
(``examples/tour.py``): every strategy, an ensemble and a synthesis; and
the agent subtasks and structured judges (``examples/agents.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fanflow.testing import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    out = ROOT / "demo-output"
    out.mkdir(exist_ok=True)
    config = str(ROOT / "examples" / "sim-research.json")
    with SimulatorProcess("--latency", "0.2", "--config", config) as simulator:
        print(f"simulated model service (SIMULATED answers) at {simulator.url}\n", flush=True)
        env = simulator.env()
        print(
            "$ fanflow run examples/research.yaml --json demo-output/research.json "
            "--html demo-output/research.html\n",
            flush=True,
        )
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "fanflow",
                "run",
                "examples/research.yaml",
                "--json",
                str(out / "research.json"),
                "--html",
                str(out / "research.html"),
            ],
            cwd=ROOT,
            env=env,
            check=False,
        ).returncode
        if code == 0:
            print("\n$ fanflow run examples/ensemble.yaml\n", flush=True)
            code = subprocess.run(
                [sys.executable, "-m", "fanflow", "run", "examples/ensemble.yaml"],
                cwd=ROOT,
                env=env,
                check=False,
            ).returncode
    print(f"\nreport: {out / 'research.html'} (open it in a browser)\n", flush=True)
    if code != 0:
        return code
    print(
        "$ python examples/tour.py   # the library: every strategy, then the LLM layer\n",
        flush=True,
    )
    code = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tour.py")], check=False
    ).returncode
    if code != 0:
        return code
    print(
        "\n$ python examples/agents.py   # sub-agents with tools, structured judges\n",
        flush=True,
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agents.py")], check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
