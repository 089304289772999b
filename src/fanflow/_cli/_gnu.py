"""GNU parallel's command line, for ``fanflow map``: options, command, input sources.

``fanflow map`` reads the command line the way GNU parallel does: options
first, then the command as it would be typed (unquoted words are joined by
spaces, as the shell will see them), then input sources: ``:::`` values,
``::::`` files (``-`` is standard input), ``-a FILE``; ``:::+``/``::::+``
link a source to the one before it. Several sources give every combination
(the first varies slowest), ``--link`` pairs them instead (shorter ones wrap
around). Without a source, arguments are read from standard input, one per
line (``-0``: NUL-separated).

Replacement strings: ``{}`` ``{.}`` ``{/}`` ``{//}`` ``{/.}`` (the argument,
without extension, basename, dirname, basename without extension, with GNU's
meaning for odd names: ``{.}`` of ``.bashrc`` is empty, ``{//}`` of ``a/b/``
is ``a``), ``{#}`` (job number), ``{%}`` (job slot), and positional
``{1}`` ``{2.}`` ``{-1/}`` …. Every substituted value is shell-quoted.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

__all__ = ["GnuUsageError", "MapArgs", "expand", "has_replacement", "parse"]


class GnuUsageError(Exception):
    """A mistake on the command line: GNU parallel's exit status 255."""


# Options that take a value, by every name GNU parallel (or fanflow) gives them.
_VALUED = {
    "-j": "jobs",
    "--jobs": "jobs",
    "-P": "jobs",
    "--max-procs": "jobs",
    "--timeout": "timeout",
    "--retries": "retries",
    "--journal": "journal",
    "--joblog": "joblog",
    "--first": "first",
    "--halt": "halt",
    "--halt-on-error": "halt",
    "-a": "arg_file",
    "--arg-file": "arg_file",
    "-n": "max_args",
    "--max-args": "max_args",
    "-N": "exact_args",
    "--max-replace-args": "exact_args",
    "--colsep": "colsep",
    "-C": "colsep",
    "--delay": "delay",
    "--shell": "shell",
    "--results": "results",
    "--res": "results",
    "--rate": "rate",
    "--hedge": "hedge",
    "-d": "delimiter",
    "--delimiter": "delimiter",
}
# Flags, and GNU flags that change nothing here (``--group`` is what fanflow
# always does; the citation notice does not exist).
_FLAGS = {
    "-k": "keep_order",
    "--keep-order": "keep_order",
    "--link": "link",
    "--xapply": "link",
    "-m": "context_m",
    "-X": "context_x",
    "--dry-run": "dry_run",
    "--dryrun": "dry_run",
    "--tag": "tag",
    "-v": "verbose",
    "-t": "trace",
    "--verbose": "trace",
    "-q": "quote",
    "--quote": "quote",
    "-0": "null",
    "--null": "null",
    "--line-buffer": "line_buffer",
    "--linebuffer": "line_buffer",
    "--lb": "line_buffer",
    "--resume": "resume",
    "--resume-failed": "resume_failed",
    "--bar": "bar",
    "--eta": "bar",
    "--halt-on-fail": "halt_on_fail",
    "--group": None,
    "--will-cite": None,
    "--no-notice": None,
    "--bibtex": None,
}
_SEPARATORS = (":::", "::::", ":::+", "::::+")


@dataclasses.dataclass
class Source:
    """One input source: values given on the line, or a file read line by line."""

    values: list[str] | None = None
    path: str | None = None  # "-" for standard input
    linked: bool = False  # ``:::+``: paired with the source before it


