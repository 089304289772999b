"""``fanflow map``: a GNU-parallel-like bulk runner on ``ff.fan_map``."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

_REPLACEMENT = re.compile(r"\{(#|//|/\.|/|\.)?\}")


def _expand(template: str, arg: str, seq: int) -> str:
    """Substitute ``{}``-style replacement strings; every value is shell-quoted."""

    def value(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind == "#":
            return str(seq)
        if kind is None:
            text = arg
        elif kind == ".":
            text = os.path.splitext(arg)[0]
        elif kind == "/":
            text = os.path.basename(arg)
        elif kind == "//":
            text = os.path.dirname(arg) or "."
        else:  # "/."
            text = os.path.splitext(os.path.basename(arg))[0]
        return shlex.quote(text)

    return _REPLACEMENT.sub(value, template)


def _arguments(args: tuple[str, ...], stdin: IO[str]) -> tuple[list[str] | None, Iterator[str]]:
    if args:
        if args[0] != ":::":
            raise click.UsageError(
                f"unexpected {args[0]!r}: give the arguments after ':::' "
                "(or one per line on standard input), and quote the command"
            )
        values = list(args[1:])
        return values, iter(values)
    if stdin.isatty():
        raise click.UsageError("no arguments: give them after ':::' or one per line on stdin")
    return None, (line.rstrip("\n") for line in stdin)


class _JobLog:
    """GNU parallel's --joblog format: one tab-separated line per finished job."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")
        if self.file.tell() == 0:
            self.file.write(
                "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"
            )

    def write(
        self, seq: int, start: float, runtime: float, received: int, code: int, command: str
    ) -> None:
        exit_value, sig = (0, -code) if code < 0 else (code, 0)
        self.file.write(
            f"{seq}\t:\t{start:.3f}\t{runtime:.3f}\t0\t{received}\t{exit_value}\t{sig}\t{command}\n"
        )
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "-j", "--jobs", type=click.IntRange(1), default=None, help="Jobs in parallel [default: CPUs]."
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    help="Seconds per job, from its start; then its process group is killed.",
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Extra tries for a failed job.",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite journal: a rerun skips jobs done ok.",
)
@click.option("--keep-order", "-k", is_flag=True, help="Print output in input order.")
@click.option("--first", type=click.IntRange(1), help="Stop after N jobs succeed.")
@click.option("--halt-on-fail", is_flag=True, help="Stop at the first failed job.")
@click.option(
    "--joblog",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append a GNU-parallel-style job log.",
)
@click.argument("command")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def map_command(
    jobs: int | None,
    timeout: float | None,
    retries: int,
    journal: Path | None,
    keep_order: bool,
    first: int | None,
    halt_on_fail: bool,
    joblog: Path | None,
    command: str,
    args: tuple[str, ...],
) -> None:
    """Run COMMAND once per argument, in parallel, like GNU parallel.

    Arguments come after ':::' or one per line on standard input. In
    COMMAND, {} is the argument, {.} it without extension, {/} its
    basename, {//} its directory, {/.} its basename without extension and
    {#} the job number; with none of them, the argument is appended. Every
    substituted value is shell-quoted: an argument can never inject a
    command. Each job's output is printed whole when it ends (never mixed
    with another's). Exit status: 0 when every job succeeded, 1 otherwise,
    2 for a usage error.

    \b
    Examples:
      fanflow map -j 8 'gzip -k {}' ::: *.log
      find . -name '*.png' | fanflow map --timeout 30 'convert {} {.}.jpg'
    """
    if first is not None and halt_on_fail:
        raise click.UsageError("--first and --halt-on-fail cannot be used together")
    if not _REPLACEMENT.search(command):
        command = f"{command} {{}}"
    known, values = _arguments(args, sys.stdin)
    code = asyncio.run(
        _run(
            command,
            values,
            total=len(known) if known is not None else None,
            jobs=jobs or os.cpu_count() or 1,
            timeout=timeout,
            retries=retries,
            journal=journal,
            keep_order=keep_order,
            first=first,
            halt_on_fail=halt_on_fail,
            joblog=joblog,
        )
    )
    sys.exit(code)


