"""A hostile password never reaches output: the `conveyor` command as a subprocess, and each
driver connecting, to a closed loopback port, with the password raw, percent-encoded and in
a libpq keyword string.

The raw (unencoded) passwords are chosen so that every client still aims at 127.0.0.1, or
refuses the URL before connecting: a raw `@` would make libpq look up a host named after part
of the password. tests/unit/test_secrets.py covers those without connecting.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import ConveyorError, DriverError
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Driver
from conveyor.drivers.sql.postgres import PostgresDriver
from tests.backends import require_service
from tests.backends.postgres import START, URL, drop_tables, fresh_prefix
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(120)

#: The application the CLI is pointed at: one queue on the driver the test names.
APP_SOURCE = """
import os

from conveyor import Registry
from conveyor.drivers.sql.postgres import PostgresDriver

registry = Registry(default_driver="memory")
conninfo = os.environ.get("SECRET_CONNINFO")
driver = PostgresDriver(conninfo) if conninfo else os.environ["SECRET_URL"]
registry.queue("q", driver=driver, workers=["w"])
registry.worker("w", poll_interval=0.1)
"""

#: (password, written raw in the URL?): raw only where no client can be led off loopback.
PASSWORDS = [
    ("pa/ss w0rd?#", True),  # a / before the @: every parser reads "pa" as a port, refuses
    ("pa/ss w0rd?#", False),
    ('it\'s "q" \\x%41;{}', True),  # quotes, a backslash, a %-escape that decodes to "A"
    ("ünï#cødé😀", True),  # libpq reads it whole; urlsplit cuts at #, refuses the port
    ("p?ss:w@rd&user=x", False),
]


def closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def url_for(scheme: str, password: str, raw: bool, port: int) -> str:
    secret = password if raw else quote(password, safe="")
    return f"{scheme}://app:{secret}@127.0.0.1:{port}/test"


def libpq_keywords(password: str, port: int) -> str:
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"host=127.0.0.1 port={port} user=app password='{escaped}' dbname=test"


def assert_hidden(password: str, text: str) -> None:
    for form in {password, unquote(password), quote(password, safe="")}:
        assert form not in text, (form, text)


def run_cli(tmp_path: Path, *args: str, **env: str) -> str:
    """Run `conveyor ARGS --app secretapp:registry`; its stdout and stderr together. A
    command still running after 20 s (a worker retrying) is stopped: its output so far."""
    (tmp_path / "secretapp.py").write_text(APP_SOURCE)
    command = [sys.executable, "-m", "conveyor", *args, "--app", "secretapp:registry"]
    try:
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired as stopped:
        return f"{stopped.stdout or ''}{stopped.stderr or ''}"
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("scheme", ["postgresql", "mysql", "redis"])
@pytest.mark.parametrize(("password", "raw"), PASSWORDS)
def test_cli_list_against_an_unreachable_url_never_prints_the_password(
    tmp_path: Path, scheme: str, password: str, raw: bool
) -> None:
    url = url_for(scheme, password, raw, closed_port())

    output = run_cli(tmp_path, "list", SECRET_URL=url)

    assert "Error:" in output and "Traceback" not in output, output
    assert_hidden(password, output)


@pytest.mark.parametrize(("password", "_"), PASSWORDS[::2])
def test_cli_with_a_libpq_keyword_string_never_prints_the_password(
    tmp_path: Path, password: str, _: bool
) -> None:
    conninfo = libpq_keywords(password, closed_port())

    output = run_cli(tmp_path, "migrate", SECRET_CONNINFO=conninfo)

    assert "password=***" in output, output
    assert_hidden(password, output)


def test_cli_libpq_keyword_string_as_a_queue_driver_name_is_refused_masked(
    tmp_path: Path,
) -> None:
    password = "s3cr/et pw"
    output = run_cli(tmp_path, "list", SECRET_URL=libpq_keywords(password, closed_port()))

    assert "unknown driver" in output and "password=***" in output, output
    assert_hidden(password, output)


def test_cli_work_against_an_unreachable_url_never_prints_the_password(tmp_path: Path) -> None:
    password = "pa/ss w0rd?#"
    url = url_for("postgresql", password, False, closed_port())

    output = run_cli(tmp_path, "work", "w", "--burst", "--startup-timeout", "2", SECRET_URL=url)

    assert "***" in output, output
    assert_hidden(password, output)


# -- drivers connecting, over many passwords -------------------------------------------------

passwords = st.text(
    alphabet=st.sampled_from("@/?#:%&=+ '\"\\;{}[]") | st.characters(codec="utf-8"),
    max_size=12,
).map(lambda text: f"{text}Zq9{text[::-1]}")


def refusal(make: Driver | str) -> str:
    """The message of the conveyor error that pushing through the driver raises."""

    async def push() -> None:
        driver = driver_from_url(make) if isinstance(make, str) else make
        try:
            await driver.push(make_job())
        finally:
            await driver.close()

    with pytest.raises(ConveyorError) as caught:
        asyncio.run(push())
    return str(caught.value)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords, scheme=st.sampled_from(["postgresql", "mysql"]))
def test_sql_drivers_failing_to_connect_never_show_the_password(password: str, scheme: str) -> None:
    message = refusal(url_for(scheme, password.replace("\0", ""), False, closed_port()))

    assert "127.0.0.1" in message
    assert_hidden(password.replace("\0", ""), message)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords)
def test_postgres_keyword_string_failing_to_connect_never_shows_the_password(
    password: str,
) -> None:
    conninfo = libpq_keywords(password.replace("\0", ""), closed_port())
    message = refusal(PostgresDriver(conninfo))

    assert "password=***" in message
    assert_hidden(password.replace("\0", ""), message)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords)
def test_redis_failing_to_connect_never_shows_the_password(password: str) -> None:
    message = refusal(url_for("redis", password.replace("\0", ""), False, closed_port()))

    assert "127.0.0.1" in message
    assert_hidden(password.replace("\0", ""), message)


async def test_an_at_sign_in_the_query_hides_more_of_the_url_but_not_sql_errors() -> None:
    """`@` after the host cannot be told from one in a password, so the URL is shown hidden
    from its first `:` to that `@`; libpq still reads it as written, and errors about
    statements (not about connecting) still say what went wrong."""
    require_service("postgres", 5432, START)
    prefix = fresh_prefix()
    driver = PostgresDriver(f"{URL}?application_name=me@example", prefix=prefix)
    try:
        await driver.open()
        await drop_tables(prefix)
        with pytest.raises(DriverError) as caught:
            await driver.get("x")
    finally:
        await driver.close()
        await drop_tables(prefix)

    assert "postgresql://postgres@127.0.0.1:***@example" in str(caught.value)
    assert "does not exist" in str(caught.value)
