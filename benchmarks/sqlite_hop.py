"""Where an sqlite push's time goes around its hop to the database thread: per push, from
handing the statement over to the thread starting it, the statement itself (its commit and
the write-ahead log's sync included), and from its end to the caller running again. Prints
the median and 90th percentile of each, in µs, next to the raw sqlite3 write (one INSERT at
synchronous=FULL in WAL mode, on the loop's own thread, benchmarks/raw.py), in blocks taken
in turn.

    .venv/bin/python benchmarks/sqlite_hop.py --pushes 1000

Syscalls per push (fdatasync, pwrite64, futex), for the raw write and the push apart:
`strace -f -c -e trace=fdatasync,pwrite64,futex .venv/bin/python benchmarks/sqlite_hop.py
--only raw` (or `--only push`). Run by hand; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_split import _params
from raw import raw_writer

from conveyor.drivers.sql.sqlite import SqliteConnection, SqliteDriver
from conveyor.drivers.sql.sqlite.connection import _alone, _execute

BLOCK = 50


def _summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    median, p90 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.9)]
    return f"{name} {median * 1e6:,.0f} (p90 {p90 * 1e6:,.0f})"


async def measure(folder: Path, pushes: int, only: str | None) -> None:
    driver = SqliteDriver(folder / "bench.db")
    await driver.open()
    conn = driver._conn
    assert isinstance(conn, SqliteConnection)
    db, thread, query = conn._connection(), conn._thread, driver._queries["push"]
    assert thread is not None

    def statement() -> tuple[float, float]:
        started = time.perf_counter()
        _alone(db, driver.path, _execute, query, _params())
        return started, time.perf_counter()

    stages: dict[str, list[float]] = {"wake": [], "statement": [], "back": [], "raw": []}
    async with raw_writer("sqlite", "", folder) as raw:
        assert raw is not None
        for _ in range(0, pushes, BLOCK):
            if only != "push":
                for _ in range(BLOCK):
                    started = time.perf_counter()
                    await raw[0]()
                    stages["raw"].append(time.perf_counter() - started)
            if only != "raw":
                for _ in range(BLOCK):
                    handed = time.perf_counter()
                    began, ended = await thread.call(statement)
                    back = time.perf_counter()
                    stages["wake"].append(began - handed)
                    stages["statement"].append(ended - began)
                    stages["back"].append(back - ended)
    await driver.close()
    print(
        "µs per push, median: "
        + ", ".join(_summary(name, values) for name, values in stages.items() if values)
        + f" (load {os.getloadavg()[0]:.1f})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=1000)
    parser.add_argument("--only", choices=["raw", "push"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(Path(folder), args.pushes, args.only))


if __name__ == "__main__":
    main()
