"""Connecting to Redis: the URL, the clients, and the edge where redis-py's errors become
conveyor's (httpx's `map_httpcore_exceptions` is the model).

The URL is redis-py's own (`redis://[[user]:password@]host[:port][/db][?option=value]`,
`rediss://` for TLS, every redis-py connection option as a query parameter; or a sentinel
URL, redis+sentinel://host1,host2/service/0: sentinel.py), plus two options
of conveyor's: `?prefix=` for the key prefix and `?timeout=` (seconds, default 10; also a
keyword of RedisDriver) for every command's deadline: how long it may wait for a connection of
the pool, then write, then wait for its reply, all under one deadline (`Edge.command`; one
timer for all of a driver's calls, conveyor.deadlines) rather than redis-py's
`socket_timeout`, which costs a task per write (`asyncio.wait_for`) on every command. A
command past it fails with BackendUnavailableError and its connection is closed (redis-py
closes a connection whose read or write is cancelled). Without a URL the driver reads
CONVEYOR_REDIS_URL, then falls back to redis://127.0.0.1:6379/0.

Connections go silent without a word when a NAT gateway or firewall drops their state: TCP
keepalives (conveyor.drivers.keepalive) find an idle one within 11 s, and one idle for
HEALTH_CHECK_INTERVAL seconds is pinged before use. The BLPOP of an idle worker has no read
timeout (it waits on the server by design); the driver's `wait` bounds it instead.
"""

from __future__ import annotations

import inspect
import urllib.parse
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import redis
from redis import connection as redis_connection
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from conveyor.deadlines import Deadline, Deadlines
from conveyor.drivers import KIND_URL_ENV, keepalive
from conveyor.drivers.limit import limit_reached, refused_for_limit
from conveyor.drivers.location import Location
from conveyor.drivers.redis import sentinel
from conveyor.drivers.redis.options import URL_OPTIONS, check_tls, connect_fix
from conveyor.drivers.redis.pool import WaitingPool
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "URL_ENV",
    "Edge",
    "WaitingPool",
    "check_url",
    "execute",
    "execute_in_thread",
    "make_client",
    "make_thread_client",
    "split_prefix",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
URL_ENV = KIND_URL_ENV["redis"]
DEFAULT_PREFIX = "conveyor:"

#: Seconds a command may take before its connection counts as lost, unless `?timeout=` says
#: otherwise. Every script does a bounded amount of work, so only a stalled server or a
#: silent network gets near this.
COMMAND_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
#: An idle connection is checked with PING before reuse after this many seconds, so one that
#: died with a restarted server is replaced before a command is lost on it.
HEALTH_CHECK_INTERVAL = 5
#: A command that fails because its connection was lost is sent again on a new connection,
#: this many times, with jittered backoff; after that the caller sees BackendUnavailableError
#: and the worker backs off on its own schedule.
RECONNECT_ATTEMPTS = 3
#: Connections per pool. A call finding them all busy waits for one (within its deadline)
#: rather than failing, so a burst of concurrent calls only queues.
MAX_CONNECTIONS = 64

#: hiredis's packer of a command (`_pack`), None without redis-py's hiredis extra.
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:
    _hiredis_pack = None

#: redis-py's URL parser (untyped there).
_parse_url = cast(Callable[[str], dict[str, Any]], redis_connection.parse_url)


def split_prefix(url: str) -> tuple[str, str | None]:
    """The URL without its `prefix` query parameter, and that parameter (None if absent)."""
    return _split(url, "prefix")


