"""fan_map: bounded memory, order, backpressure, the journal, and crash safety."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import fanflow as ff


async def double(x: int) -> int:
    return x * 2


def others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def peak_memory(n: int) -> int:
    def items() -> Iterator[int]:
        yield from range(n)

    tracemalloc.start()
    try:
        count = 0
        async for result in ff.fan_map(double, items(), max_concurrency=32):
            count += result.ok
        assert count == n
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
async def test_memory_does_not_grow_with_the_number_of_items() -> None:
    small = await peak_memory(20_000)
    large = await peak_memory(200_000)
    assert large < small * 1.5 + 256 * 1024, (small, large)
    assert large < 8 * 1024 * 1024


async def test_results_carry_index_and_name() -> None:
    results = [r async for r in ff.fan_map(double, [5, 6, 7])]
    assert sorted((r.index, r.name, r.value) for r in results) == [
        (0, "0", 10),
        (1, "1", 12),
        (2, "2", 14),
    ]


async def test_ordered_yields_input_order_even_when_the_first_is_slow() -> None:
    async def slow_first(x: int) -> int:
        await asyncio.sleep(0.05 if x == 0 else 0)
        return x

    unordered = [r.value async for r in ff.fan_map(slow_first, range(10), max_concurrency=4)]
    ordered = [
        r.value async for r in ff.fan_map(slow_first, range(10), max_concurrency=4, ordered=True)
    ]
    assert unordered[-1] == 0 and ordered == list(range(10))


async def test_a_slow_consumer_holds_intake_back() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield i

    stream = ff.fan_map(double, items(), max_concurrency=8, buffer=8)
    async with stream:
        async for _ in stream:
            await asyncio.sleep(0.01)  # let the engine run ahead if it would
            assert pulled <= 8 + 8 + 1
            break


async def test_async_iterable_input() -> None:
    async def items() -> AsyncIterator[int]:
        for i in range(20):
            await asyncio.sleep(0)
            yield i

    values = sorted([r.value async for r in ff.fan_map(double, items(), max_concurrency=3)])
    assert values == [2 * i for i in range(20)]


async def test_timeouts_and_retries_apply_per_item() -> None:
    tries: dict[int, int] = {}

    async def flaky(x: int) -> int:
        tries[x] = tries.get(x, 0) + 1
        if x == 3:
            await asyncio.sleep(10)
        if x == 5 and tries[x] < 2:
            raise ff.TransientError("once")
        return x

    results = {
        r.index: r
        async for r in ff.fan_map(flaky, range(6), timeout=0.05, retry=ff.Retry(backoff=0.001))
    }
    assert results[3].status == "timeout" and results[5].ok and results[5].attempts == 2


async def test_break_cancels_items_in_flight() -> None:
    finished: list[int] = []

    async def slow(x: int) -> int:
        await asyncio.sleep(0 if x == 0 else 10)
        finished.append(x)
        return x

    stream = ff.fan_map(slow, range(50), max_concurrency=10)
    async with stream:
        async for _ in stream:
            break
    assert not others() and finished == [0]


async def test_journal_resumes_and_replays(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    calls: list[str] = []

    async def work(item: str) -> dict[str, Any]:
        calls.append(item)
        if item == "bad":
            raise ValueError("bad item")
        return {"item": item, "len": len(item)}

    items = ["a", "bb", "bad", "ccc"]
    first = {r.name: r async for r in ff.fan_map(work, items, journal=db)}
    assert first["a"].ok and first["bad"].status == "error" and not first["a"].replayed
    calls.clear()
    second = {r.name: r async for r in ff.fan_map(work, items, journal=db)}
    assert calls == ["bad"]  # only the failed one runs again
    assert second["bb"].replayed and second["bb"].value == {"item": "bb", "len": 2}
    assert second["bb"].index == 1
    rows = sqlite3.connect(db).execute("SELECT key, status, attempts FROM items ORDER BY key")
    assert [tuple(r) for r in rows] == [
        ("a", "ok", 1),
        ("bad", "error", 1),
        ("bb", "ok", 1),
        ("ccc", "ok", 1),
    ]


async def test_journal_of_another_function_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    [r async for r in ff.fan_map(double, [1], journal=db)]

    async def triple(x: int) -> int:
        return 3 * x

    with pytest.raises(ff.JournalError, match="another job"):
        ff.fan_map(triple, [1], journal=db)
    (tmp_path / "junk.db").write_text("not a database at all" * 100)
    with pytest.raises(ff.JournalError, match="not a fanflow journal"):
        ff.fan_map(double, [1], journal=tmp_path / "junk.db")


async def test_unserialisable_value_names_the_key(tmp_path: Path) -> None:
    async def a_set(x: str) -> set[str]:
        return {x}

    with pytest.raises(ff.JournalError, match=r"'k1'.*serialize="):
        [r async for r in ff.fan_map(a_set, ["k1"], journal=tmp_path / "j.db")]
    stored = [
        r.value
        async for r in ff.fan_map(a_set, ["k2"], journal=tmp_path / "j2.db", serialize=sorted)
    ]
    assert stored == [{"k2"}]  # the live value; the journal holds sorted(value)


async def test_key_function_and_bad_keys(tmp_path: Path) -> None:
    items = [{"id": 7, "text": "x"}, {"id": 9, "text": "y"}]
    names = {r.name async for r in ff.fan_map(lambda d: d["text"], items, key=lambda d: d["id"])}
    assert names == {"7", "9"}
    with pytest.raises(TypeError, match="must be callable"):
        ff.fan_map(double, [1], key=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable"):
        ff.fan_map(double, 5)  # type: ignore[arg-type]


CHILD = textwrap.dedent(
    """
    import asyncio, os, random, sys
    import fanflow as ff

    journal, log, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def work(key):
        await asyncio.sleep(random.random() * 0.02)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (key + "\\n").encode())  # the side effect
        os.close(fd)
        return key.upper()

    async def main():
        keys = (f"k{i}" for i in range(n))
        async for r in ff.fan_map(work, keys, journal=journal, max_concurrency=16):
            assert r.ok

    asyncio.run(main())
    """
)


def ok_keys(db: Path) -> set[str]:
    if not db.exists():
        return set()
    con = sqlite3.connect(db)
    try:
        return {k for (k,) in con.execute("SELECT key FROM items WHERE status = 'ok'")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


def crash_and_resume(argv: list[str], db: Path, log: Path, expected: set[str]) -> int:
    """Kill -9 the job at random points, rerun it until it completes, and check.

    Before each run the keys already recorded ok are noted: nothing the run
    then does (its part of the side-effect log) may be one of them. At the
    end the journal holds every key exactly once, ok.
    """
    rng = random.Random(11)
    kills = 0
    while True:
        recorded = ok_keys(db)
        offset = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        killed = False
        if kills < 4:
            time.sleep(rng.uniform(0.5, 1.2))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.communicate()  # reaps it and closes its pipes
                kills += 1
                killed = True
                time.sleep(0.1)  # jobs the killed run left behind may still write
        if not killed:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
        ran = log.read_bytes()[offset:].decode().split() if log.exists() else []
        again = set(ran) & recorded
        assert not again, f"recorded ok, yet ran again: {sorted(again)[:5]}"
        if not killed:
            break
    con = sqlite3.connect(db)
    rows = con.execute("SELECT key, status FROM items").fetchall()
    con.close()
    assert len(rows) == len(expected) and {k for k, _ in rows} == expected
    assert all(status == "ok" for _, status in rows)
    return kills


@pytest.mark.slow
def test_fan_map_survives_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db, log = tmp_path / "run.db", tmp_path / "side-effects.log"
    n = 3000
    argv = [sys.executable, str(script), str(db), str(log), str(n)]
    assert crash_and_resume(argv, db, log, {f"k{i}" for i in range(n)}) >= 2


@pytest.mark.slow
def test_fanflow_map_survives_kill_9(tmp_path: Path) -> None:
    db, log = tmp_path / "run.db", tmp_path / "side-effects.log"
    n = 400
    argv = [
        sys.executable,
        "-m",
        "fanflow",
        "map",
        "-j",
        "8",
        "--journal",
        str(db),
        f"sleep 0.02; echo {{}} >> {log}",
        ":::",
        *[f"k{i}" for i in range(n)],
    ]
    crash_and_resume(argv, db, log, {f"k{i}" for i in range(n)})
    assert (
        json.loads(sqlite3.connect(db).execute("SELECT value FROM items LIMIT 1").fetchone()[0])[
            "exit"
        ]
        == 0
    )


async def test_fan_map_hedges_a_straggler_of_a_stream() -> None:
    # A stream's hedge budget grows with the items taken (max_extra of them).
    stalled: set[int] = set()

    async def work(i: int) -> int:
        if i == 0 and i not in stalled:
            stalled.add(i)
            await asyncio.sleep(30)
        await asyncio.sleep(0.01)
        return i

    results = [
        r
        async for r in ff.fan_map(
            work, iter(range(40)), max_concurrency=4, hedge=ff.Hedge(after=0.2)
        )
    ]
    first = next(r for r in results if r.name == "0")
    assert first.ok and first.hedged and first.attempts == 2
    assert sorted(r.value for r in results) == list(range(40))
