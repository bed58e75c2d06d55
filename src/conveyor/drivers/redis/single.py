"""A single push on Redis: one EVALSHA of lua/push_one.lua (push.lua for a job with meta or a
unique key), with nothing around it, sent from the event loop (`push`) or from the caller's
own thread (`push_in_thread`, the blocking facade's push): one script, its arguments built by
one function, its errors translated by one edge."""

from __future__ import annotations

from typing import Any, cast

from conveyor.drivers.limit import refused_for_limit
from conveyor.drivers.redis.client import RedisClient
from conveyor.drivers.redis.records import push_jobs, push_one
from conveyor.drivers.redis.scripts import ThreadClient
from conveyor.errors import BackendUnavailableError
from conveyor.job import NewJob

__all__ = ["SinglePush"]


class SinglePush(RedisClient):
    """`push` of one job, the way a web request pushes: one script call, one round trip."""

    async def push(self, job: NewJob, *, connection: object | None = None) -> str:
        """Atomic, as push.lua is. The first push to a queue through this instance goes
        through push_many, which adds the queue to the set of known queues in the same round
        trip; later ones are the script call alone."""
        if self._unknown([job.queue]):
            return (await self.push_many([job], connection=connection))[0]
        self.check_connection(connection)
        loads = self._scripts.loads
        job_id = str((await self._call(*self._push_call(job)))[0])
        if self._scripts.loads != loads:
            await self._pushed([job.queue], loads)
        return job_id

    def push_in_thread(self, job: NewJob) -> str | None:
        """`push`, sent from the calling thread on a synchronous connection, so that a thread
        without an event loop pays no hop to the loop's thread and back (two thread wake-ups,
        more than the script's round trip on a loaded machine). The same script and arguments
        as `push`; None for the first push to a queue through this instance (the event loop
        then does it, adding the queue to the known ones), and when the server refuses a new
        connection for its maxclients (the loop's pool waits for one of its own)."""
        if self._unknown([job.queue]):
            return None
        loads = self._scripts.loads
        try:
            job_id = str(self._call_in_thread(*self._push_call(job))[0])
        except BackendUnavailableError as error:
            if refused_for_limit(str(error)):  # nothing sent: the loop's pool waits for one
                return None
            raise
        if self._scripts.loads != loads:  # the server forgot its scripts: see `_pushed`
            with self._edge:
                client = cast(ThreadClient, self._thread_redis())
                client.execute_command("SADD", self.prefix + "queues", job.queue)
        return job_id

    def _push_call(self, job: NewJob) -> tuple[str, list[str], list[Any]]:
        """The script for one job, its KEYS and ARGV: push_one.lua, or push.lua for a job with
        meta or a unique key."""
        keys = self.keys(job.queue)
        one = push_one(job)
        if one is None:
            return "push", keys.of_script("push"), [keys.job, push_jobs((job,))]
        return "push_one", keys.of_script("push_one"), [keys.job, *one]
