"""A user's mistake is one line on stderr and a documented exit status, never a traceback.

Each case was a traceback (or a hang) before; each runs the real command.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fanflow._cli import main

pytestmark = pytest.mark.slow


def _fanflow(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )


def _one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], done.stderr


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    marker = tmp_path / "ran"
    spec = tmp_path / "wf.yaml"
    spec.write_text(f"tasks:\n  a:\n    run: 'touch {marker}'\n")
    return spec


def test_run_json_into_a_missing_folder_is_refused_before_the_run(
    workflow: Path, tmp_path: Path
) -> None:
    done = _fanflow("run", str(workflow), "--json", str(tmp_path / "nope" / "r.json"))
    _one_line_error(done, 2, "--json", "does not exist")
    assert not (tmp_path / "ran").exists()  # nothing ran


def test_run_html_into_a_folder_is_refused_before_the_run(workflow: Path, tmp_path: Path) -> None:
    done = _fanflow("run", str(workflow), "--json", str(tmp_path / "r.json"), "--html", "/")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'--html'" in done.stderr and "is a directory" in done.stderr
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "r.json").exists()


def test_ask_json_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    done = _fanflow("ask", "goal", "--llm", "sim:m", "--json", str(tmp_path / "no" / "r.json"))
    _one_line_error(done, 2, "--json", "does not exist")


def test_ask_without_an_api_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = _fanflow("ask", "goal", "--llm", "openai:gpt-4o-mini", env=env)
    _one_line_error(done, 2, "OPENAI_API_KEY", "not set")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ask_with_an_unreachable_model_server() -> None:
    env = {**os.environ, "OPENAI_API_KEY": "test-key"}
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    done = _fanflow("ask", "goal", "--llm", f"openai:m@{url}", env=env)
    _one_line_error(done, 1, "the model failed", "Connection")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that accepts connections and never answers (bounded: 30 s)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(30)
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                conn, _ = server.accept()
                held.append(conn)
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    server.close()
    for conn in held:
        conn.close()


def test_ask_against_a_server_that_never_answers(silent_server: int) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "test-key"}
    url = f"http://127.0.0.1:{silent_server}/v1"
    # Before: no --timeout or --deadline existed and the command hung.
    done = _fanflow("ask", "goal", "--llm", f"openai:m@{url}", "--timeout", "1", env=env)
    _one_line_error(done, 1, "did not answer within --timeout 1 s")
    done = _fanflow("ask", "goal", "--llm", f"openai:m@{url}", "--deadline", "1", env=env)
    _one_line_error(done, 1, "did not answer within --deadline 1 s")


@pytest.mark.parametrize("value", ["nan", "0", "-1"])
def test_ask_bad_timeout(value: str) -> None:
    done = _fanflow("ask", "goal", "--llm", "sim:m", "--timeout", value)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--timeout" in done.stderr


def test_simulate_on_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _fanflow("simulate", "--port", str(port))
    _one_line_error(done, 2, f"cannot listen on 127.0.0.1:{port}", "in use")


def test_simulate_on_an_invalid_port() -> None:
    done = _fanflow("simulate", "--port", "99999")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--port" in done.stderr and "99999" in done.stderr


def test_simulate_without_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    import fanflow.testing._simulator as sim

    def missing() -> None:
        raise ImportError("the simulator needs aiohttp: pip install 'fanflow[sim]'")

    monkeypatch.setattr(sim, "_need_aiohttp", missing)
    result = CliRunner().invoke(main, ["simulate", "--port", "0"])
    assert result.exit_code == 1
    assert "fanflow[sim]" in result.output
    assert not isinstance(result.exception, ImportError)


def test_a_sim_uri_without_the_openai_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    import fanflow as ff

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openai" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'fanflow\[sim\]'"):
        ff.llm.from_uri("sim:m")
    with pytest.raises(ImportError, match=r"pip install 'fanflow\[llm\]'"):
        ff.llm.from_uri("openai:m")


def test_a_failed_synthesis_makes_run_exit_1_with_the_reason(tmp_path: Path) -> None:
    spec = tmp_path / "wf.yaml"
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    spec.write_text(
        f"tasks:\n  a:\n    run: echo 1\naggregate:\n  synthesize:\n    llm: 'openai:m@{url}'\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": "test-key"}
    done = _fanflow("run", str(spec), "--json", str(tmp_path / "r.json"), env=env)
    # Before: "the synthesis failed" was printed and the run still exited 0.
    assert done.returncode == 1, done.stderr
    assert "the synthesis failed" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "r.json").exists()
