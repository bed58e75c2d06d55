"""The PostgreSQL driver on a disk that is full: the jobs table in a tablespace of its own on a
small tmpfs (mounted for the test, as root; the shared server's own disk is never filled).

Before, the server's "could not extend file: No space left on device" (SQLSTATE 53100) was a
plain DriverError: a refusal of the statement, which a worker's settler writes off one job at
a time (an acked job written as failed), where it is the backend out of room, as a server out
of reach is: the settler waits and writes it again once there is room.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.errors import BackendUnavailableError
from tests.backends import Drivers
from tests.backends.postgres import URL
from tests.contract.helpers import make_job
from tests.drivers import test_postgres
from tests.drivers.test_postgres_sessions import with_options

pytestmark = pytest.mark.timeout(60)

server = test_postgres.server
prefix = test_postgres.prefix
drivers = test_postgres.drivers


@pytest.fixture
def small_tablespace() -> Iterator[str]:
    """A tablespace on a 2 MiB tmpfs of its own; dropped, and the tmpfs unmounted, after.
    Under /tmp itself: the server must reach it (pytest's own folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="conveyor-small-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"a small disk needs a tmpfs mounted as root: {mounted.stderr.strip()}")
    name = f"small_{uuid.uuid4().hex[:8]}"
    try:
        os.chown(folder, *_postgres_ids())
        with psycopg.connect(URL, autocommit=True) as connection:
            connection.execute(f"CREATE TABLESPACE {name} LOCATION '{folder}'")
        yield name
    finally:
        with psycopg.connect(URL, autocommit=True) as connection:
            kept = connection.execute(
                "SELECT tablename FROM pg_tables WHERE tablespace = %s", [name]
            ).fetchall()
            for (table,) in kept:  # the test's own: their prefix is dropped after this
                connection.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
            connection.execute(f"DROP TABLESPACE IF EXISTS {name}")
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


async def test_a_push_to_a_full_disk_is_the_backend_out_of_room(
    drivers: Drivers[PostgresDriver], small_tablespace: str
) -> None:
    driver = await drivers.open(with_options(f"default_tablespace={small_tablespace}"))
    with pytest.raises(BackendUnavailableError) as raised:
        for _ in range(100):  # 2 MiB holds about ten of these 256 KiB, which compress little
            await driver.push(make_job(payload=json.dumps(os.urandom(128 * 1024).hex())))
    said = str(raised.value)
    assert "No space left on device" in said and "out of room" in said, said
    assert "free space" in said, said
