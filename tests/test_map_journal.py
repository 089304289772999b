"""Journals that never drop a job (issue #14).

A job is its position and its item (GNU parallel's --resume keys on the
sequence number), not its text: equal items are distinct jobs, a changed
input is an error rather than a skip, arguments are bytes kept losslessly,
and ``fanflow map`` records a job only after its output was delivered.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff
from fanflow._bulk._journal import JournalMismatchError


def rows(db: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT position, key, status FROM items ORDER BY position").fetchall()
    finally:
        con.close()


def fanflow(
    *args: str | bytes, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fanflow", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=60,
    )


# -- fan_map ------------------------------------------------------------


async def test_equal_items_are_distinct_items(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    calls: list[str] = []

    async def work(item: str) -> str:
        calls.append(item)
        return item.upper()

    results = [r async for r in ff.fan_map(work, ["x", "x", "x"], journal=db)]
    assert calls == ["x", "x", "x"] and sorted(r.index or 0 for r in results) == [0, 1, 2]
    assert [r[0] for r in rows(db)] == [0, 1, 2]
    # A rerun with a fourth "x": the first three are replayed, the new one runs.
    calls.clear()
    again = [r async for r in ff.fan_map(work, ["x", "x", "x", "x"], journal=db)]
    assert calls == ["x"] and sum(r.replayed for r in again) == 3


async def test_a_changed_item_at_a_recorded_position_is_an_error(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    calls: list[str] = []

    async def work(item: str) -> str:
        calls.append(item)
        return item

    [r async for r in ff.fan_map(work, ["a", "b", "c"], journal=db)]
    before = rows(db)
    calls.clear()
    # A sequence is checked before anything runs.
    with pytest.raises(JournalMismatchError, match=r"item 1 is 'B'.*recorded 'b'") as caught:
        ff.fan_map(work, ["a", "B", "c", "d"], journal=db)
    assert (caught.value.index, caught.value.recorded, caught.value.given) == (1, "b", "B")
    assert calls == [] and rows(db) == before

    # A generator is checked as it is read: the error comes when it gets there.
    def items() -> Iterator[str]:
        yield from ["a", "b", "C", "d"]

    with pytest.raises(JournalMismatchError, match="item 2 is 'C'"):
        [r async for r in ff.fan_map(work, items(), journal=db)]
    assert "C" not in calls and "d" not in calls and rows(db) == before


async def test_a_key_identifies_items_wherever_they_are(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    calls: list[str] = []

    async def work(item: str) -> str:
        calls.append(item)
        return item

    [r async for r in ff.fan_map(work, ["a", "b"], journal=db, key=str.lower)]
    calls.clear()
    # Reordered, and "A" has the key of a done item: with key= that is a skip.
    stream = ff.fan_map(work, ["b", "A", "c"], journal=db, key=str.lower)
    names = sorted([r.name async for r in stream])
    assert calls == ["c"] and names == ["a", "b", "c"]
    # name= labels results without identifying them.
    calls.clear()
    stream = ff.fan_map(work, ["a", "d"], journal=db, key=str.lower, name=lambda x: f"<{x}>")
    labelled = sorted([(r.name, r.replayed) async for r in stream])
    assert labelled == [("<a>", True), ("<d>", False)] and calls == ["d"]
    # A journal keyed one way is not read the other way.
    with pytest.raises(ff.JournalError, match="identifies items by key"):
        ff.fan_map(work, ["a"], journal=db)


async def test_empty_bytes_and_non_utf8_items_are_kept_losslessly(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    items: list[Any] = ["", os.fsdecode(b"caf\xe9.txt"), b"\xff\x00", "", {"k": [1]}]

    async def work(item: Any) -> int:
        return len(item)

    first = sorted([(r.index, r.value) async for r in ff.fan_map(work, items, journal=db)])
    assert first == [(0, 0), (1, 8), (2, 2), (3, 0), (4, 1)]
    second = [r async for r in ff.fan_map(work, items, journal=db)]
    assert all(r.replayed for r in second) and len(second) == 5
    with pytest.raises(JournalMismatchError, match="item 1"):
        ff.fan_map(work, ["", os.fsdecode(b"caf\xe8.txt")], journal=db)


def test_a_journal_of_the_old_format_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE items (key TEXT PRIMARY KEY, status TEXT NOT NULL, value TEXT, "
        "error TEXT, attempts INTEGER NOT NULL, started_at REAL, finished_at REAL, "
        "duration REAL, position INTEGER);"
    )
    con.close()
    with pytest.raises(ff.JournalError, match="older fanflow"):
        ff.Journal(db, "x")


# -- fanflow map --------------------------------------------------------


def test_cli_equal_arguments_each_run(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    out = fanflow("map", "-j1", "--journal", str(db), "echo", ":::", "x", "x", "x", "x")
    assert out.returncode == 0 and out.stdout == b"x\n" * 4
    assert b"already done" not in out.stderr
    # A new job whose argument once succeeded is a new job: it runs.
    again = fanflow("map", "-j1", "--journal", str(db), "echo", ":::", "x", "x", "x", "x", "x")
    assert again.returncode == 0 and again.stdout == b"x\n"
    assert b"4 jobs were already done" in again.stderr


def test_cli_changed_argument_is_an_error_naming_the_job(tmp_path: Path) -> None:
    db, ran = tmp_path / "j.db", tmp_path / "ran"
    cmd = f"echo {{}} >> {ran}"
    assert fanflow("map", "--journal", str(db), cmd, ":::", "a", "b", "c").returncode == 0
    before, ran_before = rows(db), ran.read_text()
    out = fanflow("map", "--journal", str(db), cmd, ":::", "a", "x", "c", "d")
    err = out.stderr.decode()
    assert out.returncode == 255 and "Traceback" not in err
    assert "job 2" in err and "'x'" in err and "'b'" in err
    assert rows(db) == before and ran.read_text() == ran_before  # nothing ran
    # From stdin the check comes as the input is read; still an error, still nothing lost.
    piped = fanflow("map", "--journal", str(db), cmd, stdin=b"a\nb\nz\n")
    assert piped.returncode == 255 and b"job 3" in piped.stderr and rows(db) == before


def test_cli_non_utf8_argument_is_journaled_and_replayed(tmp_path: Path) -> None:
    db, log = tmp_path / "j.db", tmp_path / "jobs.tsv"
    args = [b"a", b"b", b"caf\xe9.txt", b"c", b"d", b"e"]
    base = ["map", "-k", "-j1", "--journal", str(db), "--joblog", str(log), "echo {}"]
    out = fanflow(*base, ":::", *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"".join(a + b"\n" for a in args)
    assert b"echo 'caf\xe9.txt'" in log.read_bytes()
    again = fanflow(*base, ":::", *args)
    assert again.returncode == 0 and again.stdout == b""
    assert b"6 jobs were already done" in again.stderr
    # The same bytes on stdin are the same jobs.
    piped = fanflow(*base, stdin=b"".join(a + b"\n" for a in args))
    assert piped.returncode == 0 and piped.stdout == b"", piped.stderr


@pytest.mark.parametrize("extra", [0, 2_000, 30_000])
def test_cli_records_a_job_only_after_its_output_was_written(tmp_path: Path, extra: int) -> None:
    # Each job prints more than the pipe holds (shrunk to one page), so a
    # job's write completes only when the reader took (nearly) all of it.
    # The reader takes exactly 4 jobs' output (and `extra` bytes of a 5th)
    # and leaves: the journal must hold those 4 jobs ok and no other, and a
    # rerun must print the rest. (Python's buffered stdout reported a write
    # cut short by the reader leaving as done: job 5 was recorded unread.)
    db = tmp_path / "j.db"
    size = 9 + 40_000
    cmd = "printf '%08d\\n' {}; head -c 40000 /dev/zero"
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, 1031, 4096)  # F_SETPIPE_SZ
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanflow", "map", "-j2", "--journal", str(db), cmd, ":::"]
        + [str(i) for i in range(1, 21)],
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    data = b""
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        while len(data) < 4 * size + extra:
            chunk = reader.read(4 * size + extra - len(data))
            assert chunk
            data += chunk
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in err, err.decode()
    seen = {int(data[i * size : i * size + 8]) for i in range(4)}
    con = sqlite3.connect(db)
    done = {p + 1 for (p,) in con.execute("SELECT position FROM items WHERE status = 'ok'")}
    con.close()
    assert done == seen
    rerun = fanflow("map", "-j2", "--journal", str(db), cmd, ":::", *map(str, range(1, 21)))
    assert rerun.returncode == 0
    printed = {int(rerun.stdout[i * size : i * size + 8]) for i in range(16)}
    assert len(rerun.stdout) == 16 * size and printed == set(range(1, 21)) - seen
