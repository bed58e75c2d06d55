"""The capability table in docs/drivers.md says what each driver's `Capabilities` declares."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from conveyor.drivers import SCHEMES
from conveyor.drivers.base import Capabilities

DOC = Path(__file__).parents[2] / "docs" / "drivers.md"


def test_the_capability_table_matches_every_driver() -> None:
    lines = DOC.read_text().splitlines()
    start = lines.index("## Capabilities per driver")
    rows = [line for line in lines[start:] if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    kinds = header[1:]
    table: dict[str, dict[str, bool]] = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if not cells[0].startswith("`"):
            break
        table[cells[0].strip("`")] = dict(
            zip(kinds, [cell == "yes" for cell in cells[1:]], strict=True)
        )
    flags = [field.name for field in dataclasses.fields(Capabilities)]
    assert list(table) == flags, "every Capabilities flag has a row, in order"
    assert set(kinds) == {"memory", "sync", "sqlite", "postgres", "mysql", "redis", "amqp"}
    for kind in kinds:
        module, name, _ = SCHEMES[kind]
        declared = getattr(importlib.import_module(module), name).capabilities
        for flag in flags:
            assert table[flag][kind] is getattr(declared, flag), f"{kind}: {flag}"
