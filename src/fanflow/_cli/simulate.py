"""``fanflow simulate``: the simulated LLM service on loopback."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from ..testing._simulator import AgentScript, Latency, Script, SimConfig


def _parse_script(text: str) -> Script:
    # 'PATTERN=answer:weight,answer:weight'
    pattern, sep, spec = text.rpartition("=")
    if not sep or not pattern:
        raise click.BadParameter(f"expected PATTERN=ANSWER:WEIGHT,...; got {text!r}")
    answers: dict[str, float] = {}
    for item in spec.split(","):
        answer, sep, weight = item.rpartition(":")
        try:
            answers[answer if sep else item] = float(weight) if sep else 1.0
        except ValueError:
            raise click.BadParameter(f"weight {weight!r} in {text!r} is not a number") from None
    try:
        return Script(pattern, answers)
    except Exception as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: must hold a JSON object")
    return data


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option(
    "--latency", default=0.05, show_default=True, type=click.FloatRange(0, 3600), help="Median s."
)
@click.option(
    "--sigma", default=0.5, show_default=True, type=click.FloatRange(0, 10), help="Lognormal sigma."
)
@click.option("--error-rate", default=0.0, show_default=True, type=float, help="Share of 500s.")
@click.option(
    "--rate-limit-rate", default=0.0, show_default=True, type=float, help="Share of 429s."
)
@click.option(
    "--retry-after",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds in 429s.",
)
@click.option(
    "--capacity", default=None, type=click.IntRange(1), help="Answer 429 above this many in flight."
)
@click.option(
    "--script",
    "scripts",
    multiple=True,
    metavar="PATTERN=ANSWER:WEIGHT,...",
    help="Answer distribution for prompts matching PATTERN (repeatable).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON: {"scripts": [{"pattern": ..., "answers": {...}}], "agents": [{"pattern": ..., '
    '"steps": [[{"name": tool, "arguments": {...}}], ...], "answer": ...}]}',
)
@click.option("--seed", default=0, show_default=True, type=int, help="Reproducible draws.")
def simulate(
    host: str,
    port: int,
    latency: float,
    sigma: float,
    error_rate: float,
    rate_limit_rate: float,
    retry_after: float,
    capacity: int | None,
    scripts: tuple[str, ...],
    config_path: Path | None,
    seed: int,
) -> None:
    """Serve a SIMULATED OpenAI- and Anthropic-compatible API on loopback.

    For tests, benchmarks and offline demos: answers follow scripted
    distributions, latency and failures are drawn at the given rates, and
    every response's model name starts with 'simulated:'.
    """
    from ..testing._simulator import _need_aiohttp, serve

    try:
        _need_aiohttp()
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    parsed = [_parse_script(s) for s in scripts]
    agents: list[AgentScript] = []
    if config_path is not None:
        data = _load_config(config_path)
        items = data.get("scripts", [])
        if not isinstance(items, list):
            raise click.BadParameter(f"{config_path}: 'scripts' must be a list")
        for i, item in enumerate(items):
            try:
                parsed.append(Script(str(item["pattern"]), dict(item["answers"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise click.BadParameter(f"{config_path}: scripts[{i}]: {exc}") from None
        scripted = data.get("agents", [])
        if not isinstance(scripted, list):
            raise click.BadParameter(f"{config_path}: 'agents' must be a list")
        for i, item in enumerate(scripted):
            try:
                agents.append(
                    AgentScript(str(item["pattern"]), list(item["steps"]), str(item["answer"]))
                )
            except (KeyError, TypeError, ValueError, re.error) as exc:
                raise click.BadParameter(f"{config_path}: agents[{i}]: {exc}") from None
    for name, value in (("--error-rate", error_rate), ("--rate-limit-rate", rate_limit_rate)):
        if not 0 <= value <= 1:
            raise click.BadParameter(f"{name} must be in [0, 1]; got {value}")
    config = SimConfig(
        latency=Latency(latency, sigma),
        error_rate=error_rate,
        rate_limit_rate=rate_limit_rate,
        retry_after=retry_after,
        capacity=capacity,
        scripts=parsed,
        agents=agents,
        seed=seed,
    )
    import socket

    # Bind first, to say plainly why a port cannot be used (busy, privileged,
    # an address not of this machine) instead of aiohttp's traceback.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
            probe.bind(infos[0][4])
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    click.echo(
        f"fanflow simulator - SIMULATED answers, not a real model - "
        f"listening on http://{host}:{port}/v1 (Ctrl-C to stop)",
        err=True,
    )
    try:
        serve(config, host, port)
    except KeyboardInterrupt:
        sys.exit(130)
