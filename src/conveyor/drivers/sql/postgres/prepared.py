"""A statement run the short way on a pooled connection: prepared there once under its own
name, its parameters sent as text straight through libpq.

psycopg's cursor costs a single push about 50 µs of CPU over libpq's own work (a cursor
object, each parameter adapted by its Python type, its prepared-statement bookkeeping, the
result's description), a sixth of the whole push on this machine (docs/benchmarks.md, "A
single push without psycopg's cursor"). Only the statements named in SHORT take this way:
those run one at a time, where that sixth shows (a batch's statement pays it once for many
jobs). They read no rows back (`execute`), and their parameters are str, int, float, bool or
None, sent as text: the server takes each one's type from where it stands in the statement, so
their SQL casts any parameter whose type it could not tell (`%(delay)s::float8`). A caller's
own connection (`connection=`) never takes it: its prepared statements are the caller's.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.generators import execute
from psycopg.pq.abc import PGconn, PGresult

from conveyor.drivers.sql.adapter import Params
from conveyor.drivers.sql.queries import Query

__all__ = ["SHORT", "Positional", "positional", "run"]

#: The statements that take the short way: a single push.
SHORT = frozenset({"push"})

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class Positional:
    """A statement's SQL with `$1, $2, ...` for its named parameters, in `order`."""

    name: bytes  # the prepared statement's name on each connection
    sql: bytes
    order: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def positional(query: Query) -> Positional | None:
    """`query` with positional parameters, or None if it is not one of SHORT, or its SQL
    holds a `%` that is not a named parameter (psycopg's `%%`, say)."""
    if query.name not in SHORT:
        return None
    order: list[str] = []

    def number(found: re.Match[str]) -> str:
        if found[1] not in order:
            order.append(found[1])
        return f"${order.index(found[1]) + 1}"

    sql = _PLACEHOLDER.sub(number, query.sql)
    if "%" in sql:
        return None
    return Positional(f"conveyor_{query.name}".encode(), sql.encode(), tuple(order))


def run(pgconn: PGconn, prepared: set[bytes], statement: Positional, params: Params) -> PQGen[int]:
    """Run `statement` with `params` on `pgconn`, whose statements prepared so far are named
    in `prepared` (so prepared there first if it is not yet), and return how many rows it
    changed: psycopg's kind of generator, which the connection's own wait drives
    (socket.wait_on_socket, or a thread's). psycopg.Error as the cursor would raise it.

    A statement the server no longer has (DEALLOCATE ALL or DISCARD ALL on the connection, a
    pooler's reset) is prepared again and run once more: the server refused it unrun."""
    texts = [_text(params[key]) for key in statement.order]
    try:
        return (yield from _prepared(pgconn, prepared, statement, texts))
    except psycopg.errors.InvalidSqlStatementName:
        prepared.discard(statement.name)
        return (yield from _prepared(pgconn, prepared, statement, texts))


def _prepared(
    pgconn: PGconn, prepared: set[bytes], statement: Positional, texts: list[bytes | None]
) -> PQGen[int]:
    if statement.name not in prepared:
        pgconn.send_prepare(statement.name, statement.sql)
        _changed((yield from execute(pgconn)))
        prepared.add(statement.name)
    pgconn.send_query_prepared(statement.name, texts)
    return _changed((yield from execute(pgconn)))


def _text(value: Any) -> bytes | None:
    """`value` as PostgreSQL's text input of its type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, str):
        if "\x00" in value:  # a C string would end there: refuse it, as psycopg does
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return value.encode()  # the pool's connections are UTF8 (Target.kwargs)
    if isinstance(value, int | float):
        return str(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} as a prepared statement's parameter")


def _changed(results: list[PGresult]) -> int:
    """How many rows a statement changed, from its results; the error it met, raised."""
    rows = 0
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result)
        rows = result.command_tuples or 0
    return rows
