"""The options a Redis URL may hold (`URL_OPTIONS`): conveyor's and redis-py's, those of TLS
checked before the first connection (`check_tls`), and the fix named for a connection that
failed (`connect_fix`), TLS's included (conveyor.drivers.tls)."""

from __future__ import annotations

import inspect
import urllib.parse

from redis import connection as redis_connection
from redis.asyncio import connection as redis_asyncio_connection

from conveyor.drivers.location import Location
from conveyor.drivers.tls import TlsWords, check_files
from conveyor.errors import ConfigError

__all__ = ["URL_OPTIONS", "check_tls", "connect_fix"]


def check_tls(location: Location, scheme: str, query: list[tuple[str, str]]) -> None:
    """ConfigError for TLS options on a URL without TLS (redis-py's plain connection would
    fail on them with a TypeError at the first call), for a certificate requirement redis-py
    does not know, and for a certificate or key file that cannot be read."""
    tls = [(key, value) for key, value in query if key in _TLS_OPTIONS]
    if tls and scheme != "rediss":
        raise ConfigError(
            f"{location.refusing(tls[0][0])!r}: {tls[0][0]}= is a TLS option, and"
            f" {scheme}:// speaks no TLS: write rediss:// for TLS"
        )
    for key, value in tls:
        if key == "ssl_cert_reqs" and value not in ("none", "optional", "required"):
            raise ConfigError(
                f"{location.refusing(key)!r}: ssl_cert_reqs={location.mask(value)!r} is not"
                " none, optional or required: write ssl_cert_reqs=required (the default)"
            )
    check_files(location, ((key, value) for key, value in tls if key in _TLS_FILES))


def _keywords(cls: type) -> set[str]:
    """The keywords a connection class of redis-py's takes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(inspect.signature(vars(klass)["__init__"]).parameters)
    return names - {"self", "args", "kwargs"}


#: The options of TLS connections only: rediss:// URLs take them.
_TLS_OPTIONS = frozenset(
    _keywords(redis_asyncio_connection.SSLConnection)
    - _keywords(redis_asyncio_connection.Connection)
)
#: The TLS options that name a file.
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def _url_options() -> frozenset[str]:
    """The query parameters a Redis URL may hold: conveyor's, and whatever redis-py's URL
    parser reads or its asyncio connections take as keywords (not the TLS options of its
    synchronous connections only, ssl_validate_ocsp..., which the driver's asyncio client
    would refuse at its first call)."""
    names = {"prefix", "timeout", *redis_connection.URL_QUERY_ARGUMENT_PARSERS}
    names -= {name for name in names if name.startswith("ssl_")} - _TLS_OPTIONS
    for cls in (
        redis_asyncio_connection.Connection,
        redis_asyncio_connection.SSLConnection,
        redis_asyncio_connection.UnixDomainSocketConnection,
    ):
        names |= _keywords(cls)
    return frozenset(names)


URL_OPTIONS = _url_options()

#: The options that fix a TLS failure, in a Redis URL's words.
_TLS_WORDS = TlsWords(
    ca="?ssl_ca_certs=/path/ca.pem",
    no_name_check="?ssl_check_hostname=false",
    no_verify="?ssl_cert_reqs=none",
    client="?ssl_certfile=/path/client.pem&ssl_keyfile=/path/client.key",
    on="write rediss://",
    off="write redis://",
)


#: What a TLS server hanging up on a plain connection may mean.
_PLAIN = "if it speaks TLS on this port, write rediss://"


def connect_fix(url: str, text: str) -> str:
    """What to do about a connection to `url` that failed with redis-py's message `text`."""
    scheme = urllib.parse.urlsplit(url).scheme
    if "No master found" in text:  # redis-py's Sentinel: no sentinel named a live one
        return (
            "no sentinel names a live master for the URL's service: in a failover this passes"
            " once they promote a replica; if it lasts, check that the service (the URL's"
            " path) is the name in their `sentinel monitor`, and that they are reachable"
        )
    tls = scheme in ("rediss", "rediss+sentinel")
    fix = _TLS_WORDS.fix(text, tls=tls)
    if fix is not None:
        return fix
    if scheme.endswith("+sentinel"):
        return (
            "the sentinels name it the master: if it died, this lasts until they see it down"
            " and promote a replica (down-after-milliseconds, then the failover)"
        )
    if tls and ("connecting" in text.lower() or "no answer" in text):  # a plain server
        # never answers the TLS hello
        return "check that it is running and reachable, and speaks TLS on this port"
    if "reset by peer" in text or "closed by server" in text:  # as a TLS server hangs up
        why = f"if it wants a client certificate: {_TLS_WORDS.client}" if tls else _PLAIN
        return f"check that it is running and reachable ({why})"
    return "check that it is running and reachable"
