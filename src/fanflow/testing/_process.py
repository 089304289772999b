"""The simulator in a process of its own, for code that needs it outside this event loop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Self

__all__ = ["SimulatorProcess"]


class SimulatorProcess:
    """Run ``fanflow simulate`` in a subprocess on a free loopback port.

    ``with SimulatorProcess("--config", "sim.json") as sim:`` starts it and
    waits until it accepts connections; ``sim.url`` is the API root and
    ``sim.env()`` an environment with ``FANFLOW_SIM_URL`` set (for ``sim:``
    model URIs in child processes). The process is stopped on exit. Use it
    where the simulator must not share the caller's event loop: benchmarks,
    command-line runs, demos. The arguments are those of ``fanflow simulate``.

    Raises:
        RuntimeError: the simulator did not start within ``start_timeout`` seconds.
    """

    def __init__(self, *args: str, start_timeout: float = 15.0) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.args = args
        self.start_timeout = start_timeout
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """This process's environment plus ``FANFLOW_SIM_URL`` pointing here."""
        return {**os.environ, "FANFLOW_SIM_URL": self.url}

    def __enter__(self) -> Self:
        cmd = [sys.executable, "-m", "fanflow", "simulate", "--port", str(self.port), *self.args]
        self._proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the simulator exited with status {self._proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"the simulator did not start within {self.start_timeout:g} s")

    def __exit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None
