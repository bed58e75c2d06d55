"""Certificates for the TLS tests, made with the openssl command in a folder of the test's own:
a CA, a server certificate for 127.0.0.1 and localhost signed by it, the same key under an
expired certificate and under one for another name, a client certificate, and a second CA
that signed none of them. And a redis-server speaking TLS only with them (`tls_redis`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends.private import PrivateRedis

__all__ = ["PASSWORD", "Certificates", "make_certificates", "need", "tls_redis"]

#: The password of the servers' users, which no message may show.
PASSWORD = "s3cret-pw"

_CA_CONFIG = """
[ca]
default_ca = test
[test]
dir = {folder}
database = {folder}/index.txt
serial = {folder}/serial
new_certs_dir = {folder}
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
[anything]
commonName = supplied
[server]
subjectAltName = IP:127.0.0.1,DNS:localhost
"""


@dataclass(frozen=True)
class Certificates:
    """The PEM files, each a path."""

    folder: Path

    def __getattr__(self, name: str) -> str:  # ca, other_ca, server, server_key, ...
        return str(self.folder / f"{name.replace('_', '-')}.pem")


def need(program: str, what: str) -> None:
    """Skip unless `program` (`what` it is) is installed; under CI=true, where this machine's
    kind has it, fail instead."""
    if shutil.which(program) is None and not Path(program).exists():
        message = f"{program} ({what}) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _openssl(folder: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr.decode()}"


def make_certificates(folder: Path, client: str = "conveyor client") -> Certificates:
    """The files in `folder`; the client certificate's common name is `client`."""
    need("openssl", "the command that makes the tests' certificates")
    for ca, name in (("ca", "conveyor test CA"), ("other-ca", "another CA")):
        _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                 f"{ca}-key.pem", "-out", f"{ca}.pem", "-days", "2",
                 "-subj", f"/CN={name}")  # fmt: skip
    for key, name in (("server", "localhost"), ("client", client)):
        _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{key}-key.pem",
                 "-out", f"{key}.csr", "-subj", f"/CN={name}")  # fmt: skip
    (folder / "index.txt").touch()
    (folder / "serial").write_text("1000\n")
    (folder / "ca.cnf").write_text(_CA_CONFIG.format(folder=folder))
    (folder / "wrong-name.cnf").write_text("[server]\nsubjectAltName = DNS:db.example.com\n")
    signed = [
        ("server", "server.csr", "ca.cnf", ("-days", "2")),
        ("expired", "server.csr", "ca.cnf", ("-startdate", "20200101000000Z", "-enddate",
                                             "20200102000000Z")),
        ("wrong-name", "server.csr", "wrong-name.cnf", ("-days", "2")),
        ("client", "client.csr", "ca.cnf", ("-days", "2")),
    ]  # fmt: skip
    for name, request, config, dates in signed:
        extensions = ("-extfile", config, "-extensions", "server") if name != "client" else ()
        _openssl(folder, "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
                 "ca-key.pem", "-in", request, "-out", f"{name}.pem", "-notext", *dates,
                 *extensions)  # fmt: skip
    for key in folder.glob("*-key.pem"):
        key.chmod(0o600)
    return Certificates(folder)


@contextlib.contextmanager
def tls_redis(
    folder: Path, certs: Certificates, cert: str = "server", clients: str = "no"
) -> Iterator[PrivateRedis]:
    """A redis-server speaking TLS only, with the certificate `cert` (server, expired,
    wrong_name), asking clients for theirs when `clients` is yes."""
    need("redis-server", "Redis's server")
    server = PrivateRedis(folder, persistent=False)
    server.options = ["--port", "0", "--tls-port", str(server.port), "--tls-cert-file",
                      getattr(certs, cert), "--tls-key-file", certs.server_key,
                      "--tls-ca-cert-file", certs.ca, "--tls-auth-clients", clients,
                      "--requirepass", PASSWORD]  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.close()
