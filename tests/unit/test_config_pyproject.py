"""A misspelt conveyor table in pyproject.toml ([tool.conveyr], [tool.Conveyor]) is warned
about, naming its line and the right name, as a misspelt CONVEYOR_ variable is: unwarned, its
settings were ignored without a word. The table spelt otherwise by TOML ([tool."conveyor"],
dotted keys), and a file that starts with a byte order mark, are read."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conveyor.config import effective
from tests.unit.test_config import in_tmp_path, make_app

__all__ = ["in_tmp_path"]  # the fixture every test here uses: run in tmp_path, no CONVEYOR_*


def frozen_warnings(caplog: pytest.LogCaptureFixture, path: Path | None = None) -> list[str]:
    registry = make_app()
    registry.configure(path, environ={})
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        registry.freeze()
    return caplog.messages


PYPROJECT = """\
[project]
name = "shop"

[tool.conveyr]
retry = 0

[tool.conveyr.workers.main]
lease = "5s"

[tool."Conveyor".queues.mail]
timeout = "1m"

[tool.ruff]
line-length = 100

[tool.conveyor-dashboard-theme]
dark = true
"""


def test_a_misspelt_tool_table_is_a_warning_naming_its_line_and_the_right_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    right = "looks like a misspelling of [tool.conveyor], the only table conveyor reads:"
    assert frozen_warnings(caplog) == [
        f"pyproject.toml:4: [tool.conveyr] {right} ignored; rename it [tool.conveyor]",
        f"pyproject.toml:10: [tool.Conveyor] {right} ignored; rename it [tool.conveyor]",
    ]


def test_a_misspelt_table_beside_tool_conveyor_is_warned_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.conveyor]\nretry = 1\n\n[tool.conveyor_.workers.main]\nlease = 5\n"
    )
    [warning] = frozen_warnings(caplog)
    assert warning.startswith("pyproject.toml:4: [tool.conveyor_] looks like a misspelling")


def test_a_named_pyproject_is_looked_at_and_one_beside_conveyor_toml_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "app"
    other.mkdir()
    (other / "pyproject.toml").write_text("[tool.conveyor]\n[tool.Conveyor.workers.main]\n")
    [warning] = frozen_warnings(caplog, other / "pyproject.toml")
    assert warning.startswith(f"{other / 'pyproject.toml'}:2: [tool.Conveyor] looks like")
    caplog.clear()
    # conveyor.toml is read, not pyproject.toml: what pyproject says is not conveyor's concern.
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "conveyor.toml").write_text("retry = 1\n")
    assert frozen_warnings(caplog) == []


@pytest.mark.parametrize(
    ("text", "line"),
    [('[tool."conveyor".workers.main]\nconcurrency = 3\n', 2),
     ("[tool]\nconveyor.workers.main.concurrency = 3\n", 2),
     ("[project]\nname = 'shop'\n\n[ tool . conveyor . workers . main ]\nconcurrency = 3\n", 5),
     ("tool.conveyor.workers.main.concurrency = 3\n", 1)],
    ids=["quoted", "dotted-under-tool", "spaced", "dotted-at-top"],
)  # fmt: skip
def test_a_tool_conveyor_table_written_any_way_toml_allows_is_read(
    tmp_path: Path, text: str, line: int
) -> None:
    (tmp_path / "pyproject.toml").write_text(text)

    registry = make_app()
    registry.configure(None, environ={})
    registry.freeze()

    assert registry.workers["main"].concurrency == 3
    setting = next(s for s in effective(registry) if (s.name, s.key) == ("main", "concurrency"))
    assert setting.source == f"pyproject.toml:{line}"


@pytest.mark.parametrize("name", ["conveyor.toml", "pyproject.toml"])
def test_a_file_that_starts_with_a_byte_order_mark_is_read(tmp_path: Path, name: str) -> None:
    table = "[tool.conveyor.workers.main]" if name == "pyproject.toml" else "[workers.main]"
    (tmp_path / name).write_bytes(f"\ufeff{table}\nconcurrency = 3\n".encode())  # Notepad's

    registry = make_app()
    registry.configure(None, environ={})
    registry.freeze()

    setting = next(s for s in effective(registry) if (s.name, s.key) == ("main", "concurrency"))
    assert (setting.value, setting.source) == ("3", f"{name}:2")
