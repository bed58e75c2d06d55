"""RapidGo's environment names keep the seed's meaning: QUEUE_DRIVER (database, redis,
memory, sync, amqp), QUEUE_DEFAULT, QUEUE_MAX_ATTEMPTS (total attempts), QUEUE_RETRY_DELAY and
QUEUE_TIMEOUT (seconds); QUEUE_DRIVER=database is CONVEYOR_DATABASE_URL or DATABASE_URL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import ConfigError, Fixed, Job, JobState, Registry
from conveyor import retry as retry_policy
from conveyor.config import effective
from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.handle import AsyncJobHandle
from tests.backends import postgres as pg
from tests.backends import require_service


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test in its own working directory, with no conveyor or seed variable set."""
    monkeypatch.chdir(tmp_path)
    for name in [*os.environ]:
        if name.startswith(("CONVEYOR_", "QUEUE_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    yield


def seed_app() -> tuple[Registry, AsyncJobHandle[dict[str, Any]], list[int]]:
    """RapidGo's style: handlers registered, no queue or worker declared. The handler fails
    while the payload's "fail" is above the attempt number."""
    registry = Registry()
    attempts: list[int] = []

    @registry.job("mail.send")
    async def send(job: Job[dict[str, Any]]) -> None:
        attempts.append(job.attempt)
        if job.payload.get("sleep"):
            await asyncio.sleep(job.payload["sleep"])
        if job.payload.get("fail", 0) >= job.attempt:
            raise RuntimeError(f"attempt {job.attempt} fails")

    return registry, send, attempts


def setting(registry: Registry, scope: str, name: str, key: str) -> tuple[str, str]:
    (found,) = [s for s in effective(registry) if (s.scope, s.name, s.key) == (scope, name, key)]
    return found.value, found.source


# -- QUEUE_DRIVER ---------------------------------------------------------------------------


async def test_queue_driver_sync_runs_each_job_inside_push(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "sync")
    registry, send, attempts = seed_app()
    job_id = await send.push({})
    assert attempts == [1]
    info = await registry.job_info(job_id)
    assert info is not None and info.state == JobState.SUCCEEDED
    assert setting(registry, "conveyor", "", "driver") == ("sync", "env QUEUE_DRIVER")
    await registry.close()


async def test_queue_driver_memory_keeps_jobs_in_this_process_for_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "memory")
    registry, send, attempts = seed_app()
    job_id = await send.push({})
    assert attempts == []
    assert (await registry.driver_of("default")).kind == "memory"
    info = await registry.job_info(job_id)
    assert info is not None and info.state == JobState.PENDING
    await registry.close()


def test_queue_driver_redis_is_the_redis_driver_at_conveyor_redis_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "redis")
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://127.0.0.1:6379/3")
    registry, _, _ = seed_app()
    registry.freeze()
    driver = registry._drivers[registry.queues["default"].driver]
    assert (driver.kind, driver.url) == ("redis", "redis://127.0.0.1:6379/3")  # type: ignore[attr-defined]


async def test_queue_driver_database_stores_jobs_in_the_database_url_s_sql_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_service("postgres", 5432, pg.START)
    prefix = pg.fresh_prefix()
    monkeypatch.setenv("QUEUE_DRIVER", "database")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/test?prefix={prefix}")
    registry, send, _ = seed_app()
    try:
        job_id = await send.push({"n": 1})
        assert (await registry.driver_of("default")).kind == "postgres"
        info = await registry.job_info(job_id)
        assert info is not None and (info.queue, info.state) == ("default", JobState.PENDING)
        assert setting(registry, "driver", "database", "url") == (
            f"postgresql://postgres@127.0.0.1:5432/test?prefix={prefix}",
            "env DATABASE_URL",
        )
    finally:
        await registry.close()
        await pg.drop_tables(prefix)


def test_conveyor_database_url_wins_and_a_sqlalchemy_dialect_suffix_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "database")
    monkeypatch.setenv("DATABASE_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
    registry, _, _ = seed_app()
    registry.freeze()
    assert registry._drivers["database"].kind == "mysql"
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    registry, _, _ = seed_app()
    registry.freeze()
    driver = registry._drivers["database"]
    assert isinstance(driver, SqliteDriver) and driver.path == str(tmp_path / "jobs.db")


def test_queue_driver_database_without_a_url_is_the_embedded_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "database")
    registry, _, _ = seed_app()
    registry.freeze()
    driver = registry._drivers["database"]
    assert isinstance(driver, SqliteDriver) and driver.path == str(tmp_path / "conveyor.db")
    assert setting(registry, "driver", "database", "url") == ("sqlite", "default")


