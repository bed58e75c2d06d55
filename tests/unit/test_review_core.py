"""Regressions found in review of the core: passwords in messages, CLI errors, odd values."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conveyor import (
    ConfigError,
    Exponential,
    Fixed,
    Job,
    PayloadError,
    Registry,
    RegistryError,
)
from conveyor.cli import main


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cret@127.0.0.1/x?pool_size=abc",  # a bad option
        "postgress://app:s3cret@127.0.0.1/x",  # a misspelt scheme
    ],
)
def test_freeze_never_shows_the_password_of_a_driver_url_it_cannot_use(url: str) -> None:
    registry = Registry()
    registry.queue("q", driver=url, workers=["w"])
    registry.worker("w")
    with pytest.raises(RegistryError) as caught:
        registry.freeze()
    assert "s3cret" not in str(caught.value)
    assert "app:***@127.0.0.1" in str(caught.value)


# -- the CLI: a bad --app is one line, never a traceback ----------------------------------

BROKEN_APPS = {
    "twice": "from conveyor import Registry\n"
    "registry = Registry(default_driver='memory')\n"
    "registry.queue('q', workers=['w'])\n"
    "registry.queue('q', workers=['w'])\n",
    "typo": "def broken(:\n",
    "raises": "raise RuntimeError('settings missing')\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN_APPS))
def test_app_module_failing_on_import_is_a_one_line_error(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"review_app_{name}"
    (tmp_path / f"{module}.py").write_text(BROKEN_APPS[name])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = CliRunner().invoke(main, ["list", "--app", f"{module}:registry"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"cannot import {module!r}" in result.output
    assert isinstance(result.exception, SystemExit)


def test_unknown_log_level_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["--log-level", "loud", "list", "--app", "x:y"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "loud" in result.output


# -- values every driver could not store the same way ------------------------------------


def memory_registry() -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("q", workers=["w"])
    registry.worker("w")

    @registry.job("j")
    async def handle(job: Job[dict[str, Any]]) -> None: ...

    @registry.job("point")
    async def point(job: Job[Point]) -> None: ...

    return registry


@dataclass
class Point:
    x: float


NOT_STORABLE = [
    ("delay", math.nan),
    ("delay", math.inf),
    ("retry_delay", math.nan),
    ("retry_delay", math.inf),
    ("retry_delay", Fixed(math.nan)),
    ("retry_delay", Exponential(base=math.nan)),
    ("priority", 2**31),
    ("priority", -(2**31) - 1),
    ("meta", {"when": datetime(2026, 1, 2, 3, 4, 5)}),
    ("meta", {"ratio": math.nan}),
]


@pytest.mark.parametrize(("option", "value"), NOT_STORABLE, ids=repr)
async def test_push_refuses_values_that_would_leave_a_job_stuck_or_differ_by_driver(
    option: str, value: Any
) -> None:
    registry = memory_registry()
    with pytest.raises(ConfigError, match=option):
        await registry.push("q", "j", {}, **{option: value})
    assert (await registry.queue_info())["q"].pending == 0


@pytest.mark.parametrize("option", ["poll_interval", "lease", "stop_timeout"])
def test_worker_durations_must_be_finite(option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        Registry().worker("w", **{option: math.nan})


@pytest.mark.parametrize("payload", [Point(math.nan), {"x": math.inf}], ids=repr)
async def test_payload_that_json_cannot_carry_is_refused_at_push(payload: Any) -> None:
    registry = memory_registry()
    with pytest.raises(PayloadError, match="point"):
        await registry.push("q", "point", payload)


def test_exponential_delay_of_a_very_late_attempt_is_its_max() -> None:
    assert Exponential(max=60.0, jitter=False).delay(5000) == 60.0


async def test_blocking_call_from_the_registrys_own_loop_is_refused_rather_than_hanging() -> None:
    registry = memory_registry()
    await registry.queue_info()  # the drivers now belong to this loop
    with pytest.raises(RuntimeError, match="await the registry's own method"):
        registry.blocking.queue_info()
    assert (await registry.queue_info())["q"].pending == 0
