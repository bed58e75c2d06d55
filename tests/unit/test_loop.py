"""conveyor.loop: the event loop a command runs on, asyncio's or uvloop's."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.errors import ConfigError
from conveyor.loop import loop_factory, run


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_on_uvloop_runs_the_coroutine_on_a_uvloop_loop() -> None:
    assert run(loop_module(), "uvloop") == "uvloop"


def test_run_defaults_to_asyncios_own_loop() -> None:
    assert run(loop_module()).startswith("asyncio")
    assert loop_factory("asyncio") is None


def test_an_unknown_loop_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="'trio' is not known: use one of asyncio, uvloop"):
        run(loop_module(), "trio")
