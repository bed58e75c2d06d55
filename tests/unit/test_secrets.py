"""Passwords never shown: over many hostile passwords, in every form a driver can be given one,
no message, repr or `shown` text holds the password, as written or as a client decodes it.

Nothing here connects: the drivers are only built (their URLs parsed, by conveyor and by the
client libraries). tests/integration/test_secrets.py connects, to a closed port.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conveyor import ConfigError, ConveyorError, Registry
from conveyor.drivers import Location, driver_from_url, safe_url
from conveyor.drivers.base import Driver
from conveyor.drivers.location import hide_passwords
from conveyor.drivers.sql.postgres import PostgresDriver

#: Characters that end or split a URL, quote a libpq value, or mean something to a parser.
DELIMITERS = "@/?#:%&=+ '\"\\\n\t;{}[]$*~,"

#: A marker every generated password holds, so it can never be found by chance in a message.
MARKER = "Zq9"

hostile_text = st.text(
    alphabet=st.sampled_from(DELIMITERS) | st.characters(codec="utf-8", exclude_characters="\0"),
    max_size=12,
)
#: Passwords with the marker somewhere inside, delimiters anywhere around it.
passwords = st.tuples(hostile_text, hostile_text).map(lambda parts: MARKER.join(parts))

SCHEMES = ("postgresql", "mysql", "redis")

#: More examples for a deeper search: SECRETS_EXAMPLES=5000 pytest tests/unit/test_secrets.py
property_settings = settings(
    max_examples=int(os.environ.get("SECRETS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def forms(password: str) -> set[str]:
    """The password as written and as a URL parser decodes it."""
    return {password, unquote(password)}


def assert_hidden(password: str, *texts: str) -> None:
    """None of `texts` holds the password in any of its forms."""
    for text in texts:
        for form in forms(password):
            assert form not in text, (form, text)


def url_with(scheme: str, password: str, *, encoded: bool) -> str:
    secret = quote(password, safe="") if encoded else password
    return f"{scheme}://app:{secret}@127.0.0.1:1/test?prefix=p_"


def libpq_keywords(password: str) -> str:
    """A libpq key=value string with the password quoted as libpq wants it."""
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"host=127.0.0.1 port=1 user=app password='{escaped}' dbname=test"


def built_or_refused(build: Callable[[], object]) -> str:
    """The repr of what `build` made, or the message of the conveyor error it raised."""
    try:
        return repr(build())
    except ConveyorError as error:
        return str(error)


# -- the parse ------------------------------------------------------------------------------


@property_settings
@given(password=passwords, scheme=st.sampled_from(SCHEMES), encoded=st.booleans())
def test_url_password_never_in_shown_form(password: str, scheme: str, encoded: bool) -> None:
    url = url_with(scheme, password, encoded=encoded)
    location = Location.parse(url)

    assert_hidden(password, location.shown, location.mask(f"client said: {url} {password}"))
    assert location.shown.startswith(f"{scheme}://app:***@")


@property_settings
@given(password=passwords)
def test_password_query_parameter_never_in_shown_form(password: str) -> None:
    url = f"redis://127.0.0.1:1/0?password={quote(password, safe='')}&prefix=p_"
    location = Location.parse(url)

    assert_hidden(password, location.shown, location.mask(f"{url} {password}"))
    assert "password=***" in location.shown


@property_settings
@given(password=passwords)
def test_libpq_keyword_password_never_in_shown_form(password: str) -> None:
    conninfo = libpq_keywords(password)
    location = Location.parse(conninfo)

    assert_hidden(password, location.shown, location.mask(f"{conninfo} {password}"))
    assert location.shown.endswith("password=*** dbname=test")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:pa/ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p@ss?#w@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("redis://:s3cret@h:6379/0?password=other&db=1", "redis://:***@h:6379/0?password=***&db=1"),
        ("host=h password=plain dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'q \\' uoted' dbname=d", "host=h password = *** dbname=d"),
        ("postgresql:/u:pw@h/db", "postgresql:***@h/db"),
        ("sqlite:///jobs.db", "sqlite:///jobs.db"),
        ("main", "main"),
    ],
)
def test_shown_forms_keep_all_but_the_password(text: str, shown: str) -> None:
    assert safe_url(text) == shown


def test_client_message_is_withheld_when_the_password_has_unencoded_delimiters() -> None:
    location = Location.parse("postgresql://u:pa/ss@h/db")

    message = location.scrub('invalid integer value "pa" for connection option "port"')

    assert '"pa"' not in message
    assert "%2F" in message


# -- drivers, the registry and their errors -------------------------------------------------


@property_settings
@given(password=passwords, scheme=st.sampled_from(SCHEMES), encoded=st.booleans())
def test_driver_from_url_never_shows_the_password(
    password: str, scheme: str, encoded: bool
) -> None:
    url = url_with(scheme, password, encoded=encoded)

    assert_hidden(password, built_or_refused(lambda: driver_from_url(url)))


@property_settings
@given(
    password=passwords,
    scheme=st.sampled_from([*SCHEMES, "amqp"]),
    option=st.sampled_from(["pasword", "pw", "passw0rd_typo", "bogus"]),
)
@example(password="hunter2", scheme="sqlite", option="pasword")
def test_an_option_the_driver_refuses_is_shown_without_its_value(
    password: str, scheme: str, option: str
) -> None:
    """A misspelt password option (?pasword=) is refused as unknown, its value hidden."""
    where = {"sqlite": "/jobs.db", "redis": "app@127.0.0.1:1/0"}.get(scheme, "app@127.0.0.1:1/test")
    url = f"{scheme}://{where}?prefix=p_&{option}={quote(password, safe='')}"

    refused = built_or_refused(lambda: driver_from_url(url))

    assert_hidden(password, refused)
    assert f"{option}=***" in refused


@pytest.mark.parametrize("scheme", [*SCHEMES, "amqp"])
@pytest.mark.parametrize("odd", ["\0", "\udce9"])
def test_a_url_holding_a_nul_or_bytes_not_utf8_is_refused_saying_so(scheme: str, odd: str) -> None:
    """A NUL, or a byte an environment variable held that is not UTF-8 (Python reads it as a
    lone surrogate): ConfigError at once, not the client's ValueError or UnicodeEncodeError
    (postgres at construction, mysql at connect) or a connection with another password."""
    url = f"{scheme}://app:pa{odd}ss@127.0.0.1:1/0"

    with pytest.raises(ConfigError, match="holds a NUL or bytes that are not UTF-8") as refused:
        driver_from_url(url)

    assert "app:***@127.0.0.1" in str(refused.value)
    assert_hidden(f"pa{odd}ss", str(refused.value))


def test_a_sqlite_path_may_hold_bytes_not_utf8_but_no_nul(tmp_path: Path) -> None:
    """A file name is bytes: one that is not UTF-8 is a file like any other."""
    with pytest.raises(ConfigError, match="holds a NUL"):
        driver_from_url(f"sqlite:///{tmp_path}/a\0b.db")
    assert "udce9" in repr(driver_from_url(f"sqlite:///{tmp_path}/a\udce9b.db"))


@property_settings
@given(password=passwords)
def test_postgres_driver_from_libpq_keywords_never_shows_the_password(password: str) -> None:
    conninfo = libpq_keywords(password)
    outcome = built_or_refused(lambda: PostgresDriver(conninfo))

    assert_hidden(password, outcome)
    assert "password=***" in outcome


@property_settings
@given(password=passwords, scheme=st.sampled_from(SCHEMES), encoded=st.booleans())
@example(password="Zq9%80", scheme="postgresql", encoded=False)  # %80 is no UTF-8: refused
def test_registry_errors_and_reprs_never_show_the_password(
    password: str, scheme: str, encoded: bool
) -> None:
    url = url_with(scheme, password, encoded=encoded)
    registry = Registry(default_driver="memory")
    registry.queue("q", driver=url, workers=["w"])
    registry.worker("w")

    outcome = built_or_refused(registry.freeze)

    assert_hidden(password, outcome, repr(registry.queues["q"]), repr(registry.queues))


def test_misspelt_scheme_and_libpq_keywords_as_a_queue_driver_are_refused_masked() -> None:
    for url in ("postgress://app:s3cr/et@h/db", "host=h password='s3cr/et' dbname=d"):
        registry = Registry(default_driver="memory")
        registry.queue("q", driver=url, workers=["w"])
        registry.worker("w")

        message = built_or_refused(registry.freeze)

        assert "unknown driver" in message
        assert_hidden("s3cr/et", message, repr(registry.queues["q"]))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cr@t@127.0.0.1/test",
        "mysql://app:s3cr@t@127.0.0.1/test",
        "redis://app:s3cr@t@127.0.0.1/0",
        "sqlite:///jobs.db",
        "memory",
    ],
)
def test_every_driver_repr_names_its_kind_and_hides_the_password(url: str) -> None:
    driver = driver_from_url(url)

    assert isinstance(driver, Driver)
    assert repr(driver).startswith(f"<{type(driver).__name__} kind={driver.kind!r}")
    assert_hidden("s3cr@t", repr(driver))


@pytest.mark.parametrize(
    "filler",
    ["x" * (1 << 20), "1a" * (1 << 19), '"http://h:80/p",' * 65536, "a://:" * 200_000],
    ids=["one-word", "digits-and-letters", "urls-without-passwords", "schemes-without-at"],
)
def test_hiding_passwords_in_a_megabyte_of_text_takes_linear_time(filler: str) -> None:
    # An exception's message may be a response body of megabytes: before, the search for a
    # scheme started again at every character (minutes for 256 KB, with the worker blocked).
    text = f"{filler} postgresql://app:{MARKER}@db/app {filler}"
    started = time.perf_counter()
    shown = hide_passwords(text)
    assert time.perf_counter() - started < 1.0
    assert MARKER not in shown and "postgresql://app:***@db/app" in shown
