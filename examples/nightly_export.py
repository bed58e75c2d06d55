"""A schedule that starts one cursor-chained export per shard, end to end on SQLite.

In production the schedule would read `cron="0 2 * * *", tz="Europe/Berlin"`; here it ticks
every second so the example finishes at once. Each tick's job starts a chain per shard; each
chain walks its shard's rows a page at a time, every page pushing the next with its cursor.

    python examples/nightly_export.py     # inside the virtualenv; uses ./export.db
    PYTHONPATH=examples conveyor chain export-TICK-0 --app nightly_export:registry  # TICK printed
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import Job, Registry, Worker

SHARDS, ROWS, PAGE = 4, 2_500, 250
#: Stands in for a table of rows per shard, ids ascending.
TABLE = {shard: list(range(ROWS)) for shard in range(SHARDS)}
exported: dict[int, int] = dict.fromkeys(range(SHARDS), 0)
ticks: list[int] = []

#: ./export.db, or the path given when run as a script (not when `conveyor --app` imports it).
db = Path(sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else "export.db")
registry = Registry(default_driver=f"sqlite:///{db}")
registry.queue("batch", workers=["batch"], retry=3, retry_delay=0.1)
registry.worker("batch", concurrency=4, poll_interval=0.05)


@dataclass
class Shard:
    shard: int


@registry.job("export.page", queue="batch", chain=True)
async def export_page(job: Job[Shard]) -> int | None:
    after = -1 if job.cursor is None else job.cursor
    rows = [row for row in TABLE[job.payload.shard] if row > after][:PAGE]
    exported[job.payload.shard] += len(rows)  # write the page somewhere
    return rows[-1] if len(rows) == PAGE else None  # None: the last page, the chain ends


@registry.job("export.start", queue="batch")
async def export_start(job: Job[dict[str, Any]]) -> None:
    tick = int(job.meta["tick"])  # the same if this job runs again: no chain starts twice
    ticks.append(tick)
    for shard in range(SHARDS):
        await registry.start_chain("export.page", Shard(shard), chain_id=f"export-{tick}-{shard}")


registry.schedule("nightly", every="1s", job="export.start")  # cron="0 2 * * *" in production


async def chains_done(tick: int) -> bool:
    """True once every shard's chain of `tick` has ended: its last page (the empty one)
    succeeded, not only the pages that held rows."""
    for shard in range(SHARDS):
        chain = await registry.chain_info(f"export-{tick}-{shard}")
        if chain is None or chain.state != "done":
            return False
    return True


async def main() -> None:
    worker = Worker(registry, "batch")
    running = asyncio.create_task(worker.run())
    while not ticks or not await chains_done(ticks[0]):  # the first tick's chains
        await asyncio.sleep(0.05)
    worker.stop()
    await running
    for shard in range(SHARDS):
        chain = await registry.chain_info(f"export-{ticks[0]}-{shard}")
        assert chain is not None
        print(f"tick {ticks[0]}, shard {shard}: {chain.pages} pages, {chain.state}")
    await registry.close()


if __name__ == "__main__":
    asyncio.run(main())
