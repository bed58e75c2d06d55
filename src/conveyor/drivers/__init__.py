"""Storage backends, chosen by name or URL; each is imported only when first asked for.

    memory://                         in this process only (tests, development)
    sync://                           runs each job inside push (debugging)
    sqlite:///conveyor.db             the embedded durable default (sqlite:////abs/path.db)
    postgresql://user@host/db         PostgreSQL          (pip install "conveyor[postgres]")
    mysql://user:pass@host/db         MySQL or MariaDB    (pip install "conveyor[mysql]")
    redis://host:6379/0, rediss://    Redis               (pip install "conveyor[redis]")

A bare kind name ("memory", "sync", "sqlite") means that driver with its defaults.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from conveyor.drivers.location import Location, safe_url
from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.drivers.base import Driver

__all__ = ["SCHEMES", "Location", "driver_from_url", "safe_url"]

#: URL scheme -> (module, class, the extra that installs its client library).
SCHEMES: dict[str, tuple[str, str, str]] = {
    "memory": ("conveyor.drivers.memory", "MemoryDriver", ""),
    "sync": ("conveyor.drivers.sync", "SyncDriver", ""),
    "sqlite": ("conveyor.drivers.sql.sqlite", "SqliteDriver", ""),
    "postgresql": ("conveyor.drivers.sql.postgres", "PostgresDriver", "postgres"),
    "postgres": ("conveyor.drivers.sql.postgres", "PostgresDriver", "postgres"),
    "mysql": ("conveyor.drivers.sql.mysql", "MysqlDriver", "mysql"),
    "mariadb": ("conveyor.drivers.sql.mysql", "MysqlDriver", "mysql"),
    "redis": ("conveyor.drivers.redis", "RedisDriver", "redis"),
    "rediss": ("conveyor.drivers.redis", "RedisDriver", "redis"),
}


def driver_from_url(url: str) -> Driver:
    """A new driver for `url`; raises ConfigError naming the URL when it cannot be understood."""
    scheme, separator, rest = url.partition("://")
    if scheme not in SCHEMES or (not separator and url != scheme):
        raise ConfigError(
            f"cannot make a driver from {safe_url(url)!r}: use a URL starting with one of "
            + ", ".join(f"{name}://" for name in SCHEMES)
        )
    module_name, class_name, extra = SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f': pip install "conveyor[{extra}]"' if extra else ""
        raise ConfigError(f"the {scheme} driver cannot be loaded ({exc}){hint}") from exc
    driver_class = getattr(module, class_name)
    driver: Driver = driver_class.from_url(url) if rest else driver_class()
    return driver
