"""Redis over TLS (`rediss://`): private redis-servers speaking TLS only, on spare loopback ports,
with certificates the module makes (tests/backends/tls.py). Jobs go through the driver, the
blocking facade's push from a plain thread and a worker's wake-up; each way TLS can fail is an
error naming the fix (the option to give), never the password; TLS options a URL cannot
honour are refused before any connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.drivers import driver_from_url
from conveyor.drivers.redis.connection import split_prefix
from conveyor.errors import BackendUnavailableError, ConfigError
from tests.backends.private import PrivateRedis, PrivateSentinel
from tests.backends.tls import (
    PASSWORD,
    Certificates,
    certs_fixture,  # noqa: F401 - the module-scoped fixture `certs`
    need,
    refusal,
    round_trip,
    tls_redis,
)
from tests.contract.helpers import make_job
from tests.integration.test_cli_mistakes import conveyor, one_error_line

pytestmark = pytest.mark.timeout(60)


def url(server: PrivateRedis, query: str, *, scheme: str = "rediss") -> str:
    return f"{scheme}://:{PASSWORD}@127.0.0.1:{server.port}/0?prefix=tls_&{query}"


@pytest.fixture(scope="module")
def server(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with tls_redis(tmp_path_factory.mktemp("redis"), certs) as server:
        yield server


async def test_a_rediss_url_pushes_reserves_settles_and_wakes_over_tls(
    server: PrivateRedis, certs: Certificates
) -> None:
    await round_trip(url(server, f"ssl_ca_certs={certs.ca}"))  # redis-py's asyncio and sync clients


async def test_a_rediss_sentinel_url_speaks_tls_to_the_sentinel_and_the_master(
    server: PrivateRedis, certs: Certificates, tmp_path: Path
) -> None:
    """A sentinel speaking TLS only, watching the TLS master: the URL's TLS options serve
    both, the URL's password the master (the sentinel asks none)."""
    files = (certs.server, certs.server_key, certs.ca)
    sentinel = PrivateSentinel(tmp_path, server.port, master_password=PASSWORD, tls=files)
    sentinel.start()
    try:
        where = sentinel.url.replace("redis+sentinel://", f"rediss+sentinel://:{PASSWORD}@")
        await round_trip(f"{where}?prefix=tls_sentinel_&ssl_ca_certs={certs.ca}")
    finally:
        sentinel.close()


@pytest.mark.parametrize(
    ("cert", "query", "fix"),
    [
        ("server", "", "?ssl_ca_certs=/path/ca.pem"),
        ("server", "ssl_ca_certs={other_ca}", "?ssl_ca_certs=/path/ca.pem"),
        ("expired", "ssl_ca_certs={ca}", "has expired: renew it on the server"),
        ("wrong_name", "ssl_ca_certs={ca}", "?ssl_check_hostname=false"),
    ],
)
async def test_a_certificate_that_does_not_verify_names_the_fix(
    certs: Certificates, tmp_path: Path, cert: str, query: str, fix: str
) -> None:
    with tls_redis(tmp_path, certs, cert) as server:
        query = query.format(ca=certs.ca, other_ca=certs.other_ca)
        assert fix in await refusal(url(server, query + "&timeout=5"))


async def test_a_client_certificate_goes_in_ssl_certfile_and_ssl_keyfile(
    certs: Certificates, tmp_path: Path
) -> None:
    with tls_redis(tmp_path, certs, clients="yes") as server:
        without = driver_from_url(url(server, f"ssl_ca_certs={certs.ca}&timeout=5"))
        with pytest.raises(BackendUnavailableError, match=r"ssl_certfile=.*ssl_keyfile="):
            await without.push(make_job())
        await without.close()
        files = f"ssl_certfile={certs.client}&ssl_keyfile={certs.client_key}"
        driver = driver_from_url(url(server, f"ssl_ca_certs={certs.ca}&{files}"))
        job = make_job()
        assert await driver.push(job) == job.id
        await driver.close()


async def test_a_plain_url_to_a_tls_port_says_to_write_rediss(server: PrivateRedis) -> None:
    driver = driver_from_url(url(server, "timeout=5", scheme="redis"))
    with pytest.raises(BackendUnavailableError, match="write rediss://") as caught:
        await driver.push(make_job())
    await driver.close()
    assert PASSWORD not in str(caught.value)


async def test_a_tls_url_to_a_plain_port_fails_within_its_timeout(
    certs: Certificates, tmp_path: Path
) -> None:
    need("redis-server", "Redis's server")
    plain = PrivateRedis(tmp_path, persistent=False)
    plain.start()
    try:
        driver = driver_from_url(f"rediss://127.0.0.1:{plain.port}/0?prefix=tls_&timeout=2")
        with pytest.raises(BackendUnavailableError, match="speaks TLS on this port"):
            await driver.push(make_job())
        await driver.close()
    finally:
        plain.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("ssl_ca_certs={ca}", "a TLS option, and redis:// speaks no TLS: write rediss://"),
        ("ssl_cert_reqs=none", "a TLS option, and redis:// speaks no TLS: write rediss://"),
    ],
)
def test_tls_options_on_a_redis_url_are_refused(
    certs: Certificates, query: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        driver_from_url(f"redis://127.0.0.1:6379/0?{query.format(ca=certs.ca)}")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs='/no/such/ca.pem' is not a file"),
        ("ssl_keyfile=/no/such/key.pem", "ssl_keyfile='/no/such/key.pem' is not a file"),
        ("ssl_cert_reqs=bogus", "is not none, optional or required"),
        ("ssl_validate_ocsp=true", "unknown option 'ssl_validate_ocsp'"),
    ],
)
def test_tls_options_a_rediss_url_cannot_honour_are_refused(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        driver_from_url(f"rediss://:{PASSWORD}@127.0.0.1:6379/0?{query}")


def test_a_urls_tls_files_show_as_written() -> None:
    url = "rediss://127.0.0.1:6380/0?prefix=app_&ssl_ca_certs=/etc/ssl/ca.pem&ssl_password=pw"
    kept = "rediss://127.0.0.1:6380/0?ssl_ca_certs=/etc/ssl/ca.pem&ssl_password=pw"
    assert split_prefix(url) == (kept, "app_")


def test_conveyor_push_and_list_go_over_tls_and_say_the_fix_when_it_fails(
    server: PrivateRedis, certs: Certificates, tmp_path: Path
) -> None:
    good = url(server, f"ssl_ca_certs={certs.ca}")
    pushed = conveyor(tmp_path, good, "push", "default", "add", "--payload", "{}")
    assert pushed.returncode == 0, pushed.stderr
    listed = conveyor(tmp_path, good, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["queues"]["default"]["pending"] >= 1
    bad = conveyor(tmp_path, url(server, f"ssl_ca_certs={certs.other_ca}"), "list")
    assert "?ssl_ca_certs=/path/ca.pem" in one_error_line(bad)
    assert PASSWORD not in bad.stdout + bad.stderr
