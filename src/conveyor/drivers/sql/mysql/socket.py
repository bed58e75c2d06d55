"""The pooled MySQL connections' wait for their server's answer, which a cancellation cannot
cut short (as the PostgreSQL pool's, conveyor.drivers.sql.postgres.socket).

asyncmy reads through its protocol's `wait_for_data`, one future per wait; a cancelled one ends
the read half-way through a reply. A pooled connection's protocol here waits on `SocketWait`
futures instead, and on one cancelled waits again: the read ends with the bytes it needs, the
end of the stream or the connection's loss (the call's Deadline aborts a silent connection).
So the shield around each call (conveyor.drivers.sql.shielded) lets its caller await the
answer directly, with no task and no loop turn more than asyncmy's own, and moves the work
into a task only when the caller is cancelled.

asyncmy's protocol class is not public: where it is missing or changed, connections keep
asyncmy's own wait, and every call goes on in a task of its own as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncmy.connection import Connection

from conveyor.drivers.sql.shielded import SocketWait

__all__ = ["wait_on_socket"]

try:
    from asyncmy.connection import _MySQLProtocol  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - another asyncmy
    _MySQLProtocol = None


def wait_on_socket(connection: Connection) -> None:
    """Make `connection` (new, idle) wait for its server's answers on SocketWait futures."""
    protocol = getattr(connection, "_proto", None)
    if _Protocol is not None and type(protocol) is _MySQLProtocol:
        protocol.__class__ = _Protocol


def _protocol_class() -> type[Any] | None:
    if _MySQLProtocol is None or not hasattr(_MySQLProtocol, "wait_for_data"):
        return None  # pragma: no cover - another asyncmy

    class Protocol(_MySQLProtocol):  # type: ignore[misc]
        """asyncmy's protocol, with a wait for data that a cancellation cannot cut short."""

        _read_waiter: asyncio.Future[None] | None

        async def wait_for_data(self, need: int) -> None:
            while self.length - self.pos < need and not self.eof and self.exc is None:
                waiter = SocketWait(loop=self._loop)
                self._read_waiter = waiter
                try:
                    await waiter
                except asyncio.CancelledError:
                    pass  # never cut short: wait on (see the module docstring)
                finally:
                    if self._read_waiter is waiter:
                        self._read_waiter = None

    return Protocol


_Protocol = _protocol_class()
