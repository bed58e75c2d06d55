"""Load a dialect's SQL: named blocks from its `queries.sql`, numbered files from `migrations/`.

A block starts with `-- name: <method>` and a one-line `-- <description>`; its SQL runs to the
next block, and its whole-line comments are dropped. Table names are written `{prefix}jobs`
and filled in here, once per driver, and so is `{now}`: the dialect's clock, the expression in
its block named `now`, so that every time a statement stores or compares is the database's
(see drivers/base.py, "One clock"), and `{job_columns}`: the columns of a job row that
rows.job_info reads, the same in every dialect.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from conveyor.errors import ConfigError

_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,30}")
_BLOCK = re.compile(r"^-- name: *(\w+) *\n-- *(.+?) *\n(.*?)(?=^-- name:|\Z)", re.M | re.S)
_MIGRATION = re.compile(r"(\d+)_\w+\.sql")

#: The columns of a job row that rows.job_info reads (a listing, `get`, reserve's read-back).
JOB_COLUMNS = (
    "id, queue, name, payload, state, attempt, max_attempts, priority, created_at, available_at,"
    " timeout, retry_delay, unique_key, meta, reservation, worker, finished_at, error, rescued,"
    " alone, reserved_at, lease_expires_at, result, cancel"
)


@dataclass(frozen=True, slots=True)
class Query:
    """One named SQL statement, its table prefix already filled in."""

    name: str
    description: str
    sql: str


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema migration: a script of several statements, applied once."""

    version: int
    name: str
    sql: str


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it can start a table name, else raise ConfigError. Lower case only:
    PostgreSQL and SQLite ignore the case of table names, so 'Mail_' would share the tables of
    'mail_' (under a migration lock of its own), not keep a set apart."""
    if _PREFIX.fullmatch(prefix.lower()) and prefix != prefix.lower():
        raise ConfigError(
            f"table prefix {prefix!r} has upper-case letters, but PostgreSQL and SQLite ignore"
            f" case in table names, so it would share the tables of {prefix.lower()!r}: write"
            f" {prefix.lower()!r}"
        )
    if not _PREFIX.fullmatch(prefix):
        schema = (
            "; a prefix cannot name a schema: on PostgreSQL give the URL libpq's search_path"
            " (?options=-csearch_path%3Dmyschema), on MySQL name the database in the URL"
        )
        raise ConfigError(
            f"table prefix {prefix!r} is not allowed: use 1 to 31 lower-case letters, digits"
            " or underscores, not starting with a digit (for example 'conveyor_')"
            + (schema if "." in prefix else "")
        )
    return prefix


def load_queries(package: str, prefix: str) -> dict[str, Query]:
    """The named blocks of `package`'s queries.sql, keyed by name, tables prefixed."""
    check_prefix(prefix)
    blocks = _read_blocks(package)
    clock = next((sql for name, _, sql in blocks if name == "now"), "{now}")
    return {
        name: Query(name, description, _fill(sql, clock, prefix))
        for name, description, sql in blocks
        if name != "now"
    }


def _fill(sql: str, clock: str, prefix: str) -> str:
    """`sql` with its placeholders filled in (the column list first: it holds none)."""
    sql = sql.replace("{job_columns}", JOB_COLUMNS)
    return sql.replace("{now}", clock).replace("{prefix}", prefix)


def load_migrations(package: str, prefix: str) -> list[Migration]:
    """The files of `package`'s migrations/ folder, in version order, tables prefixed."""
    check_prefix(prefix)
    return [
        Migration(version, name, sql.replace("{prefix}", prefix))
        for version, name, sql in _read_migrations(package)
    ]


@functools.cache
def _read_blocks(package: str) -> tuple[tuple[str, str, str], ...]:
    text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
    blocks = tuple(
        (name, description, uncommented(sql).strip().rstrip(";"))
        for name, description, sql in _BLOCK.findall(text)
    )
    names = [block[0] for block in blocks]
    if len(set(names)) != len(names) or len(names) != text.count("-- name:"):
        raise ValueError(f"{package}/queries.sql has a duplicate or malformed '-- name:' block")
    return blocks


def uncommented(sql: str) -> str:
    """`sql` without its whole-line comments: they stay in the .sql files for people to read,
    but are not sent with every statement, nor pasted into the middle of one with `{now}`."""
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


@functools.cache
def _read_migrations(package: str) -> tuple[tuple[int, str, str], ...]:
    folder = resources.files(package).joinpath("migrations")
    found = sorted(
        (int(match.group(1)), entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if (match := _MIGRATION.fullmatch(entry.name))
    )
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"{package}/migrations must be numbered 0001, 0002, ... without gaps")
    return tuple(found)
