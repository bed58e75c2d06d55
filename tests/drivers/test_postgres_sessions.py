"""The PostgreSQL driver under session settings a DBA or the URL's options= may give its
connections (statement_timeout, default_transaction_read_only, ...), and with its connections
ended by the server between calls (pg_terminate_backend, idle_session_timeout).

Every setting here is given through the URL's options= (never ALTER ROLE or ALTER DATABASE on
the shared server), and only the test's own connections, told apart by an application_name
of their own, are terminated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from conveyor.drivers.sql.postgres import PostgresDriver
from tests.backends import Drivers, eventually, require_service
from tests.backends.postgres import START, URL, drop_tables, fresh_prefix
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def server() -> None:
    require_service("postgres", 5432, START)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A table prefix of this test's own; its tables are dropped when the test ends."""
    fresh = fresh_prefix()
    yield fresh
    await drop_tables(fresh)


@pytest.fixture
async def drivers(prefix: str) -> AsyncIterator[Drivers[PostgresDriver]]:
    made = Drivers(PostgresDriver, URL, prefix)
    yield made
    await made.close_all()


def with_options(*settings: str) -> str:
    """URL with libpq's options= setting each of `settings` ("name=value") for the session."""
    options = "%20".join(f"-c{setting.replace('=', '%3D')}" for setting in settings)
    return f"{URL}?options={options}"


async def fetch(statement: str, *args: object) -> list[tuple[object, ...]]:
    """Rows read on a connection of the test's own, in autocommit."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cursor = await conn.execute(statement, args or None)
        return await cursor.fetchall() if cursor.description else []


# -- statement_timeout ----------------------------------------------------------------------------


async def test_migration_waits_for_another_past_the_roles_statement_timeout(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    # A role's statement_timeout (set here through options=) ended the wait for the migration
    # lock that another process held: the driver failed to open, with a message blaming the
    # user's rights on the schema.
    driver = drivers.make(with_options("statement_timeout=300"))
    async with await psycopg.AsyncConnection.connect(URL) as holder:
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"conveyor migrate {prefix}",)
        )
        opening = asyncio.create_task(driver.open())

        async def waiting() -> bool:
            blocked = "SELECT 1 FROM pg_stat_activity WHERE %s = ANY (pg_blocking_pids(pid))"
            return bool(await fetch(blocked, holder.info.backend_pid))

        await eventually(waiting)
        await asyncio.sleep(0.6)  # twice the statement_timeout, the lock still held
        assert not opening.done()
        await holder.rollback()
    await opening
    await driver.push(make_job())
    assert (await driver.counts(["q"]))["q"].pending == 1
