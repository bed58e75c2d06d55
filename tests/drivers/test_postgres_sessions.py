"""The PostgreSQL driver under session settings a DBA or the URL's options= may give its
connections (statement_timeout, default_transaction_read_only, ...), and with its connections
ended by the server between calls (pg_terminate_backend, idle_session_timeout).

Every setting here is given through the URL's options= (never ALTER ROLE or ALTER DATABASE on
the shared server), and only the test's own connections, told apart by an application_name
of their own, are terminated.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import psycopg
import pytest

from conveyor.drivers.sql.postgres import COPY_FROM, PostgresDriver
from conveyor.drivers.sql.queries import Query
from conveyor.errors import ConfigError, DriverError
from conveyor.job import ErrorInfo
from tests.backends import Drivers, eventually
from tests.backends.postgres import URL
from tests.contract.helpers import failure_of, make_job, reservation
from tests.drivers import test_postgres

pytestmark = pytest.mark.timeout(30)

# The fixtures of the driver's main tests: the server required, a prefix and drivers on it.
server = test_postgres.server
prefix = test_postgres.prefix
drivers = test_postgres.drivers


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


# -- connections the server ended between calls -----------------------------------------------


def named_url() -> tuple[str, str]:
    """URL whose connections carry an application_name of their own, and that name."""
    name = f"qa-{uuid.uuid4().hex[:12]}"
    return f"{URL}?application_name={name}", name


async def end_connections(name: str) -> int:
    """Terminate the connections named `name` (the test's own), and wait until they are gone
    (those: the pool may have opened another since, growing in the background)."""
    ended = await fetch(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )

    async def gone() -> bool:
        left = "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)"
        return not await fetch(left, [pid for pid, _ in ended])

    await eventually(gone)
    return len(ended)


async def test_pooled_connections_ended_between_calls_are_replaced_before_a_call_fails(
    drivers: Drivers[PostgresDriver],
) -> None:
    # Before, the first call after pg_terminate_backend (a DBA, a failover, a role's
    # idle_session_timeout) of the idle pooled connections failed with BackendUnavailableError:
    # a connection used less than IDLE_CHECK seconds before was handed out unchecked.
    url, name = named_url()
    driver = await drivers.open(url)
    await asyncio.gather(*(driver.push(make_job()) for _ in range(4)))  # several pooled
    assert await end_connections(name) >= 1

    await driver.push(make_job())
    assert (await driver.counts(["q"]))["q"].pending == 5


async def test_a_thread_connection_ended_between_pushes_is_replaced_before_a_push_fails(
    drivers: Drivers[PostgresDriver],
) -> None:
    url, name = named_url()
    driver = await drivers.open(url)
    await asyncio.to_thread(driver.push_in_thread, make_job())
    assert await end_connections(name) >= 2  # the pooled one and the thread's

    job = make_job()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert (await driver.counts(["q"]))["q"].pending == 2


async def test_pushes_go_on_under_an_idle_session_timeout_shorter_than_the_idle_check(
    drivers: Drivers[PostgresDriver],
) -> None:
    # idle_session_timeout (PostgreSQL 14+), set on a role or database, ends every connection
    # idle longer: each push after such a pause failed.
    if int(str((await fetch("SHOW server_version_num"))[0][0])) < 140000:
        pytest.skip("idle_session_timeout is PostgreSQL 14's")
    driver = await drivers.open(with_options("idle_session_timeout=300"))
    for _ in range(2):
        await asyncio.sleep(0.8)  # past the timeout, well within IDLE_CHECK
        await driver.push(make_job())
    assert (await driver.counts(["q"]))["q"].pending == 2


# -- a read-only session ------------------------------------------------------------------------


async def test_writes_on_a_read_only_session_fail_saying_to_point_the_url_at_the_primary(
    drivers: Drivers[PostgresDriver],
) -> None:
    # A standby, or default_transaction_read_only for the role: before, only the server's
    # "cannot execute INSERT in a read-only transaction", with nothing said of the fix.
    writer = await drivers.open()  # the tables, made by a driver that may write
    read_only = await drivers.open(with_options("default_transaction_read_only=on"))
    fix = "standby .* point the URL at the primary .*target_session_attrs=read-write"
    with pytest.raises(DriverError, match=f"push failed on .*read-only transaction.*{fix}"):
        await read_only.push(make_job())
    with pytest.raises(DriverError, match=f"reserve failed on .*{fix}"):
        await read_only.reserve(["q"], 1, 30.0, "w")
    with pytest.raises(DriverError, match=fix):
        await asyncio.to_thread(read_only.push_in_thread, make_job())
    assert (await writer.counts(["q"]))["q"].pending == 0


# -- extra_float_digits ---------------------------------------------------------------------------


async def test_times_keep_their_precision_whatever_extra_float_digits_the_session_has(
    drivers: Drivers[PostgresDriver],
) -> None:
    # At -15 (5 significant digits at -10) the server wrote every float8 rounded: a push_many
    # COPY, which stores the clock it reads, made jobs due years from now.
    driver = await drivers.open(with_options("extra_float_digits=-10"))
    before = time.time()
    await driver.push_many([make_job() for _ in range(COPY_FROM)])
    [job] = await driver.reserve(["q"], 1, 30.0, "w")
    assert before - 5 < job.created_at < time.time() + 5
    assert job.lease_expires_at is not None
    assert 25 < job.lease_expires_at - job.created_at < 35


# -- default_transaction_isolation ----------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["serializable", "repeatable%5C%20read"])
async def test_workers_meet_without_serialization_failures_whatever_the_default_isolation(
    drivers: Drivers[PostgresDriver], isolation: str
) -> None:
    # A database whose default_transaction_isolation is stricter than READ COMMITTED (an app's
    # choice) failed reserves and settles with "could not serialize access" whenever workers
    # met on a row; each failure cost a worker its back-off.
    url = f"{URL}?options=-cdefault_transaction_isolation%3D{isolation}"
    workers = [await drivers.open(url) for _ in range(4)]
    pushed = [make_job() for _ in range(200)]
    await workers[0].push_many(pushed)

    async def work(driver: PostgresDriver) -> list[str]:
        taken: list[str] = []
        while jobs := await driver.reserve(["q"], 5, 30.0, "w"):
            await driver.ack([reservation(job) for job in jobs])
            taken += [job.id for job in jobs]
        return taken

    taken = [job_id for ids in await asyncio.gather(*map(work, workers)) for job_id in ids]
    assert sorted(taken) == sorted(job.id for job in pushed)


# -- client_encoding ------------------------------------------------------------------------------

#: Text LATIN1 cannot hold.
ASTRAL = json.dumps({"x": "é 😀 𝄞"}, ensure_ascii=False)


async def test_text_round_trips_whatever_client_encoding_the_url_or_environment_gives(
    drivers: Drivers[PostgresDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under LATIN1 (the URL's client_encoding, PGCLIENTENCODING, or a LATIN1 database's
    # default) psycopg failed to encode an emoji: a raw UnicodeEncodeError from every push, and
    # a handler's error message holding one failed its settle three times.
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    driver = await drivers.open(f"{URL}?client_encoding=latin1")
    pushed = [make_job(payload=ASTRAL, meta={"m": "😀"})]
    await driver.push(pushed[0])
    pushed += [make_job(payload=ASTRAL) for _ in range(COPY_FROM)]
    await driver.push_many(pushed[1:])
    pushed.append(make_job(payload=ASTRAL))
    assert await asyncio.to_thread(driver.push_in_thread, pushed[-1]) == pushed[-1].id

    jobs = await driver.reserve(["q"], len(pushed) + 1, 30.0, "w")
    assert sorted((job.id, job.payload) for job in jobs) == sorted(
        (job.id, job.payload) for job in pushed
    )
    assert next(job for job in jobs if job.id == pushed[0].id).meta == {"m": "😀"}
    await driver.fail([failure_of(jobs[0], ErrorInfo("ValueError", "boom 😀"))])
    info = await driver.get(jobs[0].id)
    assert info is not None and info.error is not None
    assert info.error.message == "boom 😀"


async def test_push_on_a_connection_whose_encoding_cannot_hold_the_job_says_to_use_utf8(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    latin1 = f"{URL}?client_encoding=latin1"
    async with await psycopg.AsyncConnection.connect(latin1) as conn:
        with pytest.raises(ConfigError, match=r"connection= sends text as latin-1.*'😀'.*UTF8"):
            await driver.push(make_job(payload=ASTRAL), connection=conn)
        await conn.rollback()
    assert (await driver.counts(["q"]))["q"].pending == 0


# -- search_path ----------------------------------------------------------------------------------


async def test_a_search_path_naming_no_schema_that_exists_fails_saying_so(
    drivers: Drivers[PostgresDriver],
) -> None:
    # Before: the server's "no schema has been selected to create in", followed only by the
    # advice for a user that may not change the schema.
    missing = f"qa_missing_{uuid.uuid4().hex[:8]}"
    driver = drivers.make(with_options(f"search_path={missing}"))
    with pytest.raises(DriverError, match=r"No schema of the search_path exists.*CREATE SCHEMA"):
        await driver.open()


# -- application_name -----------------------------------------------------------------------------

APPLICATION_NAME = Query(
    "application_name", "", "SELECT current_setting('application_name') AS name"
)


async def application_name(driver: PostgresDriver) -> str:
    """The application_name of one of the driver's pooled connections."""
    [row] = await (await driver._ready()).fetch(APPLICATION_NAME, {})
    return str(row["name"])


async def test_pgappname_names_the_drivers_connections_and_conveyor_does_without_it(
    drivers: Drivers[PostgresDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, conveyor's own name was given as a parameter, which beats PGAPPNAME: a process
    # named by its environment showed as "conveyor" in pg_stat_activity all the same.
    monkeypatch.delenv("PGAPPNAME", raising=False)
    assert await application_name(await drivers.open()) == "conveyor"
    name = f"qa-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("PGAPPNAME", name)
    driver = await drivers.open()
    assert await application_name(driver) == name
    await driver.reserve(["q"], 1, 30.0, "w")  # the LISTEN connection
    await asyncio.to_thread(driver.push_in_thread, make_job())  # a thread's connection
    named = "SELECT query FROM pg_stat_activity WHERE application_name = %s"
    queries = [str(query) for (query,) in await fetch(named, name)]
    assert len(queries) >= 3  # pooled ones, and those two
    assert sum(query.startswith("LISTEN") for query in queries) == 1
    assert await application_name(await drivers.open(f"{URL}?application_name=mine")) == "mine"
