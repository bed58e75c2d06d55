"""What Redis keeps about workers: their running totals and which processes are alive, and
what a push there survives."""

from __future__ import annotations

import contextlib

from conveyor.drivers.base import WorkerCounts, WorkerPresence
from conveyor.drivers.redis.client import RedisClient, seconds
from conveyor.drivers.redis.scripts import Batch

__all__ = ["WorkerRecords"]

_COUNTERS = ("processed", "succeeded", "failed", "retried")


class WorkerRecords(RedisClient):
    """record_stats, worker_stats, beat, alive, durability and hazards."""

    async def durability(self) -> str:
        """`appendfsync <policy>` while the server keeps an append-only file, else
        `appendonly no` (then only its snapshots, if any, outlive it)."""
        async with self._edge.command():
            config = await self._redis().execute_command("CONFIG GET", "append*")
        if config.get("appendonly") != "yes":
            return "appendonly no"
        return f"appendfsync {config.get('appendfsync')}"

    async def hazards(self) -> list[str]:
        """`durability()`'s, and a maxmemory-policy that evicts any key (allkeys-*): under
        memory pressure Redis would drop job records as it drops cache entries. A volatile-*
        policy drops only keys with a time to live, which conveyor never sets."""
        found = await super().hazards()
        async with self._edge.command():
            config = await self._redis().execute_command("CONFIG GET", "maxmemory-policy")
        policy = str(config.get("maxmemory-policy", ""))
        if policy.startswith("allkeys"):
            found.append(
                f"redis runs with maxmemory-policy {policy}: when its memory runs short it"
                " deletes keys, jobs among them; set maxmemory-policy noeviction (pushes then"
                " fail with an out-of-memory error instead of jobs vanishing)"
            )
        return found

    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        """Add to the worker's totals in one MULTI/EXEC: atomic, as HINCRBY each is."""
        batch = Batch()
        for counter in _COUNTERS:
            field = f"{counter}:{worker}"
            batch.command("HINCRBY", self.prefix + "stats", field, getattr(counts, counter))
        await self._run(batch, transaction=True)

    async def beat(self, identity: str, worker: str, *, stopping: bool = False) -> None:
        """One script: the start time is kept from the first beat, times are the server's."""
        args = [identity, worker, "1" if stopping else "0"]
        await self._call("beat", [self.prefix + "beats"], args)

    async def alive(self, within: float) -> list[WorkerPresence]:
        """Every beat read at once (one HGETALL, with TIME): one entry per worker process."""
        batch = Batch()
        batch.command("TIME")
        batch.command("HGETALL", self.prefix + "beats")
        clock, beats = await self._run(batch)
        since = seconds(clock) - within
        found = []
        for identity, value in beats.items():
            worker, _, times = value.partition(" ")
            started, _, seen = times.partition(" ")
            with contextlib.suppress(ValueError):  # not ours, or damaged: not a live worker
                if float(seen) >= since:
                    found.append(WorkerPresence(identity, worker, float(started), float(seen)))
        return sorted(found, key=lambda presence: (presence.started_at, presence.identity))

    async def worker_stats(self) -> dict[str, WorkerCounts]:
        """Every worker's totals, from one HGETALL."""
        async with self._edge.command():
            stored = await self._redis().execute_command("HGETALL", self.prefix + "stats")
        totals: dict[str, dict[str, int]] = {}
        for field, value in stored.items():
            counter, _, worker = field.partition(":")
            if counter in _COUNTERS and value.lstrip("-").isdigit():  # others are not ours
                totals.setdefault(worker, {})[counter] = int(value)
        return {worker: WorkerCounts(**values) for worker, values in totals.items()}
