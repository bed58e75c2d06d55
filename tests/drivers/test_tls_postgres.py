"""PostgreSQL over TLS: libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` in the URL, on a
private cluster (one per module, tests/backends/private.py) that takes no plain connection
over TCP and logs one user in by client certificate. Jobs go through the pool, a synchronous
connection from a plain thread and LISTEN; each way TLS fails is an error naming the option
that fixes it, never the password, and a worker started against it retries as it does for a
backend out of reach; options libpq cannot honour are refused before any connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Job, Registry, Worker
from conveyor.drivers import driver_from_url
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.errors import BackendUnavailableError, ConfigError
from tests.backends import eventually
from tests.backends.private import PrivatePostgres
from tests.backends.tls import (
    PASSWORD,
    Certificates,
    certs_fixture,  # noqa: F401 - the module-scoped fixture `certs`
    refusal,
    round_trip,
)
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(60)

_HBA = """
local all all trust
hostssl all holder 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 127.0.0.1/32 reject
"""


@pytest.fixture(scope="module")
def server(certs: Certificates) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        for name in ("server", "server_key", "ca"):
            _own(server, shutil.copy(getattr(certs, name), server.folder / f"{name}.pem"))
        (server.folder / "server_key.pem").chmod(0o600)
        (server.folder / "hba.conf").write_text(_HBA)
        _own(server, server.folder / "hba.conf")
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"ssl = on\nssl_cert_file = '{server.folder}/server.pem'\n"
                f"ssl_key_file = '{server.folder}/server_key.pem'\n"
                f"ssl_ca_file = '{server.folder}/ca.pem'\nhba_file = '{server.folder}/hba.conf'\n"
            )
        server.start()
        _psql(server, f"CREATE USER app PASSWORD '{PASSWORD}'; CREATE USER holder")
        _psql(server, "CREATE DATABASE jobs OWNER app")
        _psql(server, "GRANT ALL ON SCHEMA public TO holder", "jobs")
        yield server
    finally:
        server.close()


def _own(server: PrivatePostgres, path: object) -> None:
    if server.as_user:
        shutil.chown(str(path), "postgres", "postgres")


def _psql(server: PrivatePostgres, sql: str, database: str = "postgres") -> None:
    server._run("psql", "-h", str(server.folder), "-p", str(server.port), "-U", "postgres",
                "-d", database, "-c", sql)  # fmt: skip


def _shown(port: int) -> bytes:
    """The certificate the server on `port` shows now (DER), after PostgreSQL's SSLRequest."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(raw) as wrapped:
            der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return der


@contextlib.contextmanager
def serving(server: PrivatePostgres, certs: Certificates, cert: str) -> Iterator[None]:
    """The server shows certificate `cert` (expired, wrong_name) until the block ends."""
    for name in (cert, "server"):
        shutil.copy(getattr(certs, name), server.folder / "server.pem")
        server._run("pg_ctl", "-D", str(server.data), "reload")
        wanted = ssl.PEM_cert_to_DER_cert(Path(getattr(certs, name)).read_text())
        deadline = asyncio.get_event_loop().time() + 10
        while _shown(server.port) != wanted:  # the reload is a signal: wait for it to apply
            assert asyncio.get_event_loop().time() < deadline, "the server kept its certificate"
        if name == cert:
            yield


def url(server: PrivatePostgres, query: str, user: str = f"app:{PASSWORD}") -> str:
    return f"postgresql://{user}@127.0.0.1:{server.port}/jobs?prefix=tls_&timeout=5&{query}"


async def test_a_verify_full_url_pushes_reserves_settles_and_wakes_over_tls(
    server: PrivatePostgres, certs: Certificates
) -> None:
    await round_trip(
        url(server, f"sslmode=verify-full&sslrootcert={certs.ca}")
    )  # the pool, a sync connection, LISTEN


@pytest.mark.parametrize(
    ("cert", "query", "fix"),
    [
        ("server", "sslmode=verify-full&sslrootcert={other_ca}", "?sslrootcert=/path/ca.pem"),
        ("expired", "sslmode=verify-full&sslrootcert={ca}", "or expired): give the CA"),
        ("wrong_name", "sslmode=verify-full&sslrootcert={ca}", "?sslmode=verify-ca"),
        ("server", "sslmode=disable", "add ?sslmode=verify-full&sslrootcert="),
    ],
)
async def test_a_tls_failure_names_the_fix(
    server: PrivatePostgres, certs: Certificates, cert: str, query: str, fix: str
) -> None:
    with serving(server, certs, cert) if cert != "server" else contextlib.nullcontext():
        assert fix in await refusal(url(server, query.format(ca=certs.ca, other_ca=certs.other_ca)))


async def test_a_client_certificate_goes_in_sslcert_and_sslkey(
    server: PrivatePostgres, certs: Certificates
) -> None:
    query = f"sslmode=verify-full&sslrootcert={certs.ca}"
    without = driver_from_url(url(server, query, user="holder"))
    with pytest.raises(BackendUnavailableError, match=r"sslcert=/path/client\.pem&sslkey="):
        await without.push(make_job())
    await without.close()
    files = f"&sslcert={certs.client}&sslkey={certs.client_key}"
    own = url(server, query + files, user="holder").replace("prefix=tls_", "prefix=holder_")
    driver = driver_from_url(own)  # tables of its own: app owns tls_'s
    job = make_job()
    assert await driver.push(job) == job.id
    await driver.close()


async def test_a_worker_started_against_a_certificate_it_cannot_verify_retries(
    server: PrivatePostgres, certs: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    query = f"sslmode=verify-full&sslrootcert={certs.other_ca}"
    registry.queue("q", driver=url(server, query), workers=["w"])
    registry.worker("w")

    @registry.job("j", queue="q")
    async def j(job: Job[dict[str, int]]) -> None:
        """Never run: the worker never opens its backend."""

    caplog.set_level(logging.WARNING, "conveyor.worker")
    worker = Worker(registry, "w")
    running = asyncio.create_task(worker.run())

    async def retrying() -> bool:
        return any("trying again" in record.getMessage() for record in caplog.records)

    await eventually(retrying)
    worker.stop()
    await asyncio.wait_for(running, 10)
    [line] = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()][:1]
    assert "?sslrootcert=/path/ca.pem" in line
    assert PASSWORD not in line


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=bogus", "sslmode='bogus' is not one of disable, allow, prefer, require"),
        ("sslmode=verify-full&sslrootcert=/no/such/ca.pem", "sslrootcert='/no/such/ca.pem'"),
        ("sslcert=/no/such/client.pem", "sslcert='/no/such/client.pem' is not a file"),
    ],
)
def test_tls_options_libpq_cannot_honour_are_refused(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        driver_from_url(f"postgresql://app:{PASSWORD}@127.0.0.1:5432/jobs?{query}")
    assert PASSWORD not in str(caught.value)


def test_sslrootcert_system_names_no_file() -> None:
    url = f"postgresql://app:{PASSWORD}@db/jobs?sslmode=verify-full&sslrootcert=system"
    assert isinstance(driver_from_url(url), PostgresDriver)
