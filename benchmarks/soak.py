"""Does a long-running worker or pusher leak? A soak run on one driver.

    .venv/bin/python benchmarks/soak.py --driver sqlite --jobs 200000
    .venv/bin/python benchmarks/soak.py --driver postgresql://postgres@127.0.0.1:5432/test?prefix=soak_
    .venv/bin/python benchmarks/soak.py --driver redis://127.0.0.1:6379/0?prefix=conveyor-soak:
    .venv/bin/python benchmarks/soak.py --jobs 20000 --driver mysql://root@127.0.0.1/test?prefix=soak_
    .venv/bin/python benchmarks/soak.py --jobs 20000 --driver amqp://guest:guest@127.0.0.1/?prefix=soak-

One worker runs in this process while a second process pushes `--jobs` jobs at `--rate` per
second: the first half with `registry.push` in a loop, the second half with
`registry.blocking.push` from `--threads` threads. The mix, by job number: most succeed, 7 %
raise on their first attempt and succeed on the retry, 2 % time out (and fail), 5 % are
delayed, 4 % carry a unique key, 2 % run a plain (threaded) handler. Every `--every` seconds
both processes sample themselves: RSS and open fds (/proc), threads, asyncio tasks, and here
the server's connections (postgres: pg_stat_activity of the database; mysql: the processlist
of the database; redis: CLIENT LIST; amqp: `rabbitmqctl list_channels`, when it may be run).
Two tables are printed, the worker's and the pusher's. A leak is a column that grows with the
jobs done after warm-up; a column that levels off is a cache or a pool filling.

    .venv/bin/python benchmarks/soak.py --driver postgres --minutes 5 --rate 100 --disrupt

`--minutes M` soaks the real command line instead (soak_process.py): a `conveyor work`
process for M minutes, pushed to from this process's threads, sampled from /proc, from inside
(its asyncio tasks and the length of every container the worker and its drivers hold) and on
the server (its connections by name, conveyor's tables or keys); `--disrupt` stops it
(SIGTERM), kills it (SIGKILL) or drops its connections in turn, and the end checks that every
job pushed finished. `--driver` there may be sqlite, postgres, mysql, redis or amqp: each on
this machine's server, under the run's own prefix (MariaDB: a database of its own).
Run by hand; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from conveyor import Job, JobState, Registry, Worker
from conveyor.collector import tune_for_work
from conveyor.drivers import driver_from_url
from conveyor.errors import Unsupported

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw import mysql_connection

#: Seconds a job may run before it times out; the timing-out jobs sleep past it.
TIMEOUT = 0.3


@dataclass
class Tick:
    n: int


def make_registry(driver: str, concurrency: int) -> Registry:
    registry = Registry()
    registry.queue("soak", driver=driver, workers=["w"], retry=1, retry_delay=0.05, timeout=TIMEOUT)
    registry.worker("w", concurrency=concurrency)

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        """Succeeds, raises on a first attempt, or sleeps past its timeout, by job number."""
        kind = job.payload.n % 100
        if 80 <= kind < 87 and job.attempt == 1:
            raise RuntimeError("soak: first attempt fails")
        if 87 <= kind < 89:
            await asyncio.sleep(TIMEOUT * 3)

    @registry.job("plain")
    def plain(job: Job[Tick]) -> None:
        """A threaded handler: does nothing."""

    return registry


def options(n: int, unique: bool) -> tuple[str, dict[str, object]]:
    """The job name and push options of job number `n` (plain ones for unique keys on a
    driver without them)."""
    kind = n % 100
    if 87 <= kind < 89:
        return "tick", {"retry": 0}
    if 89 <= kind < 94:
        return "tick", {"delay": 0.5}
    if 94 <= kind < 98 and unique:
        return "tick", {"unique": f"u{n % 50}"}
    if kind >= 98:
        return "plain", {}
    return "tick", {}


# -- sampling -------------------------------------------------------------------------------


def own_figures() -> dict[str, float]:
    """This process's RSS (MB), open fds and threads."""
    status = Path("/proc/self/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {
        "rss_mb": rss / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
    }


