"""Fixtures of the contract suite: every test runs once per driver kind in `tests.backends.KINDS`.

To put a new driver under contract, add `tests/backends/<kind>.py` (see that package).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.drivers.base import Driver
from tests.backends import KINDS, Storage, skip_without, storage_of

#: Seconds any one contract test may take, on any backend.
TEST_TIMEOUT = 15


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every contract test a short timeout instead of the project-wide one."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.fixture(params=KINDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Fresh, empty storage of one driver kind; every driver opened on it is closed after."""
    async with storage_of(request.param, tmp_path) as fresh:
        skip_without(request.node, fresh.connect())
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
