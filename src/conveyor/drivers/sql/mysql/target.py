"""Where the MySQL server is and how to log in (`Target`), and the translation of asyncmy's
errors into conveyor's: which mean the connection is lost, which a transaction may simply be
run again after (see connection.py)."""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncmy
from asyncmy.errors import MySQLError

from conveyor.drivers.lent import lost
from conveyor.drivers.limit import limit_reached, refused_for_limit
from conveyor.drivers.location import Location
from conveyor.drivers.sql.deadline import LOCK_WAIT, TIMEOUT, Deadline
from conveyor.drivers.sql.mysql.tls import WORDS
from conveyor.errors import BackendUnavailableError, DriverError

__all__ = [
    "ATTEMPTS", "DUPLICATE_KEY", "LOST", "NO_SUCH_TABLE", "RETRIED", "SESSION_ISOLATION",
    "SESSION_SETUP", "SQL_MODE", "SYNC_CLIENTS", "Isolation", "Target", "error_code", "is_lost",
    "on_replica",
]  # fmt: skip

log = logging.getLogger("conveyor.mysql")

#: Times a transaction runs before a deadlock reaches the caller. With
#: the backoff between runs (connection.BACKOFF, doubling), at most about 1.3 s of pauses:
#: under CI's load, eight producers of unique jobs beside two workers once made one reserve
#: the victim six times in a row.
ATTEMPTS = 8

#: The isolation levels a transaction may run at: the session's, or REPEATABLE READ asked for
#: one transaction (see connection.py's module docstring for READ COMMITTED).
Isolation = Literal["READ COMMITTED", "REPEATABLE READ"]
SESSION_ISOLATION: Isolation = "READ COMMITTED"

#: What every pooled connection runs first.
SESSION_SETUP = f"SET SESSION TRANSACTION ISOLATION LEVEL {SESSION_ISOLATION}"

#: The session's sql_mode: strict, so a value too long for its column is an error rather than
#: silently cut (a queue name, say), whatever the server's default. asyncmy sends it as
#: `SET sql_mode=<this>`, hence the quotes.
SQL_MODE = "'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"

#: Server errors after which the transaction was rolled back whole and may simply run again:
#: a deadlock. Not a lock wait timeout (LOCK_WAIT_TIMEOUT): that is a wait of most of the
#: call's timeout, on a transaction that holds its locks for long (a caller's, left open).
RETRIED = frozenset({1213})

#: ER_LOCK_WAIT_TIMEOUT: a row lock waited for past innodb_lock_wait_timeout.
LOCK_WAIT_TIMEOUT = 1205

#: The server out of room, not a refusal of the statement (a settler would write its jobs off
#: one by one): ER_DISK_FULL, ER_OUTOFMEMORY, ER_OUT_OF_RESOURCES, and ER_RECORD_FILE_FULL,
#: which is what MariaDB answers when InnoDB cannot extend a table on a full disk ("The table
#: 'conveyor_jobs' is full"); or any error quoting the disk's ENOSPC or InnoDB's
#: HA_ERR_RECORD_FILE_FULL (errno 135, in a failed CREATE or ALTER TABLE).
OUT_OF_ROOM = frozenset({1021, 1037, 1041, 1114})
_NO_SPACE = ("No space left on device", "Errcode: 28", "No more room in record file")

#: Errors meaning the connection is gone: server gone away, lost during query, killed,
#: shutting down, disconnected for inactivity, can't connect (socket, TCP), too many clients.
LOST = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013, 2055, 4031})


