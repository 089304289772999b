"""Length-prefixed messages between the process executor and its workers."""

from __future__ import annotations

import struct
from typing import IO

__all__ = ["PARENT_ENV", "Decoder", "encode", "read_message", "write_message"]

#: The environment variable that gives a worker its parent's pid.
PARENT_ENV = "_FANFLOW_WORKER_PARENT"

_HEADER = struct.Struct("!Q")


def encode(data: bytes) -> bytes:
    """``data`` as one message: its 8-byte length, then itself."""
    return _HEADER.pack(len(data)) + data


def read_message(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed message, or ``None`` at end of input."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_message(stream: IO[bytes], data: bytes) -> None:
    """Write ``data`` as one message and flush it."""
    stream.write(encode(data))
    stream.flush()


class Decoder:
    """Messages out of a byte stream that arrives in pieces (a non-blocking pipe).

    The parent reads whatever the pipe holds, so one read may end inside a
    message or hold several: a buffered blocking reader would either stall
    the event loop or keep a message in its buffer where no readiness
    callback would ever see it.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the messages now complete, in order."""
        buf = self._buf
        buf += data
        messages: list[bytes] = []
        start = 0
        while len(buf) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf, start)
            end = start + _HEADER.size + size
            if len(buf) < end:
                break
            messages.append(bytes(buf[start + _HEADER.size : end]))
            start = end
        if start:
            del buf[:start]
        return messages
