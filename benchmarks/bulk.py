"""How fast `push_many` stores batches, next to the raw client's own bulk write in the same
run, and how much memory a push_many of a million jobs from a generator takes.

    .venv/bin/python benchmarks/bulk.py --driver sqlite             # or a driver URL, or all
    .venv/bin/python benchmarks/bulk.py --driver redis://127.0.0.1:6379/0 --loop uvloop
    .venv/bin/python benchmarks/bulk.py --driver sqlite --stream 1000000

Prints, per driver, push_many jobs/s in batches of `--batch` (10,000) over `--jobs` jobs, the
median of `--rounds` rounds, beside issue 16's goal and the raw client's bulk rate in the same
run (the ratio is the figure to compare on a noisy machine):

- redis: one pipeline of HSETs per batch (redis-py, asyncio, no MULTI);
- postgres: one COPY of (id, payload) rows per batch (psycopg 3, autocommit);
- mysql: one multi-row INSERT per batch (asyncmy);
- sqlite: one executemany per batch in one transaction committed at FULL (sqlite3).

With `--stream N`, a second process pushes N jobs from a generator in one push_many call and
reports its peak RSS during the call (VmHWM, reset first) beside its RSS before the call.
Before each round the rows the round before purged are gone for good (as benchmarks/process.py
does): postgres's table is vacuumed (this machine's server runs with autovacuum off), and on
mysql the round waits for InnoDB's purge to finish, which would otherwise run beside it.
Run by hand or with `make bench`; never part of the tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conveyor import Job, JobState, Registry
from conveyor.loop import LOOPS, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process import clean_slate
from raw import PAYLOAD, _without_query, mysql_connection

#: issue 16's push_many goals, jobs/s, for batches of 10,000.
GOALS = {"postgres": 150_000, "redis": 100_000, "sqlite": 150_000, "mysql": 60_000}

#: The servers `--driver all` runs on, under a prefix of their own.
LOCAL_SERVERS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?prefix=bulk_",
    "mysql": "mysql://root@127.0.0.1:3306/test?prefix=bulk_",
    "redis": "redis://127.0.0.1:6379/0?prefix=conveyor-bulk:",
}


@dataclass
class Tick:
    n: int


def make_registry(driver: str) -> Registry:
    registry = Registry()
    registry.queue("bulk", driver=driver, workers=["w"], retry=0)
    registry.worker("w")

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        """Never run here: the jobs are only pushed."""

    return registry


async def push_rates(driver: str, jobs: int, batch: int, rounds: int) -> list[float]:
    """push_many jobs/s of each round; each round starts from an empty queue."""
    registry = make_registry(driver)
    rates = []
    try:
        await registry.purge("bulk", JobState.PENDING)
        for _ in range(rounds):
            await clean_slate(driver)  # the rows the last round purged, gone
            started = time.perf_counter()
            for first in range(0, jobs, batch):
                payloads = [Tick(n) for n in range(first, min(first + batch, jobs))]
                await registry.push_many("bulk", "tick", payloads)
            rates.append(jobs / (time.perf_counter() - started))
            await registry.purge("bulk", JobState.PENDING)
    finally:
        await registry.close()
    return rates


# -- the raw clients' bulk writes ------------------------------------------------------------


async def raw_rates(kind: str, url: str, jobs: int, batch: int, rounds: int) -> list[float]:
    """The raw client's bulk writes/s of each round, into a table or keys of its own."""
    table = f"raw_{uuid.uuid4().hex[:8]}"
    write = {"redis": _redis, "postgres": _postgres, "mysql": _mysql, "sqlite": _sqlite}[kind]
    return [await write(url, jobs, batch, f"{table}_{n}") for n in range(rounds)]


def _rows(jobs: int, batch: int) -> Iterator[list[tuple[str, str]]]:
    for first in range(0, jobs, batch):
        yield [(uuid.uuid4().hex, PAYLOAD) for _ in range(first, min(first + batch, jobs))]


async def _redis(url: str, jobs: int, batch: int, table: str) -> float:
    import redis.asyncio as redis

    client = redis.Redis.from_url(_without_query(url))
    try:
        took = 0.0
        for rows in _rows(jobs, batch):
            started = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for key, payload in rows:
                pipe.hset(f"{table}:{key}", "payload", payload)
            await pipe.execute()
            took += time.perf_counter() - started
            await client.delete(*[f"{table}:{key}" for key, _ in rows])
        return jobs / took
    finally:
        await client.aclose()


async def _postgres(url: str, jobs: int, batch: int, table: str) -> float:
    import psycopg

    async with await psycopg.AsyncConnection.connect(_without_query(url), autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, payload text)")
        try:
            took = 0.0
            for rows in _rows(jobs, batch):
                started = time.perf_counter()
                statement = f"COPY {table} (id, payload) FROM STDIN"
                async with conn.cursor() as cursor, cursor.copy(statement) as copy:
                    for row in rows:
                        await copy.write_row(row)
                took += time.perf_counter() - started
            return jobs / took
        finally:
            await conn.execute(f"DROP TABLE {table}")


