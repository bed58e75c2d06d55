"""How fast conveyor pushes, runs and wakes up for jobs on one driver (or every driver).

    .venv/bin/python benchmarks/throughput.py --driver sqlite --jobs 20000 --concurrency 200
    .venv/bin/python benchmarks/throughput.py --driver all      # memory, sync, sqlite + servers

Prints, per driver:
- push jobs/s (one `push` at a time) and push_many jobs/s (in batches);
- process jobs/s (one worker, a trivial async handler, burst mode, the garbage collector
  tuned as `conveyor work` tunes it: conveyor/collector.py);
- push-to-start latency of an idle worker in the same process (median, p95);
- push-to-start latency from a second process (p50, p99), for drivers several processes
  share: once with the worker idle (each push after a quiet spell of at least
  `IDLE_GAP` seconds) and once under load (a push every `LOAD_EVERY` seconds);
- the CPU an idle worker uses: a worker process (in this process for memory) left idle for
  `IDLE_FOR` seconds, its CPU time read from /proc (from getrusage for memory).
Latency from another process is measured on CLOCK_MONOTONIC, which all processes share.
Run by hand or with `make bench`; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path

from conveyor import Job, JobState, Registry, Worker
from conveyor.collector import tune_for_work
from conveyor.drivers import driver_from_url
from conveyor.errors import Unsupported
from conveyor.loop import LOOPS, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw import Write, raw_batch_rates, raw_writer

#: Seconds of quiet before each push of the idle latency figure: long enough for a polling
#: driver to relax to its idle interval.
IDLE_GAP = (0.5, 0.8)

#: Seconds between pushes of the under-load latency figure (`--load-every`): a steady stream
#: that keeps the worker busy without queueing jobs up behind it.
LOAD_EVERY = 0.02

#: Seconds an idle worker is watched for its CPU use, after RELAX seconds of quiet.
IDLE_FOR = 5.0
RELAX = 1.5

#: The servers `--driver all` runs on: the ones on this machine, under a prefix of their own.
LOCAL_SERVERS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?prefix=bench_",
    "mysql": "mysql://root@127.0.0.1:3306/test?prefix=bench_",
    "redis": "redis://127.0.0.1:6379/0?prefix=conveyor-bench:",
}


@dataclass
class Tick:
    n: int


def make_registry(driver: str, concurrency: int, poll_interval: float = 0.5) -> Registry:
    registry = Registry()
    registry.queue("bench", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=concurrency, poll_interval=poll_interval)
    return registry


#: Single pushes are timed in blocks of this many, taking turns with as many raw writes and
#: as many blocking pushes, so that all three meet the same load on a shared machine.
BLOCK = 50


def _blocking_pushes(registry: Registry, first: int, count: int) -> float:
    """Seconds for `count` pushes through `registry.blocking`, as Flask or Django code calls
    it."""
    started = time.perf_counter()
    for n in range(first, first + count):
        registry.blocking.push("bench", "tick", Tick(n))
    return time.perf_counter() - started


async def single_pushes(registry: Registry, raw: Write | None, count: int) -> dict[str, float]:
    """Seconds spent on `count` raw writes (none without a raw client), `count` pushes and
    `count` blocking pushes, in blocks of BLOCK taken in turn."""
    spent = {"raw": 0.0, "push": 0.0, "blocking": 0.0}
    for first in range(0, count, BLOCK):
        size = min(BLOCK, count - first)
        if raw is not None:
            started = time.perf_counter()
            for _ in range(size):
                await raw()
            spent["raw"] += time.perf_counter() - started
        started = time.perf_counter()
        for n in range(first, first + size):
            await registry.push("bench", "tick", Tick(n))
        spent["push"] += time.perf_counter() - started
        spent["blocking"] += await asyncio.to_thread(_blocking_pushes, registry, first, size)
    return spent


async def throughput(
    kind: str, driver: str, jobs: int, concurrency: int, batch: int, folder: Path
) -> None:
    registry = make_registry(driver, concurrency)
    done = 0

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        nonlocal done
        done += 1

    for state in (JobState.PENDING, JobState.DELAYED, JobState.FAILED, JobState.SUCCEEDED):
        with contextlib.suppress(Unsupported):  # amqp cannot purge delayed jobs
            await registry.purge("bench", state)  # what an interrupted run left on a server
    singles = max(1, min(jobs // 10, 2000))
    async with raw_writer(kind, driver, folder) as raw:
        spent = await single_pushes(registry, None if raw is None else raw[0], singles)
    rate = singles / spent["push"]
    print(f"push:      {rate:,.0f} jobs/s ({singles} jobs, one push each)")
    if raw is not None:
        raw_rate = singles / spent["raw"]
        print(f"  raw:     {raw_rate:,.0f} writes/s ({raw[1]}, in turns of {BLOCK} with"
              f" the pushes): push at {rate / raw_rate:.2f} of it")  # fmt: skip
    blocking_rate = singles / spent["blocking"]
    print(f"  blocking push: {blocking_rate:,.0f} jobs/s from a plain thread, "
          f"{rate / blocking_rate:.2f}x the async push's time")  # fmt: skip

    started = time.perf_counter()
    for first in range(0, jobs, batch):
        last = min(first + batch, jobs)
        await registry.push_many("bench", "tick", [Tick(n) for n in range(first, last)])
    pushed = time.perf_counter() - started
    print(f"push_many: {jobs / pushed:,.0f} jobs/s ({jobs} jobs in batches of {batch})")
    broker = await raw_batch_rates(kind, driver, jobs, batch, concurrency)
    if broker is not None:
        print(f"  raw:     {broker[0]:,.0f} messages/s (aiormq, persistent, confirmed, batches of"
              f" {batch}): push_many at {jobs / pushed / broker[0]:.2f} of it")  # fmt: skip

    threshold = gc.get_threshold()
    tune_for_work()  # the worker's process as `conveyor work` sets it up; pushes above were not
    started = time.perf_counter()
    await Worker(registry, "w", burst=True).run()
    ran = time.perf_counter() - started
    gc.unfreeze()
    gc.set_threshold(*threshold)
    assert done == jobs + 2 * singles, (done, jobs + 2 * singles)
    print(f"process:   {(jobs + 2 * singles) / ran:,.0f} jobs/s (concurrency {concurrency})")
    if broker is not None:
        share = (jobs + 2 * singles) / ran / broker[1]
        print(f"  raw:     {broker[1]:,.0f} messages/s (aiormq consume, prefetch {concurrency}, an"
              f" ack per 100): process at {share:.2f} of it")  # fmt: skip
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


# -- a worker in a second process --------------------------------------------------------------


async def serve(driver: str) -> None:
    """The second process: a worker at concurrency 1 with the default poll interval, printing
    each job's number and the CLOCK_MONOTONIC time its handler started."""
    registry = Registry()
    registry.queue("bench", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=1)

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        print(f"{job.payload.n} {time.monotonic()}", flush=True)

    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run(handle_signals=True))
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    await task
    await registry.close()


