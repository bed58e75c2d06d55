"""How long the queues page and `conveyor list` (both `registry.queue_info()`) take with a
million finished jobs in postgres, sqlite, mysql and redis. Run by hand; never part of the tests.

    .venv/bin/python benchmarks/counts.py --jobs 1000000 [--only sqlite,mysql]

Postgres: one job is pushed, copied `--jobs` times with one INSERT ... SELECT, then turned
succeeded by one UPDATE (the count triggers see it as any settle). SQLite and MySQL:
`--jobs` pending jobs are inserted, then turned succeeded by UPDATEs of 50,000 (firing the
count triggers as settles do). Redis:
`--jobs` ids are added to the queue's succeeded set, which is all its count reads. The finish
times are spread over the last 7 days (the default retention), so the last hour holds about
6,000 of them. Prints the median and worst of 20 reads, of queue_info(), of the last hour's
throughput() and of the dashboard's queues page (through httpx, in process).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid

import httpx
import psycopg
import redis.asyncio as aioredis

from conveyor import Job, Registry
from conveyor.dashboard.app import create_app
from conveyor.drivers.redis import RedisDriver
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.drivers.sql.sqlite import SqliteDriver

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
#: Seconds over which the seeded jobs' finish times are spread: the default retention.
SPREAD = 7 * 24 * 3600
#: Rows one seeding UPDATE turns succeeded (sqlite, mysql).
CHUNK = 50_000
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
            f"INSERT INTO {prefix}jobs (id, queue, name, payload, max_attempts, created_at,"
            " available_at)"
            " SELECT 'b' || g, queue, name, payload, 1, created_at, available_at"
            f" FROM {prefix}jobs, generate_series(1, %s) g"
            " WHERE id = %s",
            (jobs, job_id),
        )
        # Turned succeeded by an UPDATE, as settles do: the count triggers fire on it.
        await conn.execute(
            f"UPDATE {prefix}jobs SET state = 'succeeded', attempt = 1,"
            f" finished_at = created_at - substr(id, 2)::bigint % {SPREAD}"
            " WHERE id LIKE 'b%'"
        )
        await conn.execute(f"ANALYZE {prefix}jobs")


async def seed_redis(driver: RedisDriver, jobs: int) -> None:
    succeeded = driver.keys("bench").of_script("counts")[3]
    client = aioredis.from_url(REDIS_URL)
    now = time.time()
    for start in range(0, jobs, 50_000):
        batch = {f"b{n}": now - n % SPREAD for n in range(start, min(jobs, start + 50_000))}
        await client.zadd(succeeded, batch)
    await client.aclose()


# The statements seeding sqlite and mysql: `jobs` pending rows (ids b0, b1, ...) copied from
# one pushed job, then succeeded CHUNK at a time, finished at times spread over SPREAD.
DIGITS = "SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {n}" for n in range(1, 10))
NUMBERS = (
    f"SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * h.d AS n"
    f" FROM ({DIGITS}) a, ({DIGITS}) b, ({DIGITS}) c, ({DIGITS}) e, ({DIGITS}) f, ({DIGITS}) h"
)
SEED = (
    "INSERT INTO {p}jobs (id, queue, name, payload, max_attempts, created_at, available_at,"
    " meta) SELECT CONCAT('b', numbers.n), j.queue, j.name, j.payload, 1,"
    " j.created_at, j.available_at, '{{}}' FROM {p}jobs AS j, ({numbers}) AS numbers"
    " WHERE j.id = ? AND numbers.n < ?"
)
FINISH = (
    "UPDATE {p}jobs SET state = 'succeeded', attempt = 1,"
    " finished_at = created_at - CAST(SUBSTR(id, 2) AS INTEGER) % {spread}"
    " WHERE queue = 'bench' AND state = 'pending' AND id LIKE 'b%' {limit}"
)


async def seed_sqlite(registry: Registry, path: str, prefix: str, jobs: int) -> None:
    job_id = await registry.push("bench", "noop", {"n": 0})
    with sqlite3.connect(path) as conn:
        seed = SEED.format(p=prefix, numbers=NUMBERS).replace("CONCAT('b', numbers.n)",
                                                               "'b' || numbers.n")  # fmt: skip
        conn.execute(seed, (job_id, jobs))
        finish = FINISH.format(p=prefix, spread=SPREAD, limit="")
        finish += f" AND rowid IN (SELECT rowid FROM {prefix}jobs WHERE state = 'pending'"
        finish += f" AND id LIKE 'b%' LIMIT {CHUNK})"
        while conn.execute(finish).rowcount:
            conn.commit()
        conn.execute("ANALYZE")


async def seed_mysql(registry: Registry, prefix: str, jobs: int) -> None:
    import asyncmy

    job_id = await registry.push("bench", "noop", {"n": 0})
    conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test",
                                 autocommit=True)  # fmt: skip
    async with conn.cursor() as cursor:
        seed = SEED.format(p=prefix, numbers=NUMBERS).replace("?", "%s")
        seed = seed.replace(" meta)", " meta, unique_slot)").replace(
            "'{}' FROM", "'{}', UNHEX(SHA2(CONCAT(X'00', 'b', numbers.n), 256)) FROM"
        )
        await cursor.execute(seed, (job_id, jobs))
        finish = FINISH.format(p=prefix, spread=SPREAD, limit=f"LIMIT {CHUNK}")
        finish = finish.replace("INTEGER", "UNSIGNED").replace("'b%'", "'b%%'")
        while await cursor.execute(finish):
            pass
        await cursor.execute(f"ANALYZE TABLE {prefix}jobs")
    conn.close()


async def timed(label: str, registry: Registry) -> None:
    app = create_app(registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as web:
        await registry.queue_info()
        for what, read in (
            ("queue_info()", registry.queue_info),
            ("throughput()", lambda: registry.throughput("bench")),
            ("queues page", lambda: web.get("/")),
        ):
            if what == "throughput()" and not hasattr(registry, "throughput"):
                continue  # an older conveyor, for a before/after comparison
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


async def run_sqlite(jobs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/bench.db"
        registry = registry_on(SqliteDriver.from_url(f"sqlite:///{path}"))
        try:
            began = time.perf_counter()
            await seed_sqlite(registry, path, "conveyor_", jobs)
            print(f"sqlite: seeded {jobs:,} succeeded jobs in {time.perf_counter() - began:.0f} s")
            await timed("sqlite", registry)
        finally:
            await registry.close()


async def run_mysql(jobs: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    registry = registry_on(MysqlDriver.from_url(f"{MYSQL_URL}?prefix={prefix}"))
    try:
        began = time.perf_counter()
        await seed_mysql(registry, prefix, jobs)
        print(f"mysql: seeded {jobs:,} succeeded jobs in {time.perf_counter() - began:.0f} s")
        await timed("mysql", registry)
    finally:
        await registry.close()
        import asyncmy

        conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test")
        async with conn.cursor() as cursor:
            for table in ("jobs", "workers", "worker_processes", "queues", "schedule_ticks",
                          "finished_counts", "schema_version"):  # fmt: skip
                await cursor.execute(f"DROP TABLE IF EXISTS {prefix}{table}")
        conn.close()


async def main(jobs: int, only: set[str]) -> None:
    if "sqlite" in only:
        await run_sqlite(jobs)
    if "mysql" in only:
        await run_mysql(jobs)
    if "postgres" in only:
        await run_postgres(jobs)
    if "redis" in only:
        await run_redis(jobs)


async def run_postgres(jobs: int) -> None:
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
                "schema_version",
            ):
                await conn.execute(f"DROP TABLE IF EXISTS {prefix}{table} CASCADE")
            await conn.execute(f"DROP FUNCTION IF EXISTS {prefix}count_finished CASCADE")


async def run_redis(jobs: int) -> None:
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
    parser.add_argument("--only", default="postgres,sqlite,mysql,redis")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, set(args.only.split(","))))
