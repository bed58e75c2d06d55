"""A PostgreSQL primary lost and its standby promoted while a producer pushes and workers run:
a private primary and streaming standby (synchronous replication), each on a spare port, the
URL naming both with target_session_attrs=read-write, as for RDS Multi-AZ, Patroni or a
hand-made replica. Pushes during the gap fail with BackendUnavailableError; every push that
returned runs; the worker processes carry on against the new primary without a restart, and
an idle one is woken by a push there (its LISTEN moved too: its poll interval is an hour).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from conveyor import BackendUnavailableError, Job, Registry
from tests.backends.private import (
    PrivatePostgres,
    private_mariadb,
    private_postgres,
    private_postgres_pair,
)
from tests.backends.proxy import Proxy
from tests.integration.processes import Workers

pytestmark = pytest.mark.timeout(120)

PUSHES = 300
KILL_AFTER = 100  # pushes returned before the primary is killed
DOWN_FOR = 3.0  # seconds between the kill and the promotion: past the URL's timeout=2

APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import time

from conveyor import Job, Registry

registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"])
registry.queue("idle", workers=["idle"])
registry.worker("w", concurrency=20, poll_interval=0.2, lease=2.0)
registry.worker("idle", poll_interval=3600)


@registry.job("work", queue="q")
async def work(job: Job[dict[str, int]]) -> None:
    await asyncio.sleep(0.1)
    with open(f"out-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.payload['n']}} {{time.time()}}\\n")


@registry.job("wake", queue="idle")
async def wake(job: Job[dict[str, int]]) -> None:
    with open("woken.txt", "a") as out:
        out.write("woken\\n")
"""


def _url(*servers: PrivatePostgres, options: str = "target_session_attrs=read-write") -> str:
    hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    return f"postgresql://postgres@{hosts}/postgres?timeout=2&{options}"


def _registry(url: str) -> Registry:
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"])
    registry.queue("idle", workers=["idle"])
    registry.worker("w")
    registry.worker("idle")
    registry.job("work", queue="q")(_noop)
    registry.job("wake", queue="idle")(_noop)
    return registry


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handlers in this process, which pushes and inspects."""


def _runs(folder: Path) -> Counter[int]:
    """How many times each job ran."""
    return Counter(int(line.split()[0]) for line in _lines(folder))


def _lines(folder: Path) -> list[str]:
    """The workers' "n time" lines, one a run."""
    return [line for path in folder.glob("out-*.txt") for line in path.read_text().splitlines()]


async def _wait_for(what: str, done: object, workers: Workers, seconds: float = 40) -> None:
    """Poll `done` (an async callable) until true; fail naming `what` with the workers' logs."""
    deadline = time.monotonic() + seconds
    while not await done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}:\n{workers.logs()[-3000:]}"
        await asyncio.sleep(0.1)


async def test_a_promoted_standby_takes_over_and_no_returned_push_is_lost(
    tmp_path: Path,
) -> None:
    with private_postgres_pair(synchronous=True) as (primary, standby):
        url = _url(primary, standby)
        (tmp_path / "workapp.py").write_text(APP_SOURCE.format(url=url))
        registry = _registry(url)
        workers = Workers(tmp_path)
        try:
            await registry.migrate()
            busy, idle = workers.start(burst=False), workers.start("idle", burst=False)

            async def both_started() -> bool:
                return workers.logs().count(" started on queues ") == 2

            await _wait_for("the workers did not start", both_started, workers)
            pushed: list[int] = []
            refused: list[Exception] = []

            async def push_one_at_a_time() -> None:
                for n in range(PUSHES):
                    try:
                        await registry.push("q", "work", {"n": n})
                        pushed.append(n)
                    except Exception as error:  # each kept, and checked below
                        refused.append(error)
                        await asyncio.sleep(0.05)

            pusher = asyncio.create_task(push_one_at_a_time())
            while len(pushed) < KILL_AFTER:
                await asyncio.sleep(0.01)
            primary.kill()
            await asyncio.sleep(DOWN_FOR)
            await asyncio.to_thread(standby.promote)
            promoted = time.time()
            await pusher
            n = PUSHES
            # A push from a plain thread reaches the new primary too.
            await asyncio.to_thread(registry.blocking.push, "q", "work", {"n": n})
            pushed.append(n)

            async def all_ran() -> bool:
                return set(_runs(tmp_path)) >= set(pushed)

            await _wait_for("not every returned push ran", all_ran, workers)
            after = [float(line.split()[1]) for line in _lines(tmp_path)]
            carried_on = min(at for at in after if at > promoted) - promoted
            await registry.push("idle", "wake", {})

            async def woken() -> bool:
                return (tmp_path / "woken.txt").exists()

            await _wait_for("the idle worker was not woken on the new primary", woken, workers)
            assert busy.poll() is None and idle.poll() is None, workers.logs()[-3000:]
            assert "Traceback" not in workers.logs(), workers.logs()[-3000:]
            # The gap outlasts a call's timeout: pushes meanwhile fail, and say why.
            assert refused, "no push was refused while no server took writes"
            assert all(isinstance(error, BackendUnavailableError) for error in refused), refused
            runs = _runs(tmp_path)
            twice = sum(1 for count in runs.values() if count > 1)
            print(
                f"failover: {len(pushed)} pushes returned, {len(refused)} refused during the gap,"
                f" the first job after the promotion ran {carried_on:.1f} s after it,"
                f" {twice} ran twice, lost 0"
            )
        finally:
            workers.close()
            registry.blocking.close()
            await registry.close()
        # The old primary back, as a standby of the new one, and first in the URL.
        primary.follow(standby)
        primary.start()
        await _push_through(_url(primary, standby))
        with pytest.raises(BackendUnavailableError, match=_POINT_AT_THE_PRIMARY):
            await _push_through(_url(primary, standby, options="connect_timeout=2"))


