"""Fixtures of the contract suite: every test runs once per driver in `FACTORIES`.

To put a new driver under contract, write a factory (an async context manager that yields a
`Storage` on fresh, empty storage and cleans it up afterwards) and add one line to `FACTORIES`.
A driver whose module cannot be imported yet is skipped with the reason; list it in the
environment variable CONVEYOR_CONTRACT_REQUIRE (comma-separated kinds) to make that a failure.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from conveyor.drivers.base import Driver
from conveyor.drivers.memory import MemoryDriver

from .helpers import Storage


def load_driver_class(kind: str, module: str, name: str) -> Any:
    """The driver class, or skip the test when its module is not there (yet)."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        required = os.environ.get("CONVEYOR_CONTRACT_REQUIRE", "").split(",")
        if kind in {item.strip() for item in required}:
            raise
        pytest.skip(f"{kind} driver unavailable, cannot import {module}.{name}: {exc}")


@asynccontextmanager
async def memory_storage(tmp_path: Path) -> AsyncIterator[Storage]:
    """One MemoryDriver is the storage: every connection is that same instance."""
    driver = MemoryDriver()
    yield Storage(lambda: driver)


@asynccontextmanager
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[Storage]:
    """A database file in the test's tmp_path; every connection is a new SqliteDriver on it."""
    sqlite_driver = load_driver_class("sqlite", "conveyor.drivers.sql.sqlite", "SqliteDriver")
    path = tmp_path / "conveyor.db"
    yield Storage(lambda: sqlite_driver(path))


#: No contract test should come near this; a hung driver (a lock never released) fails fast.
TEST_TIMEOUT = 15.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every contract test a short timeout instead of the project-wide one."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


Factory = Callable[[Path], AbstractAsyncContextManager[Storage]]

FACTORIES: dict[str, Factory] = {
    "memory": memory_storage,
    "sqlite": sqlite_storage,
}


@pytest.fixture(params=list(FACTORIES))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Fresh, empty storage of one driver kind; every driver opened on it is closed after."""
    async with FACTORIES[request.param](tmp_path) as fresh:
        try:
            yield fresh
        finally:
            await fresh.close_all()


@pytest.fixture
async def driver(storage: Storage) -> Driver:
    """An opened driver on fresh, empty storage."""
    return await storage.open_driver()


@pytest.fixture
async def driver_pair(storage: Storage, driver: Driver) -> tuple[Driver, Driver]:
    """`driver` and a second connection to the same storage, as another process would hold.

    For `memory` both are the same instance: that is all the sharing it offers.
    """
    return driver, await storage.open_driver()
