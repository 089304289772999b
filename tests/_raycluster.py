"""Start and stop a local two-node Ray cluster for tests: head on 127.0.0.2, a worker on 127.0.0.3.

Every process is started with ``ray start --block`` in a session of its own,
so that stopping the cluster is killing the processes of those sessions, by
PID: never ``ray stop`` (it would stop every Ray on the machine). Nothing
leaves 127.0.0.0/8: usage stats are off, the dashboard is not started, and the
HTTP proxies point at a refusing loopback port.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
_REFUSING_PROXY = "http://127.0.0.1:9"
_RAY = str(Path(sys.executable).with_name("ray"))
# Token auth, set explicitly for every process: left unset, Ray turns it on by
# itself when ~/.ray/auth_token exists, and a process without the token is refused.
_TOKEN = secrets.token_hex(16)


def ray_env(**extra: str) -> dict[str, str]:
    """The environment of every Ray process and driver the tests start."""
    env = dict(os.environ)
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        http_proxy=_REFUSING_PROXY,
        https_proxy=_REFUSING_PROXY,
        HTTP_PROXY=_REFUSING_PROXY,
        HTTPS_PROXY=_REFUSING_PROXY,
        no_proxy="127.0.0.0/8,localhost",
        NO_PROXY="127.0.0.0/8,localhost",
        PYTHONUNBUFFERED="1",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=_TOKEN,
    )
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.update(extra)
    return env


_given: set[int] = set()


def free_port(ip: str) -> int:
    """A TCP port nothing listens on at ``ip`` right now, never one given before.

    The kernel may hand the same free port out twice in a row once the
    probing socket is closed; Ray refuses two components on one port.
    """
    while True:
        with socket.socket() as sock:
            sock.bind((ip, 0))
            port = int(sock.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port


def session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid`` (the ones a ``ray start`` started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def comm(pid: int) -> str:
    """A process's command name, ``""`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class _Node:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [_RAY, "start", "--block", *args],
                env=ray_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def pids(self) -> list[int]:
        return session_pids(self.proc.pid)

    def pid_of(self, name: str) -> int | None:
        return next((p for p in self.pids() if comm(p) == name), None)

    def stop(self) -> None:
        # The session's processes, by PID: TERM, then KILL what is left.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            end = time.monotonic() + 2
            while self.pids() and time.monotonic() < end:
                time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


class Cluster:
    """A head node (1 CPU) on 127.0.0.2 and a worker node (1 CPU) on 127.0.0.3."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ffray"))
        self.port = free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.head: _Node | None = None
        self.worker: _Node | None = None

    def _ports(self, ip: str) -> list[str]:
        base = [
            f"--node-ip-address={ip}",
            "--num-cpus=1",
            "--disable-usage-stats",
            f"--node-manager-port={free_port(ip)}",
            f"--object-manager-port={free_port(ip)}",
            f"--dashboard-agent-listen-port={free_port(ip)}",
            f"--dashboard-agent-grpc-port={free_port(ip)}",
            f"--metrics-export-port={free_port(ip)}",
            f"--runtime-env-agent-port={free_port(ip)}",
            "--include-log-monitor=false",
        ]
        return base

    def start(self, timeout: float = 60) -> None:
        """Start both nodes; return once the cluster shows two live nodes."""
        self.head = _Node(
            [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--temp-dir={self.tmp / 'ray'}",
                *self._ports(HEAD_IP),
            ],
            self.tmp / "head.log",
        )
        self._wait_port(HEAD_IP, self.port, timeout)
        self.start_worker()
        self.wait_nodes(2, timeout)

    def start_worker(self) -> None:
        """(Re)start the worker node on 127.0.0.3."""
        self.worker = _Node(
            [f"--address={self.address}", *self._ports(WORKER_IP)],
            self.tmp / f"worker-{time.monotonic_ns()}.log",
        )

    def _wait_port(self, ip: str, port: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((ip, port)) == 0:
                    return
            assert self.head is not None and self.head.proc.poll() is None, self.logs()
            time.sleep(0.1)
        raise TimeoutError(f"the Ray head did not listen on {ip}:{port}\n{self.logs()}")

    def wait_nodes(self, n: int, timeout: float = 60) -> None:
        """Wait until ``n`` nodes are alive (asked by a short-lived driver)."""
        code = (
            "import json, time, ray\n"
            f"ray.init(address={self.address!r}, include_dashboard=False, log_to_driver=False)\n"
            f"end = time.monotonic() + {timeout}\n"
            "while time.monotonic() < end:\n"
            "    alive = [n for n in ray.nodes() if n['Alive']]\n"
            f"    if len(alive) >= {n}:\n"
            "        break\n"
            "    time.sleep(0.1)\n"
            "print(json.dumps(len(alive)))\n"
        )
        out = run_driver(code, timeout=timeout + 30)
        assert out.returncode == 0 and json.loads(out.stdout.splitlines()[-1]) >= n, (
            out.stderr[-3000:] + self.logs()
        )

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.tmp.glob("*.log"))

    def stop(self) -> None:
        """Kill every process the nodes started, by PID; remove their temp dir."""
        for node in (self.worker, self.head):
            if node is not None:
                node.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_driver(code: str, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a driver program; on a timeout kill its session and say so.

    The driver imports the fanflow the tests import (``PYTHONPATH``), so the
    same test can run against an older tree.
    """
    import fanflow

    extra = {"PYTHONPATH": str(Path(fanflow.__file__).parent.parent), **env}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=ray_env(**extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        out, err = proc.communicate()
        err += f"\n[driver still running after {timeout} s: killed]"
        return subprocess.CompletedProcess(proc.args, -9, out, err)
    _kill_session(proc.pid)  # a local Ray the driver may have left behind
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_session(sid: int) -> None:
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def last_json(out: subprocess.CompletedProcess[str]) -> Any:
    """The driver's report: the JSON on its last line of output."""
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report (rc={out.returncode})\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return json.loads(lines[-1])