async def _run(
    template: str,
    values: Iterator[str],
    *,
    total: int | None,
    jobs: int,
    timeout: float | None,
    retries: int,
    journal: Path | None,
    keep_order: bool,
    first: int | None,
    halt_on_fail: bool,
    joblog: Path | None,
) -> int:
    import fanflow as ff
    from fanflow._shell import ShellError, ShellOutput, run_shell

    outputs: dict[int, ShellOutput] = {}

    async def job_keeping_output(item: tuple[int, str]) -> dict[str, int]:
        seq, arg = item
        try:
            # The timeout is the command's own (GNU parallel's meaning): it
            # starts when the process does, not while the job waits to fork.
            output = await run_shell(_expand(template, arg, seq), timeout=timeout)
        except ShellError as exc:
            outputs[seq] = exc.output
            raise
        outputs[seq] = output
        return {
            "exit": output.exit_code,
            "stdout": len(output.stdout),
            "stderr": len(output.stderr),
        }

    job_keeping_output.__qualname__ = f"fanflow map {template}"
    store: ff.Journal | None = None
    if journal is not None:
        try:
            store = ff.Journal(journal, f"fanflow map: {template}")
        except ff.JournalError as exc:
            raise click.UsageError(str(exc)) from None
    log = _JobLog(joblog) if joblog is not None else None
    progress = _Progress(total) if sys.stderr.isatty() else None
    items = ((seq, arg) for seq, arg in enumerate(values, start=1))
    ok = failed = replayed = 0
    stop_code: int | None = None
    stream = ff.fan_map(
        job_keeping_output,
        items,
        max_concurrency=jobs,
        retry=ff.Retry(attempts=retries + 1, backoff=0.1) if retries else None,
        ordered=keep_order,
        journal=store,
        key=lambda item: item[1],
    )
    try:
        async with stream:
            async for result in stream:
                if result.replayed:
                    replayed += 1
                    ok += 1
                else:
                    seq = (result.index or 0) + 1
                    output = outputs.pop(seq, None)
                    if output is not None:
                        _emit(output)
                        if not result.ok:
                            click.echo(
                                f"fanflow map: job {seq} ({result.name!r}) failed: {result.error}",
                                err=True,
                            )
                        if log is not None and result.started_at is not None:
                            log.write(
                                seq,
                                result.started_at,
                                result.duration or 0.0,
                                len(output.stdout),
                                output.exit_code,
                                output.command,
                            )
                    elif result.error is not None:
                        click.echo(
                            f"fanflow map: job {seq} ({result.name!r}): {result.error}", err=True
                        )
                        if log is not None and result.started_at is not None:
                            log.write(
                                seq,
                                result.started_at,
                                result.duration or 0.0,
                                0,
                                -9,
                                _expand(template, result.name, seq),
                            )
                    if result.ok:
                        ok += 1
                    else:
                        failed += 1
                if progress is not None:
                    progress.advance(ok, failed)
                if first is not None and ok >= first:
                    stop_code = 0
                    break
                if halt_on_fail and failed:
                    stop_code = 1
                    break
    finally:
        if progress is not None:
            progress.close()
        if log is not None:
            log.close()
        if store is not None:
            store.close()
    if replayed:
        click.echo(f"fanflow map: {replayed} jobs were already done (journal {journal})", err=True)
    if stop_code is not None:
        return stop_code
    if first is not None:
        return 0 if ok >= first else 1
    return 1 if failed else 0


def _emit(output: Any) -> None:
    # Whole at once: output of concurrent jobs never interleaves mid-line.
    if output.stdout:
        sys.stdout.buffer.write(output.stdout)
        sys.stdout.buffer.flush()
    if output.stderr:
        sys.stderr.buffer.write(output.stderr)
        sys.stderr.buffer.flush()


class _Progress:
    """A progress bar on stderr (rich), for terminals only."""

    def __init__(self, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("fanflow map"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            transient=True,
        )
        self._task = self._bar.add_task("jobs", total=total, failed=0)
        self._bar.start()
        self._last = 0.0

    def advance(self, ok: int, failed: int) -> None:
        now = time.monotonic()
        if now - self._last > 0.1:
            self._last = now
            self._bar.update(self._task, completed=ok + failed, failed=failed)

    def close(self) -> None:
        self._bar.stop()