@dataclasses.dataclass
class MapArgs:
    """The parsed command line of ``fanflow map``."""

    command: str = ""
    words: list[str] = dataclasses.field(default_factory=list)
    sources: list[Source] = dataclasses.field(default_factory=list)
    jobs: str | None = None
    timeout: str | None = None
    retries: str | None = None
    journal: str | None = None
    joblog: str | None = None
    first: str | None = None
    halt: str | None = None
    arg_file: list[str] = dataclasses.field(default_factory=list)
    max_args: str | None = None
    exact_args: str | None = None
    colsep: str | None = None
    delay: str | None = None
    shell: str | None = None
    results: str | None = None
    rate: str | None = None
    hedge: str | None = None
    delimiter: str | None = None
    keep_order: bool = False
    link: bool = False
    context_m: bool = False
    context_x: bool = False
    dry_run: bool = False
    tag: bool = False
    verbose: bool = False
    trace: bool = False
    line_buffer: bool = False
    quote: bool = False
    null: bool = False
    resume: bool = False
    resume_failed: bool = False
    bar: bool = False
    halt_on_fail: bool = False


def parse(argv: list[str]) -> MapArgs:
    """Read ``fanflow map``'s command line as GNU parallel reads its own.

    Raises:
        GnuUsageError: an option fanflow does not know or a missing value;
            the message names it ("fanflow map does not support --X yet").
    """
    out = MapArgs()
    i = 0
    n = len(argv)
    while i < n:
        word = argv[i]
        if word == "--":
            i += 1
            break
        if word in _SEPARATORS or not word.startswith("-") or word == "-":
            break
        name, eq, attached = word.partition("=") if word.startswith("--") else (word, "", "")
        if not word.startswith("--") and len(word) > 2 and word[:2] in _VALUED:
            # -j8, -N2: a short option with its value attached.
            name, eq, attached = word[:2], "=", word[2:]
        elif (
            not word.startswith("--") and len(word) > 2 and all(f"-{c}" in _FLAGS for c in word[1:])
        ):
            # -q0, -kv: bundled short flags.
            for c in word[1:]:
                field = _FLAGS[f"-{c}"]
                if field is not None:
                    setattr(out, field, True)
            i += 1
            continue
        if name in _FLAGS:
            if eq:
                raise GnuUsageError(f"{name} takes no value; got {word!r}")
            field = _FLAGS[name]
            if field is not None:
                setattr(out, field, True)
            i += 1
            continue
        if name in _VALUED:
            if eq:
                value = attached
                i += 1
            else:
                if i + 1 >= n:
                    raise GnuUsageError(f"{name} needs a value")
                value = argv[i + 1]
                i += 2
            field = _VALUED[name]
            if field == "arg_file":
                out.arg_file.append(value)
            else:
                setattr(out, field, value)
            continue
        raise GnuUsageError(f"fanflow map does not support {name} yet")
    words: list[str] = []
    while i < n and argv[i] not in _SEPARATORS:
        words.append(argv[i])
        i += 1
    out.words = words
    for path in out.arg_file:
        out.sources.append(Source(path=path))
    while i < n:
        separator = argv[i]
        i += 1
        start = i
        while i < n and argv[i] not in _SEPARATORS:
            i += 1
        given = argv[start:i]
        linked = separator.endswith("+")
        if separator.startswith("::::"):
            if not given:
                raise GnuUsageError(f"{separator} needs at least one file")
            for path in given:
                out.sources.append(Source(path=path, linked=linked))
        else:
            out.sources.append(Source(values=list(given), linked=linked))
    if out.quote:
        out.command = " ".join(_quote_word(w) for w in words)
    else:
        out.command = " ".join(words)
    return out


_REPLACEMENT = re.compile(r"\{(-?\d+)?(#|%|//|/\.|/|\.)?\}")


def has_replacement(command: str) -> bool:
    """Whether ``command`` holds a replacement string (else the arguments are appended)."""
    return _REPLACEMENT.search(command) is not None


def _quote_word(word: str) -> str:
    # -q: the word is quoted as a whole, but replacement strings in it still work.
    parts = []
    last = 0
    for match in _REPLACEMENT.finditer(word):
        if match.start() > last:
            parts.append(shlex.quote(word[last : match.start()]))
        parts.append(match.group(0))
        last = match.end()
    if last < len(word) or not parts:
        parts.append(shlex.quote(word[last:]))
    return "".join(parts)


