"""Job control on Redis: cancelling jobs and pausing queues (the `control` capability), and the
ticks schedules pushed (the `schedules` capability)."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.drivers.base import Reservation, Tick
from conveyor.drivers.redis.client import RedisClient
from conveyor.drivers.redis.keys import queue_of
from conveyor.drivers.redis.scripts import Batch

__all__ = ["JobControl"]


class JobControl(RedisClient):
    """cancel (one script per queue), cancelling, pause and paused; mark_tick and ticks."""

    async def cancel(self, ids: Sequence[str]) -> set[str]:
        """One script call per queue holding any of the ids (found by `get`'s search)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        async with self._edge.command():
            queues = sorted(await self._redis().execute_command("SMEMBERS", self.prefix + "queues"))
        batch = Batch()
        for queue in queues:
            keys = self.keys(queue)
            batch.script("cancel", keys.of_script("cancel"), [keys.job, *wanted])
        return {job_id for reply in await self._run(batch) for job_id in reply}

    async def cancelling(self, reservations: Sequence[Reservation]) -> set[str]:
        """One HMGET per job, all in one round trip; fenced by comparing the token."""
        held = [item for item in reservations if queue_of(item.token) is not None]
        if not held:
            return set()
        batch = Batch()
        for item in held:
            key = self.keys(queue_of(item.token) or "").job + item.id
            batch.command("HMGET", key, "state", "reservation", "cancel")
        replies = await self._run(batch)
        return {
            item.id
            for item, (state, token, cancel) in zip(held, replies, strict=True)
            if state == "reserved" and token == item.token and cancel == "1"
        }

    async def pause(self, queue: str, paused: bool = True) -> None:
        """A key of the queue's own: present while it is paused."""
        async with self._edge.command():
            if paused:
                await self._redis().execute_command("SET", self.keys(queue).paused, "1")
            else:
                await self._redis().execute_command("DEL", self.keys(queue).paused)

    async def paused(self, queues: Sequence[str]) -> set[str]:
        """One EXISTS per queue, in one round trip."""
        wanted = list(dict.fromkeys(queues))
        if not wanted:
            return set()
        batch = Batch()
        for queue in wanted:
            batch.command("EXISTS", self.keys(queue).paused)
        replies = await self._run(batch)
        return {queue for queue, there in zip(wanted, replies, strict=True) if there}

    async def mark_tick(self, schedule: str, tick: float, job_id: str) -> None:
        """One script on one hash of every schedule's latest tick."""
        await self._call("mark_tick", [self.prefix + "ticks"], [schedule, repr(tick), job_id])

    async def ticks(self, schedules: Sequence[str]) -> dict[str, Tick]:
        """One HMGET; a damaged value reads as no tick."""
        wanted = list(dict.fromkeys(schedules))
        if not wanted:
            return {}
        async with self._edge.command():
            values = await self._redis().execute_command("HMGET", self.prefix + "ticks", *wanted)
        found = {}
        for name, value in zip(wanted, values, strict=True):
            at, _, job_id = (value or "").partition(" ")
            try:
                found[name] = Tick(name, float(at), job_id)
            except ValueError:
                continue
        return found
