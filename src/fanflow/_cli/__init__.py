"""The ``fanflow`` command line. Each command lives in a module of its own."""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
