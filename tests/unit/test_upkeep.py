"""The worker's prune loop goes on after any error of one round, as its heartbeat does: an
error no driver wraps as a DriverError (an unwrapped client error) ended the loop for the
rest of the worker's life, without a word, and finished jobs then piled up."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conveyor import Registry, upkeep
from conveyor.drivers.memory import MemoryDriver


class PruneFailingOnce(MemoryDriver):
    """The memory driver, but its first prune fails with an error that is no DriverError."""

    def __init__(self) -> None:
        super().__init__()
        self.prunes = 0

    async def prune(self, queue: str, older_than: float) -> int:
        self.prunes += 1
        if self.prunes == 1:
            raise RuntimeError("a client error the driver did not wrap")
        return await super().prune(queue, older_than)


async def test_the_prune_loop_goes_on_after_an_error_of_any_kind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(upkeep, "PRUNE_EVERY", 0.01)
    driver = PruneFailingOnce()
    registry = Registry()
    registry.driver("flaky", driver)
    registry.queue("q", driver="flaky", workers=["w"])
    registry.worker("w")
    registry.freeze()
    loop = asyncio.create_task(upkeep.prune_loop(registry, lambda: ["q"]))
    try:
        with caplog.at_level(logging.WARNING, logger="conveyor"):
            async with asyncio.timeout(5):
                while driver.prunes < 3 and not loop.done():
                    await asyncio.sleep(0.01)
        assert not loop.done(), loop.exception()
        assert driver.prunes >= 3
        assert any("could not prune queue q" in r.getMessage() for r in caplog.records)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await registry.close()
