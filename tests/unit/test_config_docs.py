"""docs/configuration.md lists every setting with its TOML key, environment names, type and
default exactly as `conveyor.config.schema` defines them, and names every variable read."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.config import CONFIG_ENV
from conveyor.config.schema import KEYS, reference
from conveyor.drivers import DATABASE_ENV
from conveyor.drivers.redis.connection import URL_ENV

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
MARK = "<!-- generated from conveyor.config.schema: do not edit below -->\n"


def test_the_settings_reference_is_what_the_schema_generates() -> None:
    head, mark, generated = DOC.read_text(encoding="utf-8").partition(MARK)
    assert mark, f"{DOC} lost its marker line: {MARK!r}"
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(head + MARK + reference(), encoding="utf-8")
        generated = reference()
    assert generated == reference(), "run: UPDATE_DOCS=1 pytest tests/unit/test_config_docs.py"


def test_every_key_and_every_environment_variable_read_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    seeds = [seed.env for key in KEYS for seed in key.seeds]
    for name in [CONFIG_ENV, *DATABASE_ENV, URL_ENV, "CONVEYOR_APP", *seeds]:
        assert f"`{name}`" in text, name
    for key in KEYS:
        assert f"| `{key.name}` |" in text, key
