"""Test doubles for code that uses fanflow: the simulated LLM service and a scripted model."""

from __future__ import annotations

from ._process import SimulatorProcess as SimulatorProcess
from ._scripted import ScriptedLLM as ScriptedLLM
from ._simulator import Latency as Latency
from ._simulator import Script as Script
from ._simulator import SimConfig as SimConfig
from ._simulator import Simulator as Simulator

__all__ = ["Latency", "Script", "ScriptedLLM", "SimConfig", "Simulator", "SimulatorProcess"]
