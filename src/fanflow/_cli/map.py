"""``fanflow map``: GNU parallel's everyday command line, on ``ff.fan_map``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import io
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import click

from . import _gnu


class _Fatal(click.ClickException):
    """A one-line error before (or instead of) running jobs: GNU parallel's 255."""

    exit_code = 255

    def show(self, file: IO[Any] | None = None) -> None:
        message = self.format_message()
        if not message.startswith("fanflow map"):
            message = f"fanflow map: {message}"
        click.echo(message, err=True)


class _JobLog:
    """GNU parallel's --joblog format: one tab-separated line per finished job.

    ``--joblog FILE`` starts the file afresh, ``--joblog +FILE`` appends to
    it (as does ``--resume``); JobRuntime is padded to ten characters, and a
    timed-out job is logged with Exitval -1 and Signal 15, as GNU does.
    """

    def __init__(self, path: Path, append: bool) -> None:
        # surrogateescape: a command holding a non-UTF-8 argument is logged
        # with the argument's own bytes.
        try:
            self.file = path.open(
                "a" if append else "w", encoding="utf-8", errors="surrogateescape"
            )
        except OSError as exc:
            raise _Fatal(f"--joblog {path}: {exc.strerror or exc}") from None
        if self.file.tell() == 0:
            self.file.write(
                "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"
            )

    def write(
        self,
        seq: int,
        start: float,
        runtime: float,
        received: int,
        code: int,
        sig: int,
        command: str,
    ) -> None:
        self.file.write(
            f"{seq}\t:\t{start:.3f}\t{runtime:10.3f}\t0\t{received}\t{code}\t{sig}\t{command}\n"
        )
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _recorded(path: Path) -> dict[int, tuple[int, int]]:
    """Jobs a joblog recorded: ``{seq: (exitval, signal)}`` (for --resume)."""
    done: dict[int, tuple[int, int]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return done
    except OSError as exc:
        raise _Fatal(f"--joblog {path}: {exc.strerror or exc}") from None
    for line in text.splitlines()[1:]:
        fields = line.split("\t")
        with contextlib.suppress(ValueError, IndexError):
            done[int(fields[0])] = (int(fields[6]), int(fields[7]))
    return done


@dataclasses.dataclass
class _Halt:
    """``--halt when,why=N``: when to stop, and how."""

    when: str  # "now" | "soon"
    why: str  # "fail" | "success" | "done"
    count: float  # jobs, or a fraction of them with a percentage
    percent: bool

    def reached(self, failed: int, succeeded: int, total: int | None) -> bool:
        seen = {"fail": failed, "success": succeeded, "done": failed + succeeded}[self.why]
        if self.percent:
            return total is not None and total > 0 and seen >= self.count * total
        return seen >= self.count


_HALT = re.compile(r"^(now|soon|never),(fail|success|done)=(\d+(?:\.\d+)?)(%?)$")


def _halt(value: str | None) -> _Halt | None:
    if value is None:
        return None
    legacy = {"0": "never,fail=1", "1": "soon,fail=1", "2": "now,fail=1"}
    match = _HALT.match(legacy.get(value, value))
    if match is None:
        raise _Fatal(
            f"--halt {value!r}: give when,why=N, e.g. now,fail=1, soon,fail=20% or now,success=1"
        )
    when, why, number, percent = match.groups()
    if when == "never":
        return None
    count = float(number) / 100 if percent else float(number)
    return _Halt(when, why, count, bool(percent))


def _number(option: str, value: str | None, *, integer: bool, minimum: float) -> float | None:
    if value is None:
        return None
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise _Fatal(f"{option} {value!r}: must be {kind}") from None
    if not math.isfinite(number) or number < minimum:
        raise _Fatal(f"{option} {value!r}: must be at least {minimum:g}")
    return number


def _jobs(value: str | None) -> int:
    """-j N, -j 0 (as many as possible), -j N% of the CPUs, -j +N / -N around them."""
    cpus = os.cpu_count() or 1
    if value is None:
        return cpus
    try:
        if value.endswith("%"):
            return max(1, int(cpus * float(value[:-1]) / 100))
        if value.startswith(("+", "-")):
            return max(1, cpus + int(value))
        count = int(value)
    except ValueError:
        raise _Fatal(f"-j {value!r}: give N, 0, N% or +N/-N") from None
    if count < 0:
        raise _Fatal(f"-j {value!r}: give N, 0, N% or +N/-N")
    return count or _AS_MANY_AS_POSSIBLE


# -j 0: GNU parallel runs as many jobs as it has file handles for.
_AS_MANY_AS_POSSIBLE = 250


def _rate(value: str | None) -> float | None:
    if value is None:
        return None
    match = re.match(r"^(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?$", value)
    if match is None or float(match.group(1)) <= 0:
        raise _Fatal(f"--rate {value!r}: give jobs per second, e.g. 10/s, 600/min or 5")
    per = {None: 1, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
    return float(match.group(1)) / per.get(match.group(2), 3600)


def _hedge(value: str | None) -> Any:
    """--hedge p95 | SECONDS: race a second copy of a job slower than that."""
    if value is None:
        return None
    import fanflow as ff

    after: Any = value
    with contextlib.suppress(ValueError):
        after = float(value)
    try:
        return ff.Hedge(after=after)
    except (TypeError, ValueError) as exc:
        raise _Fatal(f"--hedge {value!r}: {exc}") from None


def _separator(spec: _gnu.MapArgs) -> bytes:
    if spec.null:
        return b"\0"
    if spec.delimiter is not None:
        text = spec.delimiter.encode().decode("unicode_escape")
        if not text:
            raise _Fatal("-d needs a non-empty delimiter")
        return os.fsencode(text)
    return b"\n"


def _source_values(source: _gnu.Source, separator: bytes) -> Iterator[str]:
    if source.values is not None:
        yield from source.values
        return
    assert source.path is not None
    if source.path == "-":
        yield from _gnu.read_lines(sys.stdin.buffer, separator)
        return
    try:
        with open(source.path, "rb") as file:
            yield from _gnu.read_lines(file, separator)
    except OSError as exc:
        raise _Fatal(f"{source.path}: {exc.strerror or exc}") from None


def _job_arguments(spec: _gnu.MapArgs, jobs: int) -> tuple[Iterator[list[str]], bool]:
    """Each job's arguments, and whether they are all known up front."""
    separator = _separator(spec)
    sources = spec.sources
    if not sources:
        if sys.stdin.isatty():
            raise _Fatal("no arguments: give them after ':::' or one per line on stdin")
        sources = [_gnu.Source(path="-")]
    known = all(s.values is not None for s in sources)
    # Files are opened now: a missing one is an error before any job runs.
    for source in sources:
        # Any readable path: a file, or a pipe such as bash's <(seq 6).
        if source.path is not None and source.path != "-" and not os.path.exists(source.path):
            raise _Fatal(f"{source.path}: no such file")
    streams = [_source_values(s, separator) for s in sources]
    records: Iterator[list[str]] = _gnu.combine(streams, [s.linked for s in sources], spec.link)
    if spec.colsep is not None:
        try:
            column = re.compile(spec.colsep)
        except re.error as exc:
            raise _Fatal(f"--colsep {spec.colsep!r}: {exc}") from None
        # Columns are trimmed of blanks around them, as GNU's --colsep does.
        records = ([c.strip(" \t") for value in r for c in column.split(value)] for r in records)
    exact = _number("-N", spec.exact_args, integer=True, minimum=0)
    group = exact if exact is not None else _number("-n", spec.max_args, integer=True, minimum=0)
    if group == 0:
        # -N0: one input line per job, none of it put in the command (GNU).
        return ([] for _ in records), known
    if spec.context_m or spec.context_x:
        # All the arguments, spread evenly over the job slots (they fit on
        # one command line here), as GNU parallel's -m and -X do.
        flat = [value for r in records for value in r]
        size = max(1, math.ceil(len(flat) / max(jobs, 1)))
        if group is not None:
            size = min(size, int(group))
        chunks = [flat[k : k + size] for k in range(0, len(flat), size)]
        return iter(chunks), True
    if group is not None:
        size = int(group)

        def grouped() -> Iterator[list[str]]:
            batch: list[str] = []
            for r in records:
                batch.extend(r)
                if len(batch) >= size:
                    yield batch
                    batch = []
            if batch:
                yield batch  # a short last group: {n} past its end is empty

        return grouped(), known
    return records, known


def _shell(spec: _gnu.MapArgs) -> str:
    """The shell jobs run under: --shell, else $SHELL (as GNU parallel), else /bin/sh."""
    if spec.shell is not None:
        if not os.access(spec.shell, os.X_OK):
            raise _Fatal(f"--shell {spec.shell!r}: not an executable file")
        return spec.shell
    shell = os.environ.get("SHELL", "")
    return shell if shell and os.access(shell, os.X_OK) else "/bin/sh"


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["--help"],
    }
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def map_command(argv: tuple[str, ...]) -> None:
    """Run a command once per argument, in parallel: GNU parallel's command line.

    \b
    fanflow map [OPTIONS] COMMAND [ARGS...] ::: VALUES... [::: VALUES...]
    fanflow map [OPTIONS] COMMAND :::: FILE...      (- is standard input)
    ... | fanflow map [OPTIONS] COMMAND             (one argument per line)

    The command is written as you would type it (quoted or not); several
    ':::' give every combination, --link pairs them. {} is the argument,
    {.} it without extension, {/} its basename, {//} its directory, {/.}
    the basename without extension, {#} the job number, {%} the job slot,
    {1} {2.} {-1/} ... by position; with none of them the arguments are
    appended. Every substituted value is shell-quoted: an argument can
    never inject a command (a value inside quotes you write around {} is
    your quoting, as in GNU parallel). Each job's output is printed whole
    when it ends, never mixed with another's; past 1 MiB it waits in a
    temporary file, not in memory. Jobs run under $SHELL (--shell PATH).

    \b
    GNU parallel's options: -j N|0|N%|+N, -k, --tag, -v, -q, --dry-run,
    -a FILE, --link, --colsep RE, -N N, -n N, -m, -X, -0, -d DELIM,
    --timeout S, --retries N (N tries in all), --halt now|soon,fail|
    success|done=N[%], --delay S, --joblog [+]FILE, --resume,
    --resume-failed, --results DIR, --bar/--eta. fanflow's own: --journal
    FILE (crash-safe resume), --first N (stop after N successes), --rate
    N/s, --hedge p95|SECONDS (race a copy of a straggler), --shell PATH.

    \b
    Exit status: 0 when every job succeeded; else the number of failed jobs
    (101 for more than 100); with --halt ...,fail the failing job's status;
    255 for a usage error; 141 when the reader of the output went away.

    \b
    Examples:
      fanflow map -j 8 gzip --best ::: *.log
      fanflow map echo {1} {2} ::: a b ::: 1 2
      find . -name '*.png' | fanflow map --timeout 30 convert {} {.}.jpg
    """
    try:
        spec = _gnu.parse(list(argv))
    except _gnu.GnuUsageError as exc:
        raise _Fatal(str(exc)) from None
    if not spec.words and not spec.sources and not spec.arg_file:
        raise _Fatal("give a command, e.g. fanflow map echo {} ::: a b")
    halt = _halt(spec.halt)
    if spec.halt_on_fail:
        if halt is not None:
            raise _Fatal("--halt and --halt-on-fail cannot be used together")
        halt = _Halt("now", "fail", 1, False)
    first = _number("--first", spec.first, integer=True, minimum=1)
    if first is not None and halt is not None:
        raise _Fatal("--first and --halt cannot be used together")
    if (spec.resume or spec.resume_failed) and spec.joblog is None:
        raise _Fatal("--resume and --resume-failed need --joblog FILE")
    jobs = _jobs(spec.jobs)
    timeout = _number("--timeout", spec.timeout, integer=False, minimum=0)
    if timeout == 0:
        raise _Fatal("--timeout must be more than 0 seconds")
    retries = _number("--retries", spec.retries, integer=True, minimum=0)
    delay = _number("--delay", spec.delay, integer=False, minimum=0)
    rate = _rate(spec.rate)
    hedge = _hedge(spec.hedge)
    shell = _shell(spec)
    values, known = _job_arguments(spec, jobs)
    job_list = list(values) if known else None
    joblog = spec.joblog
    append = bool(joblog and (joblog.startswith("+") or spec.resume or spec.resume_failed))
    if joblog is not None and joblog.startswith("+"):
        joblog = joblog[1:]
    if spec.dry_run:
        _dry_run(spec, job_list if job_list is not None else values)
        return
    from . import _runner

    # SIGINT, SIGTERM, SIGHUP: running jobs' process groups are stopped
    # (TERM, then KILL), the journal and joblog committed, exit 130/143/129.
    code = _runner.run(
        _run(
            spec,
            iter(job_list) if job_list is not None else values,
            total=len(job_list) if job_list is not None else None,
            jobs=jobs,
            timeout=timeout,
            tries=max(1, int(retries or 1)),
            journal=Path(spec.journal) if spec.journal is not None else None,
            first=int(first) if first is not None else None,
            halt=halt,
            joblog=Path(joblog) if joblog is not None else None,
            append=append,
            delay=delay,
            rate=rate,
            hedge=hedge,
            shell=shell,
        ),
        "map",
    )
    sys.exit(code)


def _command(spec: _gnu.MapArgs, args: list[str], seq: int, slot: int) -> str:
    if not spec.command or spec.command.strip() == "{}":
        # No command, or only {}: each argument is a command line of its
        # own, not quoted (GNU parallel's meaning).
        return " ".join(args)
    return _gnu.expand(spec.command, args, seq, slot, context=spec.context_x)


def _dry_run(spec: _gnu.MapArgs, jobs: Iterable[list[str]]) -> None:
    for seq, args in enumerate(jobs, start=1):
        click.echo(_command(spec, args, seq, 1))


class _NotStarted(Exception):
    """A job that --halt soon (or --resume) kept from starting: not run, not shown."""


async def _run(
    spec: _gnu.MapArgs,
    values: Iterator[list[str]],
    *,
    total: int | None,
    jobs: int,
    timeout: float | None,
    tries: int,
    journal: Path | None,
    first: int | None,
    halt: _Halt | None,
    joblog: Path | None,
    append: bool,
    delay: float | None,
    rate: float | None,
    hedge: Any,
    shell: str,
) -> int:
    import fanflow as ff
    from fanflow._bulk._journal import JournalMismatchError
    from fanflow._shell._run import ShellError, ShellOutput, ShellTimeoutError, run_shell

    outputs: dict[int, ShellOutput] = {}
    commands: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    free_slots = list(range(1, jobs + 1))
    halted = False
    skip: set[int] = set()
    if joblog is not None and (spec.resume or spec.resume_failed):
        recorded = _recorded(joblog)
        skip = {
            seq for seq, (code, sig) in recorded.items() if spec.resume or (code == 0 and sig == 0)
        }

    async def job_keeping_output(item: tuple[int, list[str]]) -> dict[str, int]:
        seq, args = item
        if halted or seq in skip:
            raise _NotStarted
        slot = heapq.heappop(free_slots) if free_slots else jobs + 1
        command = commands[seq] = _command(spec, args, seq, slot)
        arguments[seq] = args
        try:
            # The timeout is the command's own (GNU parallel's meaning): it
            # starts when the process does, not while the job waits to fork.
            output = await run_shell(
                command,
                timeout=timeout,
                shell=shell,
                on_output=_line_sinks(spec, args, progress),
            )
        except (ShellError, ShellTimeoutError) as exc:
            # What it printed is printed, even when it timed out (as GNU does).
            _keep(outputs, seq, exc.output)
            raise
        finally:
            if slot <= jobs:
                heapq.heappush(free_slots, slot)
        _keep(outputs, seq, output)
        return {
            "exit": output.exit_code,
            "stdout": output.stdout_size,
            "stderr": output.stderr_size,
        }

    job_keeping_output.__qualname__ = f"fanflow map {spec.command}"
    # Both files are checked and opened before any job runs: a bad path is
    # an error up front, not after the work.
    from ._paths import output_problem

    for option, path in (("--joblog", joblog), ("--journal", journal)):
        problem = output_problem(option, path)
        if problem is not None:
            raise _Fatal(problem)
    log = _JobLog(joblog, append) if joblog is not None else None
    store: ff.Journal | None = None
    if journal is not None:
        try:
            # confirm: a job is recorded only once its output was delivered.
            store = ff.Journal(journal, f"fanflow map: {spec.command}", confirm=True)
        except ff.JournalError as exc:
            if log is not None:
                log.close()
            raise _Fatal(str(exc)) from None
    progress = _Progress(total) if spec.bar else None
    numbered = ((seq, args) for seq, args in enumerate(values, start=1))
    # A list when the arguments are known: the journal checks every recorded
    # job against it before anything runs.
    items = list(numbered) if total is not None else numbered
    ok = failed = replayed = 0
    stop_code: int | None = None
    halt_code: int | None = None
    delivered = _Confirmer(store)
    limiter = None
    if delay or rate:
        per_second = min(1 / delay if delay else math.inf, rate or math.inf)
        limiter = ff.RateLimit(per_second=per_second, burst=1)
    try:
        stream = ff.fan_map(
            job_keeping_output,
            items,
            max_concurrency=jobs,
            retry=ff.Retry(attempts=tries, backoff=0.01, on=(ShellError, ShellTimeoutError))
            if tries > 1
            else None,
            rate_limit=limiter,
            hedge=hedge,
            ordered=spec.keep_order,
            journal=store,
            # Identified by job number and arguments; labelled by the arguments.
            name=lambda item: " ".join(item[1]),
        )
        async with stream:
            async for result in stream:
                seq = (result.index or 0) + 1
                if result.replayed:
                    replayed += 1
                    ok += 1
                elif isinstance(result.error, _NotStarted):
                    continue
                else:
                    if progress is not None:
                        progress.clear()
                    output = outputs.pop(seq, None)
                    command = commands.pop(seq, None)
                    args = arguments.pop(seq, None)
                    try:
                        _report(result, seq, command, output, log, spec, args)
                    finally:
                        if output is not None:
                            output.close()
                    delivered.add(result)
                    if result.ok:
                        ok += 1
                    else:
                        failed += 1
                        if output is not None and output.exit_code > 0:
                            halt_code = output.exit_code
                        else:
                            halt_code = 1
                if progress is not None:
                    progress.advance(ok, failed)
                if first is not None and ok >= first:
                    stop_code = 0
                    break
                if halt is not None and not halted and halt.reached(failed, ok, total):
                    code = 0 if halt.why == "success" else (halt_code or 1)
                    if halt.percent and halt.why == "fail" and total:
                        # GNU's status for fail=N%: the share of jobs that failed, in %.
                        code = round(100 * failed / total)
                    if spec.halt_on_fail:
                        code = 1
                    if halt.when == "now":
                        stop_code = code
                        break
                    # soon: no new job starts; the running ones finish and print.
                    halted = True
                    stop_code = code
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
    # GNU parallel's exit status: the number of failed jobs, 101 past 100.
    return min(failed, 101)


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
    result: Any,
    seq: int,
    command: str | None,
    output: Any,
    log: _JobLog | None,
    spec: _gnu.MapArgs,
    args: list[str] | None,
) -> None:
    """Print a finished job's output and failure, and log it; raises BrokenPipeError."""
    from fanflow._shell._run import ShellTimeoutError

    timed_out = isinstance(result.error, ShellTimeoutError)
    if spec.verbose and command is not None:
        _raw(sys.stdout).write(os.fsencode(command) + b"\n")
    if spec.trace and command is not None:
        # -t / --verbose: the command on stderr, as GNU prints it.
        _raw(sys.stderr).write(os.fsencode(command) + b"\n")
    if output is not None:
        if spec.line_buffer:
            pass  # printed line by line while it ran (see _line_sinks)
        elif spec.results is not None:
            # Saved, not printed: GNU's --results.
            _save_results(spec.results, seq, args or [], output)
        else:
            tag = os.fsencode(" ".join(args if args is not None else [result.name]) + "\t")
            _emit(output, tag if spec.tag else None)
        if timed_out:
            # GNU's words, on stderr.
            click.echo(
                f"fanflow map: Warning: This job was killed because it timed out:\n"
                f"fanflow map: Warning: {command}",
                err=True,
            )
        code = output.exit_code
        received = output.stdout_size
    elif result.error is not None:
        click.echo(f"fanflow map: job {seq} ({result.name!r}): {result.error}", err=True)
        code, received = -9, 0
    else:
        return
    if log is not None and result.started_at is not None:
        # Exitval and Signal as GNU logs them: a timed-out job is -1 and 15.
        exit_value, sig = (-1, 15) if timed_out else ((0, -code) if code < 0 else (code, 0))
        log.write(
            seq,
            result.started_at,
            result.duration or 0.0,
            received,
            exit_value,
            sig,
            command or result.name,
        )


