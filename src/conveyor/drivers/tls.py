"""TLS for the server drivers: the files a URL names checked before the first connection
(`check_files`), and the fix for a connection whose TLS failed (`TlsWords.fix`), named in
each driver's own words, as the client library's message rarely does.

Each driver's URL options differ (redis-py's `ssl_ca_certs`, libpq's `sslrootcert`, the MySQL
dialect's `ssl_ca`): a driver describes its own in a TlsWords, and its errors about connecting
end with `fix(message, tls=...)` instead of "check that the server is running".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from conveyor.drivers.location import Location
from conveyor.errors import ConfigError

__all__ = ["TlsWords", "check_files"]


@dataclass(frozen=True)
class TlsWords:
    """How a driver's URL says each TLS setting: `ca`, the CA file to trust; `no_name_check`,
    to skip checking the name in the server's certificate; `no_verify`, to skip checking the
    certificate at all; `client`, a client certificate and its key; `on` and `off`, TLS
    turned on and off."""

    ca: str
    no_name_check: str
    no_verify: str
    client: str
    on: str
    off: str

    def fix(self, message: str, *, tls: bool) -> str | None:
        """What to do about a failure to connect whose client's `message` says that TLS failed
        (`tls`: whether the URL asked for TLS), or None when it says nothing of TLS."""
        text = message.lower()
        if "certificate has expired" in text:
            return (
                "the server's certificate has expired: renew it on the server (or set this"
                " machine's clock right)"
            )
        if ("mismatch" in text and "certificate" in text) or "does not match host name" in text:
            return (
                "the server's certificate is not for the host name in the URL: connect by a"
                f" name the certificate holds, or (not for production) {self.no_name_check}"
            )
        if "certificate verify failed" in text or "root certificate file" in text:
            return (
                "the server's certificate did not verify (signed by a CA not trusted here, or"
                f" expired): give the CA that signed it with {self.ca}, or (not for"
                f" production) {self.no_verify}"
            )
        if "certificate required" in text or "valid client certificate" in text:
            return (
                "the server wants a client certificate signed by a CA it trusts: give yours"
                f" with {self.client}"
            )
        if "insecure transport" in text or "no encryption" in text:
            return f"the server takes this login over TLS only: {self.on}"
        if tls and ("wrong version number" in text or "does not support ssl" in text):
            return f"the server does not speak TLS here: turn it on there, or {self.off}"
        return None


def check_files(location: Location, files: Iterable[tuple[str, str]]) -> None:
    """ConfigError naming the first of the URL's (option, path) `files` that is not a file
    this process can read, before a connection fails on it with a vaguer message."""
    for option, path in files:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ConfigError(
                f"{location.shown!r}: {option}={path!r} is not a file this process can read:"
                f" give the path of the PEM file for {option}"
            )
