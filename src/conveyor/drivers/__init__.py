"""Storage backends, chosen by name or URL; each is imported only when first asked for.

    memory://                         in this process only (tests, development)
    sync://                           runs each job inside push (debugging)
    sqlite:///conveyor.db             the embedded durable default (sqlite:////abs/path.db)
    postgresql://user@host/db         PostgreSQL          (pip install "conveyor[postgres]")
    mysql://user:pass@host/db         MySQL or MariaDB    (pip install "conveyor[mysql]")
    redis://host:6379/0, rediss://    Redis               (pip install "conveyor[redis]")
    unix:///run/redis.sock?db=0       Redis on a Unix socket (redis-py's URL form)
    redis+sentinel://h1,h2/service    Redis behind Sentinel (rediss+sentinel:// for TLS)
    amqp://user:pw@host:5672/, amqps:// RabbitMQ          (pip install "conveyor[amqp]")

A bare kind name ("memory", "sync", "sqlite") means that driver with its defaults, and
"database" the application's own SQL database: CONVEYOR_DATABASE_URL, else DATABASE_URL, else
the embedded SQLite file (RapidGo's QUEUE_DRIVER=database).
"""

from __future__ import annotations

# A driver is imported at its first use, which may be a push from an atexit handler. redis-py
# imports concurrent.futures' ThreadPoolExecutor, whose module registers an exit hook when it
# is first imported and so cannot be once the interpreter shuts down ("can't register atexit
# after shutdown"): it is imported here, with conveyor, while it can be.
import concurrent.futures.thread  # noqa: F401
import importlib
import os
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

from conveyor.drivers.location import Location, safe_url
from conveyor.errors import ConfigError
from conveyor.payload import not_utf8

if TYPE_CHECKING:
    from conveyor.drivers.base import Driver

__all__ = [
    "DATABASE",
    "KIND_URL_ENV",
    "SCHEMES",
    "Location",
    "database_url",
    "driver_from_url",
    "safe_url",
]

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
    "unix": ("conveyor.drivers.redis", "RedisDriver", "redis"),
    "redis+sentinel": ("conveyor.drivers.redis", "RedisDriver", "redis"),
    "rediss+sentinel": ("conveyor.drivers.redis", "RedisDriver", "redis"),
    "amqp": ("conveyor.drivers.amqp", "AmqpDriver", "amqp"),
    "amqps": ("conveyor.drivers.amqp", "AmqpDriver", "amqp"),
}


#: The variable a bare `redis` or `amqp` (QUEUE_DRIVER=redis) reads its server's URL from.
KIND_URL_ENV = {"redis": "CONVEYOR_REDIS_URL", "amqp": "CONVEYOR_AMQP_URL"}

#: The driver name that stands for the application's SQL database, and where its URL is read.
DATABASE = "database"
DATABASE_ENV = ("CONVEYOR_DATABASE_URL", "DATABASE_URL")
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def database_url(environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(the URL the name "database" stands for, the variable it came from or ""). A `+driver`
    on the scheme, as SQLAlchemy writes it (postgresql+psycopg://), is dropped."""
    for env in DATABASE_ENV:
        url = environ.get(env, "").strip()  # a secret's newline is no part of the URL
        if url:
            scheme, separator, rest = url.partition("://")
            base = scheme.partition("+")[0].lower()
            if not separator or base not in _SQL_SCHEMES:
                raise ConfigError(
                    f"{env}={safe_url(url)!r} is not an SQL database URL: the database driver"
                    " takes postgresql://, mysql:// or sqlite:/// (CONVEYOR_DATABASE_URL wins"
                    " over DATABASE_URL)"
                )
            return f"{base}://{rest}", env
    return "sqlite", ""


def driver_from_url(url: str) -> Driver:
    """A new driver for `url`; raises ConfigError naming the URL when it cannot be understood."""
    if url == DATABASE:
        url = database_url()[0]
    scheme, separator, rest = url.partition("://")
    if "\0" in url or (scheme != "sqlite" and not_utf8(url)):  # a file name is any bytes
        raise ConfigError(
            f"{safe_url(url)!r} holds a NUL or bytes that are not UTF-8 text (shown as \\x00 or"
            " \\udcXX): write the URL in UTF-8, with any other byte of a password %-escaped"
            " (%E9)"
        )
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
    if rest and not hasattr(driver_class, "from_url"):
        raise ConfigError(
            f"{safe_url(url)!r}: the {scheme} driver takes no host, path or option: write {scheme}://"
        )
    driver: Driver = driver_class.from_url(url) if rest else driver_class()
    _made_from[driver] = url
    return driver


#: The URL each driver `driver_from_url` made was made from: a child forked from this process
#: makes its own from it (`url_of`), as a driver's connections are never shared between two.
_made_from: weakref.WeakKeyDictionary[Driver, str] = weakref.WeakKeyDictionary()


def url_of(driver: Driver) -> str | None:
    """The URL `driver_from_url` made `driver` from; None for a driver made otherwise."""
    url: str | None = _made_from.get(driver)
    return url