@dataclass(frozen=True)
class Target:
    """Where the server is, how to log in, and how long a call may wait for it (`timeout`,
    seconds); `shown` is fit for messages (no password)."""

    host: str = "localhost"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str = "conveyor"
    unix_socket: str | None = None
    connect_timeout: float = 10.0
    timeout: float = TIMEOUT
    #: The driver's pool_size, named in the error for a connection limit reached.
    pool_size: int = 10
    #: The URL the target was read from, parsed: what messages must hide besides `password`.
    location: Location = field(default_factory=Location, repr=False, compare=False)
    #: TLS for every connection (the URL's ssl_ options, mysql/tls.py), None without.
    ssl: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    ssl_mode: str = "DISABLED"

    @property
    def shown(self) -> str:
        """The server as a mysql:// URL without the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        where = f"{host}:{self.port}"
        socket = f"?unix_socket={self.unix_socket}" if self.unix_socket else ""
        tls = f"?ssl_mode={self.ssl_mode}" if self.ssl is not None else ""
        return f"mysql://{self.user}@{where}/{self.database}{socket}{tls}"

    @property
    def lock_wait(self) -> int:
        """Seconds a statement waits for a row lock (innodb_lock_wait_timeout, whole seconds):
        LOCK_WAIT of the timeout, at least 1."""
        return max(1, math.floor(self.timeout * LOCK_WAIT))

    def mask(self, text: str) -> str:
        """`text` with the password, wherever it appears, replaced by ***."""
        return self.location.with_secret(self.password).mask(text)

    def pool_kwargs(self) -> dict[str, Any]:
        """asyncmy's connection arguments for a pooled connection."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            # As bytes: asyncmy would encode a str as Latin-1, which cannot hold most of
            # Unicode, and MySQL hashed a password given over utf8mb4 as UTF-8.
            "password": self.password.encode("utf-8"),
            "db": self.database,
            "unix_socket": self.unix_socket,
            "connect_timeout": self.connect_timeout,
            "charset": "utf8mb4",
            "autocommit": True,
            "sql_mode": SQL_MODE,
            "init_command": SESSION_SETUP,
            "program_name": "conveyor",
            "ssl": self.ssl,
        }

    def error(self, error: BaseException, what: str, *, borrowed: bool = False) -> DriverError:
        """The DriverError for an error the client raised during `what` (a block's name...);
        `borrowed` when it was the caller's own connection, where nothing is retried."""
        text = " ".join(str(error).split()) or type(error).__name__
        hidden = self.location.with_secret(self.password)
        # About connecting, a client may quote the piece of a password it misread as a host
        # or port: for an ambiguous URL that message is withheld (see Location.scrub).
        connecting = what == "connect" or is_lost(error)
        detail = hidden.scrub(text) if connecting else hidden.mask(text)
        if connecting and refused_for_limit(text):
            return self.limit(detail)
        if what == "connect":
            return BackendUnavailableError(
                f"cannot connect to MySQL at {self.shown} ({detail}): {self._fix(error, text)}"
            )
        if is_lost(error) and borrowed:
            return lost(detail)
        if is_lost(error):
            return BackendUnavailableError(
                f"MySQL at {self.shown} is unreachable during {what} ({detail}): check that the"
                " server is running; workers retry with backoff and the pool reconnects by itself"
            )
        if error_code(error) == LOCK_WAIT_TIMEOUT and borrowed:
            return DriverError(
                f"MySQL {what} on {self.shown} waited past your connection's"
                f" innodb_lock_wait_timeout for a lock another transaction holds ({detail}):"
                " roll your transaction back (it may hold part of the push) and run it again"
            )
        if error_code(error) == LOCK_WAIT_TIMEOUT:
            # Unavailable, not refused: the call may well succeed once that transaction ends,
            # so a worker's settle waits on and tries again, as for a server out of reach,
            # rather than write its job off as an outcome the backend refuses.
            return BackendUnavailableError(
                f"MySQL {what} on {self.shown} waited {self.lock_wait}s for a lock another"
                f" transaction holds ({detail}), and gave up: a transaction still open that"
                " pushed the same unique key with connection=, say; commit or roll it back"
                " sooner, or raise the URL's timeout="
            )
        if error_code(error) in RETRIED and borrowed:
            return DriverError(
                f"MySQL {what} on {self.shown} met a lock conflict in your transaction"
                f" ({detail}): the server rolled your transaction back; run it again"
            )
        if error_code(error) in RETRIED:
            return DriverError(
                f"MySQL {what} on {self.shown} still met lock conflicts after {ATTEMPTS}"
                f" attempts ({detail}): another transaction holds these rows for long; retry later"
            )
        if on_replica(error):
            # Unavailable, not refused (when the driver's own connection met it): after a
            # switchover a name that moved (a DNS name, a virtual IP) may still lead to the old
            # primary, now read-only. The connection is closed (`on_replica`), so the next call
            # connects afresh and follows the name; a worker's settles wait and try again.
            kind = DriverError if borrowed else BackendUnavailableError
            return kind(
                f"MySQL {what} failed on {self.shown}: {detail}. The server takes no writes"
                " (read_only is on): it is a replica, or the old primary after a switchover;"
                " point the URL at the primary"
            )
        if error_code(error) in OUT_OF_ROOM or any(words in text for words in _NO_SPACE):
            return BackendUnavailableError(
                f"MySQL {what} on {self.shown} failed, the server out of room ({detail}): free"
                " space on its disk (or memory; or raise the limit a table is at, such as"
                " innodb_data_file_path's max), and workers carry on"
            )
        if error_code(error) == PACKET_TOO_LARGE:
            return DriverError(
                f"MySQL {what} on {self.shown} sent a statement larger than the server's"
                " max_allowed_packet: raise it on the server, or keep payloads under it"
                " (Registry(max_payload_bytes=...))"
            )
        return DriverError(f"MySQL {what} failed on {self.shown}: {detail}")

    def _fix(self, error: BaseException, text: str) -> str:
        """What to do about a connection that could not be made: TLS's fix, if TLS failed."""
        fix = WORDS.fix(text, tls=self.ssl is not None)
        if fix is not None:
            return fix
        if error_code(error) == ACCESS_DENIED and self.ssl is None:
            # MariaDB refuses a plain connection of a user that REQUIREs SSL, or under
            # require_secure_transport, with this alone (MySQL says "insecure transport").
            return (
                "check the URL's user and password, and, if the server wants TLS for them,"
                f" {WORDS.on}"
            )
        return (
            "check that the server is running and the URL's host, port, user, password and database"
        )

    def limit(self, detail: str, waited: float | None = None) -> BackendUnavailableError:
        """The error for a new connection refused for the server's connection limit (the
        server's words in `detail`); `waited`: the seconds a call waited for a pooled one."""
        return limit_reached(
            f"MySQL at {self.shown}",
            detail,
            limit="the server's max_connections, or the user's MAX_USER_CONNECTIONS or the"
            " server's max_user_connections",
            budget=f"lower pool_size (now {self.pool_size}) in the URL of each process, which"
            " opens up to pool_size connections (blocking pushes from plain threads up to"
            " pool_size more)",
            waited=waited,
        )

    def silent(self, what: str, deadline: Deadline) -> BackendUnavailableError:
        """The error for a call whose deadline passed, logged as a warning."""
        return deadline.error(f"MySQL at {self.shown}", what, log)

    @contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """Turn asyncmy's (and the socket's) errors into conveyor's."""
        try:
            yield
        except (MySQLError, OSError, EOFError) as error:
            raise self.error(error, what) from error


