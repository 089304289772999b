"""Test doubles for code that uses fanflow: the simulated LLM service and a scripted model."""

from __future__ import annotations

from ._process import SimulatorProcess as SimulatorProcess
from ._scripted import ScriptedLLM as ScriptedLLM
from ._simulator import AgentScript as AgentScript
from ._simulator import Latency as Latency
from ._simulator import Script as Script
from ._simulator import SimConfig as SimConfig
from ._simulator import Simulator as Simulator
from ._simulator import minimal_instance as minimal_instance

__all__ = [
    "AgentScript",
    "Latency",
    "Script",
    "ScriptedLLM",
    "SimConfig",
    "Simulator",
    "SimulatorProcess",
    "minimal_instance",
]