async def server_connections(driver: str) -> int | None:
    """The server's count of connections (channels on amqp) for `driver`; None if unknown."""
    scheme = urlsplit(driver).scheme
    probe = PROBES.get(scheme.split("+")[0])
    if probe is None:
        return None
    try:
        return await probe(driver)
    except Exception:  # a probe may be refused (rabbitmqctl without rights): not a result
        return None


async def _postgres(driver: str) -> int:
    import psycopg

    database = urlsplit(driver).path.lstrip("/") or "test"
    url = driver.split("?")[0]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        sql = "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = %s"
        row = await (await connection.execute(sql, (database,))).fetchone()
    return int(row[0]) if row else 0


async def _mysql(driver: str) -> int:
    connection = await mysql_connection(driver)
    try:
        async with connection.cursor() as cursor:
            db = urlsplit(driver).path.lstrip("/") or "test"
            sql = "SELECT count(*) - 1 FROM information_schema.processlist WHERE db = %s"
            await cursor.execute(sql, (db,))
            row = await cursor.fetchone()
    finally:
        await connection.ensure_closed()
    return int(row[0])


async def _redis(driver: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(driver.split("?")[0])
    try:
        return len(await client.client_list()) - 1
    finally:
        await client.aclose()


async def _amqp(driver: str) -> int:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_channels", "pid",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError("rabbitmqctl refused")
    channels = len([line for line in out.decode().splitlines() if line.strip()])
    if not channels:  # ours at least are open: this rabbitmqctl sees another node
        raise RuntimeError("rabbitmqctl lists no channel")
    return channels


PROBES: dict[str, Callable[[str], Awaitable[int]]] = {
    "postgresql": _postgres,
    "postgres": _postgres,
    "mysql": _mysql,
    "mariadb": _mysql,
    "redis": _redis,
    "amqp": _amqp,
}


def row(started: float, done: int, figures: dict[str, float | int | None]) -> str:
    cells = [f"{time.monotonic() - started:6.0f}", f"{done:9,}"]
    cells += [
        "-" if value is None else f"{value:9.1f}" if isinstance(value, float) else f"{value:9}"
        for value in figures.values()
    ]
    return " ".join(cells)


def growth(before: tracemalloc.Snapshot, kinds: collections.Counter[str]) -> None:
    """Print what grew since `before` and the `kinds` counts: the sources of a leak."""
    after, grown = traced()
    print("\ngrown since the second sample (tracemalloc, by line):")
    for stat in after.compare_to(before, "lineno")[:12]:
        print(f"  {stat}")
    grown.subtract(kinds)
    print("objects by type, grown:", ", ".join(f"{k} +{n}" for k, n in grown.most_common(12)))


def traced() -> tuple[tracemalloc.Snapshot, collections.Counter[str]]:
    """What is allocated, and the objects by type, once the collector has run: a worker's
    finished jobs leave reference cycles (an error's traceback) that wait for the collector,
    a few megabytes at most (conveyor/collector.py), which are garbage, not a leak."""
    gc.collect()
    return tracemalloc.take_snapshot(), collections.Counter(
        type(o).__name__ for o in gc.get_objects()
    )


# -- the worker side ------------------------------------------------------------------------


async def soak_worker(driver: str, args: argparse.Namespace) -> None:
    registry = make_registry(driver, args.concurrency)
    await clear(registry)
    worker = Worker(registry, "w")
    running = asyncio.create_task(worker.run())
    pusher = subprocess.Popen(
        [sys.executable, __file__, "--push", driver, "--jobs", str(args.jobs),
         "--rate", str(args.rate), "--threads", str(args.threads), "--every", str(args.every)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = time.monotonic()
    print(
        f"worker on {driver}: {args.jobs:,} jobs at {args.rate}/s, concurrency {args.concurrency}"
    )
    print("    s processed   rss_mb       fds   threads     tasks    server   pending", flush=True)
    samples = 0
    while True:
        samples += 1
        if args.trace and samples == 2:
            before, kinds = traced()
        await asyncio.sleep(args.every)
        counts = (await registry.queue_info())["soak"]
        done = worker.counts.processed
        waiting = counts.pending + counts.delayed + counts.reserved
        figures = {**own_figures(), "tasks": len(asyncio.all_tasks())}
        figures["server"] = await server_connections(driver)
        print(row(started, done, {**figures, "pending": waiting}), flush=True)
        if pusher.poll() is not None and waiting == 0:
            break
    worker.stop()
    await running
    if args.trace:
        growth(before, kinds)
    await clear(registry)
    await registry.close()
    assert pusher.stdout is not None
    print("\npusher (first half registry.push, second half registry.blocking.push from threads)")
    print("    s    pushed   rss_mb       fds   threads     tasks")
    print(pusher.stdout.read(), end="")


async def clear(registry: Registry) -> None:
    for state in JobState:
        if state is not JobState.RESERVED:  # none is left reserved: the worker stopped
            with contextlib.suppress(Unsupported):  # amqp keeps no finished jobs
                await registry.purge("soak", state)


# -- the pushing side -----------------------------------------------------------------------


class Pushed:
    """How many jobs this process pushed, and when it started; shared with its threads."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        self.started = time.monotonic()


def sampler(pushed: Pushed, every: float, stop: threading.Event) -> None:
    """Print this process's figures every `every` seconds until `stop`."""
    while not stop.wait(every):
        print(row(pushed.started, pushed.count, {**own_figures(), "tasks": None}), flush=True)


async def push_async(driver: str, first: int, last: int, rate: float, pushed: Pushed) -> None:
    registry = make_registry(driver, 1)
    unique = driver_from_url(driver).capabilities.unique
    began = time.monotonic()
    for n in range(first, last):
        name, chosen = options(n, unique)
        await registry.push("soak", name, Tick(n), **chosen)  # type: ignore[arg-type]
        pushed.count += 1
        ahead = (n - first + 1) / rate - (time.monotonic() - began)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await registry.close()


def push_blocking(
    driver: str, first: int, last: int, rate: float, threads: int, pushed: Pushed
) -> None:
    registry = make_registry(driver, 1)
    unique = driver_from_url(driver).capabilities.unique
    began, base = time.monotonic(), pushed.count

    def one_thread(offset: int) -> None:
        for n in range(first + offset, last, threads):
            name, chosen = options(n, unique)
            registry.blocking.push("soak", name, Tick(n), **chosen)
            with pushed.lock:
                pushed.count += 1
                ahead = (pushed.count - base) / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)

    pool = [threading.Thread(target=one_thread, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    registry.blocking.close()


def pusher(args: argparse.Namespace) -> None:
    pushed, stop = Pushed(), threading.Event()
    watcher = threading.Thread(target=sampler, args=(pushed, args.every, stop), daemon=True)
    watcher.start()
    half = args.jobs // 2
    asyncio.run(push_async(args.push, 0, half, args.rate, pushed))
    push_blocking(args.push, half, args.jobs, args.rate, args.threads, pushed)
    stop.set()
    print(row(pushed.started, pushed.count, {**own_figures(), "tasks": None}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="sqlite or a driver URL")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="jobs pushed per second")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4, help="threads of the blocking half")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--trace", action="store_true", help="tracemalloc: what grew, by line")
    parser.add_argument(
        "--minutes", type=float, help="soak a `conveyor work` process this long (soak_process.py)"
    )
    parser.add_argument(
        "--disrupt", nargs="?", const="sigterm,sigkill,drop", default="", metavar="KINDS",
        help="with --minutes, every third sample in turn: sigterm,sigkill,drop (the default)",
    )  # fmt: skip
    parser.add_argument(
        "--retention", type=float, help="with --minutes: seconds finished jobs are kept"
    )
    parser.add_argument("--push", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.push:
        pusher(args)
        return
    if args.minutes is not None:
        from soak_process import run, short_url

        run(args, *short_url(args.driver))
        return
    tune_for_work()  # as `conveyor work` does
    if args.trace:
        tracemalloc.start()
    logging.getLogger("conveyor").setLevel(logging.CRITICAL)  # a line per attempt: too many
    driver = args.driver
    if driver == "sqlite":
        driver = f"sqlite:///{Path(os.environ.get('TMPDIR', '/tmp')) / f'soak-{os.getpid()}.db'}"
    try:
        asyncio.run(soak_worker(driver, args))
    finally:
        if args.driver == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(driver.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
