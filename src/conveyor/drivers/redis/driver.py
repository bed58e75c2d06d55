"""The Redis driver: every change to a job is one Lua script, atomic on the server.

Data layout. `P` is the key prefix (default `conveyor:`); every key of queue `Q` carries the
hash tag `{Q}`, so a queue lives in one slot and each script touches one slot only:

    P{Q}:job:<id>   HASH   one job: every JobInfo field as text (see records.py)
    P{Q}:pending    ZSET   due jobs; every score 0, member = rank + time + id, so ZRANGEBYLEX
                           reads them highest priority first, then earliest, then by id
    P{Q}:delayed    ZSET   pending jobs whose time has not come, by available_at
    P{Q}:reserved   ZSET   reserved jobs by lease end
    P{Q}:succeeded  ZSET   succeeded jobs by finished_at (for prune)
    P{Q}:failed     ZSET   failed jobs by finished_at, each keeping its error until pruned
    P{Q}:pending_ids ZSET  every score 0, member = id: the jobs in pending or delayed, so
                           list_jobs walks them in id order from its cursor (ZRANGEBYLEX);
                           push, reserve, release, retry, cancel and purge keep it
    P{Q}:failed_ids ZSET   the same for failed jobs; fail, retry, purge and prune keep it
    P{Q}:unique     HASH   JSON [name, unique] -> id of the unfinished job holding that key
    P{Q}:wake       LIST   wake-up tokens: push, release and retry add them, idle workers
                           BLPOP them, reserve drops them once nothing is due
    Pqueues         SET    every queue ever pushed to (so `get` can find a job by id)
    Pstats          HASH   "<counter>:<worker>" -> running total
    Pbeats          HASH   worker process identity -> "worker started_at seen_at"

Leases: `reserve` first moves delayed jobs whose time has come into `pending`, and lets jobs
whose lease ran out compete with them for that one call; so a crashed worker's jobs run again
once its lease ends, and until someone takes them their old token still settles them. The
reservation token is 32 random hex digits, ':', and the queue: settling calls carry only
(id, token), and the token says which queue's script to run.

Times come from the server's clock: every script reads TIME, and this side passes delays and
durations, so a worker whose clock is off cannot move a lease, a due time or the prune
horizon; reads that need "now" (list_jobs, get, wait) ask the server for it in the same round
trip where they can. Replies are decoded as UTF-8 with `surrogateescape`, so a byte that is
not UTF-8 never fails a command: read_job reports the field as damaged, and the id, kept
exact, still settles the job. Redis Cluster: each script
uses one queue's keys; what spans slots is `reserve` over several queues (one script call per
queue, merged here by priority), `push_many` over several queues (MULTI, which Cluster would
refuse: push per queue there), `wait` over several queues (one BLPOP over several slots) and
the two global keys. This driver connects to a single server, or to the master its sentinels
name (sentinel.py); the layout is ready for more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from conveyor.drivers.base import (
    Capabilities,
    Failure,
    Release,
    Reservation,
)
from conveyor.drivers.redis.client import seconds
from conveyor.drivers.redis.control import JobControl
from conveyor.drivers.redis.inspection import JobInspection
from conveyor.drivers.redis.keys import new_token, queue_of
from conveyor.drivers.redis.records import (
    FIELDS,
    error_text,
    job_info,
    push_jobs,
    score_pairs,
)
from conveyor.drivers.redis.scripts import Batch
from conveyor.drivers.redis.single import SinglePush
from conveyor.drivers.redis.workers import WorkerRecords
from conveyor.errors import DriverError
from conveyor.job import JobBatch, JobInfo, JobState, NewJob

__all__ = ["RedisDriver"]

log = logging.getLogger("conveyor.drivers.redis")

T = TypeVar("T")
K = TypeVar("K")
#: Where a job's id starts in its pending member: after its rank (16) and time (20 characters).
MEMBER_ID = 36
#: What a settle call takes: a Reservation, Release or Failure (each has id and token).
Settled = TypeVar("Settled", Reservation, Release, Failure)

#: Jobs per push script call, and ids per retry/purge call: bounds how long one script runs.
#: At most 3,000: push.lua unpacks two values per job into one ZADD (Lua's limit is 8,000).
CHUNK = 1000
#: Payload characters per push script call, past which a batch is cut there too: a script's
#: argument must fit the server's proto-max-bulk-len (512 MB by default: 1,000 jobs of 600 KB
#: each, every payload within max_payload_bytes, were refused whole), and the server decodes
#: it while every other client waits.
CHUNK_CHARS = 16 * 1024 * 1024
#: Finished jobs deleted per prune call.
PRUNE_BATCH = 1000
#: How much longer than its own deadline the server-side BLPOP may run when `wait` must end
#: on time for a delayed job; Redis checks blocking timeouts only every 1/hz (100 ms).
BLPOP_SLACK = 0.5
#: `wait` shorter than this returns at once: a job is due now.
MIN_WAIT = 0.002

_COUNTERS = ("processed", "succeeded", "failed", "retried")


class RedisDriver(JobControl, JobInspection, WorkerRecords, SinglePush):
    """Jobs in Redis, each change a Lua script; idle workers block on the server (BLPOP).

    `url` is a redis://, rediss:// or redis+sentinel:// URL (default: $CONVEYOR_REDIS_URL, then
    redis://127.0.0.1:6379/0); `prefix` starts every key (default `conveyor:`, or `?prefix=`
    in the URL). `timeout=` (or `?timeout=`, default 10 s) is every command's deadline. Other
    keyword arguments go to redis-py's client, e.g. `ssl_ca_certs=...`.
    """

    kind = "redis"
    capabilities = Capabilities(
        notify=True, durable=True, shared=True, control=True, schedules=True, thread_push=True
    )

    @classmethod
    def from_url(cls, url: str) -> RedisDriver:
        """A driver for a redis://, rediss:// or redis+sentinel:// URL (see the class
        docstring)."""
        return cls(url)

    # -- push --------------------------------------------------------------------------------

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        """Store a batch: one push script call per queue (and per CHUNK jobs), all in one
        round trip; several calls go in one MULTI/EXEC, so the batch is atomic as a whole.
        A queue is added to the set of known queues (which `get` searches) by the first push
        to it through this instance; a single push after that is one EVALSHA, no pipeline."""
        self.check_connection(connection)
        if not jobs:
            return []
        calls = _push_calls(jobs)
        loads = self._scripts.loads
        fresh = self._unknown(q for q, _, _ in calls)
        batch = Batch()
        for queue in fresh:
            batch.command("SADD", self.prefix + "queues", queue)
        for queue, _, chunk in calls:
            keys = self.keys(queue)
            batch.script("push", keys.of_script("push"), [keys.job, push_jobs(chunk)])
        if len(batch.calls) == 1:
            name, (count, *rest) = batch.calls[0]
            assert name is not None
            replies = [await self._call(name, rest[:count], rest[count:])]
        else:
            replies = await self._run(batch, transaction=len(calls) > 1)
        await self._pushed(dict.fromkeys(q for q, _, _ in calls), loads)
        ids = [""] * len(jobs)
        for (_, indexes, _), pushed in zip(calls, replies[-len(calls) :], strict=True):
            for index, job_id in zip(indexes, pushed, strict=True):
                ids[index] = job_id
        return ids

    # -- reserve -----------------------------------------------------------------------------

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        """Take up to `limit` due jobs, best first across `queues`. One queue: one script
        call. Several: two round trips, whatever their number: each queue's best `limit` due
        members are read, then each queue holding some of the best `limit` of them all takes
        its share (below the first member left out), all in one round trip. Entries of jobs
        gone meanwhile, or taken by another worker, leave the take short: the rest is then
        taken queue by queue (`_reserve_in_rounds`)."""
        wanted = list(dict.fromkeys(queues))
        if limit <= 0 or not wanted:
            return []
        if len(wanted) == 1:
            _, jobs = await self._reserve_from(wanted[0], limit, lease, worker, "")
            return jobs
        best = await self._best(wanted, limit)
        ranked = sorted((member, queue) for queue, members in best.items() for member in members)
        bound = ranked[limit][0] if len(ranked) > limit else ""
        shares = Counter(queue for _, queue in ranked[:limit])
        batch = Batch()
        for queue, share in shares.items():
            batch.script("reserve", *self._reserve_call(queue, share, lease, worker, bound))
        replies = await self._run(batch) if shares else []
        taken = [job_info(values[0], values[1:], 0.0) for reply in replies for values in reply[1:]]
        order = {member[MEMBER_ID:]: n for n, (member, _) in enumerate(ranked)}
        taken.sort(key=lambda job: order.get(job.id, -1))  # any better one pushed since: first
        if len(taken) < min(limit, len(ranked)):
            taken += await self._reserve_in_rounds(wanted, limit - len(taken), lease, worker)
        return taken

    async def _reserve_in_rounds(
        self, queues: list[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        """Each queue's best due member read, then jobs taken from the best queue up to the
        next queue's best, and so on: a round trip a round, so the order across queues is
        the protocol's while each call stays within one queue's keys."""
        heads = {queue: [*best, ""][0] for queue, best in (await self._best(queues, 1)).items()}
        taken: list[JobInfo] = []
        # Each round takes jobs or learns a queue's new head; the cap only guards against
        # other processes pushing better jobs in lockstep forever.
        for _ in range(limit + 2 * len(queues)):
            ranked = sorted((head, queue) for queue, head in heads.items() if head)
            if not ranked or len(taken) >= limit:
                break
            queue, bound = ranked[0][1], ranked[1][0] if len(ranked) > 1 else ""
            heads[queue], jobs = await self._reserve_from(
                queue, limit - len(taken), lease, worker, bound
            )
            taken += jobs
        return taken

    def _reserve_call(
        self, queue: str, limit: int, lease: float, worker: str, bound: str
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of a reserve script call on one queue."""
        keys = self.keys(queue)
        args = [keys.job, repr(float(lease)), new_token(queue), worker, limit, bound, 0]
        return keys.of_script("reserve"), [*args, *FIELDS]

    async def _reserve_from(
        self, queue: str, limit: int, lease: float, worker: str, bound: str
    ) -> tuple[str, list[JobInfo]]:
        """Reserve from one queue, taking only members below `bound` if given; returns the
        queue's best due member left ('' if none) and the jobs."""
        reply = await self._call("reserve", *self._reserve_call(queue, limit, lease, worker, bound))
        # Each job comes as its id, then its fields. Reserved jobs read the same at any time:
        # `now` only tells delayed from pending.
        return reply[0], [job_info(values[0], values[1:], 0.0) for values in reply[1:]]

    async def _best(self, queues: Sequence[str], count: int) -> dict[str, list[str]]:
        """Each queue's best `count` due members, best first, after moving its due jobs
        (reserve with limit 0): one round trip."""
        batch = Batch()
        for queue in queues:
            keys = self.keys(queue)
            batch.script(
                "reserve", keys.of_script("reserve"), [keys.job, "0", "", "", 0, "", count]
            )
        replies = await self._run(batch)
        return {
            queue: [m for m in reply if m] for queue, reply in zip(queues, replies, strict=True)
        }

    # -- settle ------------------------------------------------------------------------------

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        """Extend leases (and mark the jobs alone); one script call per queue, all in one
        round trip."""
        first = [repr(float(lease)), "1" if alone else "0"]
        return await self._settle("renew", reservations, lambda r: [r.id, r.token], first)

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        """Mark jobs succeeded (keeping their results); one script call per queue, all in one
        round trip."""
        return await self._settle("ack", reservations, _ack_fields)

    async def ack_and_push(
        self, reservations: Sequence[Reservation], successors: Sequence[NewJob]
    ) -> set[str]:
        """The push scripts and the ack scripts in one MULTI/EXEC: one round trip, atomic."""
        loads = self._scripts.loads
        fresh = self._unknown(job.queue for job in successors)
        batch = Batch()
        for queue in fresh:
            batch.command("SADD", self.prefix + "queues", queue)
        for queue, group in _by_queue(successors, lambda job: job.queue).items():
            for span in _spans([job.payload for job in group]):
                chunk = group[span.start : span.stop]
                keys = self.keys(queue)
                batch.script("push", keys.of_script("push"), [keys.job, push_jobs(chunk)])
        acks = self._settle_calls("ack", reservations, _ack_fields)
        for call_keys, args in acks:
            batch.script("ack", call_keys, args)
        replies = await self._run(batch, transaction=True)
        await self._pushed(dict.fromkeys(job.queue for job in successors), loads)
        return {job_id for reply in replies[len(replies) - len(acks) :] for job_id in reply}

    async def release(self, releases: Sequence[Release]) -> set[str]:
        """Put jobs back to pending; one script call per queue, all in one round trip."""
        return await self._settle(
            "release",
            releases,
            lambda r: [
                r.id,
                r.token,
                repr(float(r.delay)),
                "1" if r.count_attempt else "0",
                error_text(r.error),
            ],
        )

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        """Move jobs to failed storage; one script call per queue, all in one round trip."""
        return await self._settle(
            "fail",
            failures,
            lambda f: [f.id, f.token, error_text(f.error), "1" if f.cancelled else "0"],
        )

    async def _settle(
        self,
        name: str,
        items: Sequence[Settled],
        fields: Callable[[Settled], list[Any]],
        first: Sequence[str] = (),
    ) -> set[str]:
        """Run the fenced script `name` (ARGV: job prefix, `first`, then each item's fields)
        once per queue named by the items' tokens. An item whose token names no queue was
        never handed out by `reserve`: it is refused."""
        calls = self._settle_calls(name, items, fields, first)
        if len(calls) == 1:
            return set(await self._call(name, *calls[0]))
        batch = Batch()
        for call_keys, args in calls:
            batch.script(name, call_keys, args)
        return {job_id for reply in await self._run(batch) if reply for job_id in reply}

    def _settle_calls(
        self,
        name: str,
        items: Sequence[Settled],
        fields: Callable[[Settled], list[Any]],
        first: Sequence[str] = (),
    ) -> list[tuple[list[str], list[Any]]]:
        """The KEYS and ARGV of each call of `_settle`."""
        calls: list[tuple[list[str], list[Any]]] = []
        for queue, group in _by_queue(items, lambda item: queue_of(item.token)).items():
            if queue is not None:
                keys = self.keys(queue)
                args = [keys.job, *first]
                for item in group:
                    args += fields(item)
                calls.append((keys.of_script(name), args))
        return calls

    # -- failed jobs and retention -----------------------------------------------------------

    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Move failed jobs back to pending, CHUNK ids per script call (each atomic)."""
        keys = self.keys(queue)
        if ids is None:
            ids = await self._ids_of(keys, JobState.FAILED)
        moved = 0
        for chunk in _chunks(list(ids), CHUNK):
            args = [keys.job, *chunk]
            moved += await self._call("retry", keys.of_script("retry"), args)
        return moved

    async def purge(
        self, queue: str, state: JobState = JobState.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        """Delete jobs in `state`, CHUNK ids per script call; each job is checked to be in
        that state inside the script, so a job that moved meanwhile is left alone."""
        self.check_purgeable(state)
        keys = self.keys(queue)
        if ids is None:
            ids = await self._ids_of(keys, state)
        deleted = 0
        for chunk in _chunks(list(ids), CHUNK):
            args = [keys.job, state.value, *chunk]
            deleted += await self._call("purge", keys.of_script("purge"), args)
        return deleted

    async def prune(self, queue: str, older_than: float) -> int:
        """Delete jobs that finished more than `older_than` seconds ago, PRUNE_BATCH per
        script call."""
        keys = self.keys(queue)
        deleted = 0
        while True:
            args = [keys.job, repr(float(older_than)), PRUNE_BATCH]
            count = int(await self._call("prune", keys.of_script("prune"), args))
            deleted += count
            if count < PRUNE_BATCH:
                return deleted

    # -- wait --------------------------------------------------------------------------------

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block on the server (BLPOP on the queues' wake-up lists) until a push, release or
        retry adds a token, or until the earliest delayed job or lease falls due, or
        `timeout`. A token added since the last reserve is still in the list, so it is never
        missed. If Redis cannot be reached, sleeps out the timeout instead (the worker's
        reserve reports the error)."""
        wanted = list(dict.fromkeys(queues))
        if not wanted:
            await asyncio.sleep(timeout)
            return
        begin = time.monotonic()
        try:
            await self._block(wanted, timeout)
        except DriverError as exc:
            log.debug("wait on %s failed (%s); sleeping instead", wanted, exc)
            await asyncio.sleep(max(0.0, timeout - (time.monotonic() - begin)))

    async def _block(self, queues: list[str], timeout: float) -> None:
        due_in = await self._due_in(queues)
        _raise_if_cancelled()
        if due_in is not None and due_in < timeout:
            # Redis ends a BLPOP only on its 1/hz clock (100 ms by default): end it here at
            # the due time instead. The BLPOP cut short closes its connection, which is
            # replaced on the next wait: a small price, paid once per due job.
            if due_in < MIN_WAIT:
                return
            await self._blpop(queues, due_in + BLPOP_SLACK, deadline=due_in)
        else:
            await self._blpop(queues, timeout, deadline=timeout + 1.0)

    async def _blpop(self, queues: list[str], server_timeout: float, deadline: float) -> None:
        """BLPOP, given up on at `deadline` (its connection is then closed, and a new one made
        by the next wait). A deadline past the server's timeout is only reached when the server
        went silent: the worker then polls, as the wait returns, until it answers again."""
        wake = [self.keys(queue).wake for queue in queues]
        client = self._blocking_redis()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.
        with self._edge:
            try:
                async with asyncio.timeout(deadline):
                    await client.execute_command("BLPOP", *wake, max(server_timeout, 0.01))
            except TimeoutError:
                if deadline > server_timeout:
                    log.warning(
                        "%s gave no answer to BLPOP within %.1fs: its connection was closed;"
                        " polling until it answers again",
                        self._edge.where,
                        deadline,
                    )

    async def _due_in(self, queues: list[str]) -> float | None:
        """Seconds until the earliest delayed job or lease of `queues` falls due, or None."""
        batch = Batch()
        batch.command("TIME")
        for queue in queues:
            keys = self.keys(queue)
            batch.command("ZRANGE", keys.delayed, 0, 0, "WITHSCORES")
            batch.command("ZRANGE", keys.reserved, 0, 0, "WITHSCORES")
        clock, *replies = await self._run(batch)
        times = [float(score) for reply in replies for _, score in score_pairs(reply)]
        return min(times) - seconds(clock) if times else None


