"""Where a single push's time goes on the SQL drivers: the raw client's one write
(benchmarks/raw.py), the driver's push statement on a plain connection of the same client (no
conveyor code; sqlite: on the loop's own thread), `driver.push` and `registry.push`, in blocks
of 25 taken in turn so that all four meet the same load. Prints the median µs of each and the
raw / registry.push ratio.

    .venv/bin/python benchmarks/push_split.py postgres mysql sqlite --rounds 30
    .venv/bin/python benchmarks/push_split.py postgres --no-sync   # synchronous_commit=off

`--no-sync` takes the disk's sync out on postgres (PGOPTIONS, for every connection of this
process), so that the statement's and the Python's costs are not swamped by it. The server's
own share: pgbench on the same statements (docs/benchmarks.md shows how). Run by hand; never
part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw import PAYLOAD, raw_writer
from throughput import LOCAL_SERVERS, Tick, make_registry

from conveyor import Job, JobState, Registry
from conveyor.job import NewJob

BLOCK = 25

Write = Callable[[], Awaitable[None]]


def _params() -> dict[str, Any]:
    """The push statement's parameters for a job like registry.push makes here."""
    return {
        "id": uuid.uuid4().hex,
        "queue": "bench",
        "name": "tick",
        "payload": PAYLOAD,
        "delay": 0.0,
        "max_attempts": 1,
        "priority": 0,
        "timeout": None,
        "retry_delay": None,
        "meta": "{}",
    }


async def _statement(kind: str, url: str, folder: Path, sql: str) -> tuple[Write, Any]:
    """(one run of the push statement on a plain connection, the connection)."""
    if kind == "sqlite":
        db = sqlite3.connect(folder / "bench.db", isolation_level=None)
        db.execute("PRAGMA synchronous = FULL")

        async def on_sqlite() -> None:
            db.execute(sql, _params())

        return on_sqlite, db
    if kind == "postgres":
        import psycopg

        conn = await psycopg.AsyncConnection.connect(url.partition("?")[0], autocommit=True)

        async def on_postgres() -> None:
            await conn.execute(sql, _params())

        return on_postgres, conn
    import asyncmy

    connection: Any = await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", password="", database="test", autocommit=True
    )
    cursor = connection.cursor()

    async def on_mysql() -> None:
        await cursor.execute(sql.strip().rstrip(";"), _params())

    return on_mysql, connection


def _registry(url: str) -> Registry:
    registry = make_registry(url, 10)

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        """Never run here: only pushed."""

    return registry


async def split(kind: str, url: str, folder: Path, rounds: int) -> dict[str, float]:
    """Median µs per write of each of the four, over `rounds` blocks each."""
    registry = _registry(url)
    await registry.push("bench", "tick", Tick(0))
    driver: Any = await registry.driver_of("bench")
    statement, conn = await _statement(kind, url, folder, driver._queries["push"].sql)

    async def driver_push() -> None:
        await driver.push(NewJob(uuid.uuid4().hex, "bench", "tick", PAYLOAD))

    async def registry_push() -> None:
        await registry.push("bench", "tick", Tick(1))

    try:
        async with raw_writer(kind, url, folder) as raw:
            assert raw is not None
            kinds = {"raw": raw[0], "statement": statement, "driver": driver_push}
            kinds["registry"] = registry_push
            spent: dict[str, list[float]] = {name: [] for name in kinds}
            for write in kinds.values():
                for _ in range(20):
                    await write()
            for _ in range(rounds):
                for name, write in kinds.items():
                    started = time.perf_counter()
                    for _ in range(BLOCK):
                        await write()
                    spent[name].append((time.perf_counter() - started) / BLOCK * 1e6)
    finally:
        closing = conn.close()
        if asyncio.iscoroutine(closing):
            await closing
        await registry.purge("bench", JobState.PENDING)
        await registry.close()
    return {name: statistics.median(values) for name, values in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="+", choices=["postgres", "mysql", "sqlite"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-sync", action="store_true", help="postgres: synchronous_commit=off")
    args = parser.parse_args()
    if args.no_sync:
        os.environ["PGOPTIONS"] = "-c synchronous_commit=off"
    for kind in args.kinds:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            url = f"sqlite:///{folder}/bench.db" if kind == "sqlite" else LOCAL_SERVERS[kind]
            us = asyncio.run(split(kind, url, folder, args.rounds))
        load = Path("/proc/loadavg").read_text().split()[0]
        print(
            f"{kind}: raw {us['raw']:,.0f} µs, push statement {us['statement']:,.0f},"
            f" driver.push {us['driver']:,.0f}, registry.push {us['registry']:,.0f};"
            f" raw / registry.push {us['raw'] / us['registry']:.2f}, raw / statement"
            f" {us['raw'] / us['statement']:.2f} (load {load})",
            flush=True,
        )


if __name__ == "__main__":
    main()
