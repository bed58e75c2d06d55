"""How fast conveyor pushes and runs short jobs on one driver, in one process.

    .venv/bin/python benchmarks/throughput.py --driver sqlite --jobs 20000 --concurrency 200

Prints push jobs/s (push_many in batches), process jobs/s (one worker, a trivial async
handler, burst mode) and the push-to-start latency of an idle worker in the same process.
Run by hand or with `make bench`; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conveyor import Job, JobState, Registry, Worker


@dataclass
class Tick:
    n: int


def make_registry(driver: str, concurrency: int) -> Registry:
    registry = Registry()
    registry.queue("bench", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=concurrency, poll_interval=0.5)
    return registry


async def throughput(driver: str, jobs: int, concurrency: int, batch: int) -> None:
    registry = make_registry(driver, concurrency)
    done = 0

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        nonlocal done
        done += 1

    started = time.perf_counter()
    for first in range(0, jobs, batch):
        await registry.push_many("bench", "tick", [Tick(n) for n in range(first, first + batch)])
    pushed = time.perf_counter() - started
    print(f"push_many: {jobs / pushed:,.0f} jobs/s ({jobs} jobs in batches of {batch})")

    started = time.perf_counter()
    await Worker(registry, "w", burst=True).run()
    ran = time.perf_counter() - started
    assert done == jobs, (done, jobs)
    print(f"process:   {jobs / ran:,.0f} jobs/s (concurrency {concurrency})")
    await registry.purge("bench", JobState.SUCCEEDED)  # leave nothing behind on a server
    await registry.close()


async def latency(driver: str, samples: int) -> None:
    registry = make_registry(driver, 1)
    started = asyncio.Event()
    delays: list[float] = []  # from calling push to the handler starting
    after_push: list[float] = []  # from push returning (the job committed) to the handler starting
    pushed_at = returned_at = 0.0

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        now = time.perf_counter()
        delays.append(now - pushed_at)
        after_push.append(max(0.0, now - returned_at))
        started.set()

    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)
    for n in range(samples):
        started.clear()
        await asyncio.sleep(0.01)  # let the worker go idle
        pushed_at = returned_at = time.perf_counter()
        await registry.push("bench", "tick", Tick(n))
        returned_at = time.perf_counter() if not started.is_set() else returned_at
        await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    await task
    await registry.purge("bench", JobState.SUCCEEDED)
    await registry.close()
    for label, values in (("push called", delays), ("push returned", after_push)):
        values.sort()
        print(
            f"latency:   {label} -> handler started: median "
            f"{statistics.median(values) * 1000:.2f} ms, p95 "
            f"{values[int(len(values) * 0.95)] * 1000:.2f} ms (idle worker, same process)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="memory, sqlite, or a driver URL")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        driver = args.driver
        if driver == "sqlite":
            driver = f"sqlite:///{Path(folder) / 'bench.db'}"
        print(f"driver: {args.driver}")
        asyncio.run(throughput(driver, args.jobs, args.concurrency, args.batch))
        if driver.startswith("sqlite"):
            driver = f"sqlite:///{Path(folder) / 'latency.db'}"
        asyncio.run(latency(driver, args.samples))


if __name__ == "__main__":
    main()
