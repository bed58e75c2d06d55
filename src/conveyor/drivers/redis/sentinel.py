"""Redis behind Sentinel: the URL, and the pools that ask the sentinels where the master is.

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]
    rediss+sentinel://...   TLS to the master and to the sentinels

The hosts are the sentinels (port 26379 unless written), the path names the service the
sentinels monitor (`sentinel monitor <service> ...`), then the database. The URL's user and
password are the master's; the sentinels' own, if they require one, are `sentinel_password=`
(and `sentinel_username=`). Every other option is a redis:// URL's, for the master.

A connection asks the sentinels for the master's address when it connects; one that finds its
server turned replica (READONLY, or a BLPOP unblocked by the change) is closed and made again,
so each of the driver's pools follows the master through a failover (redis-py's
SentinelConnectionPool does this; the pools here add conveyor's ways of waiting for a free
connection).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import redis
from redis import sentinel as sync_sentinel
from redis.asyncio import sentinel as async_sentinel

from conveyor.drivers.location import Location
from conveyor.drivers.redis.pool import WaitingPool
from conveyor.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "OPTIONS",
    "SCHEMES",
    "SentinelUrl",
    "async_pool",
    "close_sentinels",
    "is_sentinel",
    "shorter",
    "thread_pool",
]

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379
#: The URL's options that are the sentinels' own, not the master's.
OPTIONS = frozenset({"sentinel_password", "sentinel_username"})
#: The form, named in every error about one.
FORM = "redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]"


#: redis-py's repr of a sentinel's client in "No master found" (a line of 1,500 characters each).
_CLIENT = re.compile(r"<redis\.[\w.]*Redis\(.*?,host=([^,]+),port=(\d+),.*?\)>\)>\)>")


def shorter(text: str) -> str:
    """redis-py's message with each sentinel's client written as `sentinel host:port`."""
    return _CLIENT.sub(lambda found: f"sentinel {found[1]}:{found[2]}", text)


def is_sentinel(url: str) -> bool:
    """Whether `url` names its master through sentinels."""
    return url.partition("://")[0].lower() in SCHEMES


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A sentinel URL read: the sentinels, the service, and `plain`, the same URL as a
    redis:// (rediss://) one to the first sentinel, less the sentinels' options, from which
    the master's settings are read as redis-py reads any URL."""

    sentinels: list[tuple[str, int]]
    service: str
    tls: bool
    plain: str
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """The URL read; ConfigError naming what is wrong and the form to write."""
        scheme, _, rest = url.partition("://")
        rest = rest.partition("#")[0]
        rest, _, query = rest.partition("?")
        userinfo, at, rest = rest.rpartition("@")
        hosts, _, path = rest.partition("/")
        service, _, database = path.partition("/")
        if not service:
            raise _bad(url, "it names no service: write the name the sentinels monitor as the path")
        sentinels = [_host(url, host) for host in hosts.split(",")]
        query_pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        kept = "&".join(p for p in query.split("&") if p and p.split("=")[0] not in OPTIONS)
        tls = scheme.lower() == "rediss+sentinel"
        host, port = sentinels[0]
        plain = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{_netloc(host, port)}"
        plain += f"/{database}" + (f"?{kept}" if kept else "")
        options = dict(query_pairs)
        return cls(
            sentinels,
            urllib.parse.unquote(service),
            tls,
            plain,
            options.get("sentinel_username"),
            options.get("sentinel_password"),
        )


def _host(url: str, written: str) -> tuple[str, int]:
    """One sentinel's `host[:port]` ([v6]:port for IPv6) as (host, port)."""
    host, port = written, ""
    if written.startswith("["):
        host, _, port = written[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in written:
        host, _, port = written.rpartition(":")
    if not host:
        raise _bad(
            url, f"a sentinel's host is empty ({written!r}): write host[:port], comma-separated"
        )
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise _bad(url, f"the port {port!r} of sentinel {host!r} is not a number from 1 to 65535")
    return host, int(port) if port else DEFAULT_PORT


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(
        f"cannot use {Location.parse(url).shown!r} as a Sentinel URL: {why} ({FORM})"
    )


def _sentinel_settings(where: SentinelUrl, master: dict[str, Any]) -> dict[str, Any]:
    """The connection settings of the sentinels: the master's socket settings (the same
    `socket_timeout`: none on the event loop, where the call's deadline bounds them all), the
    sentinels' own credentials, and TLS with the master's TLS options on a rediss+sentinel://
    URL. No socket timeout of their own on the event loop: redis-py enforces one on each write
    with asyncio.wait_for, which on Python 3.11 swallows a cancellation that arrives as the
    write completes (a stopping worker's heartbeat then went on, and the stop never ended).
    A sentinel that cannot be reached within the connect timeout is passed over for the next;
    one that went silent after connecting holds the call to its deadline, until keepalives
    close its connection."""
    own = {key: value for key, value in master.items() if key.startswith(("socket_", "ssl_"))}
    own.update(username=where.username, password=where.password)
    if where.tls:
        own["ssl"] = True
    else:
        own = {key: value for key, value in own.items() if not key.startswith("ssl_")}
    return own


def _master_settings(url_settings: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The master's pool settings: the driver's, then the URL's (which win, as in from_url),
    less the address (the sentinels give it) and the connection class (the pool picks a
    sentinel-managed one, TLS or not)."""
    merged = {**settings, **url_settings}
    for key in ("host", "port", "connection_class", "path"):
        merged.pop(key, None)
    return merged


class SentinelWaitingPool(WaitingPool, async_sentinel.SentinelConnectionPool):
    """The driver's WaitingPool, its connections made to the master the sentinels name."""


class SentinelBlockingPool(sync_sentinel.SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's BlockingConnectionPool (a thread waits for a free connection), its
    connections made to the master the sentinels name."""


def async_pool(url: str, settings: dict[str, Any]) -> SentinelWaitingPool:
    """A pool of asyncio connections to the master of the sentinel URL `url`."""
    where = SentinelUrl.parse(url)
    url_settings = dict(redis.asyncio.connection.parse_url(where.plain))
    master = _master_settings(url_settings, settings)
    manager = async_sentinel.Sentinel(
        where.sentinels, sentinel_kwargs=_sentinel_settings(where, master)
    )
    return SentinelWaitingPool(where.service, manager, ssl=where.tls, **master)


def thread_pool(url: str, settings: dict[str, Any], timeout: float) -> SentinelBlockingPool:
    """A pool of synchronous connections to the master of the sentinel URL `url`; a thread
    finding all busy waits `timeout` seconds for one."""
    where = SentinelUrl.parse(url)
    url_settings = redis.connection.parse_url(where.plain)  # type: ignore[no-untyped-call]
    master = _master_settings(url_settings, settings)
    manager = sync_sentinel.Sentinel(
        where.sentinels, sentinel_kwargs=_sentinel_settings(where, master)
    )
    pool = SentinelBlockingPool(  # type: ignore[no-untyped-call]
        where.service, manager, ssl=where.tls, timeout=timeout, **master
    )
    return pool


async def close_sentinels(pool: object) -> None:
    """Close the connections to the sentinels of a pool made by `async_pool` (none else)."""
    if isinstance(pool, async_sentinel.SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


def close_thread_sentinels(pool: object) -> None:
    """Close the connections to the sentinels of a pool made by `thread_pool` (none else)."""
    if isinstance(pool, sync_sentinel.SentinelConnectionPool):
        pool.sentinel_manager.close()
