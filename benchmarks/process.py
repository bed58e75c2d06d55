"""How fast one worker process runs jobs whose body does real I/O: issue 16's workload.

    .venv/bin/python benchmarks/process.py --driver redis://127.0.0.1:6379/0
    make bench-process DRIVER=postgresql://127.0.0.1/test

Each job's handler makes one Redis `INCR` through `redis.asyncio` (the Redis on 127.0.0.1:6379,
database 15, one key removed afterwards), whatever driver stores the jobs. Jobs are pushed
with `push_many` first, then one burst worker at `--concurrency` (100) runs them all, in a
process whose garbage collector is tuned as `conveyor work` tunes it (conveyor/collector.py;
`--python-gc` leaves Python's settings); `--prefetch N` sets its prefetch (default: its
concurrency). Printed:

- processed jobs/s with that body, and the worker's CPU per job (process time, all threads);
- the same with an empty body: what conveyor itself costs per job;
- the ceiling: the same number of INCRs at the same concurrency with no job queue at all
  (that many tasks making INCRs in turn), measured in the same run. "processed at X of it"
  is the figure to compare across runs on a noisy machine: the job queue's share of the time
  is 1 - X.

Before each run the jobs table is rid of what earlier runs deleted (`clean_slate`: VACUUM on
postgres, InnoDB's purge waited for on mysql). Run by hand; never part of
the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from raw import mysql_connection

from conveyor import Job, JobState, Registry, Worker
from conveyor.collector import tune_for_work
from conveyor.errors import Unsupported
from conveyor.loop import LOOPS, run

#: The postgres URL options that are conveyor's, not libpq's.
CONVEYOR_OPTIONS = ("prefix", "migrate", "pool_size", "timeout")

#: Where the job body's INCR goes: its own database, one key.
BODY_REDIS = "redis://127.0.0.1:6379/15"
COUNTER = "conveyor-bench:process:counter"


def body_client(concurrency: int) -> aioredis.Redis:
    """The job body's client: a connection for each job in flight (redis-py's pool refuses a
    101st connection by default, which would fail jobs at a concurrency above 100)."""
    return aioredis.Redis.from_url(BODY_REDIS, max_connections=max(100, concurrency))


@dataclass
class Tick:
    n: int


async def ceiling(jobs: int, concurrency: int) -> tuple[float, float]:
    """(INCRs/s, CPU µs per INCR) at `concurrency` in flight, with no job queue around them:
    `concurrency` tasks, each making its share of the INCRs one after the other (a semaphore
    over a task per INCR, as this measured before, cost 20-30 µs more per INCR here)."""
    client = body_client(concurrency)

    async def share(count: int) -> None:
        for _ in range(count):
            await client.incr(COUNTER)

    shares = [jobs // concurrency + (lane < jobs % concurrency) for lane in range(concurrency)]
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(share(count) for count in shares))
    rate, cpu = jobs / (time.perf_counter() - started), time.process_time() - cpu
    await client.delete(COUNTER)
    await client.aclose()
    return rate, cpu / jobs * 1e6


async def process(
    driver: str, jobs: int, concurrency: int, body: bool, prefetch: int | None = None
) -> tuple[float, float]:
    """(jobs/s, CPU µs per job) of one burst worker over `jobs` pushed jobs."""
    registry = Registry()
    registry.queue("bench_process", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=concurrency, prefetch=prefetch, poll_interval=0.5)
    client = body_client(concurrency)
    done = 0

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        nonlocal done
        if body:
            await client.incr(COUNTER)
        done += 1

    for state in (JobState.PENDING, JobState.SUCCEEDED, JobState.FAILED):
        with contextlib.suppress(Unsupported):
            await registry.purge("bench_process", state)  # what an interrupted run left
    await clean_slate(driver)
    for first in range(0, jobs, 1000):
        batch = [Tick(n) for n in range(first, min(first + 1000, jobs))]
        await registry.push_many("bench_process", "tick", batch)
    started, cpu = time.perf_counter(), time.process_time()
    await Worker(registry, "w", burst=True).run()
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert done == jobs, (done, jobs)
    with contextlib.suppress(Unsupported):
        await registry.purge("bench_process", JobState.SUCCEEDED)
    await registry.close()
    await client.delete(COUNTER)
    await client.aclose()
    return jobs / took, cpu / jobs * 1e6


async def clean_slate(driver: str) -> None:
    """Before a run, what the runs before it deleted is gone, so that each run measures its own
    work. On postgres, VACUUM the jobs table: on a server with autovacuum off (this machine's)
    the dead rows that earlier runs left slow every reserve, up to tenfold (docs/drivers.md).
    On mysql, wait until InnoDB has purged them (`_purged`)."""
    parts = urlsplit(driver)
    if parts.scheme in ("mysql", "mariadb"):
        await _purged(driver)
        return
    if parts.scheme not in ("postgres", "postgresql"):
        return
    import psycopg
    from psycopg import sql

    options = dict(parse_qsl(parts.query))
    table = options.get("prefix", "conveyor_") + "jobs"
    libpq = {k: v for k, v in options.items() if k not in CONVEYOR_OPTIONS}
    conninfo = urlunsplit(parts._replace(query=urlencode(libpq)))
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


async def _purged(driver: str) -> None:
    """Wait, up to a minute, until InnoDB's purge thread has removed the rows earlier runs
    deleted (its history list is empty): until then it competes with the run for the two
    cores and the indexes hold their delete-marked entries (bulk.py's rounds after the first
    ran at 40,000-51,000 jobs/s without this wait, 61,000-69,000 with it)."""
    conn = await mysql_connection(driver)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with conn.cursor() as cursor:
                await cursor.execute("SHOW ENGINE INNODB STATUS")
                status = (await cursor.fetchone())[2]
            history = re.search(r"History list length (\d+)", status)
            if history is None or history.group(1) == "0":
                return
            await asyncio.sleep(0.2)
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="sqlite or a driver URL")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--prefetch", type=int, default=None, help="jobs held ahead (default: the concurrency)"
    )
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0], help="the event loop")
    parser.add_argument(
        "--python-gc",
        action="store_true",
        help="keep Python's garbage collector settings (default: tune them as `conveyor work`"
        " does, conveyor/collector.py)",
    )
    args = parser.parse_args()
    if not args.python_gc:
        tune_for_work()
    with tempfile.TemporaryDirectory() as folder:
        driver = (
            f"sqlite:///{Path(folder) / 'process.db'}" if args.driver == "sqlite" else args.driver
        )
        kind = args.driver.partition("://")[0]
        print(
            f"driver: {kind}, {args.jobs} jobs, concurrency {args.concurrency}, prefetch"
            f" {args.prefetch if args.prefetch is not None else args.concurrency}, loop {args.loop}"
        )
        top, top_cpu = run(ceiling(args.jobs, args.concurrency), args.loop)
        work = functools.partial(
            process, driver, args.jobs, args.concurrency, prefetch=args.prefetch
        )
        rate, cpu = run(work(body=True), args.loop)
        print(f"process, one INCR each: {rate:,.0f} jobs/s, {cpu:.0f} µs CPU per job")
        print(
            f"  INCRs alone:          {top:,.0f}/s, {top_cpu:.0f} µs CPU each: processed at"
            f" {rate / top:.2f} of it; conveyor's own CPU {cpu - top_cpu:.0f} µs per job"
        )
        rate, cpu = run(work(body=False), args.loop)
        print(f"process, empty body:    {rate:,.0f} jobs/s, {cpu:.0f} µs CPU per job")


if __name__ == "__main__":
    main()
