"""MySQL's connections for statements from plain threads (drivers/sql/threads.py): PyMySQL's
synchronous connections, set up as the pooled ones are (utf8mb4, strict sql_mode, READ
COMMITTED, the lock wait), in autocommit. The deadline is given to the socket: each read and
write gives up after the timeout, and the connection is then closed (a connection idle a while
is checked before it is used, so it needs no keepalives)."""

from __future__ import annotations

import contextlib
import random
import time
from typing import TYPE_CHECKING, Any

import pymysql

from conveyor.drivers.sql.adapter import Params
from conveyor.drivers.sql.mysql.connection import BACKOFF
from conveyor.drivers.sql.mysql.session import statements
from conveyor.drivers.sql.mysql.target import (
    ATTEMPTS,
    RETRIED,
    SESSION_SETUP,
    SQL_MODE,
    Target,
    error_code,
    is_lost,
)
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.threads import ThreadConnections
from conveyor.errors import DriverError

__all__ = ["MysqlThreadConnections"]

_ERRORS = (pymysql.MySQLError, OSError, EOFError)

if TYPE_CHECKING:
    _Connection = pymysql.Connection[Any]  # generic in its stubs only
else:
    _Connection = pymysql.Connection


class MysqlThreadConnections(ThreadConnections[_Connection]):
    """Up to `size` PyMySQL connections to `target` for calls from plain threads."""

    def __init__(self, target: Target, size: int) -> None:
        super().__init__(size)
        self._target = target

    def _connect(self) -> _Connection:
        target = self._target
        try:
            conn: _Connection = pymysql.connect(
                host=target.host,
                port=target.port,
                user=target.user,
                password=target.password.encode("utf-8"),  # see Target.pool_kwargs
                database=target.database,
                unix_socket=target.unix_socket,
                connect_timeout=target.connect_timeout,
                read_timeout=target.timeout,
                write_timeout=target.timeout,
                charset="utf8mb4",
                autocommit=True,
                sql_mode=SQL_MODE.strip("'"),  # PyMySQL quotes it itself
                init_command=SESSION_SETUP,
                program_name="conveyor",
                ssl=target.ssl,
            )
        except _ERRORS as error:
            raise target.error(error, "connect") from None
        try:
            with conn.cursor() as cursor:  # as checkout.py sets the pooled ones
                lock_wait = "SET @@SESSION.innodb_lock_wait_timeout = %s"
                cursor.execute(lock_wait, (target.lock_wait,))
        except _ERRORS as error:
            self._close(conn)
            raise target.error(error, "connect") from None
        return conn

    def _run(self, conn: _Connection, query: Query, params: Params) -> None:
        """Again after a deadlock or lock wait timeout (the server rolled the statement back),
        as the pooled connections' calls are."""
        attempt = 1
        while True:
            try:
                with conn.cursor() as cursor:
                    for statement in statements(query.sql):
                        cursor.execute(statement, dict(params))
                return
            except _ERRORS as error:
                if error_code(error) not in RETRIED or attempt >= ATTEMPTS:
                    raise self._target.error(error, query.name) from error
            time.sleep(random.uniform(0, BACKOFF * 2**attempt))
            attempt += 1

    def _dropped(self, error: DriverError) -> bool:
        """A lost connection (its socket closed: a restart, a KILL), not a read or write that
        timed out (PyMySQL raises its error while handling the socket's TimeoutError)."""
        cause = error.__cause__
        if cause is None or not is_lost(cause):
            return False
        return not isinstance(cause.__cause__ or cause.__context__, TimeoutError)

    def _check(self, conn: _Connection) -> None:
        try:
            conn.ping(reconnect=False)
        except _ERRORS as error:
            raise self._target.error(error, "check") from error

    def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(*_ERRORS):  # closed already, or its socket broken
            conn.close()
