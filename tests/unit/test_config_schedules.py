"""`[schedules.<name>]` in the configuration file: a schedule declared by the file, one the
code registered replaced by it, and each mistake named with the file's line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conveyor import ConfigError, Job, Registry, Worker


async def export(job: Job[dict[str, Any]]) -> None:
    """A handler that does nothing."""


def make_app() -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("batch", workers=["main"])
    registry.worker("main")
    registry.job("export.start", queue="batch")(export)
    return registry


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [*os.environ]:
        if name.startswith(("CONVEYOR_", "QUEUE_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def write(text: str) -> None:
    Path("conveyor.toml").write_text(textwrap.dedent(text).lstrip())


def test_a_schedule_declared_in_the_file() -> None:
    write("""
        [schedules.nightly]
        job = "export.start"
        cron = "0 2 * * *"
        tz = "Europe/Berlin"
        payload = { shards = 8 }
        catch_up = false
    """)
    registry = make_app()
    registry.freeze()

    nightly = registry.schedules["nightly"]
    assert (nightly.job, nightly.cron, nightly.tz, nightly.catch_up) == (
        "export.start", "0 2 * * *", "Europe/Berlin", False,
    )  # fmt: skip
    assert nightly.payload == {"shards": 8}
    assert registry.schedule_queue(nightly) == "batch"


def test_the_file_replaces_a_schedule_the_code_registered_and_keeps_the_others() -> None:
    write("""
        [schedules.often]
        job = "export.start"
        every = "5m"
    """)
    registry = make_app()
    registry.schedule("often", job="export.start", every=10)
    registry.schedule("other", job="export.start", every=60)
    registry.freeze()

    assert {name: s.every for name, s in registry.schedules.items()} == {
        "often": 300.0,
        "other": 60.0,
    }


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ('cron = "0 2 * * *"', 'needs job = "<a registered job name>"'),
        ('job = "export.start"\nevery = 5\nwhen = "now"', "unknown key 'when'"),
        ('job = "export.start"\ncron = "99 * * * *"', "is not a cron expression"),
        ('job = "export.start"\nevery = true', "every = True: expected text or number"),
        ('job = "export.start"\nevery = "soon"', "every 'soon'"),
        ('job = "export.start"\nevery = 5\npayload = 3', "payload = 3: expected table"),
        ('job = "export.start"', "give either cron="),
    ],
)
def test_a_mistake_in_a_schedule_section_names_the_file_and_line(section: str, said: str) -> None:
    Path("conveyor.toml").write_text("[schedules.bad]\n" + section + "\n")
    registry = make_app()

    with pytest.raises(ConfigError) as raised:
        registry.freeze()

    assert "conveyor.toml:1: [schedules.bad]" in str(raised.value)
    assert said in str(raised.value)


def test_a_file_schedule_of_a_job_the_code_never_registered_is_refused() -> None:
    write("""
        [schedules.ghost]
        job = "nobody"
        every = 5
    """)

    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- conveyor.toml:2: [schedules.ghost] job = 'nobody'"
        " is not a registered job: name one of export.start"
    )


def test_a_file_schedule_to_a_queue_the_code_never_registered_names_the_line() -> None:
    write("""
        [schedules.lost]
        job = "export.start"
        every = 5
        queue = "bacth"
    """)

    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert str(caught.value).endswith(
        "- conveyor.toml:4: [schedules.lost] pushes to queue 'bacth', which is not registered:"
        " set queue = to one of batch"
    )


def test_a_worker_made_before_a_freeze_runs_the_file_and_the_environment() -> None:
    # `Worker(registry, name)` is the first thing a program (or `conveyor work NAME`) does with
    # the registry: it must see the file's schedules and workers and the environment, as a
    # worker made after a push does, not the code's registration alone.
    write("""
        [schedules.nightly]
        job = "export.start"
        every = "1h"

        [workers.main]
        lease = "1m"
    """)
    registry = make_app()
    registry.configure(environ={"CONVEYOR_WORKER_MAIN_CONCURRENCY": "4"})

    worker = Worker(registry, "main")

    assert (worker.spec.concurrency, worker.spec.lease) == (4, 60.0)
    assert list(worker.schedules) == ["nightly"]
