"""Reading jobs on Redis: counts per state, one state's jobs a page at a time (by name too),
a job by id, and the jobs finished per minute (see driver.py for the key layout)."""

from __future__ import annotations

import bisect
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from conveyor.drivers.base import QueueCounts, Throughput
from conveyor.drivers.redis.client import RedisClient, seconds
from conveyor.drivers.redis.keys import QueueKeys
from conveyor.drivers.redis.records import FIELDS, counts_from, job_info, stored
from conveyor.drivers.redis.scripts import Batch
from conveyor.job import JobInfo, JobState

__all__ = ["JobInspection"]

log = logging.getLogger("conveyor.drivers.redis")

#: How many job names one round trip reads while `list_jobs` filters by name.
CHUNK = 1000
#: Ids one lua/list.lua (or reindex.lua) call looks at: about a millisecond of the server.
WALK = 1000
#: Ids of an index one round trip reads, when every id of a state is read.
SLICE = 10_000
#: The states listed through an index (lua/list.lua): its key, and the sets whose ids it holds.
INDEXED: dict[JobState, tuple[str, tuple[str, ...]]] = {
    JobState.PENDING: ("pending_ids", ("pending", "delayed")),
    JobState.DELAYED: ("pending_ids", ("pending", "delayed")),
    JobState.FAILED: ("failed_ids", ("failed",)),
}


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
        """Jobs of one state, oldest first by id. Pending, delayed and failed jobs are walked
        in id order through their index (`_walk`): a page costs its jobs and those passed
        over. The other states' sets are ordered by time, not id, so their ids are all read
        (one ZRANGE), then sorted here; with `name`, their names are read CHUNK at a time,
        in id order, until the page is full."""
        if limit <= 0:
            return []
        keys = self.keys(queue)
        if state not in INDEXED:
            now = await self._now()
            ids = sorted(await self._ids_of(keys, state))
            if after is not None:
                ids = ids[bisect.bisect_right(ids, after) :]
            if name is not None:
                ids = await self._named(keys, ids, name, offset + limit)
            return await self._read(keys, state, ids[offset : offset + limit], now)
        now = await self._now_indexed(keys, state)
        asked = offset + limit
        ids = await self._walk(keys, state, now, asked, after=after, name=name)
        jobs = await self._read(keys, state, ids[offset:], now)
        # A job that left the state between the walk and the read leaves a gap, filled from
        # the walk on: a page shorter than `limit` means the end (`conveyor failed list`).
        while len(jobs) < limit and len(ids) == asked:
            asked = limit - len(jobs)
            ids = await self._walk(keys, state, now, asked, after=ids[-1], name=name)
            jobs += await self._read(keys, state, ids, now)
        return jobs

    async def _read(
        self, keys: QueueKeys, state: JobState, ids: list[str], now: float
    ) -> list[JobInfo]:
        """The jobs of `ids` still in `state`, read in one round trip. A job that changed
        state since its id was read is left out rather than mislabelled; one whose state
        field is damaged is listed in the state whose set holds it, as the counts count it
        (read_job gives it a placeholder state)."""
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
        return [
            job if job.state is state else replace(job, state=state)
            for job in found
            if job.state is state or "state" in job.unreadable
        ]

    async def named_ids(
        self, queue: str, state: JobState, name: str, size: int
    ) -> AsyncIterator[list[str]]:
        """Pending, delayed and failed jobs: their index walked on from each page's last
        id, so the state is walked once. The other states: their ids read once, then their
        names CHUNK at a time, in id order. Before, every page read every id of the state
        again: a retry by name of 100,000 of 200,000 failed jobs took about a minute. A job
        in `state` throughout is in one page; one that came later may not be."""
        keys = self.keys(queue)
        if state in INDEXED:
            now, after = await self._now_indexed(keys, state), None
            while page := await self._walk(keys, state, now, size, after=after, name=name):
                yield page
                after = page[-1]
            return
        ids = sorted(await self._ids_of(keys, state))
        found: list[str] = []
        for start in range(0, len(ids), CHUNK):
            found += await self._named(keys, ids[start : start + CHUNK], name, CHUNK)
            while len(found) >= size:
                yield found[:size]
                found = found[size:]
        if found:
            yield found

    async def _walk(
        self,
        keys: QueueKeys,
        state: JobState,
        now: float,
        enough: int,
        *,
        after: str | None = None,
        name: str | None = None,
    ) -> list[str]:
        """The first `enough` ids, in id order, of the queue's jobs in `state` (pending,
        delayed or failed) at `now`, after `after` and of name `name`: lua/list.lua walks the
        state's index, looking at WALK ids a call, until it has them or reaches the end. An
        id an older driver left (its job gone or moved) may stand for a job the index
        misses, in a count that looked whole: once the walk drops one, the index is mended
        (`_mend`) and walked again."""
        found: list[str] = []
        last, mended = after or "", False
        while len(found) < enough:
            batch = Batch()
            batch.script(
                "list", [getattr(keys, INDEXED[state][0])], [
                    keys.job, state.value, repr(now), last, "" if name is None else "=" + name,
                    enough - len(found), WALK,
                ],
            )  # fmt: skip
            [(last, dropped, *ids)] = await self._run(batch)
            if int(dropped) and not mended:
                await self._mend(keys, state)
                found, last, mended = [], after or "", True
                continue
            found += ids
            if not last:
                break
        return found[:enough]

    async def _now_indexed(self, keys: QueueKeys, state: JobState) -> float:
        """The server's clock, once the index of `state` holds as many ids as its sets hold
        members; when it holds another number (jobs stored before it existed, or moved by an
        older driver), it is mended first (`_mend`). The numbers are read in one MULTI, so
        no script runs between them: every script keeps the index and its sets alike."""
        clock, indexed, held = await self._sizes(keys, state)
        if indexed != held:
            await self._mend(keys, state)
        return seconds(clock)

    async def _mend(self, keys: QueueKeys, state: JobState) -> None:
        """Make the index of `state` hold the ids of its sets, WALK ids a call: first the
        ids of jobs gone or in another state are dropped (lua/unindex.lua), then, if it
        still holds fewer ids than the sets, their ids are added (lua/reindex.lua), members
        whose job is gone or in another state dropped from the sets instead."""
        index, sets = getattr(keys, INDEXED[state][0]), INDEXED[state][1]
        own = "failed" if state is JobState.FAILED else "pending"
        last = None
        while last != "":
            last = await self._call("unindex", [index], [keys.job, own, last or "", WALK])
        _, indexed, held = await self._sizes(keys, state)
        if indexed >= held:
            return
        log.info("indexing the %d jobs of %s for list_jobs", held, index)
        for name in sets:
            kind, cursor = "pending" if name == "pending" else "ids", "0"
            while True:
                args = [kind, cursor, WALK, keys.job, own]
                cursor = await self._call("reindex", [index, getattr(keys, name)], args)
                if str(cursor) == "0":
                    break

    async def _sizes(self, keys: QueueKeys, state: JobState) -> tuple[list[Any], int, int]:
        """The server's TIME, the ids the index of `state` holds and the members its sets
        hold, read in one MULTI."""
        name, held_in = INDEXED[state]
        batch = Batch()
        batch.command("TIME")
        for key in (name, *held_in):
            batch.command("ZCARD", getattr(keys, key))
        clock, indexed, *held = await self._run(batch, transaction=True)
        return clock, int(indexed), sum(int(count) for count in held)

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

    async def _ids_of(self, keys: QueueKeys, state: JobState) -> list[str]:
        """Every id of the queue's jobs in `state`, in no order. A state with an index (see
        INDEXED): the index is mended first (`_mend`: no id an older driver left hides a job
        it misses), then its ids read, SLICE a round trip in id order, each slice on from the
        last id (so none is skipped while others change); pending_ids holds pending and
        delayed jobs alike, so the retry and purge scripts these ids go to check each job's
        state. Reserved, succeeded and cancelled jobs: one ZRANGE of the whole set, which
        holds the server a while when it holds hundreds of thousands."""
        if state not in INDEXED:
            batch = Batch()
            batch.command("ZRANGE", getattr(keys, state.value), 0, -1)
            return list((await self._run(batch))[0])
        await self._mend(keys, state)
        index, ids, start = getattr(keys, INDEXED[state][0]), [], "-"
        while True:
            batch = Batch()
            batch.command("ZRANGEBYLEX", index, start, "+", "LIMIT", 0, SLICE)
            [chunk] = await self._run(batch)
            ids += chunk
            if len(chunk) < SLICE:
                return ids
            start = "(" + chunk[-1]

    async def throughput(self, queue: str, minutes: int = 60) -> Throughput:
        """One script (lua/throughput.lua) counts the sets of finished jobs (scored by finish
        time) per state and minute on the server, by its TIME: nothing is kept for it."""
        keys = self.keys(queue)
        batch = Batch()
        batch.script("throughput", [keys.succeeded, keys.failed], [minutes])
        [[start, *replies]] = await self._run(batch)
        counted = [
            (state, minute, int(replies[at * minutes + minute]))
            for at, state in enumerate(("succeeded", "failed"))
            for minute in range(minutes)
        ]
        return Throughput.of(float(start), minutes, counted)

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