class Remote:
    """A worker process on `driver`, and the start times it reports, by job number."""

    def __init__(self, driver: str, loop: str = "asyncio") -> None:
        self.driver = driver
        self.loop = loop
        self.started: dict[int, float] = {}
        self._arrived = asyncio.Condition()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *(sys.executable, __file__, "--serve", self.driver, "--loop", self.loop),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            number, at = line.split()
            async with self._arrived:
                self.started[int(number)] = float(at)
                self._arrived.notify_all()

    async def started_at(self, n: int) -> float:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: n in self.started), 10)
        return self.started[n]

    def cpu_seconds(self) -> float:
        """The worker process's CPU time so far (user + system), from /proc."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
        if self._reader is not None:
            await self._reader


async def remote(
    driver: str, idle_samples: int, load_samples: int, every: float, loop: str = "asyncio"
) -> None:
    """Push-to-start latency from this process to a worker in another, idle and under load,
    and the idle worker's CPU use."""
    registry = make_registry(driver, 1)
    registry.job("tick")(_ran_elsewhere)
    worker = Remote(driver, loop)
    await worker.start()
    try:
        number = 0

        async def push() -> tuple[float, float]:
            nonlocal number
            number += 1
            called = time.monotonic()
            await registry.push("bench", "tick", Tick(number))
            returned = time.monotonic()
            started = await worker.started_at(number)
            return started - called, max(0.0, started - returned)

        await push()  # the worker's first job warms it up; not counted
        idle = []
        for _ in range(idle_samples):
            await asyncio.sleep(random.uniform(*IDLE_GAP))
            idle.append(await push())
        report("idle", [returned for _, returned in idle])
        await asyncio.sleep(RELAX)
        before, begin = worker.cpu_seconds(), time.monotonic()
        await asyncio.sleep(IDLE_FOR)
        busy = (worker.cpu_seconds() - before) / (time.monotonic() - begin)
        print(f"idle CPU:  {busy * 100:.2f}% of a core (worker process idle for {IDLE_FOR:g} s)")
        loaded = await under_load(push, load_samples, every)
        report(f"a push every {every * 1000:g} ms", [returned for _, returned in loaded])
    finally:
        await worker.stop()
        await registry.purge("bench", JobState.SUCCEEDED)
        await registry.close()


