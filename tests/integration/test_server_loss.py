"""A worker whose database server goes away for a second and comes back finishes every job.

The server is reached through a TCP proxy the test cuts and restores (tests/backends/proxy.py),
so the real server, shared with other tests, is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator
from types import ModuleType

import pytest

from conveyor import Job, Registry, Worker
from conveyor.drivers import driver_from_url
from tests.backends import eventually, require_service
from tests.backends.proxy import Proxy

pytestmark = pytest.mark.timeout(60)

#: kind -> (port of the real server, URL of the same database through a proxy on {port})
SERVERS = {
    "postgres": (5432, "postgresql://postgres@127.0.0.1:{port}/test"),
    "mysql": (3306, "mysql://root@127.0.0.1:{port}/test"),
}


@pytest.fixture(params=list(SERVERS))
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, ModuleType, str]]:
    """(kind, its tests.backends module, a table prefix of this test's own)."""
    backend = importlib.import_module(f"tests.backends.{request.param}")
    require_service(request.param, SERVERS[request.param][0], backend.START)
    prefix = backend.fresh_prefix()
    yield request.param, backend, prefix
    await backend.drop_tables(prefix)


async def test_worker_carries_on_after_the_server_is_lost_and_comes_back(
    server: tuple[str, ModuleType, str],
) -> None:
    kind, backend, prefix = server
    port, url = SERVERS[kind]
    proxy = Proxy(port)
    await proxy.start()
    registry = Registry()
    registry.queue("q", driver=f"{url.format(port=proxy.port)}?prefix={prefix}", workers=["w"])
    # A short lease: a reserve whose answer the cut lost leaves its jobs reserved by no one,
    # and they must come back (after the lease) for the run to finish.
    registry.worker("w", concurrency=4, poll_interval=0.05, lease=2.0)
    ran: list[int] = []
    halfway = asyncio.Event()

    @registry.job("count")
    async def count(job: Job[dict[str, int]]) -> None:
        ran.append(job.payload["n"])
        if len(ran) == 100:
            halfway.set()
        await asyncio.sleep(0.001)

    direct = driver_from_url(f"{backend.URL}?prefix={prefix}")
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    try:
        await registry.push_many("q", "count", [{"n": n} for n in range(300)])
        await asyncio.wait_for(halfway.wait(), 10)

        await proxy.cut()
        await asyncio.sleep(1.0)  # the server is "down" for a second
        await proxy.start()

        async def all_done() -> bool:
            return (await direct.counts(["q"]))["q"].succeeded == 300

        await eventually(all_done, 20)
        assert set(ran) == set(range(300))
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await registry.close()
        await direct.close()
        with contextlib.suppress(Exception):
            await proxy.cut()