async def _mysql(url: str, jobs: int, batch: int, table: str) -> float:
    conn = await mysql_connection(url)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"CREATE TABLE {table} (id VARCHAR(64) PRIMARY KEY, payload TEXT)")
            try:
                took = 0.0
                for rows in _rows(jobs, batch):
                    started = time.perf_counter()
                    # asyncmy's executemany writes one multi-row INSERT (up to its size limit).
                    await cursor.executemany(
                        f"INSERT INTO {table} (id, payload) VALUES (%s, %s)", rows
                    )
                    took += time.perf_counter() - started
                return jobs / took
            finally:
                await cursor.execute(f"DROP TABLE {table}")
    finally:
        conn.close()


async def _sqlite(url: str, jobs: int, batch: int, table: str) -> float:
    import sqlite3

    path = Path(url.removeprefix("sqlite:///")).with_name(f"{table}.db")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, payload TEXT)")
        took = 0.0
        for rows in _rows(jobs, batch):
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO raw (id, payload) VALUES (?, ?)", rows)
            db.execute("COMMIT")
            took += time.perf_counter() - started
        return jobs / took
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- a million jobs from a generator -----------------------------------------------------------


async def stream(driver: str, jobs: int) -> None:
    """In its own process: push `jobs` jobs from a generator in one push_many call; print the
    RSS before and the peak after, in MB, and the rate."""
    registry = make_registry(driver)
    try:
        await registry.purge("bulk", JobState.PENDING)
        await registry.push_many("bulk", "tick", [Tick(0)])  # connected, everything imported
        # The peak so far (the purge of a queue left full) is forgotten: the kernel's
        # high-water mark starts again from the RSS now.
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_mb("VmRSS")
        started = time.perf_counter()
        ids = await registry.push_many("bulk", "tick", (Tick(n) for n in range(jobs)))
        took = time.perf_counter() - started
        peak = _status_mb("VmHWM")
        print(f"{before:.0f} {peak:.0f} {len(ids) / took:.0f}")
        del ids
        await registry.purge("bulk", JobState.PENDING)
    finally:
        await registry.close()


def _status_mb(field: str) -> float:
    """A field of this process's /proc status (VmRSS: resident now; VmHWM: its peak), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stream_figures(driver: str, jobs: int, loop: str) -> str:
    """The --stream figures of a fresh process, as one line."""
    out = subprocess.run(
        [sys.executable, __file__, "--serve-stream", driver, "--stream", str(jobs), "--loop", loop],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    before, peak, rate = (float(value) for value in out[-3:])
    return (
        f"stream:    push_many of {jobs:,} jobs from a generator: peak RSS {peak:.0f} MB"
        f" ({before:.0f} MB before it; {peak - before:.0f} MB more), {rate:,.0f} jobs/s"
    )


# -- running it ------------------------------------------------------------------------------------


def bench(kind: str, driver: str, folder: Path, args: argparse.Namespace) -> None:
    print(f"driver: {kind} (loop {args.loop})")
    url = f"sqlite:///{folder / 'bulk.db'}" if driver == "sqlite" else driver
    rates = run(push_rates(url, args.jobs, args.batch, args.rounds), args.loop)
    rate = statistics.median(rates)
    goal = GOALS.get(kind)
    versus = f", goal {goal:,}/s: {rate / goal:.2f} of it" if goal else ""
    print(
        f"push_many: {rate:,.0f} jobs/s (batches of {args.batch:,}, median of"
        f" {'/'.join(f'{r:,.0f}' for r in rates)}){versus}"
    )
    if kind in GOALS:
        raw = statistics.median(run(raw_rates(kind, url, args.jobs, args.batch, args.rounds)))
        print(f"  raw:     {raw:,.0f} writes/s in bulk: push_many at {rate / raw:.2f} of it")
    if args.stream:
        print(stream_figures(url, args.stream, args.loop))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="memory, sqlite, a driver URL, or all")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream", type=int, default=0, metavar="N")
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0])
    parser.add_argument("--serve-stream", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stream:
        run(stream(args.serve_stream, args.stream), args.loop)
        return
    drivers = {"memory": "memory", "sqlite": "sqlite", **LOCAL_SERVERS}
    chosen = drivers if args.driver == "all" else {args.driver.partition(":")[0]: args.driver}
    chosen = {"postgres" if kind == "postgresql" else kind: url for kind, url in chosen.items()}
    with tempfile.TemporaryDirectory() as folder:
        for kind, driver in chosen.items():
            bench(kind, driver, Path(folder), args)
            print()


if __name__ == "__main__":
    main()