#: The synchronous clients whose connections a push from code without an event loop can use,
#: by the top package of their classes' module: PyMySQL, and mysqlclient (imported as MySQLdb;
#: Django's MySQL backend).
SYNC_CLIENTS = ("pymysql", "MySQLdb")

#: ER_DUP_ENTRY: a row a unique index already holds (jobs_unique, when statements race).
DUPLICATE_KEY = 1062

#: ER_ACCESS_DENIED_ERROR: a login refused.
ACCESS_DENIED = 1045

#: ER_NO_SUCH_TABLE: a table that does not exist (the schema never created).
NO_SUCH_TABLE = 1146

#: ER_OPTION_PREVENTS_STATEMENT: "running with the --read-only option" (or another option).
OPTION_PREVENTS = 1290

#: ER_NET_PACKET_TOO_LARGE: a statement past the server's max_allowed_packet.
PACKET_TOO_LARGE = 1153


def error_code(error: BaseException) -> int | None:
    """The MySQL error number of a client's error (asyncmy's, or on a caller's synchronous
    connection PyMySQL's or mysqlclient's), if it has one."""
    client = isinstance(error, MySQLError) or _is_sync_client_error(error)
    if client and error.args and isinstance(error.args[0], int):
        return error.args[0]
    return None


def is_lost(error: BaseException) -> bool:
    """True for errors that mean the connection is gone or cannot be made: the codes in
    LOST, socket errors, and asyncmy's InterfaceError for a connection already closed."""
    if isinstance(error, OSError | EOFError | asyncmy.errors.InterfaceError):
        return True
    return error_code(error) in LOST


def on_replica(error: BaseException) -> bool:
    """True for a write the server refused for its read_only (or super_read_only) setting: a
    replica's, or an old primary's after a switchover. Not a caller's READ ONLY transaction
    (1792): that is the caller's own doing."""
    return error_code(error) == OPTION_PREVENTS and "read" in str(error).lower()


def _is_sync_client_error(error: BaseException) -> bool:
    """True for an error PyMySQL or mysqlclient raised."""
    return type(error).__module__.partition(".")[0] in SYNC_CLIENTS
