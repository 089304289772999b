"""``fanflow map``: a GNU-parallel-like bulk runner on ``ff.fan_map``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TextIO

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


class _Fatal(click.ClickException):
    """A one-line error before (or instead of) running jobs: exit status 2, no usage text."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"fanflow map: {self.format_message()}", err=True)


def _lines(stdin: IO[bytes]) -> Iterator[str]:
    # Bytes, not text: an argument is a file name or the like, and need not
    # be UTF-8. os.fsdecode (surrogateescape) keeps every byte, and the
    # command line gives the same bytes back to the shell. An empty line is
    # an empty argument: a job.
    for line in stdin:
        yield os.fsdecode(line[:-1] if line.endswith(b"\n") else line)


def _arguments(args: tuple[str, ...], stdin: TextIO) -> tuple[list[str] | None, Iterator[str]]:
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
    return None, _lines(stdin.buffer)


def _finite_timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> Any:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number of seconds; got {value}")
    return value


class _JobLog:
    """GNU parallel's --joblog format: one tab-separated line per finished job."""

    def __init__(self, path: Path) -> None:
        # surrogateescape: a command holding a non-UTF-8 argument is logged
        # with the argument's own bytes.
        try:
            self.file = path.open("a", encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise _Fatal(f"--joblog {path}: {exc.strerror or exc}") from None
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
    callback=_finite_timeout,
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
    help="SQLite journal: a rerun skips jobs done ok (the same job number and argument).",
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
    with another's); past 1 MiB it waits in a temporary file, not in memory.

    With --journal FILE a job is recorded done only after its output was
    written, and a rerun skips the jobs recorded ok: a job is its number
    and its argument, so a rerun with different arguments is an error
    naming the job, not a skip. Exit status: 0 when every job succeeded, 1
    otherwise, 2 for a usage error, 141 when the reader of the output went
    away (a broken pipe: fanflow stops quietly).

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
    from . import _runner

    # SIGINT, SIGTERM, SIGHUP: running jobs' process groups are stopped
    # (TERM, then KILL), the journal and joblog committed, exit 130/143/129.
    code = _runner.run(
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
        ),
        "map",
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
    from fanflow._bulk._journal import JournalMismatchError
    from fanflow._shell._run import ShellError, ShellOutput, ShellTimeoutError, run_shell

    outputs: dict[int, ShellOutput] = {}
    arguments: dict[int, str] = {}

    async def job_keeping_output(item: tuple[int, str]) -> dict[str, int]:
        seq, arg = item
        arguments[seq] = arg
        try:
            # The timeout is the command's own (GNU parallel's meaning): it
            # starts when the process does, not while the job waits to fork.
            output = await run_shell(_expand(template, arg, seq), timeout=timeout)
        except (ShellError, ShellTimeoutError) as exc:
            # What it printed is printed, even when it timed out (as GNU does).
            _keep(outputs, seq, exc.output)
            raise
        _keep(outputs, seq, output)
        return {
            "exit": output.exit_code,
            "stdout": output.stdout_size,
            "stderr": output.stderr_size,
        }

    job_keeping_output.__qualname__ = f"fanflow map {template}"
    # Both files are checked and opened before any job runs: a bad path is
    # an error up front, not after the work.
    from ._paths import output_problem

    for option, path in (("--joblog", joblog), ("--journal", journal)):
        problem = output_problem(option, path)
        if problem is not None:
            raise _Fatal(problem)
    log = _JobLog(joblog) if joblog is not None else None
    store: ff.Journal | None = None
    if journal is not None:
        try:
            # confirm: a job is recorded only once its output was delivered.
            store = ff.Journal(journal, f"fanflow map: {template}", confirm=True)
        except ff.JournalError as exc:
            if log is not None:
                log.close()
            raise _Fatal(str(exc)) from None
    progress = _Progress(total) if sys.stderr.isatty() else None
    numbered = ((seq, arg) for seq, arg in enumerate(values, start=1))
    # A list when the arguments are known: the journal checks every recorded
    # job against it before anything runs.
    items = list(numbered) if total is not None else numbered
    ok = failed = replayed = 0
    stop_code: int | None = None
    delivered = _Confirmer(store)
    try:
        stream = ff.fan_map(
            job_keeping_output,
            items,
            max_concurrency=jobs,
            retry=ff.Retry(attempts=retries + 1, backoff=0.1) if retries else None,
            ordered=keep_order,
            journal=store,
            # Identified by job number and argument; labelled by the argument.
            name=lambda item: item[1],
        )
        async with stream:
            async for result in stream:
                seq = (result.index or 0) + 1
                if result.replayed:
                    replayed += 1
                    ok += 1
                else:
                    output = outputs.pop(seq, None)
                    arg = arguments.pop(seq, None)
                    try:
                        _report(result, seq, arg, output, template, log)
                    finally:
                        if output is not None:
                            output.close()
                    delivered.add(result)
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
    except JournalMismatchError as exc:
        raise _Fatal(_mismatch(exc, journal)) from None
    except asyncio.CancelledError:
        # A signal (see _runner): the running jobs were stopped by the stream's
        # cleanup; the journal and joblog are closed below. Say what happened.
        saved = f"; the journal {journal} keeps the {ok} done" if journal is not None else ""
        click.echo(
            f"fanflow map: interrupted: {ok} jobs done, {failed} failed, the running ones "
            f"stopped{saved}",
            err=True,
        )
        raise
    except BrokenPipeError:
        # The reader is gone (`| head`): stop quietly, as GNU parallel and
        # other filters do. The job whose output could not be written was
        # not confirmed, so the journal holds only delivered jobs. Python's
        # own flush of stdout at exit would fail again: point it elsewhere.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        stop_code = 141
    finally:
        for leftover in outputs.values():
            leftover.close()
        if progress is not None:
            progress.close()
        if log is not None:
            log.close()
        if store is not None:
            try:
                delivered.flush()
            finally:
                store.close()
    if replayed:
        with contextlib.suppress(BrokenPipeError):
            click.echo(
                f"fanflow map: {replayed} jobs were already done (journal {journal})", err=True
            )
    if stop_code is not None:
        return stop_code
    if first is not None:
        return 0 if ok >= first else 1
    return 1 if failed else 0


class _Confirmer:
    """Confirms delivered jobs in the journal: one transaction per event-loop turn.

    A commit costs ~0.03-0.2 ms, about a third of a `true` job's cost; the
    jobs delivered in one turn share one. A crash before the commit runs
    those jobs again (their output was printed): at least once, never lost.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.batch: list[Any] = []
        self.error: BaseException | None = None

    def add(self, result: Any) -> None:
        if self.error is not None:
            raise self.error
        if self.store is None:
            return
        if not self.batch:
            asyncio.get_running_loop().call_soon(self._commit)
        self.batch.append(result)

    def _commit(self) -> None:
        # A loop callback: an error is kept for the consumer to raise.
        try:
            self.flush()
        except Exception as exc:
            self.error = exc

    def flush(self) -> None:
        batch, self.batch = self.batch, []
        if batch and self.store is not None:
            self.store.confirm(batch)
            return
        if self.error is not None:
            raise self.error


def _keep(outputs: dict[int, Any], seq: int, output: Any) -> None:
    # A retried job keeps only its last attempt's output.
    previous = outputs.pop(seq, None)
    if previous is not None:
        previous.close()
    outputs[seq] = output


def _report(
    result: Any, seq: int, arg: str | None, output: Any, template: str, log: _JobLog | None
) -> None:
    """Print a finished job's output and failure, and log it; raises BrokenPipeError."""
    shown = "" if arg is None else f" ({arg!r})"
    if output is not None:
        _emit(output)
        if not result.ok:
            click.echo(f"fanflow map: job {seq}{shown} failed: {result.error}", err=True)
        logged = (output.stdout_size, output.exit_code, output.command)
    elif result.error is not None:
        click.echo(f"fanflow map: job {seq}{shown}: {result.error}", err=True)
        logged = (0, -9, _expand(template, arg or "", seq))
    else:
        return
    if log is not None and result.started_at is not None:
        log.write(seq, result.started_at, result.duration or 0.0, *logged)


def _mismatch(exc: Any, journal: Path | None) -> str:
    # The journal's items are (job number, argument) pairs: name the argument.
    def argument(item: Any) -> Any:
        return item[1] if isinstance(item, list) and len(item) == 2 else item

    seq = exc.index + 1
    return (
        f"job {seq}'s argument is {argument(exc.given)!r}, but the journal {journal} "
        f"recorded {argument(exc.recorded)!r} for job {seq}: the arguments changed. Nothing "
        "was skipped or overwritten; rerun with the original arguments, or use another journal"
    )


def _emit(output: Any) -> None:
    # Whole at once: output of concurrent jobs never interleaves mid-line.
    # Streamed in chunks from memory or from its temporary file, and flushed
    # before the job is confirmed in the journal.
    if output.stdout_size:
        output.write_stdout(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    if output.stderr_size:
        output.write_stderr(sys.stderr.buffer)
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
