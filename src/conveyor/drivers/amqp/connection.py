"""Connecting to RabbitMQ: the URL, its options, and the edge where aiormq's errors become
conveyor's.

The URL is aiormq's (`amqp://user:password@host:5672/vhost`, `amqps://` for TLS, its options
as query parameters) plus conveyor's: `?prefix=` starts every queue and exchange name
(default `conveyor.`), `?exchange=` names the durable exchange that delivers into the work queues
(default `<prefix>deliver`), `?timeout=` (seconds, default 10) is every call's deadline and the
heartbeat interval asked of the broker, so a silent connection is found within it, and
`?consumer_timeout=` (seconds, default 1800) is the broker's limit on one job's run. Passwords
never appear in a message: every error names the broker by its masked URL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import urllib.parse
import weakref
from types import TracebackType

import aiormq
import aiormq.exceptions
from pamqp import exceptions as pamqp_exceptions

from conveyor.drivers.location import Location
from conveyor.drivers.tls import TlsWords, check_files
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "ROOM",
    "Edge",
    "Settings",
    "blocked_by",
    "is_blocked",
    "parse_url",
]

DEFAULT_PREFIX = "conveyor."
DEFAULT_TIMEOUT = 10.0
#: The query parameters aiormq reads from a URL (aiormq/connection.py's url.query.get).
_AIORMQ_OPTIONS = (
    "heartbeat", "name", "auth", "cafile", "capath", "cadata", "keyfile", "certfile",
    "no_verify_ssl",
)  # fmt: skip
#: RabbitMQ's default consumer_timeout (30 minutes): how long a delivery may stay
#: unacknowledged before the broker closes its channel. `?consumer_timeout=` (seconds) tells
#: the driver the broker's own setting when it was changed.
DEFAULT_CONSUMER_TIMEOUT = 1800.0
_SCHEMES = ("amqp", "amqps")
#: aiormq's TLS options, amqps:// only (an amqp:// URL would ignore them in silence).
_TLS_OPTIONS = ("cafile", "capath", "cadata", "keyfile", "certfile", "no_verify_ssl")
#: The options that fix a TLS failure, in aiormq's words (its no_verify_ssl checks nothing).
_TLS_WORDS = TlsWords(
    ca="?cafile=/path/ca.pem",
    no_name_check="?no_verify_ssl=1",
    no_verify="?no_verify_ssl=1",
    client="?certfile=/path/client.pem&keyfile=/path/client.key",
    on="write amqps://",
    off="write amqp://",
)


class Settings:
    """What a URL asks for: the URL handed to aiormq, the name prefix and the deadline."""

    def __init__(
        self,
        url: str,
        prefix: str,
        timeout: float,
        location: Location,
        consumer_timeout: float,
        exchange: str | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.exchange = exchange
        self.timeout = timeout
        self.location = location
        self.consumer_timeout = consumer_timeout


class _Raised(logging.Filter):
    """Drops aiormq's ERROR record of a connection it could not make: `Edge` raises that
    error as a BackendUnavailableError naming the broker, which the caller reports once (a
    worker's start-up logs each attempt). Left in, every failed attempt printed a second,
    unexplained line on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


class _Blocked(logging.Filter):
    """Notes why RabbitMQ blocked a connection's publishes (connection.blocked: "low on disk",
    "low on memory"), which aiormq says only in this warning of its own (kept: it is the
    first sign in the log), until it says the connection was unblocked."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == "Connection %r was blocked by: %r" and len(args) == 2:
            _blocked_by[args[0]] = str(args[1])
        elif record.msg == "Connection %r was unblocked" and args:
            _blocked_by.pop(args[0], None)
        return True


_blocked_by: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


#: What gives a RabbitMQ whose resource alarm blocks publishers room again.
ROOM = (
    "free disk or memory on its machine, consume or purge the queues that hold the most, or"
    " raise the limit; `rabbitmqctl status` lists the alarms"
)


def is_blocked(connection: object) -> bool:
    """Whether RabbitMQ blocks `connection`'s publishes now: between its connection.blocked
    and connection.unblocked, which aiormq notes in an event of its own (the one its
    `ready()` waits on; read here without waiting, as of aiormq 7.x, which pyproject.toml
    pins)."""
    unblocked = getattr(connection, "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()


def blocked_by(connection: object) -> str | None:
    """Why RabbitMQ blocks `connection`'s publishes, in its words, or None: not blocked, or
    aiormq's warning was not logged (its logger set above WARNING)."""
    return _blocked_by.get(connection)


logging.getLogger("aiormq.connection").addFilter(_Raised())
logging.getLogger("aiormq.connection").addFilter(_Blocked())

#: How an AMQP URL is written, said by every error about one.
_FORM = "write amqp://user:password@host:5672/vhost (amqps:// for TLS)"


def parse_url(url: str, prefix: str | None = None, timeout: float | None = None) -> Settings:
    """Split conveyor's options off an amqp:// URL; ConfigError (password masked) if bad."""
    location = Location.parse(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (read now: a port that is not a number raises only when read)
    except ValueError as exc:
        raise ConfigError(
            f"{location.shown!r} is not an AMQP URL ({location.mask(str(exc))}): {_FORM}"
        ) from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ConfigError(f"{location.shown!r} is not an AMQP URL: {_FORM}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = dict(query)
    ours = ("prefix", "exchange", "timeout", "consumer_timeout")
    known = (*ours, *_AIORMQ_OPTIONS)  # aiormq would ignore any other in silence
    location.check_options((key for key, _ in query), known, ", ".join(known))
    _check_tls(location, parts.scheme, query)
    kept = [(key, value) for key, value in query if key not in ours]
    chosen_prefix = prefix if prefix is not None else options.get("prefix", DEFAULT_PREFIX)
    _check_name(location, "prefix", chosen_prefix, _PREFIX_MOST)
    _check_name(location, "exchange", options.get("exchange", ""), _EXCHANGE_MOST)
    if timeout is None:
        timeout = _seconds(location, "timeout", options.get("timeout", str(DEFAULT_TIMEOUT)))
    consumer_timeout = _seconds(
        location,
        "consumer_timeout",
        options.get("consumer_timeout", str(DEFAULT_CONSUMER_TIMEOUT)),
    )
    if not any(key == "heartbeat" for key, _ in kept):
        kept.append(("heartbeat", str(max(1, math.ceil(timeout)))))
    query_text = urllib.parse.urlencode(kept)
    return Settings(
        urllib.parse.urlunsplit(parts._replace(query=query_text)),
        chosen_prefix,
        timeout,
        location,
        consumer_timeout,
        options.get("exchange") or None,
    )


#: What the AMQP client (pamqp) lets an exchange's or a queue's name hold: up to 127 of these
#: characters for an exchange. The longest exchange conveyor names is <prefix>delay.NN and the
#: longest queue <prefix>failed.<queue> (a queue name of up to 128 characters): within 255.
_NAME = re.compile(r"[A-Za-z0-9_.:@#,/+ -]*")
_EXCHANGE_MOST = 127
_PREFIX_MOST = _EXCHANGE_MOST - len("delay.NN")


def _check_name(location: Location, option: str, text: str, most: int) -> None:
    """ConfigError naming `option` when `text` is not a name part the AMQP client takes (it
    refused it only at the first declaration: 'Invalid value for exchange')."""
    if len(text) > most or not _NAME.fullmatch(text):
        raise ConfigError(
            f"{location.shown!r}: {option} {location.mask(text)!r} is not allowed: AMQP names"
            f" take at most {most} characters here, each one of A-Z a-z 0-9 _ . : @ # , / + -"
            " or a space"
        )


def _seconds(location: Location, name: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(
            f"{location.shown!r}: {name}={location.mask(text)!r} is not a positive number"
            " of seconds"
        )
    return seconds


def _check_tls(location: Location, scheme: str, query: list[tuple[str, str]]) -> None:
    """ConfigError for TLS options on amqp:// and for a certificate or key file that cannot be
    read (aiormq's FileNotFoundError at the first connection named no file)."""
    tls = [key for key, _ in query if key in _TLS_OPTIONS]
    if tls and scheme != "amqps":
        raise ConfigError(
            f"{location.refusing(tls[0])!r}: {tls[0]}= is a TLS option, and amqp:// speaks no"
            " TLS: write amqps:// for TLS"
        )
    files = ("cafile", "keyfile", "certfile")
    check_files(location, ((key, value) for key, value in query if key in files))


class Edge:
    """`with Edge(location, what):` turns a client error into conveyor's, password masked.

    A lost or refused connection, refused credentials, a closed channel and a missed deadline become
    BackendUnavailableError (the worker backs off and calls again); anything else the broker
    refused becomes DriverError."""

    def __init__(self, location: Location, what: str, connection: object = None) -> None:
        self.location = location
        self.what = what
        self.connection = connection  # the call's: a deadline missed names its alarm

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, DriverError | ConfigError):
            return
        where = f"RabbitMQ at {self.location.shown!r}"
        text = self.location.mask(f"{type(exc).__name__}: {exc}")
        if isinstance(
            exc, pamqp_exceptions.AMQPAccessRefused | aiormq.exceptions.ProbableAuthenticationError
        ):
            # Unavailable, as the other drivers say it: a worker retries (a password may be
            # rotated while it runs), and `work --startup-timeout` bounds a start's retries.
            raise BackendUnavailableError(
                f"{where} refused the credentials ({text}): check the user and password"
            ) from None
        unanswered = TimeoutError | aiormq.exceptions.ChannelInvalidStateError
        if isinstance(exc, unanswered) and is_blocked(self.connection):
            reason = blocked_by(self.connection) or "a resource alarm"
            # A call unanswered, or refused on a channel whose close went unanswered, as
            # RabbitMQ stopped reading this connection when it blocked its publishes.
            raise BackendUnavailableError(
                f"{where} did not answer {self.what} in time: it blocks this connection's"
                f" publishes ({reason}: its memory or disk alarm) and reads nothing more of"
                f" it until the alarm clears; give the broker room ({ROOM})"
            ) from None
        if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError):
            # aiormq's refusal of a call on a channel that closed, or that it is closing (a call
            # on it timed out or was cancelled, and the broker has not answered the close): a
            # RuntimeError, not an AMQPError. The next call past that close opens a new one.
            raise BackendUnavailableError(
                f"{where} could not take {self.what}: its channel closed, or is closing after"
                f" an earlier call went unanswered ({text}); try again"
            ) from None
        if isinstance(exc, TimeoutError):
            raise BackendUnavailableError(
                f"{where} did not answer {self.what} in time ({text})"
            ) from None
        if isinstance(exc, OSError | ConnectionError | aiormq.exceptions.AMQPConnectionError):
            tls = self.location.shown.startswith("amqps:")
            fix = _TLS_WORDS.fix(text, tls=tls) or "is it running?"
            raise BackendUnavailableError(
                f"{where} is not reachable for {self.what} ({text}): {fix}"
            ) from None
        if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
            # The broker's answer to Connection.Open: aiormq drops its reason ("vhost ... not
            # found", "access to vhost ... refused"), so name both.
            raise DriverError(
                f"{where} closed {self.what} on opening the URL's vhost: check that the vhost"
                " exists and that the user may use it (rabbitmqctl list_vhosts; rabbitmqctl"
                " list_permissions -p VHOST); the default vhost / is written as the path / or"
                " %2F"
            ) from None
        if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed) and "inequivalent" in text:
            # Declaring a queue or exchange that exists with other settings: every call that
            # declares it fails alike (a worker would retry it forever), so name the fix.
            raise DriverError(
                f"{where} refused {self.what}: {text}. A queue or exchange of that name exists"
                " with other settings than conveyor gives it (made by another program or by"
                " hand): give this driver a ?prefix= of its own, or delete that queue or"
                " exchange (rabbitmqctl delete_queue NAME, or the management UI) if nothing in"
                " it is needed"
            ) from None
        if isinstance(exc, aiormq.exceptions.AMQPError | pamqp_exceptions.PAMQPException):
            raise DriverError(f"{where} refused {self.what}: {text}") from None
