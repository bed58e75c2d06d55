"""A server that refuses a new connection because its connection limit is reached (PostgreSQL's
"too many connections for role", MariaDB's max_user_connections, Redis's maxclients): how to
tell, and the error that names the limit and what to do about it.

A driver that meets such a refusal goes on with the connections it holds: a call waits, within
its timeout, for one of them to come free (or for the server to take a new one), and only then
fails, with `limit_reached`'s BackendUnavailableError (a worker waits it out with back-off, as
for a server out of reach, and a caller of push may try again).
"""

from __future__ import annotations

from conveyor.errors import BackendUnavailableError

__all__ = ["PAUSE_FIRST", "PAUSE_MOST", "limit_reached", "refused_for_limit"]

#: Pieces of the servers' (and a pooler's) refusals of a new connection for a limit: PostgreSQL
#: (SQLSTATE 53300, which a refused connection does not carry), PgBouncer, MySQL, Redis.
_REFUSALS = (
    "too many connections",  # PostgreSQL's role or database limit, MySQL's 1040
    "too many clients already",  # PostgreSQL's max_connections
    "remaining connection slots are reserved",  # PostgreSQL, superuser_reserved_connections
    "no more connections allowed",  # PgBouncer's max_client_conn
    "max number of clients reached",  # Redis's maxclients
    "'max_user_connections'",  # MySQL's 1203 and 1226, the user's or the server's limit
)

#: First and longest pause between two attempts at a new connection while none of the
#: driver's own comes free: the limit may be freed by another process at any time.
PAUSE_FIRST = 0.05
PAUSE_MOST = 1.0


def refused_for_limit(text: str) -> bool:
    """Whether a client's error text is a server refusing a connection for its limit."""
    lowered = text.lower()
    return any(piece in lowered for piece in _REFUSALS)


def limit_reached(
    server: str, detail: str, *, limit: str, budget: str, waited: float | None = None
) -> BackendUnavailableError:
    """The error for a connection `server` (its URL, password masked) refused for its limit:
    `detail` the server's words, `limit` the settings that bound it, `budget` how many
    connections a process of this driver opens and what sets it; `waited` the seconds the call
    waited for one of the driver's connections before giving up."""
    meanwhile = (
        f"; none of the driver's own connections came free within {waited:g}s"
        if waited is not None
        else ""
    )
    return BackendUnavailableError(
        f"{server} refused a new connection: its connection limit is reached ({detail})"
        f"{meanwhile}. Raise the limit ({limit}) or open fewer connections: {budget}; workers"
        " wait and retry with back-off"
    )
