"""Bulk data processing: 20,000 records through a function, resumable.

The same job on the command line is ``fanflow map``:

    seq 1 20000 | fanflow map -j 16 --journal run.db 'python3 enrich.py {}'

Run this twice: the second run replays every record from the journal.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
from pathlib import Path

import fanflow as ff


def records(n: int):  # type: ignore[no-untyped-def]
    """An input stream: memory never holds more than the in-flight window."""
    for i in range(n):
        yield {"id": f"r{i}", "text": f"record number {i}"}


async def enrich(record: dict[str, str]) -> dict[str, str]:
    await asyncio.sleep(0)  # stands for an API or database call
    digest = hashlib.sha256(record["text"].encode()).hexdigest()[:12]
    return {"id": record["id"], "digest": digest}


async def main(journal: Path, n: int) -> None:
    done = replayed = failed = 0
    async for result in ff.fan_map(
        enrich,
        records(n),
        max_concurrency=64,
        timeout=5,
        retry=ff.Retry(attempts=3),
        journal=journal,
        key=lambda record: record["id"],
    ):
        done += result.ok
        replayed += result.replayed
        failed += not result.ok
    print(f"{done} records ok ({replayed} replayed from {journal.name}), {failed} failed")


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    for _ in range(2):
        asyncio.run(main(folder / "bulk.db", 20_000))
