"""TLS for the MySQL dialect: the URL's `ssl_mode`, `ssl_ca`, `ssl_cert` and `ssl_key` (the
names of MySQL's own client, `--ssl-mode`, `--ssl-ca`, ...) made into one ssl.SSLContext, which
every connection gets: asyncmy's pooled ones and PyMySQL's from plain threads alike.

`ssl_mode` is one of DISABLED (the default without any ssl_ option: no TLS), REQUIRED
(encrypted, the server's certificate not checked), VERIFY_CA (its certificate checked against
`ssl_ca`, else the system's CAs) and VERIFY_IDENTITY (that, and the URL's host named in it;
the default once any other ssl_ option is given). MySQL's PREFERRED, which falls back to a
plain connection when the server has no TLS, is refused: a URL asking for TLS gets it or fails.
"""

from __future__ import annotations

import ssl

from conveyor.drivers.location import Location
from conveyor.drivers.tls import TlsWords, check_files
from conveyor.errors import ConfigError

__all__ = ["MODES", "OPTIONS", "WORDS", "tls_context"]

MODES = ("DISABLED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
#: The URL's TLS options.
OPTIONS = ("ssl_mode", "ssl_ca", "ssl_cert", "ssl_key")
_FILES = ("ssl_ca", "ssl_cert", "ssl_key")

#: The options that fix a TLS failure, in a MySQL URL's words.
WORDS = TlsWords(
    ca="?ssl_ca=/path/ca.pem",
    no_name_check="?ssl_mode=VERIFY_CA",
    no_verify="?ssl_mode=REQUIRED",
    client="?ssl_cert=/path/client.pem&ssl_key=/path/client.key",
    on="add ?ssl_mode=VERIFY_IDENTITY&ssl_ca=/path/ca.pem (ssl_mode=REQUIRED to encrypt only)",
    off="leave the ssl_ options out of the URL",
)


def tls_context(
    location: Location, query: dict[str, str], unix_socket: str | None
) -> tuple[ssl.SSLContext | None, str]:
    """The SSL context for the URL's TLS options in `query` (None without TLS), and the mode;
    ConfigError naming the option and the fix for one that cannot be honoured."""
    given = [key for key in _FILES if key in query]
    mode = query.get("ssl_mode", "").upper() or ("VERIFY_IDENTITY" if given else "DISABLED")
    if mode not in MODES:
        raise ConfigError(
            f"{location.shown!r}: ssl_mode={location.mask(query['ssl_mode'])!r} is not one of"
            f" {', '.join(MODES)} (PREFERRED would fall back to no TLS): write"
            " ssl_mode=VERIFY_IDENTITY"
        )
    if mode == "DISABLED":
        if given:
            raise ConfigError(
                f"{location.shown!r}: {given[0]}= asks for TLS, and ssl_mode=DISABLED turns it"
                " off: drop one of them"
            )
        return None, mode
    if unix_socket:
        raise ConfigError(
            f"{location.shown!r}: TLS (ssl_mode={mode}) over unix_socket= is not supported:"
            " a local socket needs none; drop the ssl_ options, or connect by host and port"
        )
    if "ssl_key" in query and "ssl_cert" not in query:
        raise ConfigError(f"{location.shown!r}: ssl_key= needs ssl_cert=, the certificate")
    check_files(location, ((key, query[key]) for key in given))
    return _context(location, query, mode), mode


def _context(location: Location, query: dict[str, str], mode: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=query.get("ssl_ca"))
        context.check_hostname = mode == "VERIFY_IDENTITY"
        if mode == "REQUIRED":
            context.verify_mode = ssl.CERT_NONE
        if "ssl_cert" in query:
            context.load_cert_chain(query["ssl_cert"], query.get("ssl_key"))
    except (ssl.SSLError, ValueError) as error:
        raise ConfigError(
            f"{location.shown!r}: its TLS files cannot be used ({error}): give PEM files, the"
            " CA's as ssl_ca, your certificate as ssl_cert and its key (unencrypted) as ssl_key"
        ) from None
    return context
