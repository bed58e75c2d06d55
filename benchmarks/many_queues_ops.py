"""What operations cost on many queues: a worker's first reserve, counts, the dashboard.

    .venv/bin/python benchmarks/many_queues_ops.py --driver amqp --queues 1,300
    .venv/bin/python benchmarks/many_queues_ops.py --driver all --queues 300 --rounds 5

Per driver and number of queues N (one job pushed to each): the median over `--rounds` of a
first reserve over all N by a driver just opened (the queues exist: amqp declares and consumes
each), of `registry.overview()` (what `conveyor list` and the metrics count) and of the
dashboard's queues page (counts and each queue's last hour of throughput). Run by hand; never
part of the tests. Leaves nothing behind on a server.
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
from pathlib import Path

import httpx
from many_queues import SERVERS, Tick, make_registry

from conveyor import JobState
from conveyor.dashboard.app import create_app
from conveyor.drivers import driver_from_url
from conveyor.errors import Unsupported


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
        await driver.close()  # what it holds goes back


async def bench(url: str, count: int, rounds: int) -> str:
    queues = [f"manyq2o{count}_{uuid.uuid4().hex[:6]}_{n}" for n in range(count)]
    registry = make_registry(url, queues)
    app = create_app(registry)
    try:
        await registry.migrate()
        for queue in queues:
            await registry.push(queue, "tick", Tick(0))
        reserve = await median_ms(rounds, lambda: first_reserve(url, queues))
        overview = await median_ms(rounds, registry.overview)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:

            async def page() -> None:
                assert (await client.get("/")).status_code == 200

            shown = await median_ms(rounds, page)
        return (
            f"N={count:4}  first reserve {reserve:7.1f} ms  overview {overview:7.1f} ms"
            f"  queues page {shown:7.1f} ms"
        )
    finally:
        for queue in queues:  # leave nothing behind on a server
            for state in (JobState.SUCCEEDED, JobState.PENDING):
                with contextlib.suppress(Unsupported):
                    await registry.purge(queue, state)
        await registry.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="sqlite, a server name, a URL, all")
    parser.add_argument("--queues", default="1,300", help="numbers of queues, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names = ["sqlite", *SERVERS] if args.driver == "all" else [args.driver]
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            url = SERVERS.get(name, name)
            if name == "sqlite":
                url = f"sqlite:///{Path(folder) / 'many.db'}"
            for count in (int(n) for n in args.queues.split(",")):
                print(f"{name:8} {await bench(url, count, args.rounds)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
