"""Storage backends, chosen by name or URL; each is imported only when first asked for.

    memory://                 in this process only (tests, development)
    sync://                   runs each job inside push (debugging)
    sqlite:///conveyor.db     the embedded durable default (sqlite:////abs/path.db for absolute)

A bare kind name ("memory", "sync", "sqlite") means that driver with its defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.drivers.base import Driver

SCHEMES = ("memory", "sync", "sqlite")


def driver_from_url(url: str) -> Driver:
    """A new driver for `url`; raises ConfigError naming the URL when it cannot be understood."""
    scheme, _, rest = url.partition("://")
    if scheme == "memory" and not rest:
        from conveyor.drivers.memory import MemoryDriver

        return MemoryDriver()
    if scheme == "sync" and not rest:
        from conveyor.drivers.sync import SyncDriver

        return SyncDriver()
    if scheme == "sqlite":
        from conveyor.drivers.sql.sqlite import SqliteDriver

        return SqliteDriver.from_url(url) if rest else SqliteDriver()
    raise ConfigError(
        f"cannot make a driver from {_safe(url)!r}: use one of "
        "memory://, sync://, sqlite:///path/to/file.db"
    )


def _safe(url: str) -> str:
    """The URL with any password replaced, fit for messages and logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
    return url
