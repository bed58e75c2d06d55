"""Where the PostgreSQL server is (`Target`: the conninfo as checked and as fit to show, the
libpq settings every connection gets) and the translation of psycopg's errors into conveyor's:
which mean the server is unreachable, which are a statement's own failure."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from conveyor.drivers import keepalive
from conveyor.drivers.limit import limit_reached, refused_for_limit
from conveyor.drivers.location import Location
from conveyor.drivers.sql.deadline import LOCK_WAIT, TIMEOUT, Deadline, whole_seconds
from conveyor.drivers.sql.postgres.prepared import Positional, positional
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.url import OPTIONS
from conveyor.drivers.tls import TlsWords, check_files
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

__all__ = ["CONNECT_TIMEOUT", "POOL_MODE", "Target", "on_standby", "pool_mode"]

log = logging.getLogger("conveyor.postgres")

#: Most seconds to connect before giving up, unless the URL's connect_timeout says otherwise;
#: a shorter `timeout` shortens it too (libpq's least is 2): a connection attempt lost in a
#: silent network holds one of the pool's few connecting tasks while it lasts.
CONNECT_TIMEOUT = 10

_URL_HELP = "write postgresql://user:password@host:5432/database"

#: libpq's sslmode values.
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: libpq's options naming a TLS file (sslrootcert=system: the system's CAs, no file).
_TLS_FILES = ("sslrootcert", "sslcert", "sslkey")

#: The options that fix a TLS failure, in libpq's words.
_TLS_WORDS = TlsWords(
    ca="?sslrootcert=/path/ca.pem (or sslrootcert=system)",
    no_name_check="?sslmode=verify-ca",
    no_verify="?sslmode=require without sslrootcert",
    client="?sslcert=/path/client.pem&sslkey=/path/client.key",
    on="add ?sslmode=verify-full&sslrootcert=/path/ca.pem (sslmode=require to encrypt only)",
    off="write sslmode=prefer (or disable)",
)

#: The URL's option naming the mode of a pooler in between (PgBouncer's word), and its values.
POOL_MODE = "pool_mode"
_POOL_MODES = ("session", "transaction")

#: SQLSTATEs duplicate_prepared_statement and invalid_sql_statement_name: a statement prepared
#: on a connection found there by another client, or not found by this one. Behind a pooler in
#: transaction mode, whose server connections move between clients, and only there.
_PREPARED_ELSEWHERE = frozenset({"42P05", "26000"})

#: SQLSTATE lock_not_available: lock_timeout ran out.
_LOCK_NOT_AVAILABLE = "55P03"

#: SQLSTATE read_only_sql_transaction: a write on a standby, or on a read-only session.
_READ_ONLY = "25006"

#: SQLSTATE invalid_schema_name: conveyor's SQL names no schema, so the search_path has none.
_NO_SCHEMA = "3F000"

#: SQLSTATEs insufficient_resources, disk_full, out_of_memory: the server out of room, not a
#: refusal of the statement (a settler would write its jobs off one by one).
_OUT_OF_ROOM = frozenset({"53000", "53100", "53200"})


class Target:
    """Where the server is: the conninfo handed to libpq, as checked and as fit to show, and
    how long a call may wait for it (`timeout`, seconds).

    `conninfo` is a postgresql:// URL or a libpq "key=value" string; empty means libpq's
    defaults (the PGHOST, PGUSER, PGPASSWORD, ... environment variables, else the local
    socket). Messages show it with any password replaced by ***.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        timeout: float = TIMEOUT,
        pool_size: int = 10,
        pool_mode: str = "session",
    ) -> None:
        self.conninfo = conninfo
        self.pool_size = pool_size  # named in the error for a connection limit reached
        if pool_mode not in _POOL_MODES:
            raise ConfigError(
                f"pool_mode must be session or transaction, not {pool_mode!r}: write"
                " pool_mode=transaction behind a pooler in transaction mode (PgBouncer's"
                " pool_mode = transaction), else leave it out"
            )
        #: Behind a pooler in transaction mode: each transaction may run on another server
        #: connection, shared with other clients, so no state may outlive one (see `setup`).
        self.transaction_pool = pool_mode == "transaction"
        #: The conninfo's passwords, found once; every message is shown through it.
        self.location = Location.parse(conninfo)
        self.timeout = timeout
        try:
            params = conninfo_to_dict(conninfo)
        except (psycopg.Error, UnicodeDecodeError) as error:
            why = (
                "a %-escape in it is not UTF-8 text: write a literal % as %25"
                if isinstance(error, UnicodeDecodeError)
                else self.location.scrub(" ".join(str(error).split()))  # libpq ends with \n
            )
            # An option libpq refused may be a password under a misspelt name (?pasword=).
            refused = re.search(r'invalid URI query parameter: "(.*)"', str(error))
            # conveyor's own, given where libpq's go
            if refused and refused[1] in (*OPTIONS, POOL_MODE):
                raise ConfigError(
                    f"{self.shown!r}: {refused[1]}= is conveyor's option, not libpq's: give the"
                    " URL to PostgresDriver.from_url (or driver_from_url), which reads it, or"
                    f" pass {refused[1]}= as the constructor's keyword"
                ) from None
            shown = self.location.refusing(refused[1]) if refused else self.shown
            raise ConfigError(
                f"bad PostgreSQL connection settings {shown!r} ({why}): {_URL_HELP},"
                " with only libpq's parameters after '?' (sslmode=..., connect_timeout=...,"
                " application_name=...)"
            ) from None
        password = params.get("password")
        self.location = self.location.with_secret(str(password) if password else None)
        self._check_tls(params)
        # UTF-8 whatever the URL, PGCLIENTENCODING or the database's own encoding say: psycopg
        # encodes every text in the client encoding, and under LATIN1 a payload or an error
        # message with an emoji failed in the client (UnicodeEncodeError) before it was sent.
        # The server converts to the database's encoding, and says so if it cannot.
        self.kwargs: dict[str, Any] = {"autocommit": True, "client_encoding": "UTF8"}
        if self.transaction_pool:  # psycopg prepares a statement run 5 times on a connection
            self.kwargs["prepare_threshold"] = None
        # Named in pg_stat_activity, and never stuck for minutes connecting to a host that does
        # not answer, unless the settings (or libpq's environment variables) say otherwise.
        # The name as a fallback: an application_name given as a parameter beat PGAPPNAME.
        self.kwargs["fallback_application_name"] = "conveyor"
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            # libpq waits that long on each host of a URL naming several (a primary and its
            # standby): shared among them, so that one host down and silent (a machine that
            # died drops packets) leaves time for the next within the call's timeout. Before,
            # a new driver whose first host was silent could not open at all.
            hosts = len(str(params.get("host") or "").split(","))
            whole = min(CONNECT_TIMEOUT, whole_seconds(timeout))
            self.kwargs["connect_timeout"] = max(2, whole // hosts)
        # A silent idle connection found within seconds, not the system's two hours, and
        # unacknowledged writes given up after the call's timeout; the URL's own settings win.
        liveness = {
            "keepalives": 1,
            "keepalives_idle": keepalive.IDLE,
            "keepalives_interval": keepalive.INTERVAL,
            "keepalives_count": keepalive.COUNT,
            "tcp_user_timeout": max(1, round(timeout * 1000)),
        }
        if psycopg.pq.version() < 120000:  # older libpq has no tcp_user_timeout
            del liveness["tcp_user_timeout"]
        self.kwargs |= {key: value for key, value in liveness.items() if key not in params}

    def _check_tls(self, params: dict[str, Any]) -> None:
        """ConfigError for an sslmode libpq does not know (else a connection error, which a
        worker would retry for ever) and for a TLS file that cannot be read."""
        mode = params.get("sslmode")
        if mode is not None and mode not in _SSLMODES:
            raise ConfigError(
                f"{self.shown!r}: sslmode={self.location.mask(str(mode))!r} is not one of"
                f" {', '.join(_SSLMODES)}: write sslmode=verify-full (with sslrootcert=)"
            )
        files = [(key, str(params[key])) for key in _TLS_FILES if params.get(key)]
        check_files(self.location, (pair for pair in files if pair != ("sslrootcert", "system")))

    @property
    def shown(self) -> str:
        """The conninfo without its password, for messages and logs."""
        if not self.conninfo.strip():
            return "libpq defaults (PG* environment variables)"
        return self.location.shown

    def setup(self) -> sql.Composed:
        """What each new connection runs first; nothing behind a pooler in transaction mode,
        where a setting would hold on one server connection only, which other clients of the
        pooler then use with it (a role's settings, ALTER ROLE ... SET, hold everywhere; there
        extra_float_digits and default_transaction_isolation must be left at their defaults).

        JIT off: conveyor's statements are short, but the planner's guesses for their JSON
        batches (100 rows per batch, 100 queues) can push their estimated cost past
        jit_above_cost, and compiling then takes a hundred times longer than running (seen:
        270 ms of JIT for a 2 ms reserve). A transaction left idle past the timeout is ended by the
        server: its client was cut off and will never finish it. A lock waited for past
        LOCK_WAIT of the timeout fails the statement (migrations, which may wait an hour, lift
        this for their transaction). Floats are read back whole (extra_float_digits 1, the
        default since PostgreSQL 12), whatever the role, database or options= say: times are
        float8 seconds, and at -15 a push_many COPY stored jobs created at the server's clock
        read back as 2e+09, due years later. Transactions are READ COMMITTED, whatever
        default_transaction_isolation the database has: reserve's FOR UPDATE SKIP LOCKED and the
        fenced settles rely on a row locked being read again at its newest version, where
        REPEATABLE READ or SERIALIZABLE fail the statement ("could not serialize access due to
        concurrent update") whenever workers meet."""
        if self.transaction_pool:
            return sql.Composed([])  # an empty statement: one round trip, nothing set
        idle = sql.Literal(f"{whole_seconds(self.timeout)}s")
        lock = sql.Literal(f"{max(1, round(self.timeout * LOCK_WAIT * 1000))}ms")
        return sql.SQL(
            "SET jit = off; SET idle_in_transaction_session_timeout = {}; SET lock_timeout = {};"
            " SET extra_float_digits = 1; SET default_transaction_isolation = 'read committed'"
        ).format(idle, lock)

    def positional(self, query: Query) -> Positional | None:
        """`query` to run the short way (conveyor.drivers.sql.postgres.prepared), or None:
        not one of those, or behind a pooler in transaction mode, where a statement prepared
        on one server connection is not on the next."""
        return None if self.transaction_pool else positional(query)

    def mask(self, text: str) -> str:
        """`text` with the password, wherever it appears, replaced by ***."""
        return self.location.mask(text)

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection, outside the pool; BackendUnavailableError naming the
        server and libpq's reason when it cannot be made."""
        try:
            return await psycopg.AsyncConnection.connect(self.conninfo, **self.kwargs)
        except psycopg.Error as error:
            if refused_for_limit(str(error)):
                raise self.limit(self._detail(error)) from None
            fix = _TLS_WORDS.fix(str(error), tls=True) or (
                "check that the server is running and the URL's host, port, user, password and"
                " database"
            )
            raise BackendUnavailableError(
                f"cannot connect to PostgreSQL at {self.shown} ({self._detail(error)}): {fix}"
            ) from None

    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """Turn psycopg's errors into conveyor's, naming the server and the operation."""
        try:
            yield
        except psycopg.Error as error:
            raise self.error(error, what) from error

    def silent(self, what: str, deadline: Deadline) -> BackendUnavailableError:
        """The error for a call whose deadline passed, logged as a warning."""
        return deadline.error(f"PostgreSQL at {self.shown}", what, log)

    def limit(self, detail: str, waited: float | None = None) -> BackendUnavailableError:
        """The error for a new connection refused for the server's connection limit (the
        server's words in `detail`); `waited`: the seconds a call waited for a pooled one."""
        return limit_reached(
            f"PostgreSQL at {self.shown}",
            detail,
            limit="the server's max_connections, or the role's or database's CONNECTION LIMIT",
            budget=f"lower pool_size (now {self.pool_size}) in the URL of each process, which"
            " opens up to pool_size connections (a worker one more, to LISTEN; blocking pushes"
            " from plain threads up to pool_size more)",
            waited=waited,
        )

    def error(self, error: psycopg.Error, what: str) -> DriverError:
        """The DriverError for a psycopg error met during `what` (a query block's name...)."""
        if _lost(error) and refused_for_limit(str(error)):
            return self.limit(self._detail(error))
        if _lost(error):
            fix = _TLS_WORDS.fix(str(error), tls=True) or "check that the server is running"
            return BackendUnavailableError(
                f"PostgreSQL at {self.shown} is unreachable during {what}"
                f" ({self._detail(error)}): {fix}; workers retry with backoff and the pool"
                " reconnects by itself"
            )
        detail = self._detail(error, connecting=False)
        if error.sqlstate == _LOCK_NOT_AVAILABLE:
            # Unavailable, not refused: the call may well succeed once that transaction ends,
            # so a worker's settle waits on and tries again, as for a server out of reach,
            # rather than write its job off as an outcome the backend refuses.
            return BackendUnavailableError(
                f"PostgreSQL {what} on {self.shown} waited {self.timeout * LOCK_WAIT:g}s for a"
                f" lock another transaction holds ({detail}), and gave up: a transaction still"
                " open that pushed the same unique key with connection=, say; commit or roll it"
                " back sooner, or raise the URL's timeout="
            )
        if error.sqlstate in _OUT_OF_ROOM:
            return BackendUnavailableError(
                f"PostgreSQL {what} on {self.shown} failed, the server out of room ({detail}):"
                " free space on its disk (or memory), and workers carry on"
            )
        if error.sqlstate in _PREPARED_ELSEWHERE:
            return DriverError(
                f"PostgreSQL {what} failed on {self.shown}: {detail}. A pooler in transaction"
                " mode (PgBouncer's pool_mode = transaction) sits in between, whose server"
                " connections move between clients, and prepared statements with them: add"
                " pool_mode=transaction to the URL (and connect your own connections given as"
                " connection= with prepare_threshold=None), or point conveyor at the server or"
                " at a session-mode pool"
            )
        if error.sqlstate == _READ_ONLY:
            # Unavailable, not refused: after a failover a name that moved (a DNS name, a
            # virtual IP) may still lead a connection to the old primary, now a standby. The
            # pool then replaces its connections (`_drain`), so the next call finds the new
            # primary, and a worker's settles wait and try again rather than fail their jobs.
            return BackendUnavailableError(
                f"PostgreSQL {what} failed on {self.shown}: {detail}. The server takes no"
                " writes here: it is a standby (in recovery), or default_transaction_read_only"
                " is on for this user, this database or the URL's options=; point the URL at"
                " the primary (with several hosts in it, add target_session_attrs=read-write)"
            )
        if error.sqlstate == _NO_SCHEMA:
            return DriverError(
                f"PostgreSQL {what} failed on {self.shown}: {detail}. No schema of the"
                " search_path exists (the URL's options=-csearch_path%3D..., or the role's or"
                " database's search_path): create the one it names (CREATE SCHEMA ...) or"
                " name one that exists"
            )
        return DriverError(f"PostgreSQL {what} failed on {self.shown}: {detail}")

    def _detail(self, error: psycopg.Error, *, connecting: bool = True) -> str:
        """libpq's message, masked; about connecting, withheld for an ambiguous URL (libpq
        may quote the piece of a password it misread as a host or port)."""
        text = " ".join(str(error).split()) or type(error).__name__
        return self.location.scrub(text) if connecting else self.location.mask(text)


def _lost(error: psycopg.Error) -> bool:
    """True for errors that mean the server cannot be reached or dropped the connection:
    connection exceptions (SQLSTATE 08...), shutdowns (57P..), and client-side failures that
    carry no SQLSTATE (refused, reset, pool timeout, connection closed)."""
    if not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = error.sqlstate
    return state is None or state.startswith(("08", "57P"))


def on_standby(error: BaseException) -> bool:
    """True for an error (or one translated from it) saying the server takes no writes: a
    connection that met it is of no use to the driver, however healthy."""
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    return isinstance(cause, psycopg.Error) and cause.sqlstate == _READ_ONLY


def pool_mode(url: str, pairs: Iterable[tuple[str, str]]) -> str:
    """The pool mode a URL's query `pairs` give (session unless they say otherwise)."""
    modes = [value for key, value in pairs if key == POOL_MODE]
    if len(modes) > 1:
        raise ConfigError(f"{Location.parse(url).shown!r}: pool_mode= is given twice; keep one")
    return modes[0] if modes else "session"
