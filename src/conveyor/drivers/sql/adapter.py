"""What the shared SQL driver asks of a dialect's connection adapter: statements by name with
named parameters, rows read by column name, transactions; and the blocks every dialect's
queries.sql must define."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from conveyor.drivers.sql.queries import Query

__all__ = ["REQUIRED_QUERIES", "Params", "Row", "SqlBorrowing", "SqlConnection", "SqlTransaction"]

T = TypeVar("T")

#: Statement parameters, always by name; a statement ignores the keys it does not use.
Params = Mapping[str, object]
#: One result row, read by column name.
Row = Mapping[str, Any]

#: The blocks every dialect's queries.sql must define.
REQUIRED_QUERIES = frozenset(
    {
        "schema_version_create",
        "schema_version",
        "schema_version_record",
        "push_many",
        "push_many_holders",
        "reserve",
        "renew",
        "ack",
        "release",
        "fail",
        "counts",
        "list_jobs",
        "get",
        "retry_failed",
        "finished_ids",
        "purge",
        "prune",
        "record_stats",
        "worker_stats",
        "beat",
        "beat_stopping",
        "alive",
        "cancel",
        "cancelling",
        "pause",
        "paused",
        "mark_tick",
        "ticks",
    }
)


class SqlTransaction(Protocol):
    """Statements inside one transaction (or, on `SqlConnection`, each in its own)."""

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        """Run one statement and return its rows (a RETURNING clause's, for a write)."""
        ...

    async def execute(self, query: Query, params: Params) -> int:
        """Run one statement and return how many rows it changed."""
        ...

    async def script(self, sql: str) -> None:
        """Run several parameterless statements, such as a migration file."""
        ...


class SqlConnection(SqlTransaction, Protocol):
    """A dialect's connection adapter. Every error it raises is a DriverError."""

    async def open(self) -> None:
        """Connect and set the session up; BackendUnavailableError if that cannot be done."""
        ...

    async def close(self) -> None:
        """Disconnect; `open` may be called again afterwards."""
        ...

    async def transaction(
        self, work: Callable[[SqlTransaction], Coroutine[Any, Any, T]], *, durable: bool = True
    ) -> T:
        """Run `work` in one write transaction: committed if it returns, rolled back if it
        raises. `work` may await only the transaction it is given: an adapter may run it
        whole on a database thread, in one hop. `durable=False` says that losing the commit
        to a power cut only makes work run again (SQLite then commits without a sync)."""
        ...


@runtime_checkable
class SqlBorrowing(Protocol):
    """An adapter that can also run statements on a caller's own open connection."""

    async def borrow(
        self, connection: object, work: Callable[[SqlTransaction], Coroutine[Any, Any, T]]
    ) -> T:
        """Run `work` on `connection`, inside whatever transaction the caller has open there,
        and neither commit nor roll back: what `work` wrote exists if and only if the caller
        commits. From the blocking facade `connection` is a LentConnection (drivers/lent.py):
        the caller's synchronous connection, whose statements run in the caller's thread
        through `run`. ConfigError when `connection` is not a kind of connection this adapter
        takes, or not from the side (async code, blocking facade) it came from."""
        ...