async def _ran_elsewhere(job: Job[Tick]) -> None:
    """The job as this process knows it: only the worker process runs it."""


async def under_load(
    push: Callable[[], Coroutine[None, None, tuple[float, float]]], samples: int, every: float
) -> list[tuple[float, float]]:
    """`samples` pushes, one every `every` seconds whatever the previous one's latency."""
    tasks: list[asyncio.Task[tuple[float, float]]] = []
    for _ in range(samples):
        tasks.append(asyncio.create_task(push()))
        await asyncio.sleep(every)
    return list(await asyncio.gather(*tasks))


def report(label: str, values: list[float]) -> None:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    print(
        f"latency:   push returned -> handler started in another process ({label}): p50 "
        f"{statistics.median(values) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"
        f" ({len(values)} jobs)"
    )


async def idle_cpu_here(driver: str) -> None:
    """The CPU use of this process while a worker in it sits idle (memory: no second process
    can share its jobs)."""
    registry = make_registry(driver, 1, poll_interval=1.0)
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(RELAX)
    usage, begin = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    await asyncio.sleep(IDLE_FOR)
    after = resource.getrusage(resource.RUSAGE_SELF)
    busy = (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / (
        time.monotonic() - begin
    )
    worker.stop()
    await task
    await registry.close()
    print(f"idle CPU:  {busy * 100:.2f}% of a core (worker idle for {IDLE_FOR:g} s, same process)")


# -- running it ------------------------------------------------------------------------------------


def bench(kind: str, driver: str, folder: Path, args: argparse.Namespace) -> None:
    """Every figure for one driver; `driver` is its URL ("sqlite" gets files in `folder`)."""
    print(f"driver: {kind}")
    sqlite_file = kind == "sqlite" and not driver.startswith("sqlite://")

    def url(name: str) -> str:
        return f"sqlite:///{folder / name}" if sqlite_file else driver

    loop = args.loop
    run(throughput(kind, url("bench.db"), args.jobs, args.concurrency, args.batch, folder), loop)
    run(latency(url("latency.db"), args.samples), loop)
    capabilities = driver_from_url(url("remote.db")).capabilities
    if capabilities.shared:
        load = (args.idle_samples, args.load_samples, args.load_every)
        run(remote(url("remote.db"), *load, loop), loop)
    elif capabilities.inline:
        print("idle CPU:  none (no worker: each job runs inside its push)")
    else:
        run(idle_cpu_here(url("remote.db")), loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--driver", default="sqlite", help="memory, sync, sqlite, a driver URL, or all"
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--idle-samples", type=int, default=40)
    parser.add_argument("--load-samples", type=int, default=300)
    parser.add_argument("--load-every", type=float, default=LOAD_EVERY)
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0], help="the event loop")
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run(serve(args.serve), args.loop)
        return
    drivers = {"memory": "memory", "sync": "sync", "sqlite": "sqlite", **LOCAL_SERVERS}
    chosen = drivers if args.driver == "all" else {args.driver.partition(":")[0]: args.driver}
    with tempfile.TemporaryDirectory() as folder:
        for kind, driver in chosen.items():
            place = Path(folder) / uuid.uuid4().hex
            place.mkdir()
            bench(kind, driver, place, args)
            print()


if __name__ == "__main__":
    main()
