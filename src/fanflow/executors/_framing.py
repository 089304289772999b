"""Length-prefixed messages between the process executor and its workers."""

from __future__ import annotations

import struct
from typing import IO

__all__ = ["read_message", "write_message"]

_HEADER = struct.Struct("!Q")


def read_message(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed message, or ``None`` at end of input."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_message(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()
