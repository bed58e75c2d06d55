"""The Redis driver's pool of connections for its commands (`WaitingPool`): redis-py's, with a
wait for a busy one instead of an error, a shorter way for an idle one, and, when the server
refuses a new connection for its maxclients, a wait for one of its own to come back."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from conveyor.drivers.limit import PAUSE_FIRST, PAUSE_MOST, refused_for_limit

__all__ = ["WaitingPool"]


class WaitingPool(ConnectionPool):
    """redis-py's ConnectionPool, except that a call finding all `max_connections` busy waits
    for one instead of failing: what BlockingConnectionPool does, without the condition,
    lock and timer it takes on every call. The wait is bounded by the caller's deadline.

    An idle connection is handed out and taken back without what redis-py 8 does around each
    checkout and return (its lock, which one event loop does not need when nothing is awaited
    between taking a connection from a list and putting it in the other, and four awaited
    observability records): about 10 µs a command less here. It is still checked before use
    (`ensure_connection`: connected, no reply left unread). redis-py's own connection-count
    metrics, off unless configured, do not see these. A connection marked to reconnect, one
    holding a new token to authenticate with (a streaming credential provider's, sent when the
    connection comes back), and every connection on a redis-py without these methods take
    redis-py's own way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(self.max_connections)
        #: The server's words when it last refused a new connection for its maxclients, ""
        #: once one was made again: the deadline's error then names the limit.
        self.refused = ""
        self._returned: asyncio.Future[None] | None = None  # set when a connection comes back
        #: The connections handed out, each holding a slot: redis-py's own get_connection
        #: calls `release` on a connection that failed to connect, which never held one
        #: (before, each such failure left one slot more, past max_connections).
        self._lent: set[AbstractConnection] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        # The arguments are passed on as given: redis-py 5 names the command, 6+ nothing.
        await self._slots.acquire()
        try:
            pause = PAUSE_FIRST
            while True:
                making = False  # whether this checkout makes a connection after refusals
                if self.refused and not self._ready_one():
                    # The server refused a new connection for its maxclients: wait for one
                    # of the pool's to come back, and ask for a new one only after a pause,
                    # until the caller's deadline. Before, the call failed at once, though
                    # the pool held connections.
                    if await self._returned_within(pause):
                        continue
                    pause = min(pause * 2, PAUSE_MOST)
                    making = True
                try:
                    connection = await self._checkout(*args, **kwargs)
                except RedisConnectionError as error:
                    if not refused_for_limit(str(error)):
                        raise
                    self.refused = str(error)
                    continue
                if making:  # a connection made: the server takes them again
                    self.refused = ""
                self._lent.add(connection)
                return connection
        except BaseException:
            self._slots.release()
            raise

    def _ready_one(self) -> bool:
        """Whether an idle connection is connected, the connected ones put last (`pop` takes
        the last): after refusals, unconnected ones wait among them."""
        available = self._available_connections
        if available and not _connected(available[-1]):
            available.sort(key=_connected)
        return bool(available) and _connected(available[-1])

    async def _returned_within(self, seconds: float) -> bool:
        """Whether a connection came back to the pool within `seconds`."""
        if self._returned is None or self._returned.done():
            self._returned = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait({self._returned}, timeout=seconds)
        return bool(done)

    async def _checkout(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        """A connection: an idle one the short way, else redis-py's (which may make one)."""
        if not (_LEAN_POOL and self._available_connections):
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-any-return,no-untyped-call]
        connection: AbstractConnection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            self._put_back(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if connection not in self._lent:  # redis-py's, after a failed connect: no slot held
            await super().release(connection)
            return
        self._lent.discard(connection)
        if self._returned is not None and not self._returned.done():
            self._returned.set_result(None)
        try:
            if (
                _LEAN_POOL
                and connection in self._in_use_connections
                and not connection.should_reconnect()  # type: ignore[no-untyped-call]
                and getattr(connection, "_re_auth_token", None) is None
            ):
                self._put_back(connection)
            else:
                await super().release(connection)
        finally:
            self._slots.release()

    def _put_back(self, connection: AbstractConnection) -> None:
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)


def _connected(connection: AbstractConnection) -> bool:
    return bool(getattr(connection, "is_connected", False))


#: Whether this redis-py's pool and connections have what WaitingPool's short way uses.
_LEAN_POOL = hasattr(ConnectionPool, "ensure_connection") and hasattr(
    AbstractConnection, "should_reconnect"
)
