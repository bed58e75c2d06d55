"""Conveyor's own options in an SQL driver's URL, the same for every dialect:
`?prefix=app_&migrate=false&pool_size=20&timeout=5`. Each dialect parses the rest of its URL
itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

from conveyor.drivers import Location
from conveyor.drivers.keepalive import MOST_TIMEOUT
from conveyor.errors import ConfigError

#: The query options `sql_options` reads; a dialect keeps them from its client library.
OPTIONS = ("prefix", "migrate", "pool_size", "timeout")


_FLAGS = {"true": True, "1": True, "yes": True, "on": True}
_FLAGS |= {"false": False, "0": False, "no": False, "off": False}


class SqlOptions(TypedDict, total=False):
    """Keyword arguments for a dialect's constructor, as found in its URL."""

    prefix: str
    migrate: bool
    pool_size: int
    timeout: float


def sql_options(url: str, pairs: Iterable[tuple[str, str]]) -> SqlOptions:
    """Conveyor's options among the URL's query `pairs`; ConfigError naming the fix."""
    options: SqlOptions = {}
    for key, value in pairs:
        if key in options:  # the last would win, silently: tables under another prefix
            shown = Location.parse(url).shown
            raise ConfigError(f"{shown!r}: {key}= is given twice; keep the one you mean")
        if key == "prefix":
            options["prefix"] = value
        elif key == "migrate":
            options["migrate"] = _flag(url, key, value)
        elif key == "pool_size":
            options["pool_size"] = _positive_whole(url, key, value)
        elif key == "timeout":
            options["timeout"] = _timeout(url, key, value)
    return options


def check_pool_size(pool_size: int) -> None:
    """Refuse a pool that could never hold a connection."""
    if pool_size < 1:
        raise ConfigError(f"pool_size must be at least 1, not {pool_size}")


def check_timeout(timeout: float) -> None:
    """Refuse a call deadline that no call could meet."""
    if not 0 < timeout <= MOST_TIMEOUT:  # nan too
        raise ConfigError(
            f"timeout must be a positive number of seconds up to {MOST_TIMEOUT} (24 days), not"
            f" {timeout!r}: write timeout=10"
        )


def _flag(url: str, key: str, value: str) -> bool:
    try:
        return _FLAGS[value.lower()]
    except KeyError:
        raise _bad(url, key, value, "a yes or no", f"{key}=true or {key}=false") from None


def _positive_whole(url: str, key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise _bad(url, key, value, "a positive whole number", f"{key}=10")
    return number


def _timeout(url: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number <= MOST_TIMEOUT:  # nan too
        what = f"a positive number of seconds up to {MOST_TIMEOUT} (24 days)"
        raise _bad(url, key, value, what, f"{key}=10")
    return number


def _bad(url: str, key: str, value: str, what: str, fix: str) -> ConfigError:
    """The error for an option's value, naming the URL and the value without any password."""
    location = Location.parse(url)
    shown = location.mask(value)
    return ConfigError(f"{location.shown!r}: {key}={shown!r} is not {what}; write {fix}")
