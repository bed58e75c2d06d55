"""The memory backend: one MemoryDriver instance is the storage and every connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from conveyor.drivers.memory import MemoryDriver
from tests.backends import Storage


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    driver = MemoryDriver()
    yield Storage(lambda: driver)
