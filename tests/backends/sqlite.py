"""The sqlite backend: a database file in the test's tmp_path; each connection a new driver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from conveyor.drivers.sql.sqlite import SqliteDriver
from tests.backends import Storage


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    path = tmp_path / "conveyor.db"
    yield Storage(lambda: SqliteDriver(path))
