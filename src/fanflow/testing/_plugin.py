"""fanflow's pytest plugin: the fixtures ``ff_simulator`` and ``scripted_llm``.

Installed with fanflow (the ``pytest11`` entry point ``fanflow``), so any
project that has fanflow and pytest gets:

* ``ff_simulator`` — a running :class:`~fanflow.testing.Simulator` on
  127.0.0.1 (a free port), stopped after the test. Its configuration comes
  from the ``ff_sim_config`` fixture: a fast :class:`~fanflow.testing.SimConfig`
  (no latency) unless the test is marked
  ``@pytest.mark.ff_sim_config(SimConfig(...))`` (a whole configuration) or
  ``@pytest.mark.ff_sim_config(error_rate=0.2, ...)`` (fields changed; markers
  of the module, class and function apply in that order), or a ``conftest.py``
  or test module defines its own ``ff_sim_config`` fixture, which replaces the
  plugin's (and its marker).
* ``scripted_llm`` — a fresh :class:`~fanflow.testing.ScriptedLLM`.

``ff_simulator`` is an async fixture. With pytest-asyncio (auto or strict
mode) it is a ``pytest_asyncio.fixture`` and runs in the loop of the test's
default scope; without pytest-asyncio, anyio's pytest plugin runs it for tests
marked ``@pytest.mark.anyio`` (backend asyncio). A test that neither can run
gets an error saying what to install or mark. Nothing heavy is imported when
pytest starts: aiohttp only when a test asks for ``ff_simulator``.

See docs/testing.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._scripted import ScriptedLLM
    from ._simulator import SimConfig, Simulator

__all__ = ["ff_sim_config", "ff_simulator", "scripted_llm"]

_MARKER = "ff_sim_config"

_async_fixture: Callable[..., Any]
try:
    # Already imported by pytest when it is installed: it is pytest-asyncio's plugin.
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - depends on what the user installed
    _async_fixture = pytest.fixture


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(config=None, **fields): the fanflow.testing.SimConfig the ff_simulator "
        "fixture serves: a whole SimConfig, or fields changed from the plugin's fast default",
    )


def _fast_config() -> SimConfig:
    from ._simulator import Latency, SimConfig

    return SimConfig(latency=Latency(median=0.0))


@pytest.fixture
def ff_sim_config(request: pytest.FixtureRequest) -> SimConfig:
    """The configuration ``ff_simulator`` serves; override this fixture or use the marker.

    Without a ``ff_sim_config`` marker: a fast SimConfig (no latency, no
    errors). ``@pytest.mark.ff_sim_config(SimConfig(...))`` serves that
    configuration; keyword arguments change fields. Markers apply from the
    farthest to the closest (module, class, function): a SimConfig replaces
    what came before, keywords change fields of what came before.
    """
    from ._simulator import SimConfig

    config = _fast_config()
    for marker in reversed(list(request.node.iter_markers(_MARKER))):
        if len(marker.args) > 1 or (marker.args and not isinstance(marker.args[0], SimConfig)):
            raise TypeError(
                f"@pytest.mark.{_MARKER} takes one fanflow.testing.SimConfig and/or its fields "
                f"as keywords, not {marker.args!r}"
            )
        if marker.args:
            config = marker.args[0]
        if marker.kwargs:
            try:
                config = dataclasses.replace(config, **marker.kwargs)
            except TypeError as exc:
                raise TypeError(f"@pytest.mark.{_MARKER}: {exc}") from None
    return config


@pytest.fixture
def _ff_async_support(request: pytest.FixtureRequest) -> None:
    # Set up before ff_simulator: a clear error instead of pytest's own
    # "requested an async fixture ... with no plugin or hook that handled it".
    if request.config.pluginmanager.has_plugin("asyncio"):
        return
    if "anyio_backend" in request.fixturenames:
        backend = request.getfixturevalue("anyio_backend")
        name = backend[0] if isinstance(backend, tuple) else backend
        if name != "asyncio":
            pytest.fail(
                f"ff_simulator runs on asyncio (aiohttp), not on anyio's {name!r} backend",
                pytrace=False,
            )
        return
    pytest.fail(
        "ff_simulator is an async fixture and nothing here runs async fixtures: "
        "install pytest-asyncio (pip install pytest-asyncio), or install anyio "
        "and mark the test @pytest.mark.anyio",
        pytrace=False,
    )


@_async_fixture
async def ff_simulator(
    ff_sim_config: SimConfig, _ff_async_support: None
) -> AsyncIterator[Simulator]:
    """A running simulated LLM service on 127.0.0.1, serving ``ff_sim_config``.

    ``ff_simulator.url`` is the API root (``sim:MODEL@URL`` for
    :func:`fanflow.llm.from_uri`), ``ff_simulator.stats`` counts requests by
    outcome. Needs aiohttp (``pip install 'fanflow[sim]'``).
    """
    from ._simulator import Simulator

    async with Simulator(ff_sim_config, host="127.0.0.1") as simulator:
        yield simulator


@pytest.fixture
def scripted_llm() -> ScriptedLLM:
    """A fresh :class:`~fanflow.testing.ScriptedLLM` (queue answers with ``enqueue``)."""
    from ._scripted import ScriptedLLM

    return ScriptedLLM()
