"""What a task computes, as a digest: the key of a durable fan-out's journal.

A task's fingerprint is a SHA-256 over a canonical, type-tagged encoding of

* its name,
* its function: module and qualified name, and — for Python functions — the
  code (bytecode, constants and names, recursively; not line numbers) and
  the values its closure captured, so that editing the function or what it
  closed over runs the task again,
* its arguments after :class:`~fanflow.Ref` values are filled in.

A function may say itself what identifies a call of it: a callable
attribute ``fn.__fanflow_fingerprint__(*args, **kwargs)`` returning plain
data replaces the code, closure and arguments (prompt tasks give their
prompt, model and parameters; workflow ``run:`` tasks their rendered
command). An object may do the same with a ``__fanflow_fingerprint__()``
method (model providers give their provider and model, not their client).

Values are encoded by what they are, not by ``repr``: ``None``, booleans,
numbers, text, bytes, lists, tuples, dicts (in key order), sets (sorted),
enums, paths, dates, decimals, UUIDs, dataclasses, pydantic models
(``model_dump``), array-likes with ``dtype``/``shape``/``tobytes``, and
functions. Anything else has no stable identity across runs (a client, a
lock, an open file) and is refused with :class:`Unfingerprintable`, naming
where it was found — never silently keyed by ``id()``, which would replay a
stale result or never replay at all.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import pathlib
import types
import uuid
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Unfingerprintable", "call_fingerprint", "fn_digest"]

_VERSION = b"fanflow-fingerprint-1\x00"


class Unfingerprintable(TypeError):
    """A value has no identity that survives the process (see the module docstring)."""


class _Encoder:
    __slots__ = ("_active", "_fns", "out")

    def __init__(self, fns: dict[Any, bytes]) -> None:
        self.out: list[bytes] = []
        self._active: set[int] = set()
        self._fns = fns

    def value(self, obj: Any, where: str) -> None:
        out = self.out
        t = type(obj)
        if obj is None:
            out.append(b"N")
        elif t is bool:
            out.append(b"T" if obj else b"F")
        elif t is int:
            out.append(b"i%d;" % obj)
        elif t is float:
            out.append(b"f" + float.hex(obj).encode() + b";")
        elif t is str:
            data = obj.encode("utf-8", "surrogatepass")
            out.append(b"s%d:" % len(data) + data)
        elif t is bytes or t is bytearray:
            out.append(b"b%d:" % len(obj) + bytes(obj))
        elif t is list or t is tuple:
            self._sequence(b"l" if t is list else b"t", obj, where)
        elif t is dict:
            self._mapping(b"d", obj, where)
        else:
            self._other(obj, where)

    def _sequence(self, tag: bytes, items: Any, where: str) -> None:
        key = id(items)
        if key in self._active:
            raise Unfingerprintable(f"{where} contains itself")
        self._active.add(key)
        self.out.append(tag + b"%d:" % len(items))
        for i, item in enumerate(items):
            self.value(item, f"{where}[{i}]")
        self._active.discard(key)

    def _mapping(self, tag: bytes, mapping: Mapping[Any, Any], where: str) -> None:
        key = id(mapping)
        if key in self._active:
            raise Unfingerprintable(f"{where} contains itself")
        self._active.add(key)
        entries = []
        for k, v in mapping.items():
            sub = _Encoder(self._fns)
            sub._active = self._active
            sub.value(k, f"{where} key {k!r}")
            sub.value(v, f"{where}[{k!r}]")
            entries.append(b"".join(sub.out))
        entries.sort()
        self.out.append(tag + b"%d:" % len(entries))
        self.out.extend(entries)
        self._active.discard(key)

    def _other(self, obj: Any, where: str) -> None:
        out = self.out
        hook = getattr(obj, "__fanflow_fingerprint__", None)
        if hook is not None and not isinstance(obj, type) and not callable_hook_on_fn(obj):
            out.append(b"o" + _qualname(type(obj)).encode() + b";")
            self.value(hook(), f"{where}.__fanflow_fingerprint__()")
            return
        if isinstance(obj, enum.Enum):
            out.append(b"e" + _qualname(type(obj)).encode() + b";")
            self.value(obj.value, where)
        elif isinstance(obj, bool | int | float | str | bytes):  # subclasses
            out.append(b"c" + _qualname(type(obj)).encode() + b";")
            base: Callable[[Any], Any] = next(
                b for b in (bool, int, float, str, bytes) if isinstance(obj, b)
            )
            self.value(base(obj), where)
        elif isinstance(obj, tuple | list):  # named tuples, list subclasses
            out.append(b"c" + _qualname(type(obj)).encode() + b";")
            self._sequence(b"t", tuple(obj), where)
        elif isinstance(obj, Mapping):
            out.append(b"c" + _qualname(type(obj)).encode() + b";")
            self._mapping(b"d", obj, where)
        elif isinstance(obj, set | frozenset):
            entries = []
            for item in obj:
                sub = _Encoder(self._fns)
                sub._active = self._active
                sub.value(item, f"{where} item {item!r}")
                entries.append(b"".join(sub.out))
            entries.sort()
            out.append(b"S%d:" % len(entries))
            out.extend(entries)
        elif isinstance(obj, pathlib.PurePath):
            out.append(b"p")
            self.value(str(obj), where)
        elif isinstance(obj, datetime.datetime | datetime.date | datetime.time):
            out.append(b"D" + _qualname(type(obj)).encode() + b";")
            self.value(obj.isoformat(), where)
        elif isinstance(obj, datetime.timedelta):
            out.append(b"Dtimedelta;")
            self.value(obj.total_seconds(), where)
        elif isinstance(obj, decimal.Decimal | uuid.UUID):
            out.append(b"c" + _qualname(type(obj)).encode() + b";")
            self.value(str(obj), where)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out.append(b"c" + _qualname(type(obj)).encode() + b";")
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            self._mapping(b"d", fields, where)
        elif hasattr(obj, "model_dump") and hasattr(type(obj), "model_fields"):  # pydantic
            out.append(b"c" + _qualname(type(obj)).encode() + b";")
            self.value(obj.model_dump(mode="python"), where)
        elif hasattr(obj, "dtype") and hasattr(obj, "shape") and hasattr(obj, "tobytes"):
            out.append(b"a" + str(obj.dtype).encode() + b";")
            self.value(tuple(obj.shape), where)
            self.value(hashlib.sha256(obj.tobytes()).digest(), where)
        elif isinstance(obj, type):
            out.append(b"C" + _qualname(obj).encode() + b";")
        elif callable(obj):
            out.append(b"x")
            out.append(fn_digest(obj, where, self._fns))
        else:
            raise Unfingerprintable(
                f"{where} is {_a(obj)}, which has no identity that survives the process "
                "(fanflow keys journaled tasks by what they compute)"
            )


def callable_hook_on_fn(obj: Any) -> bool:
    """Whether ``obj`` is a function whose hook takes the call's arguments."""
    return isinstance(obj, types.FunctionType | types.MethodType | functools.partial)