def _split(url: str, name: str) -> tuple[str, str | None]:
    """The URL without its `name` query parameter, and that parameter (None if absent)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": a [ or ] in the password, say
        raise _bad_url(url, exc) from None
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    values = [value for key, value in query if key == name]
    if not values:
        return url, None
    # The others kept as written: re-encoded, a file's path (ssl_ca_certs=/etc/ca.pem) would
    # show in every message as %2Fetc%2Fca.pem.
    pairs = parts.query.split("&")
    rest = "&".join(p for p in pairs if p and urllib.parse.unquote_plus(p.split("=")[0]) != name)
    # Cut by hand: urlunsplit would write unix:///path.sock as unix:/path.sock.
    kept = url.partition("?")[0] + (f"?{rest}" if rest else "")
    return kept + (f"#{parts.fragment}" if parts.fragment else ""), values[-1]


def check_url(url: str) -> None:
    """Raise ConfigError, naming the URL without its password, unless redis-py accepts it."""
    command_timeout(url, {})
    is_sentinel = sentinel.is_sentinel(url)
    # A sentinel URL is checked as the redis:// URL it stands for (SentinelUrl.plain).
    readable = sentinel.SentinelUrl.parse(url).plain if is_sentinel else url
    try:
        _parse_url(readable)
        parts = urllib.parse.urlsplit(readable)
        # unix:///path/to/redis.sock?db=0: the path is the socket's, the database in the query.
        database = parts.path.strip("/") if parts.scheme != "unix" else ""
    except (ValueError, TypeError) as exc:
        raise _bad_url(url, exc) from None
    if database and not database.isdigit():  # redis-py would quietly use database 0
        raise _bad_url(url, ValueError(f"the database {database!r} is not a number"))
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    # Any other, redis-py would pass on to its connection: a TypeError at the first call.
    location = Location.parse(url)
    location.check_options(
        (key for key, _ in query),
        URL_OPTIONS | sentinel.OPTIONS if is_sentinel else URL_OPTIONS,
        "prefix, timeout and redis-py's connection settings (socket_connect_timeout,"
        " health_check_interval, max_connections, ssl_ca_certs, ...)"
        + (", sentinel_password, sentinel_username" if is_sentinel else ""),
    )
    check_tls(location, parts.scheme, query)


def _bad_url(url: str, error: Exception) -> ConfigError:
    """The error for a URL redis-py cannot read, naming it without its password."""
    location = Location.parse(url)
    form = "redis://[:password@]host[:port][/db] or rediss://... for TLS"
    return ConfigError(
        f"cannot use {location.shown!r} as a Redis URL ({location.scrub(str(error))}): write"
        f" it as {sentinel.FORM if sentinel.is_sentinel(url) else form}"
    )


def make_client(url: str, options: dict[str, Any], *, blocking: bool = False) -> Redis:
    """A client with its own connection pool. Its commands have no timeout of their own: the
    driver bounds each call with `Edge.command` (the command client) or its own deadline
    (BLPOP, on the `blocking` client). `options` (and the URL's query parameters, which win)
    override any setting below; `timeout` in either is conveyor's (see the module
    docstring)."""
    url, timeout = command_timeout(url, options)
    settings = _settings(url, timeout, options, AsyncRetry, blocking=blocking)
    if sentinel.is_sentinel(url):  # BLPOP's deadline bounds its wait for a connection too
        pool: ConnectionPool = sentinel.async_pool(url, settings)
    elif blocking:
        pool = BlockingConnectionPool.from_url(url, timeout=timeout, **settings)
    else:
        pool = WaitingPool.from_url(url, **settings)
    client: Redis = Redis.from_pool(pool)
    return client


def make_thread_client(url: str, options: dict[str, Any]) -> redis.Redis:
    """A synchronous client, for a push sent from the caller's own thread (`push_in_thread`):
    the settings of `make_client`, with the command deadline given to the sockets instead,
    there being no event loop to time it: connecting within min(5 s, timeout), each write and
    each wait for a reply within `timeout`, and a call finding every connection busy waits at
    most `timeout` for one. Thread-safe: each thread takes a connection of its own."""
    url, timeout = command_timeout(url, options)
    settings = _settings(url, timeout, options, SyncRetry, blocking=False)
    settings["socket_timeout"] = timeout
    if sentinel.is_sentinel(url):
        pool: redis.ConnectionPool = sentinel.thread_pool(url, settings, timeout)
    else:
        pool = redis.BlockingConnectionPool.from_url(url, timeout=timeout, **settings)
    return redis.Redis.from_pool(pool)


def _not_a_limit(error: Exception) -> bool:
    """False for a new connection refused for maxclients: WaitingPool waits for one of its
    own instead (three attempts more each took 1.5-2 s here, while connections came free)."""
    return not refused_for_limit(str(error))


def _unless_a_limit(retry: type[AsyncRetry | SyncRetry]) -> dict[str, Any]:
    """The keyword that keeps `retry` from retrying a refusal for maxclients, where redis-py's
    Retry takes it (not every version does)."""
    if "is_retryable" in inspect.signature(retry.__init__).parameters:
        return {"is_retryable": _not_a_limit}
    return {}


def _settings(
    url: str,
    timeout: float,
    options: dict[str, Any],
    retry: type[AsyncRetry | SyncRetry],
    *,
    blocking: bool,
) -> dict[str, Any]:
    """The pool settings of every client, then `options` (but `timeout`) over them."""
    settings: dict[str, Any] = {
        "max_connections": MAX_CONNECTIONS,
        "decode_responses": True,
        # A byte that is not UTF-8 in a stored job must not fail the reply that reads it (a
        # reserve would lose its batch): it is kept as a lone surrogate, which read_job
        # reports, and which encodes back to the same byte when sent (an id stays exact).
        "encoding_errors": "surrogateescape",
        "socket_connect_timeout": min(CONNECT_TIMEOUT, timeout),
        "socket_timeout": None,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive.tcp_options(timeout),
        "health_check_interval": 0 if blocking else HEALTH_CHECK_INTERVAL,
        # Only a lost connection is retried: a timeout may mean the command ran.
        "retry": retry(
            ExponentialWithJitterBackoff(base=0.05, cap=1.0),
            RECONNECT_ATTEMPTS,
            supported_errors=(RedisConnectionError,),
            **_unless_a_limit(retry),
        ),
    }
    if urllib.parse.urlsplit(url).scheme == "unix":  # a Unix socket has no TCP keepalives
        del settings["socket_keepalive"], settings["socket_keepalive_options"]
    settings.update((key, value) for key, value in options.items() if key != "timeout")
    return settings


async def execute(client: Redis, *args: Any) -> Any:
    """`client.execute_command(*args)` for a command whose reply redis-py leaves as it is read
    (EVALSHA): a connection of the client's pool, the command sent and its reply read, sent
    again on a new connection when the connection was lost (the client's Retry, which closes
    the connection between attempts), as execute_command does, without what redis-py 8 wraps
    around each command (awaited observability records, per-command hooks): 15-20 µs less
    per call on this machine."""
    pool = client.connection_pool
    connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await connection.retry.call_with_retry(
            lambda: _send(connection, args), lambda error: connection.disconnect()
        )
    finally:
        await pool.release(connection)


async def _send(connection: AbstractConnection, args: tuple[Any, ...]) -> Any:
    await connection.send_packed_command(_pack(connection, args))
    return await connection.read_response()


def execute_in_thread(client: redis.Redis, *args: Any) -> Any:
    """`execute` on a synchronous client, from the calling thread (`push_in_thread`): the
    same steps, without redis-py 8's observability records around the command (about half
    of the client's CPU for a script call)."""
    pool = client.connection_pool
    connection: redis_connection.AbstractConnection = pool.get_connection()
    try:
        return connection.retry.call_with_retry(
            lambda: _send_in_thread(connection, args),
            lambda error: connection.disconnect(),  # type: ignore[no-untyped-call]
        )
    finally:
        pool.release(connection)  # type: ignore[arg-type]


