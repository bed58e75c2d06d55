"""The planner's count of the jobs table, kept from going stale after a burst.

A job queue's table is often near empty when PostgreSQL last counted it (ANALYZE, by hand or by
autovacuum, after the queue drained): `pg_class.reltuples` then says one or two rows while the
table and its indexes still span the pages the drained jobs took. When a burst of jobs arrives,
the planner believes each reserve reads a row or two and picks a plan for that, a scan of the
whole table and a sort, or the wrong index for the ids: measured here, 30-130 ms a reserve of
100 jobs instead of 2-5, 1,900 jobs/s instead of 14,000, until the table is counted again
(autovacuum's next round, up to a minute away by default; never, where autovacuum is off).

So after a reserve that filled its batch, at most once every CHECK_EVERY seconds, a driver
reads the planner's count in the background, and if it is below what that one reserve just
took, runs ANALYZE on the jobs table (a sample of it: milliseconds on a table that was just
near empty). A failure there is logged and changes nothing: the reserve has returned already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from conveyor.drivers.sql.adapter import Params, Row
from conveyor.errors import DriverError

__all__ = ["CHECK_EVERY", "Statistics"]

log = logging.getLogger(__name__)

#: Seconds between two checks of the planner's count by one driver.
CHECK_EVERY = 60.0

Fetch = Callable[[str, Params], Awaitable[list[Row]]]
Execute = Callable[[str, Params], Awaitable[int]]


class Statistics:
    """Checks the planner's count of the jobs table after full reserves (module docstring)."""

    def __init__(self, fetch: Fetch, execute: Execute) -> None:
        self._fetch = fetch
        self._execute = execute
        self._checked = -math.inf
        self._task: asyncio.Task[None] | None = None

    def reserved(self, taken: int, limit: int) -> None:
        """A reserve took `taken` jobs of the `limit` it asked for."""
        if taken == 0 or taken < limit or self._task is not None:
            return
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        self._task = asyncio.ensure_future(self._check(taken))
        self._task.add_done_callback(self._forget)

    async def close(self) -> None:
        """Stop a check under way."""
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _forget(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _check(self, taken: int) -> None:
        try:
            [row] = await self._fetch("planner_rows", {})
            counted = float(row["rows"])
            if 0 <= counted < taken:  # -1: never counted, and the planner guesses from pages
                log.info(
                    "the jobs table's statistics say %d rows, but a reserve just took %d:"
                    " running ANALYZE on it so that reserves keep their fast plan",
                    counted, taken,
                )  # fmt: skip
                await self._execute("analyze", {})
        except (DriverError, ValueError, KeyError) as error:  # no row, or not a number
            log.warning("could not check the jobs table's statistics: %s", error)