def _result_folder(base: str, args: list[str]) -> Path:
    """GNU's --results layout: BASE/1/<arg 1>/2/<arg 2>/... ("/" in a value as "\\_")."""
    folder = Path(base)
    for position, value in enumerate(args, start=1):
        escaped = value.replace("\\", "\\\\").replace("/", "\\_")
        folder = folder / str(position) / (escaped or "\\0")
    return folder


def _save_results(base: str, seq: int, args: list[str], output: Any) -> None:
    folder = _result_folder(base, args)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "seq").write_text(str(seq))
        with (folder / "stdout").open("wb") as out:
            output.write_stdout(out)
        with (folder / "stderr").open("wb") as err:
            output.write_stderr(err)
    except OSError as exc:
        click.echo(f"fanflow map: --results {folder}: {exc.strerror or exc}", err=True)


def _line_sinks(
    spec: _gnu.MapArgs, args: list[str], progress: _Progress | None
) -> tuple[Callable[[bytes], None], Callable[[bytes], None]] | None:
    """--line-buffer: where a job's whole lines go as they arrive (tagged with --tag).

    Lines of different jobs may alternate, as with GNU parallel's
    --line-buffer; a line is never cut by another job's.
    """
    if not spec.line_buffer:
        return None
    tag = os.fsencode(" ".join(args) + "\t") if spec.tag else None

    def sink(stream: Any) -> Callable[[bytes], None]:
        def write(lines: bytes) -> None:
            if progress is not None:
                progress.clear()  # redrawn when the next job ends
            if tag is not None:
                ends = lines.endswith(b"\n")
                body = lines[:-1] if ends else lines
                lines = b"\n".join(tag + line for line in body.split(b"\n"))
                lines += b"\n" if ends else b""
            stream.write(lines)
            stream.flush()

        return write

    return sink(_raw(sys.stdout)), sink(_raw(sys.stderr))


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


