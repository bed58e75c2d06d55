"""How many pages a second one cursor-chained job walks, on one driver (or several).

    .venv/bin/python benchmarks/chain.py --driver sqlite --pages 10000
    .venv/bin/python benchmarks/chain.py --driver all        # sqlite, postgres, redis

A chain runs one page at a time by nature (each page pushes the next as it ends), so this is
the round trips of one page: reserve, run a trivial page, push the next page, ack. One worker
in this process, burst mode. Run by hand; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from conveyor import Job, JobState, Registry, Worker

SERVERS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?prefix=bench_chain_",
    "mysql": "mysql://root@127.0.0.1:3306/test?prefix=bench_chain_",
    "redis": "redis://127.0.0.1:6379/0?prefix=conveyor-bench-chain:",
}


async def pages_per_second(url: str, pages: int) -> float:
    registry = Registry(default_driver=url)
    registry.queue("chain", workers=["w"], retention=3600)
    registry.worker("w", concurrency=4, poll_interval=0.05)

    @registry.job("page", queue="chain", chain=True)
    async def page(job: Job[dict[str, int]]) -> int | None:
        return (job.page or 0) + 1 if (job.page or 0) + 1 < pages else None

    try:
        await registry.purge("chain", JobState.SUCCEEDED)
        chain_id = await registry.start_chain("page", {}, chain_id=uuid.uuid4().hex)
        started = time.perf_counter()
        await Worker(registry, "w", burst=True).run()
        took = time.perf_counter() - started
        info = await registry.chain_info(chain_id)
        assert info is not None and (info.pages, info.state) == (pages, "done"), info
        await registry.purge("chain", JobState.SUCCEEDED)
        return pages / took
    finally:
        await registry.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="sqlite", help="sqlite, a server name, a URL, all")
    parser.add_argument("--pages", type=int, default=10_000)
    args = parser.parse_args()
    names = ["sqlite", "postgres", "redis"] if args.driver == "all" else [args.driver]
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            url = SERVERS.get(name, name)
            if name == "sqlite":
                url = f"sqlite:///{Path(folder) / 'chain.db'}"
            rate = await pages_per_second(url, args.pages)
            print(f"{name}: a chain of {args.pages} pages, {rate:,.0f} pages/s")


if __name__ == "__main__":
    asyncio.run(main())