def _send_in_thread(connection: redis_connection.AbstractConnection, args: tuple[Any, ...]) -> Any:
    connection.send_packed_command([_pack(connection, args)])  # type: ignore[no-untyped-call]
    return connection.read_response()


def _pack(
    connection: AbstractConnection | redis_connection.AbstractConnection, args: tuple[Any, ...]
) -> bytes:
    """The command in Redis's protocol, by hiredis in one call when it is installed and the
    connection encodes as UTF-8: the same bytes as `connection.pack_command`, which calls
    it too, but after a Python pass over every argument (about 8 µs a script call here). Anything
    hiredis refuses (a lone surrogate kept from a stored job, which the connection encodes
    with surrogateescape) is packed by the connection. `args[0]` is one word (EVALSHA)."""
    if _hiredis_pack is not None and connection.encoder.encoding == "utf-8":
        try:
            return _hiredis_pack(args)
        except (TypeError, UnicodeEncodeError):
            pass
    packed: list[bytes] = connection.pack_command(*args)
    return b"".join(packed)


def command_timeout(url: str, options: dict[str, Any]) -> tuple[str, float]:
    """The URL without `?timeout=`, and the command deadline in seconds: the URL's, else the
    `timeout` keyword, else COMMAND_TIMEOUT. ConfigError naming the fix for a bad one."""
    url, written = _split(url, "timeout")
    value: Any = written if written is not None else options.get("timeout", COMMAND_TIMEOUT)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not 0 < seconds <= keepalive.MOST_TIMEOUT:  # nan too
        location = Location.parse(url)
        raise ConfigError(
            f"{location.shown!r}: timeout={location.mask(str(value))!r} is not a positive number"
            f" of seconds up to {keepalive.MOST_TIMEOUT} (24 days); write timeout=10"
        )
    return url, seconds


