"""Any bytes in any field of a stored job, on the backends that can hold them (SQLite keeps
any value in any column, a Redis job is a hash of byte strings): reserve never raises, hands
out the job beside a good one, names what it could not read, and the job can be failed by its
token. Property-based: hypothesis picks the field and the bytes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.drivers.base import Driver, Failure
from conveyor.drivers.redis import RedisDriver
from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.job import ErrorInfo
from tests.backends import NOT_UTF8, Blob, require_service, storage_of
from tests.backends import redis as redis_backend
from tests.backends import sqlite as sqlite_backend
from tests.contract.helpers import make_job

#: Every field a job's record holds that a reader must decode (not its key or queue).
SQLITE_FIELDS = [
    "name", "payload", "attempt", "max_attempts", "priority", "created_at", "timeout",
    "retry_delay", "unique_key", "meta", "error", "worker", "reservation", "finished_at",
]  # fmt: skip
SQLITE_NOT_NULL = {"name", "payload", "attempt", "max_attempts", "priority", "created_at", "meta"}
REDIS_FIELDS = [
    "id", "queue", "name", "payload", "state", "attempt", "max_attempts", "priority", "rank",
    "created_at", "available_at", "timeout", "retry_delay", "unique", "ukey", "meta", "error",
    "worker", "reservation", "finished_at", "rescued",
]  # fmt: skip

raw_values = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.none(),
)
EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def check_reserve_survives(driver: Driver, damage: object, field: str, raw: object) -> None:
    good, bad = make_job(meta={"m": 1}, unique="u"), make_job(timeout=1.0, retry_delay="{}")
    await driver.push_many([good, bad])
    await damage(bad.id, field, raw)  # type: ignore[operator]

    reserved = {job.id: job for job in await driver.reserve(["q"], 10, 30.0, "w")}

    assert good.id in reserved and reserved[good.id].unreadable == {}
    assert bad.id in reserved, (field, raw)
    token = reserved[bad.id].reservation or ""
    assert await driver.fail([Failure(bad.id, token, ErrorInfo("E", "damaged"))]) == {bad.id}
    got = await driver.get(bad.id)
    assert got is not None and got.state.value == "failed"


@EXAMPLES
@given(field=st.sampled_from(SQLITE_FIELDS), raw=raw_values)
def test_sqlite_reserve_survives_any_value_in_any_field(
    tmp_path: Path, field: str, raw: object
) -> None:
    if raw is None and field in SQLITE_NOT_NULL:
        raw = b""  # NOT NULL columns: an empty value of no type instead
    path = tmp_path / f"{uuid.uuid4().hex}.db"
    value = Blob(raw) if isinstance(raw, bytes) and field == "payload" else raw

    async def run() -> None:
        driver = SqliteDriver(path)
        try:
            await check_reserve_survives(
                driver, lambda i, f, r: sqlite_backend.damage(path, i, f, r), field, value
            )
        finally:
            await driver.close()

    asyncio.run(run())


@EXAMPLES
@given(field=st.sampled_from(REDIS_FIELDS), raw=raw_values)
def test_redis_reserve_survives_any_value_in_any_field(field: str, raw: object) -> None:
    require_service("redis", 6379, redis_backend.START)
    prefix = redis_backend.fresh_prefix()
    value = raw if raw is None or isinstance(raw, bytes | str) else str(raw)

    async def run() -> None:
        driver = RedisDriver(redis_backend.URL, prefix=prefix)
        try:
            await check_reserve_survives(
                driver, lambda i, f, r: redis_backend.damage(prefix, i, f, r), field, value
            )
        finally:
            await driver.close()
            await redis_backend.delete_prefix(prefix)

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["sqlite", "mysql"])
async def test_a_job_whose_id_is_not_text_is_held_back_and_reported(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No statement can name such a job to settle it: reserve leaves it out (it comes back after
    # its lease, reported again) rather than hand out a job nobody could finish.
    async with storage_of(kind, tmp_path) as storage:
        driver = await storage.open_driver()
        good, bad = make_job(), make_job()
        await driver.push_many([good, bad])
        await storage.damage(bad.id, "id", NOT_UTF8)

        reserved = await driver.reserve(["q"], 10, 30.0, "w")

        assert [job.id for job in reserved] == [good.id]
        assert "has an id that is not UTF-8 text" in caplog.text
        assert (await driver.counts(["q"]))["q"].reserved == 2
        await storage.close_all()
