"""Statements on one MySQL connection, whatever transaction it has open: a pooled or caller's
asyncmy connection (`Session`), or a caller's synchronous one, PyMySQL's or mysqlclient's, lent
with its thread by the blocking facade (`LentSession`). Both run a block's statements in turn,
and wrap the client's errors in `Failed`, for the adapter to translate at its edge."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from asyncmy.connection import Connection
from asyncmy.cursors import Cursor
from asyncmy.errors import MySQLError

from conveyor.drivers.lent import LentConnection
from conveyor.drivers.record import decode_text
from conveyor.drivers.sql.adapter import Params, Row
from conveyor.drivers.sql.deadline import MIGRATION_TIMEOUT, Deadline
from conveyor.drivers.sql.mysql.target import SYNC_CLIENTS
from conveyor.drivers.sql.queries import Query, uncommented

__all__ = [
    "Failed",
    "LentSession",
    "QuietCursor",
    "Session",
    "ascii_items",
    "failing",
    "is_mariadb",
    "roll_back",
    "rows_of",
    "server_statements",
    "statements",
    "sync_client",
]

_STATEMENT_END = re.compile(r";[ \t]*$", re.M)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


class Failed(Exception):
    """An error the client (or the socket) raised, and the block it was running, if any;
    turned into a DriverError at the adapter's edge once no retry is left."""

    def __init__(self, error: BaseException, what: str | None) -> None:
        super().__init__(error, what)
        self.error = error
        self.what = what


@contextmanager
def failing(
    what: str | None, errors: tuple[type[BaseException], ...] = (MySQLError, OSError, EOFError)
) -> Iterator[None]:
    """Wrap the client's `errors` (asyncmy's by default) in Failed, naming the block."""
    try:
        yield
    except errors as error:
        raise Failed(error, what) from error


class QuietCursor(Cursor):
    """A cursor that does not ask for the server's warnings after each statement. asyncmy would
    send SHOW WARNINGS and log each one; ours are expected ("table already exists" on every
    open, duplicate keys skipped by retry_failed) and strict mode turns real ones into errors."""

    async def _show_warnings(self, conn: Connection) -> None:
        return None


class Session:
    """`SqlTransaction` on one asyncmy connection: a pooled one, or a caller's own. Runs each
    statement of a block in turn, on whatever transaction the connection has open."""

    def __init__(
        self, connection: Connection, deadline: Deadline | None = None, *, borrowed: bool = False
    ) -> None:
        self._connection = connection
        self._deadline = deadline
        self._borrowed = borrowed  # a caller's: its items sent as ASCII (see ascii_items)
        #: True once a statement took a named lock, which outlives transactions: the pooled
        #: adapter releases it when the transaction ends.
        self.holds_named_lock = False
        #: True once a script (a migration) lifted the session's lock wait: the pooled adapter
        #: then closes the connection rather than pool it again.
        self.waits_long = False

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        rows: list[Row] = []
        with failing(query.name):
            async with self._connection.cursor(QuietCursor) as cursor:
                for statement in statements(query.sql):
                    await self._run(cursor, statement, params)
                    if cursor.description:
                        rows = rows_of(cursor.description, await cursor.fetchall())
        return rows

    async def execute(self, query: Query, params: Params) -> int:
        changed = 0
        with failing(query.name):
            async with self._connection.cursor(QuietCursor) as cursor:
                for statement in statements(query.sql):
                    await self._run(cursor, statement, params)
                    changed = cast(int, cursor.rowcount)  # typed `object` in asyncmy's stub
        return changed

    async def in_one_trip(
        self, query: Query, params: Params, isolation: str | None
    ) -> tuple[list[Row], int]:
        """A block of several statements as one transaction sent in one round trip: BEGIN, the
        statements and COMMIT as one text (SET TRANSACTION ISOLATION LEVEL `isolation` first,
        if given), which the server runs in turn (asyncmy asks for multi-statements). Statement
        by statement, a reserve or a settle cost four round trips, four milliseconds over a
        link a millisecond long. The server stops at the first statement that fails, leaving
        the transaction open: it is rolled back here. Returns the rows of the last statement
        that returned some, and how many rows the last one changed, as fetch and execute."""
        parts = statements(query.sql)
        text, head = one_trip_text(query.sql, isolation)
        rows: list[Row] = []
        changed = 0
        try:
            with failing(query.name):
                async with self._connection.cursor(QuietCursor) as cursor:
                    await self._run(cursor, text, params)
                    for _ in range(head):  # past their results to BEGIN's
                        await cursor.nextset()
                    for _ in parts:
                        await cursor.nextset()
                        if cursor.description:
                            rows = rows_of(cursor.description, await cursor.fetchall())
                        changed = cast(int, cursor.rowcount)
                    await cursor.nextset()  # COMMIT's
        except BaseException:
            await roll_back(self._connection)
            raise
        return rows, changed

    async def script(self, sql: str) -> None:
        with failing("migration"):
            async with self._connection.cursor(QuietCursor) as cursor:
                if self._deadline is not None:  # a migration may run far longer than a call
                    self._deadline.extend(MIGRATION_TIMEOUT)
                    self.waits_long = True
                    lift = "SET @@SESSION.innodb_lock_wait_timeout = %s"
                    await cursor.execute(lift, (int(MIGRATION_TIMEOUT),))
                for statement in server_statements(sql, self._connection.get_server_info()):
                    await self._run(cursor, statement, None)

    async def _run(self, cursor: Cursor, statement: str, params: Params | None) -> None:
        if "GET_LOCK(" in statement:
            self.holds_named_lock = True
        if params is not None and self._borrowed:
            params = ascii_items(params)
        await cursor.execute(statement, None if params is None else dict(params))