#: What to do about a refusal that comes of the server's setup or of another program, by a
#: piece of the server's message.
_FIXES = {
    "WRONGTYPE": (
        "; another program wrote a key under the driver's prefix with a value of another type:"
        " give conveyor a prefix of its own (?prefix=)"
    ),
    "invalid bulk length": (
        "; a value passed the server's proto-max-bulk-len (512 MB by default): push a smaller"
        " payload (Registry(max_payload_bytes=...) bounds them), or raise the setting"
    ),
    "DB index is out of range": (
        "; the URL's database number is past the server's `databases` setting (16 by default,"
        " numbered from 0): write a lower one, or raise the setting"
    ),
}


#: What a server that was a master says to a client it unblocks (a BLPOP) as it turns replica,
#: and redis-py's Sentinel connection when it closes one to a master turned replica.
_DEMOTED = ("UNBLOCKED", "The previous master is now a slave")

#: Refusals of a server that cannot write for a while, whatever the command (redis-py names
#: no class for them): a failing snapshot (`stop-writes-on-bgsave-error`), a script running
#: past `busy-reply-threshold`, a master with fewer replicas in reach than its
#: `min-replicas-to-write` (the setting that bounds what a failover can lose).
_PASSING = ("MISCONF", "BUSY ", "NOREPLICAS")