def _dirname(path: str) -> str:
    # Perl's File::Basename::dirname, as GNU parallel's {//}: trailing
    # slashes do not count ("a/b/" -> "a"), no slash at all is ".".
    stripped = path.rstrip("/")
    if not stripped:
        return "/" if path.startswith("/") else "."
    if "/" not in stripped:
        return "."
    head = stripped.rsplit("/", 1)[0].rstrip("/")
    return head or "/"


_EXTENSION = re.compile(r"\.[^/.]+$")


def _modify(value: str, kind: str | None) -> str:
    if kind is None:
        return value
    if kind == ".":
        return _EXTENSION.sub("", value)
    if kind == "/":
        return re.sub(r"^.*/", "", value)
    if kind == "//":
        return _dirname(value)
    # "/.": the basename without its extension.
    return _EXTENSION.sub("", re.sub(r"^.*/", "", value))


def expand(command: str, args: list[str], seq: int, slot: int, *, context: bool = False) -> str:
    """``command`` with its replacement strings filled in for one job.

    ``args`` are the job's arguments (one per input source, or several with
    ``-N``/``-n``/``-m``/``-X``). ``{}`` and its variants stand for all of
    them, space-separated; ``{n}`` for the n-th (``{-1}`` the last; missing
    ones are empty). With ``context`` (``-X``), a word holding a replacement
    string is repeated once per argument. Without any replacement string,
    the arguments are appended. Every value is shell-quoted.
    """
    if not has_replacement(command):
        return " ".join([command, *(shlex.quote(a) for a in args)]) if args else command

    def one(match: re.Match[str], pick: list[str]) -> str:
        position, kind = match.group(1), match.group(2)
        if kind == "#":
            return str(seq)
        if kind == "%":
            return str(slot)
        if position is not None:
            k = int(position)
            index = k - 1 if k > 0 else len(args) + k
            value = args[index] if 0 <= index < len(args) else ""
            return shlex.quote(_modify(value, kind))
        return " ".join(shlex.quote(_modify(a, kind)) for a in pick)

    if context and len(args) > 1:
        # -X: each word with a replacement string, once per argument.
        def word(match: re.Match[str]) -> str:
            text = match.group(0)
            if not has_replacement(text):
                return text
            return " ".join(_REPLACEMENT.sub(functools.partial(one, pick=[a]), text) for a in args)

        return re.sub(r"\S+", word, command)
    return _REPLACEMENT.sub(lambda m: one(m, args), command)


def read_lines(stream: IO[bytes], separator: bytes) -> Iterator[str]:
    """The records of a binary stream: lines, or NUL-separated with ``-0``.

    Bytes are decoded with surrogateescape: an argument need not be UTF-8,
    and the command line gives the same bytes back to the shell. An empty
    record is an empty argument: a job.
    """
    if separator == b"\n":
        for line in stream:
            yield os.fsdecode(line[:-1] if line.endswith(b"\n") else line)
        return
    pending = b""
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        pending += chunk
        *records, pending = pending.split(separator)
        for record in records:
            yield os.fsdecode(record)
    if pending:
        yield os.fsdecode(pending)


def combine(
    sources: Sequence[Iterable[str]], linked: list[bool], link_all: bool
) -> Iterator[list[str]]:
    """The jobs' argument lists from several sources: combinations, or pairs when linked.

    One source streams (a huge standard input is never held whole); several
    are read first, as GNU parallel does.
    """
    if len(sources) == 1:
        for value in sources[0]:
            yield [value]
        return
    # Group the sources: a linked source joins the group before it.
    groups: list[list[list[str]]] = []
    for k, source in enumerate(sources):
        values = list(source)
        if groups and (link_all or linked[k]):
            groups[-1].append(values)
        else:
            groups.append([values])
    zipped: list[list[list[str]]] = []
    for group in groups:
        if any(not v for v in group):
            zipped.append([])
            continue
        # --link: shorter sources wrap around; ':::+' stops at the shortest
        # (GNU parallel's two meanings).
        size = max(len(v) for v in group) if link_all else min(len(v) for v in group)
        zipped.append([[v[j % len(v)] for v in group] for j in range(size)])
    for combo in itertools.product(*zipped):
        yield [value for part in combo for value in part]
