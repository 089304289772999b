"""Conversion of arbitrary Python values to plain JSON data, for reports."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["error_to_dict", "to_jsonable"]

_MAX_DEPTH = 64


def to_jsonable(value: Any) -> Any:
    """Return ``value`` as data that ``json.dumps`` encodes strictly.

    Conversions, nearest JSON form first: tuples, lists, sets (sorted when
    their items sort) and other iterables of known kinds become lists;
    mappings become objects with string keys; dataclasses and objects with a
    pydantic-style ``model_dump()`` become objects; enums their value; dates
    ISO strings; bytes UTF-8 text, or ``{"base64": ...}`` when not text;
    NaN and infinities the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
    exceptions ``{"type", "message"}``. Anything else becomes its ``repr``.
    """
    return _convert(value, 0, set())


def error_to_dict(error: BaseException | None) -> dict[str, str] | None:
    """Describe an exception as ``{"type": name, "message": text}``."""
    if error is None:
        return None
    return {"type": type(error).__name__, "message": str(error)}


def _convert(value: Any, depth: int, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, enum.Enum):
            return _convert(value.value, depth, seen)
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, enum.Enum):
        return _convert(value.value, depth, seen)
    if depth >= _MAX_DEPTH:
        return repr(value)
    if isinstance(value, BaseException):
        return error_to_dict(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    marker = id(value)
    if marker in seen:
        return f"<cycle: {type(value).__name__}>"
    seen.add(marker)
    try:
        if isinstance(value, Mapping):
            return {_key(k): _convert(v, depth + 1, seen) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_convert(v, depth + 1, seen) for v in value]
        if isinstance(value, set | frozenset):
            items = [_convert(v, depth + 1, seen) for v in value]
            try:
                return sorted(items)
            except TypeError:
                return sorted(items, key=repr)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: _convert(getattr(value, f.name), depth + 1, seen)
                for f in dataclasses.fields(value)
            }
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            try:
                return _convert(dump(mode="json"), depth + 1, seen)
            except Exception:
                return repr(value)
        return repr(value)
    finally:
        seen.discard(marker)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        return str(key.value)
    # The same spelling json.dumps gives these keys.
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return str(key)
    return repr(key)
