"""The raw client's one-command rate, measured in the same run as conveyor's push: the yardstick
issue 16 sets (`push` at >= 0.8 of it). One write per "push", one at a time, as an application
without a job queue would write a row or a key:

- redis: one `HSET` of a key with a payload field (redis-py, asyncio);
- postgres: one autocommit `INSERT` of an (id, payload) row (psycopg 3, asyncio);
- mysql: one autocommit `INSERT` (asyncmy, the driver conveyor uses);
- sqlite: one `INSERT` committed at `synchronous=FULL` in WAL mode (sqlite3), the durability
  conveyor's pushes have.

Each writes to a table or keys of its own and removes them afterwards.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

PAYLOAD = '{"n": 1}'


async def raw_rate(kind: str, url: str, count: int, folder: Path) -> tuple[float, str] | None:
    """(writes per second, what was measured) for a driver kind, or None for one without a
    raw client to compare with (memory, sync)."""
    table = f"raw_{uuid.uuid4().hex[:8]}"
    if kind == "redis":
        return await _redis(url, count, table), "redis-py, one HSET per push"
    if kind in ("postgres", "postgresql"):
        return await _postgres(url, count, table), "psycopg, one autocommit INSERT per push"
    if kind == "mysql":
        return await _mysql(url, count, table), "asyncmy, one autocommit INSERT per push"
    if kind == "sqlite":
        return _sqlite(folder / "raw.db", count), "sqlite3, one INSERT committed at FULL"
    return None


async def _redis(url: str, count: int, table: str) -> float:
    import redis.asyncio as redis

    client = redis.Redis.from_url(_without_query(url))
    try:
        await client.ping()
        started = time.perf_counter()
        for n in range(count):
            await client.execute_command("HSET", f"{table}:{n}", "payload", PAYLOAD)
        took = time.perf_counter() - started
        await client.delete(*[f"{table}:{n}" for n in range(count)])
        return count / took
    finally:
        await client.aclose()


async def _postgres(url: str, count: int, table: str) -> float:
    import psycopg

    async with await psycopg.AsyncConnection.connect(_without_query(url), autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, payload text)")
        try:
            started = time.perf_counter()
            for _ in range(count):
                await conn.execute(
                    f"INSERT INTO {table} (id, payload) VALUES (%s, %s)",
                    (uuid.uuid4().hex, PAYLOAD),
                )
            return count / (time.perf_counter() - started)
        finally:
            await conn.execute(f"DROP TABLE {table}")


async def _mysql(url: str, count: int, table: str) -> float:
    import asyncmy

    parts = urlsplit(url)
    conn = await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") or "test",
        autocommit=True,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"CREATE TABLE {table} (id VARCHAR(64) PRIMARY KEY, payload TEXT)")
            try:
                started = time.perf_counter()
                for _ in range(count):
                    await cursor.execute(
                        f"INSERT INTO {table} (id, payload) VALUES (%s, %s)",
                        (uuid.uuid4().hex, PAYLOAD),
                    )
                return count / (time.perf_counter() - started)
            finally:
                await cursor.execute(f"DROP TABLE {table}")
    finally:
        conn.close()


def _sqlite(path: Path, count: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, payload TEXT)")
        started = time.perf_counter()
        for _ in range(count):
            db.execute("INSERT INTO raw (id, payload) VALUES (?, ?)", (uuid.uuid4().hex, PAYLOAD))
        return count / (time.perf_counter() - started)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _without_query(url: str) -> str:
    """The URL without conveyor's options (prefix=...), which the raw clients do not know."""
    return url.partition("?")[0]