class _Tagged:
    """A binary writer that puts ``tag`` before every line (--tag)."""

    def __init__(self, sink: Any, tag: bytes) -> None:
        self.sink = sink
        self.tag = tag
        self.at_start = True

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        lines = data.split(b"\n")
        out = []
        for k, line in enumerate(lines):
            last = k == len(lines) - 1
            if last and not line:
                break  # the data ended with a newline
            if self.at_start:
                out.append(self.tag)
            out.append(line)
            if not last:
                out.append(b"\n")
                self.at_start = True
            else:
                self.at_start = False
        self.sink.write(b"".join(out))
        return len(data)

    def flush(self) -> None:
        self.sink.flush()


def _emit(output: Any, tag: bytes | None = None) -> None:
    # Whole at once: output of concurrent jobs never interleaves mid-line.
    # Streamed in chunks from memory or from its temporary file, and written
    # through before the job is confirmed in the journal.
    if output.stdout_size:
        out = _raw(sys.stdout)
        output.write_stdout(out if tag is None else _Tagged(out, tag))
    if output.stderr_size:
        err = _raw(sys.stderr)
        output.write_stderr(err if tag is None else _Tagged(err, tag))


class _FdWriter:
    """Writes straight to a file descriptor, every byte or BrokenPipeError.

    Not Python's buffered stdout: when the reader leaves in the middle of a
    large write, BufferedWriter can report the cut-short write as done
    (CPython 3.11), and ``fanflow map --journal`` would confirm a job whose
    output nobody read.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def flush(self) -> None:
        pass


def _raw(stream: IO[str]) -> IO[bytes] | _FdWriter:
    """Where a job's bytes go: the stream's file descriptor, once its buffer is flushed."""
    buffer: IO[bytes] = stream.buffer  # type: ignore[attr-defined]
    buffer.flush()
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return buffer  # not a file (click's CliRunner): nothing to lose
    return _FdWriter(fd)


class _Progress:
    """--bar/--eta: one status line on stderr (a terminal only), cleared around output.

    The line is erased before a job's output is printed and drawn again
    after it, so output never lands glued to a stale copy of the bar.
    """

    def __init__(self, total: int | None) -> None:
        self._tty = sys.stderr.isatty()
        self._total = total
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._drawn = False

    def advance(self, ok: int, failed: int) -> None:
        if not self._tty:
            return
        now = time.monotonic()
        if self._drawn and now - self._last < 0.1:
            return
        self._last = now
        done, elapsed, total = ok + failed, now - self._start, self._total
        if total:
            filled = int(30 * done / total)
            eta = elapsed / done * (total - done) if done else 0.0
            text = (
                f"fanflow map [{'#' * filled}{'-' * (30 - filled)}] {done}/{total}, "
                f"{failed} failed, {elapsed:.0f}s, ETA {eta:.0f}s"
            )
        else:
            text = f"fanflow map: {done} done, {failed} failed, {elapsed:.0f}s"
        sys.stderr.write(f"\r{text}\033[K")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        self.clear()
