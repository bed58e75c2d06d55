"""Connection limits of a test's own, without touching any server-wide setting: a PostgreSQL
role made with CONNECTION LIMIT n, a MariaDB user made WITH MAX_USER_CONNECTIONS n, each
dropped (its sessions ended first) when the test ends; and connections that use up such a
limit (`held`). A Redis with `--maxclients n` is a private one (tests/backends/private.py). Then the
registry, pushes and start-up the tests of each backend share.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, Worker
from conveyor.errors import BackendUnavailableError
from tests.backends import mysql, postgres, require_service

#: The password the limited roles and users are given: messages must never show it.
PASSWORD = "lim1t-s3cret"


#: Taken by each transaction that grants to or drops a role: two at once (tests side by side)
#: update schema public's privileges together, and one fails "tuple concurrently updated".
_ONE_AT_A_TIME = "SELECT pg_advisory_xact_lock(hashtext('conveyor tests: limited roles'))"


@contextlib.contextmanager
def postgres_role(limit: int) -> Iterator[str]:
    """A role of the test's own that may hold `limit` connections; yields its URL (with a
    password, which trust authentication here does not check) to the `test` database."""
    import psycopg
    from psycopg import sql

    require_service("postgres", 5432, postgres.START)
    role = f"conveyor_lim_{uuid.uuid4().hex[:10]}"
    name = sql.Identifier(role)
    with psycopg.connect(postgres.URL) as admin:  # one transaction, committed at the end
        admin.execute(_ONE_AT_A_TIME)
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(name, sql.Literal(limit))
        )
        admin.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(name))
    try:
        yield f"postgresql://{role}:{PASSWORD}@127.0.0.1:5432/test?application_name={role}"
    finally:
        with psycopg.connect(postgres.URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        with psycopg.connect(postgres.URL) as admin:
            admin.execute(_ONE_AT_A_TIME)
            admin.execute(sql.SQL("DROP OWNED BY {}").format(name))
            admin.execute(sql.SQL("DROP ROLE {}").format(name))


async def postgres_end_sessions(url: str) -> None:
    """End every session of the role of `url` (as an administrator would)."""
    import psycopg

    role = url.split("://", 1)[1].split(":", 1)[0]
    async with await psycopg.AsyncConnection.connect(postgres.URL, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        # pg_terminate_backend only signals: wait until they are gone.
        for _ in range(200):
            cursor = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == 0:
                return
            await admin.execute("SELECT pg_sleep(0.01)")
        raise AssertionError(f"the sessions of {role} never ended")


@asynccontextmanager
async def held_postgres(url: str, count: int | None) -> AsyncIterator[list[Any]]:
    """`count` connections of the role of `url` (None: every one its limit leaves), open
    until the block ends."""
    import psycopg

    conninfo = url.split("?", 1)[0]
    async with _held(
        lambda: psycopg.AsyncConnection.connect(conninfo), psycopg.OperationalError, count
    ) as conns:
        yield conns


@contextlib.contextmanager
def mysql_user(limit: int) -> Iterator[str]:
    """A user of the test's own that may hold `limit` connections (MAX_USER_CONNECTIONS);
    yields its URL, password included, to the `test` database."""
    import pymysql

    require_service("mysql", 3306, mysql.START)
    user = f"conveyor_lim_{uuid.uuid4().hex[:10]}"
    with (
        pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test") as admin,
        admin.cursor() as cursor,
    ):
        cursor.execute(
            f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS {limit:d}",
            (PASSWORD,),
        )
        cursor.execute(f"GRANT ALL ON test.* TO '{user}'@'%'")
    try:
        yield f"mysql://{user}:{PASSWORD}@127.0.0.1:3306/test"
    finally:
        with (
            pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test") as admin,
            admin.cursor() as cursor,
        ):
            cursor.execute("SELECT id FROM information_schema.PROCESSLIST WHERE user = %s", (user,))
            for (session,) in cursor.fetchall():
                with contextlib.suppress(pymysql.MySQLError):  # ended meanwhile
                    cursor.execute(f"KILL {int(session)}")
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


async def _kill_sessions(cursor: Any, user: str) -> None:
    await cursor.execute("SELECT id FROM information_schema.PROCESSLIST WHERE user = %s", (user,))
    for (session,) in await cursor.fetchall():
        with contextlib.suppress(Exception):  # ended meanwhile
            await cursor.execute(f"KILL {int(session)}")


async def mysql_end_sessions(url: str) -> None:
    """End every session of the user of `url` (KILL), and wait until they are gone."""
    import asyncmy

    user = url.split("://", 1)[1].split(":", 1)[0]
    admin = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test")
    try:
        async with admin.cursor() as cursor:
            await _kill_sessions(cursor, user)
            for _ in range(200):
                await cursor.execute(
                    "SELECT count(*) FROM information_schema.PROCESSLIST WHERE user = %s", (user,)
                )
                [(left,)] = await cursor.fetchall()
                if left == 0:
                    return
                await asyncio.sleep(0.01)
        raise AssertionError(f"the sessions of {user} never ended")
    finally:
        admin.close()


@asynccontextmanager
async def held_mysql(url: str, count: int | None) -> AsyncIterator[list[Any]]:
    """`count` connections of the user of `url` (None: every one its limit leaves), open until
    the block ends."""
    import asyncmy

    user = url.split("://", 1)[1].split(":", 1)[0]

    def connect() -> Awaitable[Any]:
        return asyncmy.connect(host="127.0.0.1", port=3306, user=user, password=PASSWORD, db="test")

    async with _held(connect, asyncmy.errors.OperationalError, count) as conns:
        yield conns


@asynccontextmanager
async def _held(
    connect: Callable[[], Awaitable[Any]], refused: type[Exception], count: int | None
) -> AsyncIterator[list[Any]]:
    """`count` connections `connect` makes (None: as many as the limit leaves, until one is
    `refused`), closed when the block ends (a client's close that returns an awaitable is
    awaited)."""
    conns: list[Any] = []
    try:
        while count is None or len(conns) < count:
            try:
                conns.append(await connect())
            except refused:
                if count is not None:
                    raise
                break
        yield conns
    finally:
        for conn in conns:
            if inspect.isawaitable(closed := conn.close()):
                await closed


def limited_registry(
    url: str, timeout: float = 1, *, prefix: str | None = None, **worker: Any
) -> Registry:
    """A registry with queue q (worker w, made with `worker`'s settings) on `url` with
    `timeout` (1 s where a call is to give up, more where all must pass under load) and table
    `prefix` if given, and a job "noop" that takes a millisecond."""
    options = {"timeout": f"{timeout:g}", **({"prefix": prefix} if prefix else {})}
    registry = Registry()
    driver = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(options)}"
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", **worker)

    @registry.job("noop")
    async def noop(job: Job[dict[str, Any]]) -> None:
        await asyncio.sleep(0.001)

    return registry


async def pushed_at_once(registry: Registry, count: int) -> None:
    """Push `count` jobs to q at once; each must be stored."""
    before = (await registry.queue_info())["q"].pending
    ids = await asyncio.gather(*(registry.push("q", "noop", {}) for _ in range(count)))
    assert len(set(ids)) == count
    assert (await registry.queue_info())["q"].pending == before + count


async def taken_once_freed(registry: Registry, others: list[Any]) -> None:
    """A push to q made while `others` hold every connection waits, and goes through once
    one of them is closed."""
    waiting = asyncio.create_task(registry.push("q", "noop", {}))
    await asyncio.sleep(0.2)
    others.pop().close()
    await asyncio.wait_for(waiting, 5)


async def refused_push(registry: Registry) -> str:
    """The message of the BackendUnavailableError a push to q fails with."""
    with pytest.raises(BackendUnavailableError) as raised:
        await registry.push("q", "noop", {})
    return str(raised.value)


async def started_refused(worker: Worker, caplog: pytest.LogCaptureFixture) -> asyncio.Task[Any]:
    """`worker` running, once its start-up was refused twice (caplog at WARNING for
    conveyor.worker); fails if it exits instead of waiting."""
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while "start-up attempt 2" not in caplog.text:
            assert not task.done(), "the worker exited instead of waiting"
            await asyncio.sleep(0.02)
    return task


async def starts_once_freed(
    pusher: Registry,
    registry: Registry,
    hold: contextlib.AbstractContextManager[Any] | AbstractAsyncContextManager[Any],
    caplog: pytest.LogCaptureFixture,
    *,
    pusher_holds: bool = False,
) -> None:
    """A job pushed by `pusher` (which then lets its connection go, unless `pusher_holds`);
    a burst worker of `registry` started while `hold` takes every connection left is refused
    (`started_refused`), then runs the job once `hold` lets them go. Closes both registries."""
    try:
        job_id = await pusher.push("q", "noop", {})
        if not pusher_holds:
            await pusher.close()
        async with contextlib.AsyncExitStack() as held:
            if isinstance(hold, AbstractAsyncContextManager):
                await held.enter_async_context(hold)
            else:
                held.enter_context(hold)
            task = await started_refused(Worker(registry, "w", burst=True), caplog)
        await asyncio.wait_for(task, 15)  # burst: it ran the job, then stopped
        await registry.close()
        info = await pusher.job_info(job_id)
        assert info is not None and info.state is JobState.SUCCEEDED
    finally:
        await registry.close()
        await pusher.close()


def first_attempt(caplog: pytest.LogCaptureFixture) -> str:
    """The log line of a worker's first failed start-up attempt."""
    return next(r.getMessage() for r in caplog.records if "start-up attempt" in r.getMessage())


async def run_every_job(registry: Registry, task: asyncio.Task[Any], count: int) -> None:
    """Push `count` jobs to q at once while `task` runs the worker; wait until every job of q
    succeeded, none failed."""
    ids = await asyncio.gather(*(registry.push("q", "noop", {}) for _ in range(count)))
    async with asyncio.timeout(20):
        while (counts := (await registry.queue_info())["q"]).pending + counts.reserved:
            assert not task.done(), "the worker stopped"
            await asyncio.sleep(0.05)
    assert counts.failed == 0
    for job_id in ids:
        info = await registry.job_info(job_id)
        assert info is not None and info.state.value == "succeeded", info


async def runs_while_others_hold_the_rest(
    registry: Registry,
    held: Callable[[str, int | None], AbstractAsyncContextManager[Any]],
    url: str,
) -> None:
    """A worker of `registry`, started while others hold one of `url`'s connections, runs
    every job on the connections it holds once they take every one left too (`held`)."""
    worker = Worker(registry, "w")
    async with held(url, 1):  # one taken by others before the worker starts
        task = asyncio.create_task(worker.run())
        try:
            await registry.push("q", "noop", {})
            async with held(url, None):  # and every one left, once it runs
                await run_every_job(registry, task, 60)
        finally:
            worker.stop(now=True)
            await asyncio.wait_for(task, 10)
            await registry.close()
