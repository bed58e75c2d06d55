"""SQL storage: one driver (`SqlDriver`), several dialects in the subpackages.

Import a dialect's driver from its own module, for example
`from conveyor.drivers.sql.sqlite import SqliteDriver`; this package imports no database client.
"""

from __future__ import annotations

from conveyor.drivers.sql.driver import SqlDriver

__all__ = ["SqlDriver"]
