"""A caller's own psycopg connection (connection=), before and while a push runs on it: the
states it must not be in, where it must find the jobs table, and its loss told as the caller's.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import psycopg

from conveyor.drivers.lent import lost
from conveyor.drivers.sql.queries import Query
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

__all__ = ["JOBS_TABLE", "check_state", "on_callers"]

T = TypeVar("T")

#: SQLSTATEs after which the server has aborted the caller's transaction for a conflict with
#: another (serialization_failure, deadlock_detected): it must be run again, whole.
_CONFLICTS = ("40001", "40P01")

#: Where a connection finds the jobs table (`jobs`: its name), by its search_path: a borrowed
#: connection must find the driver's (the URL may name a schema: options=-csearch_path=...).
JOBS_TABLE = Query(
    "jobs_table",
    "",
    "SELECT current_database() AS name, to_regclass(%(jobs)s)::oid AS jobs,"
    " current_setting('search_path') AS search_path",
)


def check_state(connection: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    """ConfigError naming the fix for a connection a push cannot run on: closed, in pipeline
    mode, or in a failed transaction. No round trip: psycopg knows."""
    if connection.closed:
        raise ConfigError(
            "connection= is closed: pass the open connection your transaction runs on"
        )
    if connection.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF:
        raise ConfigError(
            "connection= is in pipeline mode (inside `conn.pipeline()`), where a statement's"
            " rows come only at the pipeline's sync, and the push reads each one's before"
            " the next: push outside the pipeline block"
        )
    if connection.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        raise ConfigError(
            "connection= is in a failed transaction (a statement before this push failed,"
            " and the server ignores every other until it ends): roll it back (or back to"
            " a savepoint) first, then push"
        )


async def on_callers(step: Awaitable[T]) -> T:
    """`step`, run on a caller's connection: that connection lost is said to be the caller's
    to open again (the server may be fine), not an outage the pool recovers from; a conflict
    that aborted the caller's transaction, theirs to run again; a client_encoding that cannot
    hold the job's text (LATIN1, say), theirs to set to UTF8."""
    try:
        return await step
    except UnicodeEncodeError as error:  # psycopg encodes in the connection's client_encoding
        raise ConfigError(
            f"connection= sends text as {error.encoding}, which cannot hold"
            f" {error.object[error.start : error.end]!r} of this push: set the connection's"
            " client_encoding to UTF8 (in its URL or settings, or SET client_encoding TO 'UTF8')"
        ) from None
    except BackendUnavailableError as error:
        detail = " ".join(str(error.__cause__).split())
        raise lost(detail) from error
    except DriverError as error:
        if getattr(error.__cause__, "sqlstate", None) not in _CONFLICTS:
            raise
        raise DriverError(
            f"{error}: the server aborted your transaction for a conflict with a concurrent"
            " one (under REPEATABLE READ or SERIALIZABLE, a unique key pushed and committed"
            " since your snapshot, say); roll it back and run it again"
        ) from error
