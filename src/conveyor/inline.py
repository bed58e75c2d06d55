"""The sync driver's inline run: a pushed job run to completion inside `push`, by a worker
object of the queue's first worker, without its loops."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.worker import Worker

if TYPE_CHECKING:
    from conveyor.core import RegistryCore

__all__ = ["run_inline"]


async def run_inline(registry: RegistryCore, queue: str) -> None:
    """Run `queue`'s jobs one by one until none is due: what the `sync` driver does on push."""
    worker = Worker(registry, registry.queue_spec(queue).workers[0])
    driver = await registry.driver_of(queue)
    try:
        while jobs := await driver.reserve([queue], 1, worker.spec.lease, worker.identity):
            outcome = await worker.runner.attempt(jobs[0], driver)
            await worker.settler.settle(driver, [outcome])
        await worker.settler.save_stats()
    finally:
        worker.runner.close()
