"""One worker serving many queues: its throughput and reserve cost at N queues.

    .venv/bin/python benchmarks/many_queues.py --driver redis --queues 1,50 --jobs 3000
    .venv/bin/python benchmarks/many_queues.py --driver all
    .venv/bin/python benchmarks/many_queues.py --driver amqp --queues 1,300 --ops

Per driver and per number of queues N: jobs/s of one worker (concurrency 10, a trivial async
handler, burst mode) on `--jobs` jobs pushed round-robin over the N queues beforehand, and the
median time of a reserve that finds nothing (what an idle worker pays at each wake-up). The
push->start latency and idle CPU of a worker on many queues are measured by hand (see
docs/benchmarks.md). Run by hand; never part of the tests. Leaves nothing behind on a server.

`--ops`: instead, with one job pushed to each queue, the median over `--rounds` of a first
reserve over all N by a driver just opened, then closed (amqp declares, consumes and cancels
each queue), of `registry.overview()` (what `conveyor list` and the metrics count) and of the
dashboard's queues page (counts, and each queue's last hour of throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from conveyor import Job, JobState, Registry, Worker
from conveyor.dashboard.app import create_app
from conveyor.drivers import driver_from_url
from conveyor.errors import Unsupported

#: The servers `--driver all` runs on: the ones on this machine, under a prefix of their own.
SERVERS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?prefix=bench_manyq_",
    "mysql": "mysql://root@127.0.0.1:3306/test?prefix=bench_manyq_",
    "redis": "redis://127.0.0.1:6379/0?prefix=conveyor-bench-manyq:",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/?prefix=bench_manyq_",
}


@dataclass
class Tick:
    n: int


def make_registry(url: str, queues: list[str]) -> Registry:
    registry = Registry()
    for queue in queues:
        registry.queue(queue, driver=url, workers=["w"], retry=0)
    registry.worker("w", concurrency=10, poll_interval=0.5)

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        pass

    return registry


async def empty_reserve(registry: Registry, queues: list[str], rounds: int = 20) -> float:
    """Median seconds of a reserve over every queue that finds nothing."""
    driver = await registry.driver_of(queues[0])
    spent = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert await driver.reserve(queues, 10, 30.0, "bench") == []
        spent.append(time.perf_counter() - started)
    return statistics.median(spent)


async def bench(url: str, count: int, jobs: int) -> str:
    queues = [f"manyq{count}_{uuid.uuid4().hex[:6]}_{n}" for n in range(count)]
    registry = make_registry(url, queues)
    try:
        await registry.migrate()
        idle = await empty_reserve(registry, queues)
        for first in range(0, jobs, 1000):
            for queue_index, queue in enumerate(queues):
                ticks = [Tick(n) for n in range(first, min(jobs, first + 1000))]
                mine = ticks[queue_index :: len(queues)]
                if mine:
                    await registry.push_many(queue, "tick", mine)
        started = time.perf_counter()
        await Worker(registry, "w", burst=True).run()
        rate = jobs / (time.perf_counter() - started)
        return f"N={count:4}  {rate:8.0f} jobs/s  empty reserve {idle * 1000:6.2f} ms"
    finally:
        await leave_nothing(registry, queues)


async def leave_nothing(registry: Registry, queues: list[str]) -> None:
    for queue in queues:
        for state in (JobState.SUCCEEDED, JobState.PENDING):
            with contextlib.suppress(Unsupported):
                await registry.purge(queue, state)
    await registry.close()


async def median_ms(rounds: int, call: Callable[[], Awaitable[object]]) -> float:
    spent = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1000


async def first_reserve(url: str, queues: list[str]) -> None:
    driver = driver_from_url(url)
    try:
        await driver.open()
        await driver.reserve(queues, 1, 30.0, "bench")
    finally:
        await driver.close()  # amqp: what it holds goes back


async def bench_ops(url: str, count: int, rounds: int) -> str:
    queues = [f"manyqo{count}_{uuid.uuid4().hex[:6]}_{n}" for n in range(count)]
    registry = make_registry(url, queues)
    try:
        await registry.migrate()
        for queue in queues:
            await registry.push(queue, "tick", Tick(0))
        reserve = await median_ms(rounds, lambda: first_reserve(url, queues))
        overview = await median_ms(rounds, registry.overview)
        transport = httpx.ASGITransport(app=create_app(registry))
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:

            async def page() -> None:
                assert (await client.get("/")).status_code == 200

            shown = await median_ms(rounds, page)
        return (
            f"N={count:4}  first reserve {reserve:7.1f} ms  overview {overview:7.1f} ms"
            f"  queues page {shown:7.1f} ms"
        )
    finally:
        await leave_nothing(registry, queues)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="sqlite, a server name, a URL, all")
    parser.add_argument("--queues", default="1,50", help="numbers of queues, comma-separated")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--ops", action="store_true", help="first reserve, overview, dashboard")
    parser.add_argument("--rounds", type=int, default=5, help="with --ops: the median of")
    args = parser.parse_args()
    names = ["sqlite", *SERVERS] if args.driver == "all" else [args.driver]
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            url = SERVERS.get(name, name)
            if name == "sqlite":
                url = f"sqlite:///{Path(folder) / 'many.db'}"
            for count in (int(n) for n in args.queues.split(",")):
                done = (
                    bench_ops(url, count, args.rounds) if args.ops else bench(url, count, args.jobs)
                )
                print(f"{name:8} {await done}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
