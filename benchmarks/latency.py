"""Conveyor over a link with latency: each server reached through benchmarks/delay_proxy.py,
which holds every chunk `--delay` ms each way (0 first: the proxy's own cost), counting the
chunks the client writes (requests; a few written at once count once, as they cost one round
trip).

    .venv/bin/python benchmarks/latency.py postgres mysql redis amqp --delay 0 0.5

Per driver and delay, printed:
- push: one `push` at a time, jobs/s and requests per push;
- push_many: batches of `--batch`, jobs/s and requests per call;
- process: one burst worker (`--concurrency`, prefetch `--prefetch` or its default) running
  `--jobs` jobs with an empty body, jobs/s and requests per job (everything the worker wrote:
  reserve, settle, renew, stats, beats, pause reads);
- idle: an idle worker at concurrency 1 in this process, push-to-start (median, p95) from push
  called and from push returned, and its requests per second while nothing comes; pushed
  through the worker's own address ("here": the driver may wake its worker itself), then
  through a second proxy ("elsewhere": another address, so no in-process wake-up and no
  doorbell, as a push from another machine: LISTEN/NOTIFY, the blocking pop, MySQL's probe).
Run by hand; never part of the tests. Leaves nothing behind on a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.backends: clean up
import redis.asyncio as aioredis
from delay_proxy import DelayProxy, delay_proxy

from conveyor import Job, JobState, Registry, Worker
from conveyor.collector import tune_for_work
from conveyor.errors import Unsupported
from tests.backends import amqp as amqp_server
from tests.backends import mysql as mysql_server
from tests.backends import postgres as postgres_server
from tests.backends import redis as redis_server

#: Each server: its port on this machine and its driver URL through the proxy's PORT.
SERVERS = {
    "postgres": (5432, "postgresql://postgres@127.0.0.1:{port}/test?prefix=lat_"),
    "mysql": (3306, "mysql://root@127.0.0.1:{port}/test?prefix=lat_"),
    "redis": (6379, "redis://127.0.0.1:{port}/0?prefix=conveyor-lat:"),
    "amqp": (5672, "amqp://guest:guest@127.0.0.1:{port}/?prefix=lat_"),
}


#: What can be measured, in this order.
PARTS = ["push", "process", "idle"]


@dataclass
class Tick:
    n: int


def _registry(url: str, concurrency: int, prefetch: int | None) -> tuple[Registry, list[float]]:
    """A registry with queue "lat" on `url`, and the times its handler started."""
    registry = Registry()
    registry.queue("lat", driver=url, workers=["w"], retry=0)
    registry.worker("w", concurrency=concurrency, prefetch=prefetch)
    starts: list[float] = []

    @registry.job("tick")
    async def tick(job: Job[Tick]) -> None:
        starts.append(time.perf_counter())

    return registry, starts


async def _empty(registry: Registry) -> None:
    for state in (JobState.PENDING, JobState.DELAYED, JobState.FAILED, JobState.SUCCEEDED):
        with contextlib.suppress(Unsupported):
            await registry.purge("lat", state)


async def pushes(registry: Registry, proxy: DelayProxy, count: int, batch: int) -> None:
    for n in range(50):
        await registry.push("lat", "tick", Tick(n))
    proxy.reset()
    started = time.perf_counter()
    for n in range(count):
        await registry.push("lat", "tick", Tick(n))
    took = time.perf_counter() - started
    print(
        f"  push:      {count / took:8,.0f} jobs/s, {proxy.counts().up / count:.2f} requests each"
    )
    calls = 5
    proxy.reset()
    started = time.perf_counter()
    for _ in range(calls):
        await registry.push_many("lat", "tick", [Tick(n) for n in range(batch)])
    took = time.perf_counter() - started
    print(
        f"  push_many: {calls * batch / took:8,.0f} jobs/s (batches of {batch}),"
        f" {proxy.counts().up / calls:.1f} requests per call"
    )
    await _empty(registry)


async def process(
    url: str, proxy: DelayProxy, jobs: int, concurrency: int, prefetch: int | None
) -> None:
    registry, starts = _registry(url, concurrency, prefetch)
    await _empty(registry)
    for first in range(0, jobs, 1000):
        await registry.push_many(
            "lat", "tick", [Tick(n) for n in range(first, min(jobs, first + 1000))]
        )
    proxy.reset()
    started = time.perf_counter()
    await Worker(registry, "w", burst=True, schedules=False).run()
    took = time.perf_counter() - started
    counts = proxy.counts()
    assert len(starts) == jobs, (len(starts), jobs)
    busiest = sorted(counts.per_connection.values(), reverse=True)[:4]
    print(
        f"  process:   {jobs / took:8,.0f} jobs/s (concurrency {concurrency}, prefetch"
        f" {prefetch if prefetch is not None else 'default'}), {counts.up / jobs:.3f} requests"
        f" per job over {counts.connections} new connections (busiest: {busiest})"
    )
    await _empty(registry)
    await registry.close()


async def idle(url: str, proxy: DelayProxy, samples: int, push_url: str, where: str) -> None:
    """An idle worker on `url`: push-to-start of pushes through `push_url` (the same address, or
    another one: no in-process wake-up, no doorbell, as from another machine), and its
    requests per second while nothing comes."""
    registry, starts = _registry(url, 1, None)
    pusher, _ = _registry(push_url, 1, None)
    await _empty(registry)
    worker = Worker(registry, "w", schedules=False)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(2.0)
    proxy.reset()
    await asyncio.sleep(3.0)
    quiet = proxy.counts().up / 3.0
    called: list[float] = []
    returned: list[float] = []
    for n in range(samples):
        await asyncio.sleep(0.3)
        before = len(starts)
        at = time.perf_counter()
        await pusher.push("lat", "tick", Tick(n))
        back = time.perf_counter()
        while len(starts) == before:
            await asyncio.sleep(0.0001)
        called.append(starts[-1] - at)
        returned.append(max(0.0, starts[-1] - back))
    worker.stop()
    await task
    await _empty(registry)
    await registry.close()
    await pusher.close()
    for label, values in (("push called", called), ("push returned", returned)):
        print(f"  idle, {where}: {label} -> started: {_spread(values)}")
    print(f"  idle:      {quiet:.1f} requests/s from an idle worker")


async def ping(port: int, count: int = 1000) -> float:
    """Seconds per redis PING to `port`, one at a time: the round trip of the link."""
    client = aioredis.Redis(port=port)
    await client.ping()
    started = time.perf_counter()
    for _ in range(count):
        await client.ping()
    took = time.perf_counter() - started
    await client.aclose()
    return took / count


async def one(kind: str, delay: float, args: argparse.Namespace) -> None:
    upstream, template = SERVERS[kind]
    with delay_proxy(upstream, delay / 1e3) as proxy:
        url = template.format(port=proxy.port)
        with delay_proxy(6379, delay / 1e3) as link:
            direct, through = await ping(6379), await ping(link.port)
        print(
            f"{kind}, {delay} ms each way (a redis PING: {direct * 1e3:.3f} ms direct,"
            f" {through * 1e3:.3f} ms through the proxy):",
            flush=True,
        )
        if "push" in args.parts:
            registry, _ = _registry(url, 1, None)
            await _empty(registry)
            await pushes(registry, proxy, args.count, args.batch)
            await registry.close()
        if "process" in args.parts:
            for concurrency in args.concurrency:
                await process(url, proxy, args.jobs, concurrency, args.prefetch)
        if "idle" in args.parts:
            await idle(url, proxy, args.samples, url, "pushed here")
            with delay_proxy(upstream, delay / 1e3) as other:
                elsewhere = template.format(port=other.port)
                await idle(url, proxy, args.samples, elsewhere, "pushed elsewhere")


def _spread(values: list[float]) -> str:
    """The median and the 95th percentile of `values` (seconds), in ms."""
    ranked = sorted(values)
    p95 = ranked[int(len(ranked) * 0.95)]
    return f"median {statistics.median(ranked) * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms"


#: Each server's clean-up: what removes the tables, keys or broker queues of a prefix.
REMOVE: dict[str, Callable[[str], Awaitable[object]]] = {
    "postgres": postgres_server.drop_tables,
    "mysql": mysql_server.drop_tables,
    "redis": redis_server.delete_prefix,
    "amqp": functools.partial(amqp_server.delete_prefix, queues={"lat"}),
}


async def remove(kind: str) -> None:
    """Leave nothing behind on the server."""
    await REMOVE[kind](SERVERS[kind][1].partition("prefix=")[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="+", choices=sorted(SERVERS))
    parser.add_argument("--delay", type=float, nargs="+", default=[0.0, 0.5], help="ms each way")
    parser.add_argument("--count", type=int, default=1000, help="single pushes")
    parser.add_argument("--batch", type=int, default=1000, help="push_many's batch")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs processed")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100])
    parser.add_argument("--prefetch", type=int, default=None)
    parser.add_argument("--samples", type=int, default=30, help="idle push-to-start samples")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="what to measure (default: all)"
    )
    args = parser.parse_args()
    tune_for_work()
    for kind in args.kinds:
        for delay in args.delay:
            asyncio.run(one(kind, delay, args))
        asyncio.run(remove(kind))


if __name__ == "__main__":
    main()
