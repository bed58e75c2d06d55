"""Reading jobs on Redis: counts per state, one state's jobs a page at a time (by name too),
a job by id, and the jobs finished per minute (see driver.py for the key layout)."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Sequence

from conveyor.drivers.base import QueueCounts, Throughput
from conveyor.drivers.redis.client import RedisClient, seconds
from conveyor.drivers.redis.keys import QueueKeys
from conveyor.drivers.redis.records import FIELDS, MEMBER_ID_OFFSET, counts_from, job_info, stored
from conveyor.drivers.redis.scripts import Batch
from conveyor.job import JobInfo, JobState

__all__ = ["JobInspection"]

#: How many job names one round trip reads while `list_jobs` filters by name.
CHUNK = 1000


class JobInspection(RedisClient):
    """counts, list_jobs, throughput, get."""

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Per queue, one read-only script: each queue's numbers are one consistent view."""
        wanted = list(dict.fromkeys(queues))
        if not wanted:
            return {}
        batch = Batch()
        for queue in wanted:
            keys = self.keys(queue)
            batch.script("counts", keys.of_script("counts"), [])
        replies = await self._run(batch)
        return {queue: counts_from(reply) for queue, reply in zip(wanted, replies, strict=True)}

    async def list_jobs(
        self,
        queue: str,
        state: JobState,
        limit: int = 100,
        offset: int = 0,
        *,
        name: str | None = None,
        after: str | None = None,
    ) -> list[JobInfo]:
        """Jobs of one state, oldest first by id. Reads every id of that state (the sets are
        ordered by time, not id), then the page's jobs: fine for inspection, not a hot path.
        With `name`, the names of the ids are read CHUNK at a time, in id order, until the
        page is full (Redis keeps no index by name)."""
        now = await self._now()
        keys = self.keys(queue)
        ids = sorted(await self._ids_in_state(keys, state, now))
        if after is not None:
            ids = ids[bisect.bisect_right(ids, after) :]
        if name is not None:
            ids = await self._named(keys, ids, name, offset + max(limit, 0))
        ids = ids[offset : offset + max(limit, 0)]
        if not ids:
            return []
        batch = Batch()
        for job_id in ids:
            batch.command("HMGET", keys.job + job_id, *FIELDS)
        replies = await self._run(batch)
        found = [
            job_info(job_id, values, now)
            for job_id, values in zip(ids, replies, strict=True)
            if stored(values)
        ]
        # A job that changed state between the two reads is left out rather than mislabelled.
        return [job for job in found if job.state is state]

    async def named_ids(
        self, queue: str, state: JobState, name: str, size: int
    ) -> AsyncIterator[list[str]]:
        """The state's ids are read once, then their names CHUNK at a time, in id order: paged
        by `list_jobs`, every page read them all again, so a retry by name of 100,000 of
        200,000 failed jobs took about a minute (the ZRANGE and sort of 200,000 ids 500 times),
        and the time grew with the square of the backlog. A job in `state` throughout is in
        the ids read, once; one that came later is not."""
        keys = self.keys(queue)
        ids = sorted(await self._ids_in_state(keys, state, await self._now()))
        found: list[str] = []
        for start in range(0, len(ids), CHUNK):
            found += await self._named(keys, ids[start : start + CHUNK], name, CHUNK)
            while len(found) >= size:
                yield found[:size]
                found = found[size:]
        if found:
            yield found

    async def _named(self, keys: QueueKeys, ids: list[str], name: str, enough: int) -> list[str]:
        """The first `enough` of `ids` whose job has the name `name`, in order."""
        found: list[str] = []
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            if len(found) >= enough:
                break
            batch = Batch()
            for job_id in chunk:
                batch.command("HGET", keys.job + job_id, "name")
            names = await self._run(batch)
            found += [job_id for job_id, got in zip(chunk, names, strict=True) if got == name]
        return found[:enough]

    async def _ids_in_state(self, keys: QueueKeys, state: JobState, now: float) -> list[str]:
        """Every id of the queue in the state a reader sees at `now`, in no order."""
        batch = Batch()
        if state is JobState.PENDING:
            batch.command("ZRANGE", keys.pending, 0, -1)
            batch.command("ZRANGEBYSCORE", keys.delayed, "-inf", repr(now))
        elif state is JobState.DELAYED:
            batch.command("ZRANGEBYSCORE", keys.delayed, f"({now!r}", "+inf")
        else:
            batch.command("ZRANGE", getattr(keys, state.value), 0, -1)
        replies = await self._run(batch)
        if state is JobState.PENDING:
            members, due = replies
            return [member[MEMBER_ID_OFFSET:] for member in members] + list(due)
        return list(replies[0])

    async def throughput(self, queue: str, minutes: int = 60) -> Throughput:
        """One ZCOUNT per state and minute on the sets of finished jobs (scored by finish
        time), all in one round trip after the server's TIME: nothing is kept for it."""
        start = Throughput.start_at(await self._now(), minutes)
        keys = self.keys(queue)
        batch = Batch()
        states = ("succeeded", "failed")
        for state in states:
            for minute in range(minutes):
                low = start + 60 * minute
                batch.command("ZCOUNT", getattr(keys, state), repr(low), f"({low + 60!r}")
        replies = iter(await self._run(batch))
        counted = [
            (state, minute, int(next(replies))) for state in states for minute in range(minutes)
        ]
        return Throughput.of(start, minutes, counted)

    async def get(self, job_id: str) -> JobInfo | None:
        """Look the id up in every queue ever pushed to: two round trips."""
        async with self._edge.command():
            queues = sorted(await self._redis().execute_command("SMEMBERS", self.prefix + "queues"))
        if not queues:
            return None
        batch = Batch()
        batch.command("TIME")
        for queue in queues:
            batch.command("HMGET", self.keys(queue).job + job_id, *FIELDS, "errors")
        clock, *replies = await self._run(batch)
        for values in replies:
            if stored(values[:-1]):
                return job_info(job_id, values[:-1], seconds(clock), values[-1])
        return None
