"""Each dialect's queries.sql, as loaded: comments for people stay in the file, and only SQL
goes to the server."""

from __future__ import annotations

import pytest

from conveyor.drivers.sql.queries import load_queries

DIALECTS = ("postgres", "mysql", "sqlite")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_loaded_statement_has_no_whole_line_comment(dialect: str) -> None:
    queries = load_queries(f"conveyor.drivers.sql.{dialect}", "app_")
    assert queries  # every dialect has its blocks
    for query in queries.values():
        assert query.description and not query.description.startswith("--")
        commented = [line for line in query.sql.splitlines() if line.lstrip().startswith("--")]
        assert commented == [], f"{dialect} {query.name}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_clock_is_filled_in_without_its_comments(dialect: str) -> None:
    push = load_queries(f"conveyor.drivers.sql.{dialect}", "app_")["push"].sql
    assert "{now}" not in push and "--" not in push
    assert "INSERT INTO app_jobs" in push