class LentSession:
    """`SqlTransaction` on a caller's synchronous connection (PyMySQL's, mysqlclient's) lent
    with its thread: each block runs in that thread (`LentConnection.run`), on whatever
    transaction the caller has open. No deadline: the connection, and how long its
    transaction may wait, are the caller's."""

    def __init__(self, lent: LentConnection) -> None:
        connection: Any = lent.connection
        self._lent, self._connection = lent, connection
        # DB-API's optional extension, which both clients have: the module's Error on the
        # connection, so that neither needs importing here.
        self._errors: tuple[type[BaseException], ...] = (connection.Error, OSError)

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        block = functools.partial(self._block, query.name, statements(query.sql), params)
        rows: list[Row] = await self._lent.run(functools.partial(block, rows=True))
        return rows

    async def execute(self, query: Query, params: Params) -> int:
        block = functools.partial(self._block, query.name, statements(query.sql), params)
        changed: int = await self._lent.run(functools.partial(block, rows=False))
        return changed

    async def script(self, sql: str) -> None:
        parts = server_statements(sql, self._connection.get_server_info())
        await self._lent.run(functools.partial(self._block, "migration", parts, None, rows=False))

    def _block(
        self, what: str, parts: tuple[str, ...], params: Params | None, *, rows: bool
    ) -> Any:
        """In the lending thread: each statement of `parts`; the rows of the last that
        returned some (`rows`), else how many rows the last one changed."""
        result: Any = [] if rows else 0
        with failing(what, self._errors):
            cursor = self._connection.cursor()
            try:
                for statement in parts:
                    cursor.execute(statement, None if params is None else ascii_items(params))
                    if not rows:
                        result = cursor.rowcount
                    elif cursor.description:
                        result = rows_of(cursor.description, _tuples(cursor.fetchall()))
            finally:
                cursor.close()
        return result


async def roll_back(connection: Connection) -> None:
    """ROLLBACK, if the connection still works; a broken one is thrown away anyway."""
    try:
        await connection.rollback()
    except (MySQLError, OSError, EOFError):
        connection.close()


def _tuples(values: Any) -> Any:
    """A caller's rows as tuples: its connection's cursor class may make dicts (PyMySQL's
    `cursorclass=DictCursor`), whose values are in the columns' order."""
    return [tuple(row.values()) if isinstance(row, dict) else row for row in values]


def ascii_items(params: Params) -> dict[str, Any]:
    """`params`, its JSON `items` made ASCII (every other character as JSON's \\u escape, which
    means the same): what a caller's connection is sent. Its character set may be any (Django's
    default is utf8mb3, which has no emoji; latin1 neither), and ASCII reads alike in all of
    them; queries.sql reads the items as utf8mb4 (_utf8mb4)."""
    items = params.get("items")
    if not isinstance(items, str) or items.isascii():
        return dict(params)
    return {**params, "items": _NON_ASCII.sub(lambda run: json.dumps(run[0])[1:-1], items)}


def sync_client(connection: object) -> str | None:
    """The client of a synchronous MySQL connection ("pymysql", "MySQLdb"), else None; told by
    the module of its class or of a class it derives from, so neither client needs to be
    installed to ask."""
    for kind in type(connection).__mro__:
        package = kind.__module__.partition(".")[0]
        if package in SYNC_CLIENTS:
            return package
    return None


def rows_of(description: Any, values: Any) -> list[Row]:
    """Rows as dicts by column name; VARBINARY columns (names, ids, tokens) come back as bytes
    and are read as the UTF-8 text they were written as (bytes that are not UTF-8 are kept as
    lone surrogates, for the driver to report, rather than failing the whole statement)."""
    names = [column[0] for column in description]
    return [
        {
            name: decode_text(value) if isinstance(value, bytes) else value
            for name, value in zip(names, row, strict=True)
        }
        for row in values
    ]


@functools.cache
def one_trip_text(sql: str, isolation: str | None) -> tuple[str, int]:
    """A block's statements as the one text `Session.in_one_trip` sends, BEGIN and COMMIT
    around them (SET TRANSACTION ISOLATION LEVEL first, if given), and how many statements
    come before BEGIN: made once per block, not at every reserve and settle."""
    head = [] if isolation is None else [f"SET TRANSACTION ISOLATION LEVEL {isolation}"]
    return ";\n".join([*head, "BEGIN", *statements(sql), "COMMIT"]), len(head)


@functools.cache
def statements(sql: str) -> tuple[str, ...]:
    """The statements of a block: split where ';' ends a line, whole-line comments dropped."""
    return tuple(part.strip() for part in _STATEMENT_END.split(uncommented(sql)) if part.strip())


def is_mariadb(server_info: str) -> bool:
    """Whether a server's version string is MariaDB's ('10.11.6-MariaDB-0+deb12u1'), not
    MySQL's ('8.0.36')."""
    return "mariadb" in server_info.lower()


@functools.cache
def server_statements(sql: str, server_info: str) -> tuple[str, ...]:
    """The statements of a migration that this server runs: one that starts with
    `/* MariaDB */` or `/* MySQL */` is that server's only (see migrations/0002)."""
    other = "/* MySQL */" if is_mariadb(server_info) else "/* MariaDB */"
    return tuple(part for part in statements(sql) if not part.startswith(other))
