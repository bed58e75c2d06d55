"""A single push on Redis: one EVALSHA of lua/push.lua, with nothing around it."""

from __future__ import annotations

from conveyor.drivers.redis.client import RedisClient
from conveyor.drivers.redis.records import push_jobs
from conveyor.job import NewJob

__all__ = ["SinglePush"]


class SinglePush(RedisClient):
    """`push` of one job, the way a web request pushes: one script call, one round trip."""

    async def push(self, job: NewJob, *, connection: object | None = None) -> str:
        """Atomic, as push.lua is. The first push to a queue through this instance goes
        through push_many, which adds the queue to the set of known queues in the same round
        trip; later ones are the script call alone."""
        if job.queue not in self._known:
            return (await self.push_many([job], connection=connection))[0]
        self.check_connection(connection)
        keys = self.keys(job.queue)
        reply = await self._call("push", keys.of_script("push"), [keys.job, push_jobs((job,))])
        return str(reply[0])
