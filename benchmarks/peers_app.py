"""The same job in conveyor and in each peer, for benchmarks/peers.py: its body is one Redis
INCR through redis-py, the workload issue 16 measures with. Each peer's worker is started by
its own command line, pointed at this module; every queue lives in Redis on 127.0.0.1."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import redis
import redis.asyncio as aioredis

REDIS = os.environ.get("PEERS_REDIS", "redis://127.0.0.1:6379/0")
COUNTER = "peers-bench:count"
CONCURRENCY = 100

_async_client: aioredis.Redis | None = None
_sync_client = redis.Redis.from_url(REDIS)


async def incr() -> None:
    global _async_client
    if _async_client is None:
        _async_client = aioredis.Redis.from_url(REDIS)
    await _async_client.incr(COUNTER)


# -- conveyor ---------------------------------------------------------------------------------

from conveyor import Job, Registry  # noqa: E402

registry = Registry(default_driver=f"{REDIS}?prefix=peers-bench-conveyor:")
registry.queue("bench", workers=["w"], retry=0)
registry.worker("w", concurrency=CONCURRENCY)


@registry.job("count", queue="bench")
async def conveyor_count(job: Job[dict[str, int]]) -> None:
    await incr()


# -- saq ----------------------------------------------------------------------------------------


async def saq_count(ctx: dict[str, Any], *, n: int) -> None:
    await incr()


def saq_queue() -> Any:
    from saq import Queue

    return Queue.from_url(REDIS, name="peers-bench-saq")


saq_settings = {
    "queue": saq_queue(),
    "functions": [saq_count],
    "concurrency": CONCURRENCY,
}


# -- arq ----------------------------------------------------------------------------------------


async def arq_count(ctx: dict[str, Any], n: int) -> None:
    await incr()


class ArqSettings:
    functions: ClassVar[list[Any]] = [arq_count]
    max_jobs = CONCURRENCY
    queue_name = "peers-bench-arq"
    burst = False

    @staticmethod
    def redis_settings() -> Any:
        from arq.connections import RedisSettings

        return RedisSettings.from_dsn(REDIS)


ArqSettings.redis_settings = ArqSettings.redis_settings()  # type: ignore[assignment]


# -- taskiq -------------------------------------------------------------------------------------

from taskiq_redis import ListQueueBroker  # noqa: E402

broker = ListQueueBroker(REDIS, queue_name="peers-bench-taskiq")


@broker.task
async def taskiq_count(n: int) -> None:
    await incr()


# -- huey (threads: its consumer runs sync functions) -------------------------------------------

from huey import RedisHuey  # noqa: E402

huey = RedisHuey("peers-bench-huey", url=REDIS, results=False)


@huey.task()
def huey_count(n: int) -> None:
    _sync_client.incr(COUNTER)
