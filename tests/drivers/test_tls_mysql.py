"""MySQL/MariaDB over TLS: the URL's `ssl_mode`, `ssl_ca`, `ssl_cert` and `ssl_key`, on a
private MariaDB (one per module) that takes plain connections from nobody
(require_secure_transport) and whose users need TLS, one of them a client certificate. Jobs go
through asyncmy's pooled connections, PyMySQL's from a plain thread and a wake-up; each way TLS
fails is an error naming the option that fixes it, never the password; options that cannot be
honoured are refused before any connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.drivers import driver_from_url
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.errors import BackendUnavailableError, ConfigError
from tests.backends.private import PrivateMariadb, private_mariadb
from tests.backends.tls import (
    PASSWORD,
    Certificates,
    certs_fixture,  # noqa: F401 - the module-scoped fixture `certs`
    refusal,
    round_trip,
)
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(certs: Certificates) -> Iterator[PrivateMariadb]:
    # The server reads its certificate from files of its own, swapped by `serving`, in a
    # folder its user (mysql, when the tests run as root) can read.
    files = Path(tempfile.mkdtemp(prefix="conveyor-tls-"))
    for name in ("server", "server_key", "ca"):
        shutil.copy(getattr(certs, name), files / f"{name}.pem")
    if os.geteuid() == 0:
        for path in (files, *files.iterdir()):
            shutil.chown(path, "mysql")
    tls = [f"--ssl-cert={files}/server.pem", f"--ssl-key={files}/server_key.pem",
           f"--ssl-ca={files}/ca.pem", "--require-secure-transport=ON"]  # fmt: skip
    try:
        with private_mariadb(tls) as server:
            server.files = files  # type: ignore[attr-defined]
            server.sql(
                f"CREATE DATABASE jobs; CREATE USER app@'%' IDENTIFIED BY '{PASSWORD}'"
                " REQUIRE SSL; CREATE USER holder@'%' REQUIRE SUBJECT '/CN=holder';"
                " GRANT ALL ON jobs.* TO app@'%'; GRANT ALL ON jobs.* TO holder@'%';"
            )
            yield server
    finally:
        shutil.rmtree(files, ignore_errors=True)


@contextlib.contextmanager
def serving(server: PrivateMariadb, certs: Certificates, cert: str) -> Iterator[None]:
    """The server shows certificate `cert` (expired, wrong_name) until the block ends."""
    files: Path = server.files  # type: ignore[attr-defined]
    shutil.copy(getattr(certs, cert), files / "server.pem")
    server.sql("FLUSH SSL")
    try:
        yield
    finally:
        shutil.copy(certs.server, files / "server.pem")
        server.sql("FLUSH SSL")


def url(server: PrivateMariadb, query: str, user: str = f"app:{PASSWORD}") -> str:
    return f"mysql://{user}@127.0.0.1:{server.port}/jobs?prefix=tls_&timeout=5&{query}"


async def test_a_tls_url_pushes_reserves_settles_and_wakes_over_tls(
    server: PrivateMariadb, certs: Certificates
) -> None:
    await round_trip(url(server, f"ssl_ca={certs.ca}"))  # asyncmy, and PyMySQL from the thread


@pytest.mark.parametrize(
    ("cert", "query", "fix"),
    [
        ("server", "ssl_ca={other_ca}", "?ssl_ca=/path/ca.pem"),
        ("server", "ssl_mode=VERIFY_CA", "?ssl_ca=/path/ca.pem"),  # the system's CAs
        ("expired", "ssl_ca={ca}", "has expired: renew it on the server"),
        ("wrong_name", "ssl_ca={ca}", "?ssl_mode=VERIFY_CA"),
    ],
)
async def test_a_certificate_that_does_not_verify_names_the_fix(
    server: PrivateMariadb, certs: Certificates, cert: str, query: str, fix: str
) -> None:
    with serving(server, certs, cert):
        assert fix in await refusal(url(server, query.format(ca=certs.ca, other_ca=certs.other_ca)))


async def test_a_certificate_that_verifies_only_as_asked_is_taken(
    server: PrivateMariadb, certs: Certificates
) -> None:
    for cert, query in [("wrong_name", f"ssl_mode=VERIFY_CA&ssl_ca={certs.ca}"),
                        ("expired", "ssl_mode=REQUIRED")]:  # fmt: skip
        with serving(server, certs, cert):
            driver = driver_from_url(url(server, query))
            job = make_job()
            assert await driver.push(job) == job.id
            await driver.close()


async def test_a_plain_url_to_a_server_wanting_tls_names_ssl_mode(
    server: PrivateMariadb,
) -> None:
    driver = driver_from_url(url(server, ""))
    with pytest.raises(
        BackendUnavailableError, match="wants TLS for them, add \\?ssl_mode="
    ) as caught:
        await driver.push(make_job())
    await driver.close()
    assert PASSWORD not in str(caught.value)


async def test_a_client_certificate_goes_in_ssl_cert_and_ssl_key(
    server: PrivateMariadb, certs: Certificates
) -> None:
    files = f"ssl_ca={certs.ca}&ssl_cert={certs.client}&ssl_key={certs.client_key}"
    driver = driver_from_url(url(server, files, user="holder"))
    job = make_job()
    assert await driver.push(job) == job.id
    pushed: list[str | None] = []
    thread = threading.Thread(target=lambda: pushed.append(driver.push_in_thread(make_job())))
    thread.start()
    await asyncio.to_thread(thread.join)
    assert pushed[0] is not None
    await driver.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("ssl_mode=PREFERRED", "ssl_mode='PREFERRED' is not one of DISABLED, REQUIRED"),
        ("ssl_mode=DISABLED&ssl_ca={ca}", "ssl_ca= asks for TLS, and ssl_mode=DISABLED"),
        ("ssl_ca=/no/such/ca.pem", "ssl_ca='/no/such/ca.pem' is not a file"),
        ("ssl_key={key}", "ssl_key= needs ssl_cert="),
        ("ssl_cert={ca}&ssl_key={ca}", "its TLS files cannot be used"),
        ("ssl_ca={ca}&unix_socket=/tmp/mysql.sock", "over unix_socket= is not supported"),
    ],
)
def test_tls_options_that_cannot_be_honoured_are_refused(
    certs: Certificates, query: str, message: str
) -> None:
    query = query.format(ca=certs.ca, key=certs.client_key)
    with pytest.raises(ConfigError, match=message) as caught:
        driver_from_url(f"mysql://app:{PASSWORD}@127.0.0.1:3306/jobs?{query}")
    assert PASSWORD not in str(caught.value)


def test_a_driver_over_tls_shows_its_mode(certs: Certificates) -> None:
    driver = MysqlDriver.from_url(f"mysql://app:{PASSWORD}@db:3306/jobs?ssl_ca={certs.ca}")
    assert driver.target.shown == "mysql://app@db:3306/jobs?ssl_mode=VERIFY_IDENTITY"
