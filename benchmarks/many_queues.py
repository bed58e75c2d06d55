"""One worker serving many queues: its throughput and reserve cost at N queues.

    .venv/bin/python benchmarks/many_queues.py --driver redis --queues 1,50 --jobs 3000
    .venv/bin/python benchmarks/many_queues.py --driver all

Per driver and per number of queues N: jobs/s of one worker (concurrency 10, a trivial async
handler, burst mode) on `--jobs` jobs pushed round-robin over the N queues beforehand, and the
median time of a reserve that finds nothing (what an idle worker pays at each wake-up). The
push->start latency and idle CPU of a worker on many queues are measured by hand (see
docs/benchmarks.md). Run by hand; never part of the tests. Leaves nothing behind on a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from conveyor import Job, JobState, Registry, Worker
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
        for queue in queues:  # leave nothing behind on a server
            for state in (JobState.SUCCEEDED, JobState.PENDING):
                with contextlib.suppress(Unsupported):
                    await registry.purge(queue, state)
        await registry.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="sqlite, a server name, a URL, all")
    parser.add_argument("--queues", default="1,50", help="numbers of queues, comma-separated")
    parser.add_argument("--jobs", type=int, default=3000)
    args = parser.parse_args()
    names = ["sqlite", *SERVERS] if args.driver == "all" else [args.driver]
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            url = SERVERS.get(name, name)
            if name == "sqlite":
                url = f"sqlite:///{Path(folder) / 'many.db'}"
            for count in (int(n) for n in args.queues.split(",")):
                print(f"{name:8} {await bench(url, count, args.jobs)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
