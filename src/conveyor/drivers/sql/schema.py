"""An SQL driver's schema: applying the dialect's numbered migrations, and checking the version
recorded in `<prefix>schema_version` against the ones this conveyor knows.

Migrations only ever go forward. A schema newer than the code (a newer conveyor migrated it:
the previous version's processes during a rolling deploy, or all of them after a rollback) is
used as it is, with a warning naming both versions each time a driver opens, whatever
`migrate=` says. Not an error: during a rolling deploy the older processes already running
use the newer schema anyway, so refusing only those that start meanwhile (a web server's
recycled worker, a restarted pod) would fail their pushes, and a rollback would stop every
worker and every push until someone rolled forward.
"""

from __future__ import annotations

import functools
import logging

from conveyor.drivers.base import Driver
from conveyor.drivers.sql.adapter import SqlConnection, SqlTransaction
from conveyor.drivers.sql.queries import Migration, Query
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

__all__ = ["SqlSchema"]

log = logging.getLogger("conveyor.sql")


class SqlSchema(Driver):
    """Applying and checking migrations: the `migrations` of one dialect, on its connection."""

    prefix: str
    _conn: SqlConnection
    _queries: dict[str, Query]
    _migrations: list[Migration]

    @property
    def schema_version(self) -> int:
        """The version of the schema this code needs: its last migration's number."""
        return self._migrations[-1].version if self._migrations else 0

    async def _apply_migrations(self) -> None:
        """Apply the migrations not yet recorded. A schema already up to date (every open but
        a deploy's first) costs one read under the call's deadline: no migration lock, no DDL,
        and no wait of a migration's length on a connection that may have gone silent."""
        version, whole = await self._recorded_version()
        if version < self.schema_version:
            for migration in self._migrations:
                migrate = functools.partial(self._migrate, migration)
                try:
                    version = await self._conn.transaction(migrate)
                except BackendUnavailableError:
                    raise
                except DriverError as error:
                    raise self._migration_failed(migration, error) from error
        elif not whole:
            await self._repair()
        self._warn_if_newer(version)

    async def _repair(self) -> None:
        """Put back what a restore of the tables alone left out (the dialect's schema_repair),
        under the migration lock."""
        log.warning(
            "the %s tables with prefix %r lack the triggers that count finished jobs (restored"
            " from a backup of the tables alone?): putting them back, and counting again",
            self.kind,
            self.prefix,
        )

        async def repair(tx: SqlTransaction) -> None:
            await tx.script(self._queries["schema_version_create"].sql)
            await tx.script(self._queries["schema_repair"].sql)

        try:
            await self._conn.transaction(repair)
        except BackendUnavailableError:
            raise
        except DriverError as error:  # jobs still work: only the counts are off
            log.warning(
                "could not put back the triggers of the %s tables with prefix %r (%s): run"
                " `conveyor migrate` as a user who may change the schema",
                self.kind,
                self.prefix,
                error,
            )

    def _migration_failed(self, migration: Migration, error: DriverError) -> DriverError:
        """The error of a migration the database refused, naming the fix for the usual cause,
        a user that may not change the schema (a DBA's application user), which the database's
        own words ("permission denied for schema public") do not."""
        return DriverError(
            f"{error}. conveyor could not create or update its tables with prefix"
            f" {self.prefix!r} ({migration.name}): if this user may not change the schema, run"
            " `conveyor migrate` as one who may, and add migrate=false to this URL"
        )

    async def _recorded_version(self) -> tuple[int, bool]:
        """The schema's version, read without the migration lock. Reading a schema that was
        never created fails in the database (no such table): that is version 0, not an outage.
        Any other failure (a user who may not read the table) is raised as it is: read as
        version 0, it told a DBA who had migrated to run `conveyor migrate` again, in vain."""
        try:
            rows = await self._conn.fetch(self._queries["schema_version"], {})
        except BackendUnavailableError:
            raise
        except DriverError as error:
            if self.no_such_table(error):
                return 0, True
            raise
        version: int = rows[0]["version"] or 0
        return version, bool(rows[0].get("whole", True))  # a dialect may not report `whole`

    def no_such_table(self, error: DriverError) -> bool:
        """Whether `error` is the database saying a table does not exist (the dialect knows
        its client's error)."""
        raise NotImplementedError

    async def _migrate(self, migration: Migration, tx: SqlTransaction) -> int:
        """Apply one migration unless recorded; return the version the schema is at. The
        version is read inside the write transaction (after `schema_version_create`, which may
        take the dialect's migration lock), so of two processes opening a new database, the
        second sees the first's work and skips it."""
        # As a script: while another process holds the migration lock (a deploy, where a
        # migration is due), this waits for as long as one may take (MIGRATION_TIMEOUT), not
        # a call's deadline.
        await tx.script(self._queries["schema_version_create"].sql)
        rows = await tx.fetch(self._queries["schema_version"], {})
        version: int = rows[0]["version"] or 0
        if version >= migration.version:
            return version
        await tx.script(migration.sql)
        params = {"version": migration.version, "name": migration.name}
        await tx.execute(self._queries["schema_version_record"], params)
        return migration.version

    async def _check_schema(self) -> None:
        """ConfigError unless the schema is at least at this code's version."""
        version, whole = await self._recorded_version()
        self._warn_if_newer(version)
        if not whole and version >= self.schema_version:
            log.warning(
                "the %s tables with prefix %r lack the triggers that count finished jobs"
                " (restored from a backup of the tables alone?), so `conveyor list` and the"
                " dashboard undercount them: run `conveyor migrate` to put them back",
                self.kind,
                self.prefix,
            )
        if version < self.schema_version:
            raise ConfigError(
                f"the {self.kind} schema with table prefix {self.prefix!r} is at version"
                f" {version}, but this conveyor needs version {self.schema_version}: run"
                " `conveyor migrate` (or drop migrate=false from the URL to apply migrations"
                " on first use)"
            )

    def _warn_if_newer(self, version: int) -> None:
        """Warn, naming both versions, of a schema migrated by a newer conveyor than this one."""
        if version > self.schema_version:
            log.warning(
                "the %s schema with table prefix %r is at version %d, newer than this conveyor"
                " knows (its migrations end at version %d): a newer conveyor migrated it, and"
                " this one may not handle what those migrations changed. Run the newer conveyor"
                " again as soon as you can (migrations never go backwards)",
                self.kind,
                self.prefix,
                version,
                self.schema_version,
            )
