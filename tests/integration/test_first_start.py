"""A process's first start on a backend, as a user meets it: a script that pushes a job under
`asyncio.run` and ends, without closing the registry, exits (on PostgreSQL it could hang for
good once its loop ended while the pool was still making a second connection).

Each test has a table prefix of its own, dropped after.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from conveyor.drivers.sql.postgres import PostgresDriver
from tests.backends import require_service
from tests.backends.postgres import START, drop_tables, fresh_prefix
from tests.backends.proxy import Proxy
from tests.integration.processes import PYTHONPATH

pytestmark = pytest.mark.timeout(60)

#: A script that pushes once under asyncio.run and never closes the registry.
PUSH_ONCE = """
import asyncio
from typing import Any
from conveyor import Job, Registry

registry = Registry(default_driver={url!r})

@registry.job("mail.send")
async def send(job: Job[dict[str, Any]]) -> None:
    pass

asyncio.run(send.push({{}}))
print("pushed")
"""


async def test_a_script_pushing_once_without_closing_exits_on_postgres(tmp_path: Path) -> None:
    """The first open used to start the pool without waiting for its first connection, so the
    open's own statements found none free and the pool grew, making a second connection in
    the background. When the script's loop ended with that connection still on its way,
    asyncio.run cancelled the pool's task making it, which psycopg_pool catches and goes on:
    the process never exited. Here the server takes two connections (the driver's probe
    and the pool's first) and never answers a third, so a process that made one hangs."""
    require_service("postgres", 5432, START)
    prefix = fresh_prefix()
    proxy = Proxy(5432)
    await proxy.start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?prefix={prefix}"
    try:
        driver = PostgresDriver.from_url(url)
        await driver.migrate()  # the schema is there: the script's open only reads its version
        await driver.close()
        script = tmp_path / "push_once.py"
        script.write_text(PUSH_ONCE.format(url=url))
        proxy.accepted, proxy.admit = 0, 2
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail("the script pushed, but its process had not exited 20 s later")
        assert process.returncode == 0, output.decode()
        assert output.decode().strip().endswith("pushed")
        assert proxy.accepted == 2  # the probe and the pool's first: no other was made
    finally:
        await proxy.close()
        await drop_tables(prefix)


async def test_an_open_cancelled_while_waiting_for_the_first_connection_leaves_no_pool() -> None:
    """Cancelled while the pool waits for its first connection (a worker stopped as it
    starts), the open closes that pool: left open, its tasks went on for good (and the
    loop's end could hang on them as above)."""
    require_service("postgres", 5432, START)
    proxy = Proxy(5432)
    await proxy.start()
    proxy.admit = 1  # the probe only: the pool's first connection is never answered
    try:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?timeout=2"
        opening = asyncio.ensure_future(PostgresDriver.from_url(url).open())
        while proxy.accepted < 2:  # the pool is connecting
            await asyncio.sleep(0.01)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        # Closed, its task still connecting ends with that attempt (connect_timeout: 2 s).
        deadline = asyncio.get_running_loop().time() + 10
        while left := [task for task in asyncio.all_tasks() if "ConnectionPool" in repr(task)]:
            assert asyncio.get_running_loop().time() < deadline, left
            await asyncio.sleep(0.1)
    finally:
        await proxy.close()
