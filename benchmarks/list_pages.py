"""How long one page of `list_jobs` takes on Redis with a large state, and how long the server
stalls meanwhile. Run by hand against a redis-server of your own; never part of the tests.

    redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes
    .venv/bin/python benchmarks/list_pages.py --url redis://127.0.0.1:6390/0 --jobs 400000

Seeds `--jobs` pending jobs (push_many, 10,000 a call) under a fresh prefix, then times the
first page, a page at offset 1000, a page after an id half-way, and a name filter matching
nothing, each 3 times (median and worst), while a thread PINGs the server every 10 ms and
reports the slowest reply. Deletes its keys at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from conveyor.drivers.redis import RedisDriver
from conveyor.job import JobState, NewJob, new_ids


class Probe:
    """A process of its own (so the GIL of this one never delays it) that PINGs the server
    every 10 ms and keeps the slowest reply since the last `reset`."""

    def __init__(self, url: str) -> None:
        self.worst = multiprocessing.Value("d", 0.0)
        self.running = multiprocessing.Value("b", 1)
        self.process = multiprocessing.Process(target=_ping, args=(url, self.worst, self.running))

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.running.value = 0
        self.process.join()

    def reset(self) -> float:
        worst: float = self.worst.value
        self.worst.value = 0.0
        return worst


def _ping(url: str, worst: Any, running: Any) -> None:
    client = redis.Redis.from_url(url)
    while running.value:
        started = time.perf_counter()
        client.ping()
        worst.value = max(worst.value, time.perf_counter() - started)
        time.sleep(0.01)


async def seed(driver: RedisDriver, jobs: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, jobs, 10_000):
        batch = [
            NewJob(id=job_id, queue="q", name="j", payload="{}")
            for job_id in new_ids(min(10_000, jobs - start))
        ]
        ids += await driver.push_many(batch)
    return sorted(ids)


async def timed(label: str, probe: Probe, call: Callable[[], Awaitable[object]]) -> None:
    times = []
    probe.reset()
    for _ in range(3):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    stall = probe.reset()
    print(
        f"{label:32} median {statistics.median(times) * 1000:7.1f} ms"
        f"  worst {max(times) * 1000:7.1f} ms  slowest PING {stall * 1000:6.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=400_000)
    args = parser.parse_args()
    prefix = f"bench-list:{uuid.uuid4().hex[:8]}:"
    driver = RedisDriver(args.url, prefix=prefix)
    await driver.open()
    probe = Probe(args.url)
    try:
        ids = await seed(driver, args.jobs)
        print(f"{args.jobs} pending jobs seeded")
        probe.start()
        pending = JobState.PENDING
        await timed("first page (50)", probe, lambda: driver.list_jobs("q", pending, 50))
        await timed("offset 1000", probe, lambda: driver.list_jobs("q", pending, 50, 1000))
        middle = ids[len(ids) // 2]
        await timed(
            "after an id half-way", probe, lambda: driver.list_jobs("q", pending, 50, after=middle)
        )
        await timed(
            "name matching nothing", probe, lambda: driver.list_jobs("q", pending, 50, name="none")
        )
    finally:
        if probe.process.is_alive():
            probe.stop()
        client = redis.Redis.from_url(args.url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.unlink(*keys[start : start + 10_000])
        await driver.close()


if __name__ == "__main__":
    asyncio.run(main())