def test_a_database_url_that_is_not_sql_is_refused_with_its_password_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "database")
    monkeypatch.setenv("DATABASE_URL", "redis://:hunter2@127.0.0.1:6379/0")
    registry, _, _ = seed_app()
    with pytest.raises(ConfigError) as caught:
        registry.freeze()
    assert "DATABASE_URL='redis://:***@127.0.0.1:6379/0' is not an SQL database URL" in str(
        caught.value
    )
    assert "hunter2" not in str(caught.value)


def test_queue_driver_amqp_is_the_amqp_driver_at_conveyor_amqp_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "amqp")
    monkeypatch.setenv("CONVEYOR_AMQP_URL", "amqp://u:pw@127.0.0.1:5673/jobs")
    registry, _, _ = seed_app()
    registry.freeze()
    driver = registry._drivers[registry.queues["default"].driver]
    assert (driver.kind, driver.url) == ("amqp", "amqp://u:pw@127.0.0.1:5673/jobs")  # type: ignore[attr-defined]


def test_queue_driver_with_another_word_lists_the_seed_s_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "postgresql://db/app")
    registry, _, _ = seed_app()
    with pytest.raises(ConfigError, match="expected database, redis, memory, sync or amqp"):
        registry.freeze()


# -- QUEUE_DEFAULT, QUEUE_MAX_ATTEMPTS, QUEUE_RETRY_DELAY, QUEUE_TIMEOUT ------------------------


async def test_queue_default_names_the_implicit_queue_its_worker_and_where_handles_push(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "memory")
    monkeypatch.setenv("QUEUE_DEFAULT", "emails")
    registry, send, _ = seed_app()
    job_id = await send.push({})
    assert list(registry.queues) == ["emails"]
    assert registry.queues["emails"].workers == ("emails",)
    assert registry.default_worker() == "emails"
    info = await registry.job_info(job_id)
    assert info is not None and info.queue == "emails"
    await registry.close()


@pytest.mark.parametrize(
    ("total", "attempts", "state"), [(1, [1], "failed"), (2, [1, 2], "succeeded")]
)
async def test_queue_max_attempts_is_the_total_number_of_attempts(
    monkeypatch: pytest.MonkeyPatch, total: int, attempts: list[int], state: str
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "sync")
    monkeypatch.setenv("QUEUE_MAX_ATTEMPTS", str(total))
    registry, send, ran = seed_app()
    job_id = await send.push({"fail": 1})  # the first attempt fails
    info = await registry.job_info(job_id)
    assert info is not None
    assert (ran, info.max_attempts, info.state) == (attempts, total, state)
    assert registry.queues["default"].options.retry == total - 1
    await registry.close()


@pytest.mark.parametrize("value", ["0", "-1", "three"])
def test_queue_max_attempts_below_one_or_not_a_number_is_an_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("QUEUE_MAX_ATTEMPTS", value)
    registry, _, _ = seed_app()
    with pytest.raises(ConfigError, match=f"QUEUE_MAX_ATTEMPTS='{value}': expected"):
        registry.freeze()


async def test_queue_retry_delay_is_the_seconds_a_failed_job_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "memory")
    monkeypatch.setenv("QUEUE_RETRY_DELAY", "30")
    registry, send, _ = seed_app()
    info = await registry.job_info(await send.push({}))
    assert info is not None
    assert retry_policy.from_json(info.retry_delay) == Fixed(30.0)
    assert setting(registry, "queue", "default", "retry_delay") == ("30s", "env QUEUE_RETRY_DELAY")
    await registry.close()


async def test_queue_timeout_is_the_seconds_an_attempt_may_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "sync")
    monkeypatch.setenv("QUEUE_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("QUEUE_TIMEOUT", "0.2")
    registry, send, _ = seed_app()
    info = await registry.job_info(await send.push({"sleep": 30}))
    assert info is not None and info.error is not None
    assert (info.timeout, info.state, info.error.type) == (
        0.2,
        "failed",
        "conveyor.errors.JobTimeoutError",
    )
    await registry.close()


def test_conveyor_s_own_names_win_over_the_seed_s_when_both_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_TIMEOUT", "60")
    monkeypatch.setenv("CONVEYOR_TIMEOUT", "30")
    monkeypatch.setenv("QUEUE_DRIVER", "sync")
    monkeypatch.setenv("CONVEYOR_DRIVER", "memory://")
    registry, _, _ = seed_app()
    registry.freeze()
    assert registry.queues["default"].options.timeout == 30.0
    assert registry.default_driver == "memory://"
    assert setting(registry, "conveyor", "", "timeout") == ("30s", "env CONVEYOR_TIMEOUT")
