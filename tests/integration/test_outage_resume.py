"""A worker whose backend was out of reach for a while takes up jobs again within seconds of
its return, not after a back-off grown to half a minute. The server is reached through a TCP
proxy the test cuts and restores (tests/backends/proxy.py); the shared server is never
touched."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from conveyor import Job, Registry, Worker
from conveyor.worker import MAX_BACKOFF
from tests.backends import require_service
from tests.backends.proxy import Proxy
from tests.backends.redis import START, delete_prefix, fresh_prefix

pytestmark = pytest.mark.timeout(60)

#: Longest the backend stays away: it comes back once the worker's back-off, doubling from
#: 0.1 s, has reached MAX_BACKOFF (or passed it, which the test then reports), about 6 s in.
OUTAGE = 20.0


async def test_a_worker_resumes_within_its_longest_back_off_after_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_service("redis", 6379, START)
    prefix = fresh_prefix()
    proxy = Proxy(6379)
    await proxy.start()
    registry = Registry()
    url = f"redis://127.0.0.1:{proxy.port}/0?timeout=1&prefix={prefix}"
    registry.queue("q", driver=url, workers=["w"])
    registry.worker("w", poll_interval=0.1)
    ran = asyncio.Event()

    @registry.job("ping")
    async def ping(job: Job[dict[str, int]]) -> None:
        ran.set()

    pusher = Registry()
    pusher.queue("q", driver=f"redis://127.0.0.1:6379/0?prefix={prefix}", workers=["w"])
    pusher.worker("w")
    pusher.job("ping")(ping)
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    try:
        # Pushed past the proxy: the worker's first connections through it may take longer
        # than its 1 s timeout on a loaded machine (its start-up tries again; a push would not).
        await pusher.push("q", "ping", {"n": 0})
        await asyncio.wait_for(ran.wait(), 10)
        ran.clear()
        await proxy.cut()
        with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
            away = time.monotonic() + OUTAGE
            while max(_waits(caplog.text), default=0.0) < MAX_BACKOFF:
                assert time.monotonic() < away, caplog.text
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # into the longest wait
        await proxy.start()
        back = time.monotonic()
        await pusher.push("q", "ping", {"n": 1})  # from another process's driver: no local wake-up
        await asyncio.wait_for(ran.wait(), 40)
        waited = time.monotonic() - back
        assert waited < 6.5, waited  # it was 10-25 s with a 30 s cap
        assert max(_waits(caplog.text)) <= MAX_BACKOFF, caplog.text  # 6.4 s with a 30 s cap
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await registry.close()
        await pusher.close()
        await proxy.close()
        await delete_prefix(prefix)


def _waits(log: str) -> list[float]:
    """The back-offs the worker logged, in seconds."""
    return [float(wait) for wait in re.findall(r"trying again in ([\d.]+)s", log)]
