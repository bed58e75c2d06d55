"""The Redis driver's plumbing: its settings, its two clients and how every command is sent.

`RedisClient` is what the driver's parts (driver.py, control.py, workers.py) share: the URL
and key prefix, the client for commands and the one for blocking pops, the queues' keys, and
`_call`/`_run`, which send scripts and batches through the edge where redis-py's errors
become conveyor's. A third, synchronous client, made on first use, serves `_call_in_thread`:
a script call from a plain thread, without the event loop (see single.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis
from redis.asyncio import Redis

from conveyor.drivers.base import Driver
from conveyor.drivers.redis.connection import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    URL_ENV,
    Edge,
    WaitingPool,
    check_url,
    command_timeout,
    execute,
    execute_in_thread,
    make_client,
    make_thread_client,
    split_prefix,
)
from conveyor.drivers.redis.keys import QueueKeys
from conveyor.drivers.redis.scripts import Batch, Client, ScriptRunner, ThreadClient
from conveyor.drivers.redis.sentinel import close_sentinels, close_thread_sentinels

__all__ = ["RedisClient", "seconds"]


class RedisClient(Driver):
    """The connections and keys of one Redis driver (see the module docstring)."""

    def __init__(self, url: str | None = None, *, prefix: str | None = None, **options: Any):
        self.url, url_prefix = split_prefix(url or os.environ.get(URL_ENV) or DEFAULT_URL)
        check_url(self.url)
        self.prefix = next(p for p in (prefix, url_prefix, DEFAULT_PREFIX) if p is not None)
        self._options = options
        self._edge = Edge(self.url, command_timeout(self.url, options)[1])
        self._scripts = ScriptRunner()
        self._client: Redis | None = None
        self._blocking: Redis | None = None
        self._thread_client: redis.Redis | None = None
        self._thread_lock = threading.Lock()
        self._keys: dict[str, QueueKeys] = {}
        #: Queues this instance added to the set of known queues already, since the server
        #: last forgot its scripts (`_known_at`, a count of `_scripts.loads`): one restarted
        #: without persistence forgets the set too, which `get` and `cancel` search.
        self._known: set[str] = set()
        self._known_at = 0

    def _location(self) -> str:
        return self.url

    # -- connections -------------------------------------------------------------------------

    def _redis(self) -> Client:
        """The client for every command but BLPOP; connections are made on first use."""
        if self._client is None:
            self._client = make_client(self.url, self._options)
            pool = self._client.connection_pool
            if isinstance(pool, WaitingPool):  # not when options= named another class
                self._edge.pool = pool
                self._edge.max_connections = pool.max_connections
        return cast(Client, self._client)

    def _blocking_redis(self) -> Client:
        if self._blocking is None:
            self._blocking = make_client(self.url, self._options, blocking=True)
        return cast(Client, self._blocking)

    def _thread_redis(self) -> redis.Redis:
        """The synchronous client for calls from plain threads, made once under a lock (two
        threads may call at once)."""
        with self._thread_lock:
            if self._thread_client is None:
                self._thread_client = make_thread_client(self.url, self._options)
            return self._thread_client

    def keys(self, queue: str) -> QueueKeys:
        """The keys of `queue` under this driver's prefix."""
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys.of(self.prefix, queue)
        return keys

    def _unknown(self, queues: Iterable[str]) -> list[str]:
        """Of `queues`, those this instance has not added to the set of known queues since the
        server last forgot its scripts."""
        if self._known_at != self._scripts.loads:
            self._known.clear()
            self._known_at = self._scripts.loads
        return [queue for queue in dict.fromkeys(queues) if queue not in self._known]

    async def _pushed(self, queues: Iterable[str], loads: int) -> None:
        """Note `queues` as known after a push to them that began when the scripts had been
        loaded `loads` times. If the server forgot its scripts meanwhile (the push met
        NOSCRIPT), it may have forgotten the set too: they are added to it again."""
        queues = list(queues)
        if queues and self._scripts.loads != loads:
            async with self._edge.command():
                await self._redis().execute_command("SADD", self.prefix + "queues", *queues)
            self._unknown(())
        self._known.update(queues)

    async def open(self) -> None:
        """Connect and load the scripts. Idempotent; any call would connect by itself."""
        async with self._edge.command():
            await self._scripts.load(self._redis())

    async def close(self) -> None:
        """Close the connection pools; the next call connects again."""
        clients = [client for client in (self._client, self._blocking) if client is not None]
        self._client = self._blocking = None
        with self._thread_lock:
            thread_client, self._thread_client = self._thread_client, None
        with self._edge:  # closing sends nothing that waits for an answer
            for client in clients:
                await client.aclose()
                await close_sentinels(client.connection_pool)
            if thread_client is not None:
                _close_idle(thread_client)
                close_thread_sentinels(thread_client.connection_pool)

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        async with self._edge.command():
            return await self._scripts.call(self._redis(), name, keys, args, execute)

    def _call_in_thread(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """`_call` from a plain thread, on the synchronous client: the same script, the same
        edge; the deadline is the sockets' (connection.make_thread_client)."""
        client = self._thread_redis()
        try:
            with self._edge:
                return self._scripts.call_in_thread(
                    cast(ThreadClient, client), name, keys, args, execute_in_thread
                )
        finally:
            if client is not self._thread_client:  # closed meanwhile: close what it gave back
                _close_idle(client)

    async def _run(self, batch: Batch, *, transaction: bool = False) -> list[Any]:
        async with self._edge.command():
            return await self._scripts.run(self._redis(), batch, transaction=transaction)

    async def _now(self) -> float:
        """The server's clock, in seconds since the epoch."""
        async with self._edge.command():
            return seconds(await self._redis().execute_command("TIME"))


def seconds(clock: Sequence[str]) -> float:
    """A TIME reply, [seconds, microseconds], as seconds since the epoch."""
    return int(clock[0]) + int(clock[1]) / 1_000_000


def _close_idle(client: redis.Redis) -> None:
    """Close a synchronous client's connections that no thread is using. One in use by a push
    in another thread is left to it (closing its socket under it made that push wait out its
    whole timeout for a reply, then fail); that thread closes it once its call is done."""
    client.connection_pool.disconnect(inuse_connections=False)