class Edge:
    """Where redis-py's errors become DriverError subclasses, with messages that name the
    server but never its password: `with edge:` around a call bounded otherwise (BLPOP),
    `async with edge.command():` around any other call, which also gives it the command
    deadline. One instance serves every concurrent call: it keeps their deadlines."""

    def __init__(self, url: str, timeout: float = COMMAND_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self.deadlines = Deadlines()
        self.location = Location.parse(url)
        self.where = f"redis at {self.location.shown}"
        #: The driver's command pool, once made: a call past its deadline while the pool's
        #: new connections were refused for maxclients says so.
        self.pool: WaitingPool | None = None
        self.max_connections = MAX_CONNECTIONS  # the pools' size, named in that error

    def command(self) -> Command:
        """The context of one call: the deadline, then the edge."""
        return Command(self)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, (RedisError, OSError)):
            return
        text = str(exc) or type(exc).__name__
        if isinstance(exc, ReadOnlyError) or text.startswith(_DEMOTED):
            raise BackendUnavailableError(
                f"{self.where} cannot write: this server is a replica now"
                f" ({self.location.scrub(text)}); {self._replica_fix()}"
            ) from exc
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            # It may quote the host and port redis-py read: withheld for an ambiguous URL.
            detail = self.location.scrub(sentinel.shorter(text))
            if refused_for_limit(text):
                raise self.limit(detail) from exc
            if isinstance(exc, AuthenticationError):  # still retried: a password may be rotated
                raise BackendUnavailableError(
                    f"{self.where} refused the credentials ({detail}): check the URL's user and"
                    " password"
                ) from exc
            raise BackendUnavailableError(
                f"{self.where} is unavailable ({detail}): {connect_fix(self.url, text)}"
            ) from exc
        # A pipeline's refusal names the command first: "Command # 1 (SADD ...) of pipeline
        # caused error: MISCONF ..." (before, one in push_many was taken for a refusal).
        code = text.rpartition("caused error: ")[2]
        if isinstance(exc, (OutOfMemoryError, MasterDownError)) or code.startswith(_PASSING):
            # The server's state, not the command: nothing was written (a script is refused
            # before its first write), and the same call succeeds once it passes, so a worker
            # keeps its outcomes and writes them then rather than taking them for refusals.
            if isinstance(exc, OutOfMemoryError):
                fix = "it reached its maxmemory: free memory or raise maxmemory"
            elif isinstance(exc, MasterDownError):
                fix = "it is a replica cut off from its master: point the URL at the master"
            else:
                fix = "see the server's log"
                if code.startswith("NOREPLICAS"):
                    fix = (
                        "it has fewer replicas in reach than its min-replicas-to-write: this"
                        " passes once they catch up"
                    )
            raise BackendUnavailableError(
                f"{self.where} cannot write for now ({self.location.mask(text)}); {fix}"
            ) from exc
        fix = next((fix for piece, fix in _FIXES.items() if piece in text), "")
        raise DriverError(
            f"{self.where} refused a command: {self.location.mask(text)}{fix}"
        ) from exc

    def _replica_fix(self) -> str:
        """What to do about a server that answers as a replica."""
        if sentinel.is_sentinel(self.url):  # the sentinels named it master a moment ago
            return (
                "the sentinels still name it the master: this passes once they finish a"
                " failover; if it lasts, check `SENTINEL MASTERS` on them"
            )
        return "point the URL at the master, or use Sentinel (redis+sentinel://...)"

    def limit(self, detail: str, waited: float | None = None) -> BackendUnavailableError:
        """The error for a new connection refused for the server's maxclients (its words in
        `detail`); `waited`: the seconds a call waited for a pooled one."""
        return limit_reached(
            self.where,
            detail,
            limit="the server's maxclients",
            budget=f"lower max_connections (now {self.max_connections}) in the URL of each"
            " process, which bounds each of the driver's two pools (commands; pushes from"
            " plain threads), a worker holding one connection more while it waits (BLPOP)",
            waited=waited,
        )


class Command:
    """One call within the command deadline (conveyor.deadlines: one timer for all of a
    driver's calls), its errors translated by the edge. A call past the deadline is cancelled
    where it waits (for a connection, a write or the reply); redis-py closes the connection it
    cancels."""

    __slots__ = ("_deadline", "_edge")
    _deadline: Deadline

    def __init__(self, edge: Edge) -> None:
        self._edge = edge

    async def __aenter__(self) -> None:
        self._deadline = self._edge.deadlines.within(self._edge.timeout)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._deadline.__exit__(kind, exc, traceback)
        except TimeoutError as late:
            pool = self._edge.pool
            if pool is not None and pool.refused:  # waited for a connection in vain
                detail = self._edge.location.scrub(pool.refused)
                raise self._edge.limit(detail, waited=self._edge.timeout) from late
            late.args = (f"no answer within {self._edge.timeout:g}s",)
            self._edge.__exit__(TimeoutError, late, late.__traceback__)
            raise
        self._edge.__exit__(kind, exc, traceback)
