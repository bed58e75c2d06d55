"""How long the queues page and `conveyor list` (both `registry.queue_info()`) take with a
million finished jobs in postgres and in redis. Run by hand; never part of the tests.

    .venv/bin/python benchmarks/counts.py --jobs 1000000

Postgres: one job is pushed, then copied `--jobs` times as succeeded with one INSERT ... SELECT
(the count triggers see it as any settle). Redis: `--jobs` ids are added to the queue's
succeeded set, which is all its count reads. Prints the median and worst of 20 reads, of
queue_info() and of the dashboard's queues page (through httpx, in process).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import httpx
import psycopg
import redis.asyncio as aioredis

from conveyor import Job, Registry
from conveyor.dashboard.app import create_app
from conveyor.drivers.redis import RedisDriver
from conveyor.drivers.sql.postgres import PostgresDriver

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
READS = 20


def registry_on(driver: object) -> Registry:
    registry = Registry()
    registry.queue("bench", driver=driver, workers=["w"])
    registry.worker("w")

    @registry.job("noop", queue="bench")
    async def noop(job: Job[dict[str, int]]) -> None:
        return None

    return registry


async def seed_postgres(registry: Registry, prefix: str, jobs: int) -> None:
    job_id = await registry.push("bench", "noop", {"n": 0})
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        await conn.execute(
            f"INSERT INTO {prefix}jobs (id, queue, name, payload, state, attempt, max_attempts,"
            " created_at, available_at, finished_at)"
            " SELECT 'b' || g, queue, name, payload, 'succeeded', 1, 1, created_at,"
            f" available_at, created_at FROM {prefix}jobs, generate_series(1, %s) g"
            " WHERE id = %s",
            (jobs, job_id),
        )
        await conn.execute(f"ANALYZE {prefix}jobs")


async def seed_redis(driver: RedisDriver, jobs: int) -> None:
    succeeded = driver.keys("bench").of_script("counts")[3]
    client = aioredis.from_url(REDIS_URL)
    now = time.time()
    for start in range(0, jobs, 50_000):
        batch = {f"b{n}": now for n in range(start, min(jobs, start + 50_000))}
        await client.zadd(succeeded, batch)
    await client.aclose()


async def timed(label: str, registry: Registry) -> None:
    app = create_app(registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as web:
        await registry.queue_info()
        for what, read in (
            ("queue_info()", registry.queue_info),
            ("queues page", lambda: web.get("/")),
        ):
            took = []
            for _ in range(READS):
                began = time.perf_counter()
                await read()
                took.append((time.perf_counter() - began) * 1000)
            print(
                f"{label}: {what}: median {statistics.median(took):.1f} ms,"
                f" worst {max(took):.1f} ms"
            )
    counts = (await registry.queue_info())["bench"]
    print(f"{label}: succeeded counted: {counts.succeeded:,}")


async def main(jobs: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    pg = registry_on(PostgresDriver.from_url(f"{PG_URL}?prefix={prefix}"))
    try:
        began = time.perf_counter()
        await seed_postgres(pg, prefix, jobs)
        print(f"postgres: seeded {jobs:,} succeeded jobs in {time.perf_counter() - began:.0f} s")
        await timed("postgres", pg)
    finally:
        await pg.close()
        async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
            for table in (
                "jobs",
                "workers",
                "worker_processes",
                "queues",
                "schedule_ticks",
                "finished_counts",
                "migrations",
            ):
                await conn.execute(f"DROP TABLE IF EXISTS {prefix}{table} CASCADE")
            await conn.execute(f"DROP FUNCTION IF EXISTS {prefix}count_finished CASCADE")
    key_prefix = f"bench{uuid.uuid4().hex[:8]}"
    driver = RedisDriver.from_url(f"{REDIS_URL}?prefix={key_prefix}")
    rd = registry_on(driver)
    try:
        await seed_redis(driver, jobs)
        await timed("redis", rd)
    finally:
        await rd.close()
        client = aioredis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().jobs))