def _a(obj: Any) -> str:
    name = _qualname(type(obj))
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _qualname(kind: Any) -> str:
    module = getattr(kind, "__module__", None) or "?"
    return f"{module}.{getattr(kind, '__qualname__', getattr(kind, '__name__', repr(kind)))}"


def _code(code: types.CodeType, out: list[bytes]) -> None:
    out.append(code.co_code)
    out.append(repr(code.co_names).encode())
    out.append(repr(code.co_varnames).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code(const, out)
        else:
            out.append(repr(const).encode("utf-8", "surrogatepass"))


def fn_digest(fn: Any, where: str, cache: dict[Any, bytes] | None = None) -> bytes:
    """A digest of what a callable is: its name, code and captured values.

    Raises:
        Unfingerprintable: a captured value or bound object has no identity.
    """
    if cache is not None:
        try:
            found = cache.get(fn)
        except TypeError:  # unhashable callable object
            found = None
        if found is not None:
            return found
    enc = _Encoder({} if cache is None else cache)
    out = enc.out
    if isinstance(fn, functools.partial):
        out.append(b"P")
        out.append(fn_digest(fn.func, where, cache))
        enc.value(fn.args, f"{where} (partial args)")
        enc.value(dict(fn.keywords), f"{where} (partial keywords)")
    elif isinstance(fn, types.MethodType):
        out.append(b"M")
        out.append(fn_digest(fn.__func__, where, cache))
        enc.value(fn.__self__, f"{where}: the object of the bound method")
    elif isinstance(fn, types.FunctionType):
        out.append(b"F" + _qualname(fn).encode() + b";")
        _code(fn.__code__, out)
        if fn.__defaults__:
            enc.value(fn.__defaults__, f"{where} (defaults)")
        if fn.__kwdefaults__:
            enc.value(dict(fn.__kwdefaults__), f"{where} (keyword defaults)")
        if fn.__closure__:
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    out.append(b"E")
                    continue
                if value is fn:
                    out.append(b"R")  # recursion through its own name
                    continue
                enc.value(value, f"{where}: the captured variable {var!r}")
    elif isinstance(fn, types.BuiltinFunctionType | types.BuiltinMethodType):
        out.append(b"B" + _qualname(fn).encode() + b";")
        owner = getattr(fn, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            enc.value(owner, f"{where}: the object of the bound method")
    else:
        # A callable object: its class's __call__ and the object itself.
        call = getattr(type(fn), "__call__", None)  # noqa: B004
        out.append(b"O" + _qualname(type(fn)).encode() + b";")
        if isinstance(call, types.FunctionType):
            _code(call.__code__, out)
        hook = getattr(fn, "__fanflow_fingerprint__", None)
        if hook is not None and not callable_hook_on_fn(fn):
            enc.value(hook(), f"{where}.__fanflow_fingerprint__()")
        elif dataclasses.is_dataclass(fn) or hasattr(fn, "model_dump"):
            enc.value(_fields(fn), where)
        else:
            raise Unfingerprintable(
                f"{where} is {_a(fn)} (a callable object), which has no identity that "
                "survives the process"
            )
    digest = hashlib.sha256(b"".join(out)).digest()
    if cache is not None:
        try:
            cache[fn] = digest
        except TypeError:  # an unhashable callable object: not cached
            return digest
    return digest


def _fields(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return obj.model_dump(mode="python")


def call_fingerprint(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    cache: dict[Any, bytes] | None = None,
) -> bytes:
    """The fingerprint (32 bytes) of task ``name`` calling ``fn(*args, **kwargs)``.

    Raises:
        Unfingerprintable: something in the call has no identity that
            survives the process; the message names the task and where.
    """
    hook = getattr(fn, "__fanflow_fingerprint__", None)
    if hook is None and not args and not kwargs and cache is not None:
        # The common case of many tasks of one function: the function's
        # digest is cached, and nothing else needs the encoder.
        digest = cache.get(fn) if type(fn) is types.FunctionType else None
        if digest is not None:
            data = name.encode("utf-8", "surrogatepass")
            return hashlib.sha256(b"%s%d:%s%s" % (_VERSION, len(data), data, digest)).digest()
    where = f"task {name!r}"
    enc = _Encoder({} if cache is None else cache)
    out = enc.out
    out.append(_VERSION)
    if not args and not kwargs and hook is None:
        data = name.encode("utf-8", "surrogatepass")
        out.append(b"%d:%s" % (len(data), data))
        out.append(fn_digest(fn, f"{where}: its function", cache))
        return hashlib.sha256(b"".join(out)).digest()
    enc.value(name, where)
    out.append(_qualname(fn).encode() + b";")
    try:
        if hook is not None and callable_hook_on_fn(fn):
            out.append(b"H")
            enc.value(hook(*args, **kwargs), f"{where}: what its function says identifies it")
        else:
            out.append(fn_digest(fn, f"{where}: its function", cache))
            if args:
                enc.value(args, f"{where}: args")
            if kwargs:
                enc.value(dict(kwargs), f"{where}: kwargs")
    except RecursionError:
        raise Unfingerprintable(f"{where}: its arguments are nested too deeply") from None
    return hashlib.sha256(b"".join(out)).digest()
