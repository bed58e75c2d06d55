"""psycopg_pool's pool for the PostgreSQL dialect, which also remembers why it could not add a
connection when the server refused one for its connection limit."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from conveyor.drivers.limit import refused_for_limit

__all__ = ["Pool"]


class Pool(AsyncConnectionPool[psycopg.AsyncConnection[Any]]):
    """psycopg_pool's pool, which also remembers why its last attempt to connect failed, when
    the server refused it for its connection limit (`refused`, the server's words; "" once a
    connection is made again): a call that then waits in vain for a pooled connection says so,
    where the pool would only say it timed out."""

    refused = ""

    async def _connect(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await super()._connect(timeout)
        except psycopg.Error as error:
            text = " ".join(str(error).split())
            self.refused = text if refused_for_limit(text) else ""
            raise
        self.refused = ""
        return conn
