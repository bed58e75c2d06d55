"""RabbitMQ over TLS (`amqps://`): aiormq's `cafile`, `certfile`, `keyfile` and `no_verify_ssl`.
No private RabbitMQ speaks TLS here (too heavy to start per test), so what runs is what comes
before AMQP: the TLS handshake, against a private redis-server speaking TLS with the module's
certificates, each failure an error naming the option that fixes it and never the password;
amqps:// to the shared broker's plain port; and the options a URL cannot honour, refused
before any connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.drivers import driver_from_url
from conveyor.errors import BackendUnavailableError, ConfigError
from tests.backends import require_service
from tests.backends.amqp import START
from tests.backends.tls import (
    PASSWORD,
    Certificates,
    certs_fixture,  # noqa: F401 - the module-scoped fixture `certs`
    refusal,
    tls_redis,
)
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("cert", "query", "fix"),
    [
        ("server", "", "?cafile=/path/ca.pem"),
        ("expired", "cafile={ca}", "has expired: renew it on the server"),
        ("wrong_name", "cafile={ca}", "?no_verify_ssl=1"),
    ],
)
async def test_a_tls_handshake_that_fails_names_the_fix(
    certs: Certificates, tmp_path: Path, cert: str, query: str, fix: str
) -> None:
    with tls_redis(tmp_path, certs, cert) as endpoint:  # a TLS endpoint, not a broker
        address = f"127.0.0.1:{endpoint.port}/?prefix=tls.&timeout=5&{query.format(ca=certs.ca)}"
        assert fix in await refusal(f"amqps://guest:{PASSWORD}@{address}")


async def test_amqps_to_a_plain_port_says_to_write_amqp() -> None:
    require_service("RabbitMQ", 5672, START)
    driver = driver_from_url("amqps://guest:guest@127.0.0.1:5672/?prefix=tls.&timeout=5")
    with pytest.raises(BackendUnavailableError, match="does not speak TLS here"):
        await driver.push(make_job())
    await driver.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://guest:{pw}@h/?cafile={ca}", "cafile= is a TLS option, and amqp:// speaks no"),
        ("amqp://guest:{pw}@h/?no_verify_ssl=1", "no_verify_ssl= is a TLS option"),
        ("amqps://guest:{pw}@h/?cafile=/no/such/ca.pem", "cafile='/no/such/ca.pem' is not a"),
        ("amqps://guest:{pw}@h/?certfile=/no/such/c.pem", "certfile='/no/such/c.pem' is not a"),
    ],
)
def test_tls_options_a_url_cannot_honour_are_refused(
    certs: Certificates, url: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        driver_from_url(url.format(pw=PASSWORD, ca=certs.ca))
    assert PASSWORD not in str(caught.value)