#: What a write on a standby says to do.
_POINT_AT_THE_PRIMARY = (
    "read-only transaction.* standby .* point the URL at the primary .*"
    "target_session_attrs=read-write"
)


async def _push_through(url: str) -> None:
    """One push with a registry of its own on `url`."""
    registry = _registry(url)
    try:
        await registry.push("q", "work", {"n": -1})
    finally:
        await registry.close()


async def test_a_name_that_moves_to_the_new_primary_is_followed_by_the_pool(
    tmp_path: Path,
) -> None:
    """A DNS name or virtual IP that still led to the old primary, now a standby, when the
    pool connected, and moved on: here a proxy, first to the standby, then to the primary.
    Before, the pool kept its connection to the standby, healthy but read-only, and every
    push failed until the process restarted (DriverError: not even worth a retry)."""
    with private_postgres_pair(synchronous=True) as (primary, standby):
        writer = _registry(primary.url)
        await writer.migrate()
        await writer.close()
        await _replayed(standby)
        proxy = Proxy(standby.port)
        await proxy.start()
        registry = _registry(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres?timeout=3")
        try:
            with pytest.raises(BackendUnavailableError, match=_POINT_AT_THE_PRIMARY):
                await registry.push("q", "work", {"n": 0})
            proxy.upstream_port = primary.port  # the name moved
            for n in range(1, 3):
                await registry.push("q", "work", {"n": n})
            assert (await registry.queue_info())["q"].pending == 2
        finally:
            await registry.close()
            await proxy.close()


async def _replayed(standby: PrivatePostgres) -> None:
    """Wait until `standby` has replayed the primary's tables (made just before)."""
    deadline = time.monotonic() + 20
    query = "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%jobs'"
    while True:
        async with await psycopg.AsyncConnection.connect(standby.url) as conn:
            [(found,)] = await (await conn.execute(query)).fetchall()
        if found:
            return
        assert time.monotonic() < deadline, "the standby never replayed the tables"
        await asyncio.sleep(0.05)


async def test_a_mariadb_switchover_is_named_and_followed_by_the_pool(tmp_path: Path) -> None:
    """MariaDB's old primary made read-only (SET GLOBAL read_only=1, as a switchover does,
    its connections left open) while a name, here a proxy, moves on to the new primary.
    Before, pushes failed with the server's bare error 1290, a plain DriverError, and kept
    failing on the pooled connection to the old primary after the name had moved; a worker's
    settles there were written off as failures of their jobs."""
    with private_mariadb() as old, private_mariadb() as new:
        for server in (old, new):
            server.sql(
                "CREATE DATABASE jobs; CREATE USER app@'%' IDENTIFIED BY 'pw';"
                " GRANT ALL ON jobs.* TO app@'%';"
            )
            await _migrate(f"mysql://app:pw@127.0.0.1:{server.port}/jobs")
        proxy = Proxy(old.port)
        await proxy.start()
        url = f"mysql://app:pw@127.0.0.1:{proxy.port}/jobs?timeout=3"
        (tmp_path / "workapp.py").write_text(APP_SOURCE.format(url=url))
        registry = _registry(url)
        workers = Workers(tmp_path)
        try:
            worker = workers.start(burst=False)
            await registry.push("q", "work", {"n": 0})
            old.sql("SET GLOBAL read_only = 1")
            with pytest.raises(BackendUnavailableError, match=r"read_only is on.* the primary"):
                await registry.push("q", "work", {"n": 1})
            proxy.upstream_port = new.port  # the name moved
            await registry.push("q", "work", {"n": 2})

            async def ran() -> bool:
                return 2 in _runs(tmp_path)

            await _wait_for("the worker did not carry on on the new primary", ran, workers)
            assert worker.poll() is None, workers.logs()[-3000:]
            assert "Traceback" not in workers.logs(), workers.logs()[-3000:]
        finally:
            workers.close()
            await registry.close()
            await proxy.close()


async def _migrate(url: str) -> None:
    registry = _registry(url)
    try:
        await registry.migrate()
    finally:
        await registry.close()


async def test_a_silent_first_host_leaves_time_for_the_next_one() -> None:
    """The URL's first host down and silent, as a machine that died is (its packets dropped,
    nothing refused; here a proxy that swallows new connections): libpq waits connect_timeout
    on it before it tries the next. That wait is the call's timeout shared among the hosts.
    Before, it was the whole timeout on each host, and a new driver could not even open
    ("pool initialization incomplete"): its first pooled connection took longer than the
    pool waits for one."""
    with private_postgres() as server:
        silent = Proxy(server.port)
        await silent.start()
        silent.blackhole(new_for=3600)
        hosts = f"127.0.0.1:{silent.port},127.0.0.1:{server.port}"
        registry = _registry(f"postgresql://postgres@{hosts}/postgres?timeout=4")
        try:
            await registry.push("q", "work", {"n": 0})
            assert (await registry.queue_info())["q"].pending == 1
        finally:
            await registry.close()
            await silent.close()
