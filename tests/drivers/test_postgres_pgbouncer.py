"""The PostgreSQL driver behind PgBouncer, in session and in transaction pooling mode.

Each test gets a PgBouncer of its own in each mode, started on a free port of 127.0.0.1 in
front of the local server's `test` database, and stopped afterwards. Skipped, saying how to
install it, where `pgbouncer` is not installed (under CI=true, where the Makefile installs
it, that fails instead).

In transaction mode each transaction may run on another server connection, shared with other
clients: the driver's URL then says so (`pool_mode=transaction`), and a worker polls instead of
LISTENing; the NOTIFY of a push through that pool still wakes a worker connected elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor.drivers.sql.postgres import COPY_FROM, PostgresDriver
from conveyor.errors import ConfigError, DriverError
from conveyor.job import JobState
from tests.backends import Drivers
from tests.backends.postgres import PORT, URL
from tests.contract.helpers import make_job, reservation
from tests.drivers import test_postgres
from tests.drivers.test_postgres import idle_wait

pytestmark = pytest.mark.timeout(30)

# The fixtures of the driver's main tests: the server required, a prefix of the test's own.
server = test_postgres.server
prefix = test_postgres.prefix

#: Where Debian puts the program, off the PATH of a user who is not root.
_SBIN = "/usr/sbin/pgbouncer"

#: More than psycopg's prepare_threshold (5): a statement run this often gets prepared.
_OFTEN = 12

_CONFIG = """\
[databases]
test = host=127.0.0.1 port={server_port} dbname=test user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = {mode}
default_pool_size = 4
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
"""


def _program() -> str:
    """The pgbouncer program; skip (under CI=true: fail) naming how to install it."""
    found = shutil.which("pgbouncer") or (_SBIN if os.access(_SBIN, os.X_OK) else None)
    if found is None:
        message = "pgbouncer is not installed: apt-get install pgbouncer (as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _, errors = process.communicate(timeout=5)
                pytest.fail(f"pgbouncer did not start: {errors.decode(errors='replace')}")
            time.sleep(0.05)


@pytest.fixture(params=["session", "transaction"])
def bouncer(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL through a PgBouncer of this test's own, in each pool mode in turn (with
    `pool_mode=transaction` in transaction mode)."""
    program = _program()
    mode: str = request.param
    port = _free_port()
    server_port = PORT
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "pgbouncer.ini"
        config.write_text(_CONFIG.format(port=port, server_port=server_port, mode=mode))
        os.chmod(folder, 0o755)  # pgbouncer refuses to run as root: it runs as nobody then
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        process = subprocess.Popen(
            [program, *user, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _wait_listening(process, port)
            options = "?pool_mode=transaction" if mode == "transaction" else ""
            yield f"postgresql://postgres@127.0.0.1:{port}/test{options}"
        finally:
            process.terminate()
            process.communicate(timeout=10)


@pytest.fixture
async def drivers(bouncer: str, prefix: str) -> AsyncIterator[Drivers[PostgresDriver]]:
    made = Drivers(_from_url, bouncer, prefix)
    yield made
    await made.close_all()


def _from_url(url: str, *, prefix: str) -> PostgresDriver:
    """A driver for `url` (which may hold conveyor's options) on tables starting with `prefix`."""
    return PostgresDriver.from_url(f"{url}{'&' if '?' in url else '?'}prefix={prefix}")


def _plain(url: str) -> str:
    """`url` without conveyor's own options, for a psycopg connection of the test's own."""
    return url.partition("?")[0]


async def test_migrations_run_on_a_fresh_prefix(drivers: Drivers[PostgresDriver]) -> None:
    first, second = drivers.make(), drivers.make()
    await asyncio.gather(first.open(), second.open())
    await first.push(make_job())
    assert (await second.counts(["q"]))["q"].pending == 1


async def test_push_reserve_and_ack_run_past_psycopgs_prepare_threshold(
    drivers: Drivers[PostgresDriver],
) -> None:
    pushing, working = await drivers.open(), await drivers.open()
    for _ in range(_OFTEN):
        job = make_job()
        await pushing.push(job)
        [reserved] = await working.reserve(["q"], 1, 30.0, "w")
        assert reserved.id == job.id
        await working.ack([reservation(reserved)])
        assert (await pushing.get(job.id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]


async def test_pushes_from_a_plain_thread_run_past_psycopgs_prepare_threshold(
    drivers: Drivers[PostgresDriver],
) -> None:
    first, second = await drivers.open(), await drivers.open()
    for _ in range(_OFTEN):
        for driver in (first, second):  # two clients, which a pooler may give one server
            job = make_job()
            assert await asyncio.to_thread(driver.push_in_thread, job) == job.id
    assert (await first.counts(["q"]))["q"].pending == 2 * _OFTEN


async def test_push_many_copies_a_batch_in_and_skips_ids_stored_already(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    jobs = [make_job() for _ in range(COPY_FROM)]
    assert await driver.push_many(jobs) == [job.id for job in jobs]
    more = [make_job() for _ in range(COPY_FROM)]
    await driver.push_many(jobs[:10] + more)  # COPY fails on the ids: the staging table's way
    assert (await driver.counts(["q"]))["q"].pending == 2 * COPY_FROM


async def test_push_in_the_callers_transaction_exists_only_once_committed(
    drivers: Drivers[PostgresDriver], bouncer: str
) -> None:
    driver = await drivers.open()
    async with await psycopg.AsyncConnection.connect(
        _plain(bouncer), prepare_threshold=None
    ) as conn:
        for _ in range(_OFTEN):
            async with conn.transaction():
                kept = make_job()
                await driver.push(kept, connection=conn)
            async with conn.transaction(force_rollback=True):
                await driver.push(make_job(), connection=conn)
            assert await driver.get(kept.id) is not None
    assert (await driver.counts(["q"]))["q"].pending == _OFTEN


async def test_a_push_through_the_pool_wakes_an_idle_worker_on_the_server(
    drivers: Drivers[PostgresDriver],
) -> None:
    # Session mode: the worker LISTENs through the pool too. Transaction mode: it connects to
    # the server itself (LISTEN is a session's), and a push's NOTIFY, sent with its commit,
    # passes through the pool.
    worker = await drivers.open() if "transaction" not in drivers.url else await drivers.open(URL)
    pushing = await drivers.open()
    for _ in range(3):
        waiter = await idle_wait(worker, ["q"], 20.0)
        await pushing.push(make_job())
        await asyncio.wait_for(waiter, 10.0)
        assert len(await worker.reserve(["q"], 10, 30.0, "w")) == 1


async def test_a_worker_in_transaction_mode_polls_without_listening(
    drivers: Drivers[PostgresDriver],
) -> None:
    if "transaction" not in drivers.url:
        pytest.skip("session mode LISTENs")
    worker, pushing = await drivers.open(), await drivers.open()
    assert await worker.reserve(["q"], 1, 30.0, "w") == []
    await pushing.push(make_job())
    await worker.wait(["q"], 0.2)  # no notification can come: the wait ends with its timeout
    assert len(await worker.reserve(["q"], 1, 30.0, "w")) == 1
    assert not worker._listener.listening


async def test_without_pool_mode_a_transaction_pool_is_named_in_the_error(
    drivers: Drivers[PostgresDriver],
) -> None:
    if "transaction" not in drivers.url:
        pytest.skip("the error of a transaction pool")
    plain = [await drivers.open(_plain(drivers.url)) for _ in range(2)]
    with pytest.raises(DriverError, match="add pool_mode=transaction to the URL"):
        for _ in range(_OFTEN):
            for driver in plain:
                await driver.counts(["q"])
                await driver.push(make_job())


async def test_the_drivers_settings_never_reach_other_clients_of_a_transaction_pool(
    drivers: Drivers[PostgresDriver], bouncer: str
) -> None:
    if "transaction" not in drivers.url:
        pytest.skip("a session pool keeps each setting with its session")
    driver = await drivers.open()
    await asyncio.gather(*(driver.counts(["q"]) for _ in range(8)))  # more pooled connections
    async with await psycopg.AsyncConnection.connect(_plain(bouncer)) as conn:
        for _ in range(4):  # the pooler's server connections, in turn
            cursor = await conn.execute("SELECT current_setting('lock_timeout')")
            assert await cursor.fetchone() == ("0",)
            await conn.commit()


def test_a_pool_mode_other_than_session_or_transaction_is_refused() -> None:
    with pytest.raises(ConfigError, match="pool_mode must be session or transaction, not 'stat"):
        PostgresDriver.from_url(f"{URL}?pool_mode=statement")
