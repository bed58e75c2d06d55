"""What a worker says at start about the server settings that can lose pushed jobs: the
durability table's losses, and on Redis a maxmemory-policy that evicts any key. Redis is a
private server of the test's own (its settings are changed), never the shared one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conveyor import Job, Registry, Worker
from conveyor.drivers import driver_from_url
from conveyor.drivers.durability import FACTS, IN_PROCESS, KEPT, NO_SERVER, losses
from tests.backends.private import private_redis

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("row", FACTS, ids=lambda row: f"{row.kind}:{row.setting}")
def test_a_setting_that_loses_pushes_is_named_with_what_it_loses(row) -> None:
    fates = {row.server_crash, row.os_crash, row.power_cut} - {KEPT, NO_SERVER}
    found = losses(row.kind, row.setting)
    if not fates or row.setting == IN_PROCESS:
        assert found == []
        return
    [text] = found
    assert f"{row.kind} runs with {row.setting}" in text and "docs/reliability.md" in text
    assert all(f"({fate})" in text for fate in fates)


async def test_redis_names_a_setting_that_loses_or_evicts_jobs(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        driver = driver_from_url(server.url)
        admin = Redis.from_url(server.url, decode_responses=True)
        try:
            assert await driver.hazards() == []  # appendfsync always, noeviction
            await admin.config_set("maxmemory-policy", "volatile-lru")  # keys with a TTL only
            assert await driver.hazards() == []
            await admin.config_set("maxmemory-policy", "allkeys-lru")
            await admin.config_set("appendonly", "no")
            appendonly, evicts = await driver.hazards()
        finally:
            await admin.aclose()
            await driver.close()
    assert "redis runs with appendonly no" in appendonly
    assert "maxmemory-policy allkeys-lru" in evicts and "noeviction" in evicts


async def test_a_worker_logs_the_hazards_of_its_servers_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with private_redis(tmp_path) as server:
        admin = Redis.from_url(server.url, decode_responses=True)
        await admin.config_set("maxmemory-policy", "allkeys-lru")
        await admin.aclose()
        registry = Registry(default_driver=server.url)
        registry.queue("mail", workers=["main"])
        registry.queue("safe", workers=["main"], driver=f"sqlite:///{tmp_path / 'jobs.db'}")
        registry.worker("main")

        @registry.job("hello", queue="mail")
        async def hello(job: Job[dict[str, int]]) -> None: ...

        with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
            await Worker(registry, "main", burst=True).run()
        await registry.close()
    [warning] = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert warning.startswith("queue 'mail': redis runs with maxmemory-policy allkeys-lru")
    assert not [r for r in caplog.records if "sqlite" in r.getMessage()]
