"""make demo: the research and ensemble workflows, offline, with an HTML report.

Starts fanflow's simulated model service on a free loopback port (scripted
answers: nothing here is a real model), runs ``fanflow run
examples/research.yaml`` against it, and writes ``demo-output/research.json``
and ``demo-output/research.html``. Then runs the library tour
(``examples/tour.py``): every strategy, an ensemble and a synthesis.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    out = ROOT / "demo-output"
    out.mkdir(exist_ok=True)
    port = free_port()
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanflow",
            "simulate",
            "--port",
            str(port),
            "--latency",
            "0.2",
            "--config",
            str(ROOT / "examples" / "sim-research.json"),
        ],
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        env = {**os.environ, "FANFLOW_SIM_URL": f"http://127.0.0.1:{port}/v1"}
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
    finally:
        simulator.terminate()
        simulator.wait()
    print(f"\nreport: {out / 'research.html'} (open it in a browser)\n", flush=True)
    if code != 0:
        return code
    print(
        "$ python examples/tour.py   # the library: every strategy, then the LLM layer\n",
        flush=True,
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tour.py")], check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
