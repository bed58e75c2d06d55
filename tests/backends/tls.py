"""Certificates for the TLS tests, made with the openssl command in a folder of the test's own:
a CA, a server certificate for 127.0.0.1 and localhost signed by it, the same key under an
expired certificate and under one for another name, a client certificate, and a second CA
that signed none of them. And a redis-server speaking TLS only with them (`tls_redis`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.drivers import driver_from_url
from conveyor.errors import BackendUnavailableError
from conveyor.job import JobState
from tests.backends.private import PrivateRedis
from tests.contract.helpers import make_job, reservation

__all__ = [
    "PASSWORD", "Certificates", "certs_fixture", "make_certificates", "need", "refusal",
    "round_trip", "tls_redis",
]  # fmt: skip

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
{leaf}
[client]
{leaf}
"""

#: What every certificate the test CA signs holds: Python 3.13's default context checks
#: certificates strictly (VERIFY_X509_STRICT) and refuses one without them.
_LEAF = """basicConstraints = CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer"""


@dataclass(frozen=True)
class Certificates:
    """The PEM files, each a path."""

    folder: Path

    def __getattr__(self, name: str) -> str:  # ca, other_ca, server, server_key, ...
        return str(self.folder / f"{name.replace('_', '-')}.pem")


@pytest.fixture(scope="module", name="certs")
def certs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """The module's certificates (a module imports this fixture); the client's is holder's."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


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


def make_certificates(folder: Path, client: str = "holder") -> Certificates:
    """The files in `folder`; the client certificate's common name is `client`."""
    need("openssl", "the command that makes the tests' certificates")
    for ca, name in (("ca", "conveyor test CA"), ("other-ca", "another CA")):
        _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                 f"{ca}-key.pem", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={name}",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for key, name in (("server", "localhost"), ("client", client)):
        _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{key}-key.pem",
                 "-out", f"{key}.csr", "-subj", f"/CN={name}")  # fmt: skip
    (folder / "index.txt").touch()
    (folder / "serial").write_text("1000\n")
    (folder / "ca.cnf").write_text(_CA_CONFIG.format(folder=folder, leaf=_LEAF))
    (folder / "wrong-name.cnf").write_text(
        f"[server]\nsubjectAltName = DNS:db.example.com\n{_LEAF}\n"
    )
    signed = [
        ("server", "server.csr", "ca.cnf", ("-days", "2")),
        ("expired", "server.csr", "ca.cnf", ("-startdate", "20200101000000Z", "-enddate",
                                             "20200102000000Z")),
        ("wrong-name", "server.csr", "wrong-name.cnf", ("-days", "2")),
        ("client", "client.csr", "ca.cnf", ("-days", "2")),
    ]  # fmt: skip
    for name, request, config, dates in signed:
        section = "client" if name == "client" else "server"
        extensions = ("-extfile", config, "-extensions", section)
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


async def round_trip(url: str) -> None:
    """Through two drivers for `url`: a push, reserve and ack; a push from a plain thread on
    the driver's synchronous connection (`push_in_thread`, which must not hand it to the event
    loop); and a `wait` woken by the other driver's push."""
    driver, other = driver_from_url(url), driver_from_url(url)
    try:
        first = make_job()
        await driver.push(first)
        [job] = await driver.reserve(["q"], 10, 30, "w1")
        assert await driver.ack([reservation(job)]) == {first.id}
        assert (await driver.get(first.id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]
        second = make_job()
        assert await asyncio.to_thread(driver.push_in_thread, second) == second.id
        assert [j.id for j in await driver.reserve(["q"], 10, 30, "w1")] == [second.id]
        waiting = asyncio.create_task(driver.wait(["q"], 30))  # its own connection (BLPOP...)
        await asyncio.sleep(0.2)
        await other.push(make_job())
        await asyncio.wait_for(waiting, 10)
    finally:
        await driver.close()
        await other.close()


async def refusal(url: str) -> str:
    """The message of the BackendUnavailableError a push to `url` fails with, checked to hold
    no password."""
    driver = driver_from_url(url)
    try:
        await driver.push(make_job())
    except BackendUnavailableError as error:
        assert PASSWORD not in str(error)
        return str(error)
    finally:
        await driver.close()
    raise AssertionError(f"a push to {url} went through")