def _by_queue(items: Iterator[T] | Sequence[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items grouped by `key`, each group in the items' order."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _push_calls(jobs: Sequence[NewJob]) -> list[tuple[str, range | list[int], Sequence[NewJob]]]:
    """push_many's script calls: (queue, the index of each job in `jobs`, the jobs), each
    within CHUNK jobs and CHUNK_CHARS of payloads (`_spans`). A JobBatch (one queue) is cut in
    slices, so no job object is made."""
    if isinstance(jobs, JobBatch):
        queue = jobs.template.queue
        return [(queue, span, jobs[span.start : span.stop]) for span in _spans(jobs.payloads)]
    calls: list[tuple[str, range | list[int], Sequence[NewJob]]] = []
    for queue, indexes in _by_queue(range(len(jobs)), lambda index: jobs[index].queue).items():
        for span in _spans([jobs[index].payload for index in indexes]):
            chunk = indexes[span.start : span.stop]
            calls.append((queue, chunk, [jobs[index] for index in chunk]))
    return calls


def _spans(payloads: Sequence[str]) -> list[range]:
    """`payloads` cut in runs of at most CHUNK, each within CHUNK_CHARS but for a payload
    larger alone, as ranges of their indexes."""
    if sum(map(len, payloads)) <= CHUNK_CHARS:
        return [range(at, min(at + CHUNK, len(payloads))) for at in range(0, len(payloads), CHUNK)]
    spans, start, size = [], 0, 0
    for index, payload in enumerate(payloads):
        if index > start and (index - start >= CHUNK or size + len(payload) > CHUNK_CHARS):
            spans.append(range(start, index))
            start, size = index, 0
        size += len(payload)
    spans.append(range(start, len(payloads)))
    return spans


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _raise_if_cancelled() -> None:
    """Raise the cancellation of the current task if a callee swallowed it. redis-py wraps
    socket writes in asyncio.wait_for, which on Python 3.11 returns normally when a cancel
    arrives just as the write completes; `wait` would then block for its whole timeout."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _ack_fields(reservation: Reservation) -> list[Any]:
    return [reservation.id, reservation.token, reservation.result or ""]
