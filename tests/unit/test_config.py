"""Configuration: the file (conveyor.toml, pyproject.toml, a named one), the environment and
the command line over the code's registration, each value's source, and the errors and
warnings a bad file gives."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conveyor import ConfigError, Exponential, Fixed, Job, Registry, RegistryError
from conveyor.config import Override, effective
from conveyor.drivers.memory import MemoryDriver
from conveyor.drivers.sql.sqlite import SqliteDriver


async def send(job: Job[dict[str, Any]]) -> None:
    """A handler that does nothing."""


def make_app(**queue: Any) -> Registry:
    """Queue "mail" served by worker "main", on the memory driver."""
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["main"], **queue)
    registry.worker("main")
    registry.job("mail.send")(send)
    return registry


def write(directory: Path, text: str, name: str = "conveyor.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def source(registry: Registry, scope: str, name: str, key: str) -> tuple[str, str]:
    """(value, source) of one setting in force."""
    found = [s for s in effective(registry) if (s.scope, s.name, s.key) == (scope, name, key)]
    assert len(found) == 1, found
    return found[0].value, found[0].source


def mistakes() -> str:
    """The ConfigError message freezing `make_app()` raises (the configuration's mistakes)."""
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    return str(caught.value)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own working directory, with no CONVEYOR_* or QUEUE_* set."""
    monkeypatch.chdir(tmp_path)
    for name in [*os.environ]:
        if name.upper().startswith(("CONVEYOR_", "QUEUE_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


# -- finding the file -----------------------------------------------------------------------


def test_conveyor_toml_in_the_working_directory_sets_queues_and_workers(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [queues.mail]
        retry = 5
        retry_delay = "10s"
        timeout = "1m"
        priority = 7
        retention = "1d"
        meta = { team = "growth" }

        [workers.main]
        concurrency = 4
        poll_interval = "500ms"
        lease = "2m"
        stop_timeout = 0
        """,
    )
    registry = make_app()
    registry.freeze()
    queue, worker = registry.queues["mail"], registry.workers["main"]
    assert (queue.options.retry, queue.options.retry_delay) == (5, Fixed(10.0))
    assert (queue.options.timeout, queue.options.priority) == (60.0, 7)
    assert (queue.retention, queue.options.meta) == (86400.0, {"team": "growth"})
    assert (worker.concurrency, worker.poll_interval) == (4, 0.5)
    assert (worker.lease, worker.stop_timeout) == (120.0, 0.0)
    assert source(registry, "queue", "mail", "retry") == ("5", "conveyor.toml:2")
    assert source(registry, "queue", "mail", "meta") == ('{"team": "growth"}', "conveyor.toml:7")
    assert source(registry, "worker", "main", "lease") == ("2m", "conveyor.toml:12")


def test_pyproject_tool_conveyor_table_is_read_when_there_is_no_conveyor_toml(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        """
        [project]
        name = "shop"

        [tool.conveyor.workers.main]
        concurrency = 3
        """,
        name="pyproject.toml",
    )
    registry = make_app()
    registry.freeze()
    assert registry.workers["main"].concurrency == 3
    assert source(registry, "worker", "main", "concurrency") == ("3", "pyproject.toml:5")


def test_conveyor_toml_wins_over_pyproject_and_a_pyproject_without_the_table_is_ignored(
    tmp_path: Path,
) -> None:
    write(tmp_path, "[project]\nname = 'shop'\n", name="pyproject.toml")
    assert source(make_app(), "worker", "main", "concurrency") == ("1", "default")
    write(tmp_path, "[tool.conveyor.workers.main]\nconcurrency = 3\n", name="pyproject.toml")
    write(tmp_path, "[workers.main]\nconcurrency = 2\n")
    assert source(make_app(), "worker", "main", "concurrency") == ("2", "conveyor.toml:2")


def test_conveyor_config_names_the_file_and_configure_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = write(tmp_path, "[workers.main]\nconcurrency = 5\n", name="by-env.toml")
    given = write(tmp_path, "[workers.main]\nconcurrency = 6\n", name="given.toml")
    write(tmp_path, "[workers.main]\nconcurrency = 7\n")
    monkeypatch.setenv("CONVEYOR_CONFIG", str(named))
    assert source(make_app(), "worker", "main", "concurrency") == ("5", f"{named}:2")
    registry = make_app()
    registry.configure(given)
    assert source(registry, "worker", "main", "concurrency") == ("6", f"{given}:2")


def test_a_named_file_that_is_missing_is_an_error_saying_who_named_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = make_app()
    registry.configure("nowhere.toml")
    with pytest.raises(ConfigError, match=r"'nowhere.toml', named by --config .* is not a file"):
        registry.freeze()
    monkeypatch.setenv("CONVEYOR_CONFIG", "gone.toml")
    with pytest.raises(ConfigError, match=r"'gone\.toml', named by CONVEYOR_CONFIG, is not a file"):
        make_app().freeze()


def test_without_a_file_every_value_is_the_code_s_or_conveyor_s_default() -> None:
    registry = make_app(retry=1)
    assert source(registry, "queue", "mail", "retry") == ("1", "code")
    assert source(registry, "queue", "mail", "timeout") == ("5m", "default")
    assert source(registry, "queue", "mail", "retention") == ("7d", "default")
    assert source(registry, "conveyor", "", "driver") == ("memory", "code")


# -- precedence -----------------------------------------------------------------------------


def test_precedence_is_default_then_code_then_file_then_environment_then_command_line(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "[queues.mail]\nretry = 2\n", name="layers.toml")
    env = {"CONVEYOR_QUEUE_MAIL_RETRY": "3"}
    flag = Override("queue", "mail", "retry", 4, "--retry")
    cases = [
        ({}, None, {}, (), ("3", "default")),
        ({"retry": 1}, None, {}, (), ("1", "code")),
        ({"retry": 1}, path, {}, (), ("2", f"{path}:2")),
        ({"retry": 1}, path, env, (), ("3", "env CONVEYOR_QUEUE_MAIL_RETRY")),
        ({"retry": 1}, path, env, (flag,), ("4", "flag --retry")),
    ]
    for code, file, environ, flags, expected in cases:
        registry = make_app(**code)
        registry.configure(file, environ=environ, overrides=flags)
        assert source(registry, "queue", "mail", "retry") == expected


def test_a_queue_s_own_value_wins_over_a_conveyor_wide_one_whatever_their_layers(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "timeout = 99\n")
    registry = Registry(default_driver="memory")
    registry.queue("video", workers=["main"], timeout=3600)
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    registry.configure(path, environ={"QUEUE_TIMEOUT": "60"})
    registry.freeze()
    assert registry.queues["video"].options.timeout == 3600.0
    assert registry.queues["mail"].options.timeout == 60.0
    assert source(registry, "queue", "mail", "timeout") == ("1m", "env QUEUE_TIMEOUT")
    assert source(registry, "conveyor", "", "timeout") == ("1m", "env QUEUE_TIMEOUT")


def test_conveyor_wide_values_in_the_file_fill_what_each_queue_leaves_unsaid(
    tmp_path: Path,
) -> None:
    write(tmp_path, 'driver = "sync"\nretry = 0\nretry_delay = "5s"\n')
    registry = Registry()  # the code names no driver: the file's applies
    registry.queue("mail", workers=["main"], retry=2)
    registry.worker("main")
    registry.freeze()
    mail = registry.queues["mail"]
    assert (mail.driver, mail.options.retry, mail.options.retry_delay) == ("sync", 2, Fixed(5))
    assert source(registry, "queue", "mail", "driver") == ("sync", "conveyor.toml:1")


def test_command_line_overrides_are_read_as_text_or_taken_as_values_and_checked() -> None:
    registry = make_app()
    registry.configure(
        environ={},
        overrides=[
            Override("worker", "main", "lease", "90s", "--lease"),
            Override("worker", "main", "concurrency", 8, "--concurrency"),
        ],
    )
    registry.freeze()
    assert (registry.workers["main"].lease, registry.workers["main"].concurrency) == (90.0, 8)
    bad = make_app()
    bad.configure(
        environ={},
        overrides=[
            Override("worker", "main", "concurrency", 0, "--concurrency"),
            Override("worker", "ghost", "lease", 5, "--lease"),
        ],
    )
    with pytest.raises(ConfigError) as caught:
        bad.freeze()
    assert "--concurrency 0: worker 'main': concurrency must be a whole number >= 1" in str(
        caught.value
    )
    assert "--lease: no worker is named 'ghost'" in str(caught.value)


def test_configure_after_freeze_is_refused() -> None:
    registry = make_app()
    registry.freeze()
    with pytest.raises(RegistryError, match="cannot configure: the registry is frozen"):
        registry.configure("conveyor.toml")


# -- the environment's own names ---------------------------------------------------------------


def test_environment_names_every_queue_worker_and_driver_setting() -> None:
    registry = Registry(default_driver="memory")
    registry.driver("store", "memory://")
    registry.queue("mail.send", driver="store", workers=["main-1"])
    registry.worker("main-1")
    registry.configure(
        environ={
            "CONVEYOR_QUEUE_MAIL_SEND_RETRY": "7",
            "CONVEYOR_QUEUE_MAIL_SEND_RETENTION": "forever",
            "CONVEYOR_QUEUE_MAIL_SEND_META": '{"team": "ops"}',
            "CONVEYOR_QUEUE_MAIL_SEND_WORKERS": "main-1, main-1",
            "CONVEYOR_WORKER_MAIN_1_CONCURRENCY": "3",
            "CONVEYOR_WORKER_MAIN_1_POLL_INTERVAL": "250ms",
            "CONVEYOR_DRIVER_STORE_URL": "sync://",
        }
    )
    registry.freeze()
    queue, worker = registry.queues["mail.send"], registry.workers["main-1"]
    assert (queue.options.retry, queue.retention, queue.options.meta) == (7, None, {"team": "ops"})
    assert (worker.concurrency, worker.poll_interval) == (3, 0.25)
    assert registry._drivers["store"].kind == "sync"
    assert source(registry, "driver", "store", "url") == (
        "sync://",
        "env CONVEYOR_DRIVER_STORE_URL",
    )


def test_an_environment_name_two_queues_share_is_an_error_when_set() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail.send", workers=["main"])
    registry.queue("mail-send", workers=["main"])
    registry.worker("main")
    registry.configure(environ={"CONVEYOR_QUEUE_MAIL_SEND_RETRY": "1"})
    with pytest.raises(ConfigError) as caught:
        registry.freeze()
    assert str(caught.value).endswith(
        "environment variable CONVEYOR_QUEUE_MAIL_SEND_RETRY is ambiguous: it fits queue"
        " 'mail.send' and queue 'mail-send': unset it and write retry in the configuration"
        ' file\'s [queues."mail.send"] or [queues."mail-send"] section instead'
    )


def test_a_wrong_environment_value_names_the_variable_the_value_and_the_rule() -> None:
    registry = make_app()
    registry.configure(environ={"CONVEYOR_WORKER_MAIN_LEASE": "soon", "CONVEYOR_RETRY": "-2"})
    with pytest.raises(ConfigError) as caught:
        registry.freeze()
    message = str(caught.value)
    assert "environment variable CONVEYOR_WORKER_MAIN_LEASE='soon': expected seconds" in message
    assert "CONVEYOR_RETRY='-2': retry must be a whole number from 0 to 2147483646" in message


def test_an_environment_variable_naming_nothing_registered_is_a_warning_naming_what_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = make_app()
    registry.configure(
        environ={
            "CONVEYOR_QUEUE_MAIL_RETRY": "1",
            "CONVEYOR_QUEUE_GHOST_RETRY": "1",
            "CONVEYOR_WORKER_MIAN_LEASE": "3",
            "CONVEYOR_DRIVER_MAIN_URL": "memory://",
        }
    )
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        registry.freeze()
    assert caplog.messages == [
        "environment variable CONVEYOR_QUEUE_GHOST_RETRY names no registered queue, worker or"
        " driver, or no setting of one (registered queues: mail): ignored",
        "environment variable CONVEYOR_WORKER_MIAN_LEASE names no registered queue, worker or"
        " driver, or no setting of one (registered workers: main): ignored",
        "environment variable CONVEYOR_DRIVER_MAIN_URL names no registered queue, worker or"
        " driver, or no setting of one: ignored",
    ]


def test_a_misspelt_environment_variable_is_a_warning_showing_the_right_spellings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = make_app()
    environ = {"CONVEYOR_RETYR": "1", "CONVEYOR_WORKER_MAIN_CONCURENCY": "2", "CONVEYOR_APP": "x"}
    registry.configure(environ={**environ, "CONVEYOR_TIMOUT": ""})
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        registry.freeze()
    assert caplog.messages == [
        "environment variable CONVEYOR_RETYR is no conveyor setting (the conveyor-wide ones:"
        " CONVEYOR_DRIVER, CONVEYOR_DEFAULT_QUEUE, CONVEYOR_RETRY, CONVEYOR_RETRY_DELAY,"
        " CONVEYOR_TIMEOUT): ignored",
        "environment variable CONVEYOR_WORKER_MAIN_CONCURENCY names no registered queue, worker"
        " or driver, or no setting of one (worker 'main' has CONVEYOR_WORKER_MAIN_CONCURRENCY,"
        " CONVEYOR_WORKER_MAIN_POLL_INTERVAL, CONVEYOR_WORKER_MAIN_LEASE,"
        " CONVEYOR_WORKER_MAIN_STOP_TIMEOUT, CONVEYOR_WORKER_MAIN_PREFETCH): ignored",
    ]


# -- mistakes in the file -------------------------------------------------------------------


def test_an_unknown_key_names_the_file_line_key_and_what_is_expected(tmp_path: Path) -> None:
    write(tmp_path, "[queues.mail]\nretry = 1\nretires = 2\n\n[workers.main]\nthreads = 4\n")
    message = mistakes()
    assert (
        "conveyor.toml:3: [queues.mail] unknown key 'retires': expected one of driver, workers,"
        " retry, retry_delay, timeout, priority, retention, meta" in message
    )
    assert "conveyor.toml:6: [workers.main] unknown key 'threads'" in message


def test_a_wrong_value_names_the_file_line_key_value_and_the_code_s_own_rule(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        """
        retry_delay = { base = "1s", factor = 2, step = 3 }

        [queues.mail]
        retry = -1
        timeout = "5 minutes"
        workers = "main"

        [workers.main]
        concurrency = "many"
        """,
    )
    message = mistakes()
    assert message.startswith("the configuration has mistakes:\n- ")
    for line in [
        "conveyor.toml:1: retry_delay = {'base': '1s', 'factor': 2, 'step': 3}: expected a table"
        " of base, factor, max, jitter, not ['step']",
        "conveyor.toml:4: [queues.mail] retry = -1: retry must be a whole number from 0 to"
        " 2147483646 (retries after the first), not -1",
        "conveyor.toml:5: [queues.mail] timeout = '5 minutes': expected seconds, or text such as"
        ' "500ms", "30s", "5m", "24h", "7d"',
        "conveyor.toml:6: [queues.mail] workers = 'main': queue 'mail': workers must be a list,"
        " as workers=['main']",
        "conveyor.toml:9: [workers.main] concurrency = 'many': worker 'main': concurrency must be"
        " a whole number >= 1",
    ]:
        assert f"- {line}" in message


def test_nothing_starts_on_a_bad_file_and_fixing_it_lets_the_registry_freeze(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "[workers.main]\nlease = -5\n")
    registry = make_app()
    with pytest.raises(ConfigError, match="lease must be more than 0 seconds"):
        registry.blocking.push("mail", "mail.send", {})
    assert registry.queues["mail"].driver == "memory"  # still as registered: nothing in force
    path.write_text("[workers.main]\nlease = 5\n")
    assert registry.blocking.push("mail", "mail.send", {})
    assert registry.workers["main"].lease == 5.0
    registry.blocking.close()


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    write(tmp_path, "[queues.mail]\nretry = = 1\n")
    with pytest.raises(ConfigError, match=r"conveyor.toml: not valid TOML: .*line 2"):
        make_app().freeze()


def test_a_section_for_a_queue_or_worker_the_code_did_not_register_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "[queues.reports]\nretry = 1\n\n[workers.night]\nconcurrency = 2\n")
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        make_app().freeze()
    assert caplog.messages == [
        "conveyor.toml:1: [queues.reports] names a queue the code did not register: ignored"
        " (registered: mail)",
        "conveyor.toml:4: [workers.night] names a worker the code did not register: ignored"
        " (registered: main)",
    ]


def test_retry_delay_as_a_table_is_exponential_backoff(tmp_path: Path) -> None:
    write(tmp_path, '[queues.mail]\nretry_delay = { base = "2s", factor = 3, max = "1h" }\n')
    registry = make_app()
    registry.freeze()
    assert registry.queues["mail"].options.retry_delay == Exponential(2.0, 3, 3600.0)
    assert source(registry, "queue", "mail", "retry_delay")[0] == (
        "exponential from 2s, x3, at most 1h, jitter"
    )


# -- drivers --------------------------------------------------------------------------------


def test_a_drivers_section_defines_a_driver_with_its_options_that_queues_name(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        f"""
        [drivers.local]
        url = "sqlite:///{tmp_path / "jobs.db"}"
        prefix = "shop_"

        [queues.mail]
        driver = "local"
        """,
    )
    registry = make_app()
    registry.freeze()
    driver = registry._drivers["local"]
    assert isinstance(driver, SqliteDriver)
    assert (driver.path, driver.prefix) == (str(tmp_path / "jobs.db"), "shop_")
    assert source(registry, "driver", "local", "prefix") == ("shop_", "conveyor.toml:3")


def test_a_driver_s_password_is_masked_in_settings_and_in_errors(tmp_path: Path) -> None:
    url = "postgresql://app:s3cret@127.0.0.1:1/db"
    write(tmp_path, f'[drivers.main]\nurl = "{url}"\npool_size = 2\n')
    registry = make_app()
    settings = effective(registry)
    assert "s3cret" not in repr(settings)
    assert source(registry, "driver", "main", "url")[0] == (
        "postgresql://app:***@127.0.0.1:1/db?pool_size=2"
    )
    write(tmp_path, f'[drivers.main]\nurl = "{url}"\npool_size = 0\n')
    refused = mistakes()
    assert "pool_size='0' is not a positive whole number" in refused
    assert "s3cret" not in refused


def test_a_driver_made_in_code_as_an_instance_cannot_be_configured(tmp_path: Path) -> None:
    write(tmp_path, '[drivers.store]\nurl = "memory://"\n')
    registry = make_app()
    registry.driver("store", MemoryDriver())
    with pytest.raises(ConfigError, match="driver 'store' is an instance made in code"):
        registry.freeze()


def test_a_driver_made_in_code_as_an_instance_cannot_be_changed_by_the_environment() -> None:
    registry = make_app()
    registry.driver("store", MemoryDriver())
    registry.configure(environ={"CONVEYOR_DRIVER_STORE_URL": "sync://"})
    with pytest.raises(ConfigError) as caught:
        registry.freeze()
    assert (
        "environment variable CONVEYOR_DRIVER_STORE_URL: driver 'store' is an instance made in"
        " code, which configuration cannot change: register it as a URL instead"
    ) in str(caught.value)


def test_a_drivers_section_for_a_new_name_needs_a_url(tmp_path: Path) -> None:
    write(tmp_path, "[drivers.fast]\nprefix = 'x_'\n")
    with pytest.raises(ConfigError, match=r"conveyor.toml:1: \[drivers.fast\] needs url"):
        make_app().freeze()


def test_true_or_false_as_a_timeout_is_refused_not_read_as_one_second(tmp_path: Path) -> None:
    write(tmp_path, "timeout = true\n\n[queues.mail]\ntimeout = false\n")
    refused = mistakes()
    assert "conveyor.toml:1: timeout = True: timeout must be seconds or a timedelta" in refused
    assert "conveyor.toml:4: [queues.mail] timeout = False: timeout must" in refused


def test_a_retention_that_is_no_duration_says_forever_is_the_word_for_keep_all(
    tmp_path: Path,
) -> None:
    write(tmp_path, '[queues.mail]\nretention = "never"\n')
    refused = mistakes()
    assert (
        "conveyor.toml:2: [queues.mail] retention = 'never': expected seconds, or text such as"
        ' "500ms", "30s", "5m", "24h", "7d", or "forever" to keep them all'
    ) in refused


def test_a_driver_the_file_or_environment_names_that_cannot_be_made_names_where_it_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path, 'driver = "nosuch"\n\n[queues.mail]\ndriver = "ftp://app:hunter2@127.0.0.1/x"\n'
    )
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    message = str(caught.value)
    assert "hunter2" not in message
    assert (
        "- conveyor.toml:4: [queues.mail] driver = 'ftp://app:***@127.0.0.1/x': cannot make a"
        " driver from 'ftp://app:***@127.0.0.1/x'"
    ) in message
    write(tmp_path, 'driver = "nosuch"\n')
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert (
        "- conveyor.toml:1: driver = 'nosuch': no driver is named 'nosuch': define it in a"
        ' [drivers.nosuch] section with url = "...", or give a URL such as sqlite:///jobs.db'
    ) in str(caught.value)
    (tmp_path / "conveyor.toml").unlink()
    monkeypatch.setenv("CONVEYOR_QUEUE_MAIL_DRIVER", "mysql://root:hunter2@127.0.0.1/x?bogus=1")
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert "hunter2" not in str(caught.value)
    assert (
        "- environment variable CONVEYOR_QUEUE_MAIL_DRIVER='mysql://root:***@127.0.0.1/x?bogus=1':"
        in str(caught.value)
    )
    assert "unknown option 'bogus'" in str(caught.value)


def test_a_worker_the_file_names_for_a_queue_that_is_not_registered_names_the_file(
    tmp_path: Path,
) -> None:
    write(tmp_path, '[queues.mail]\nworkers = ["main", "mailer"]\n')
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- conveyor.toml:2: [queues.mail] workers ="
        " ['main', 'mailer']: worker 'mailer' is not registered: name one of main, or register"
        " it in the code (registry.worker('mailer'))"
    )
    write(tmp_path, "[queues.mail]\nworkers = []\n")
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- conveyor.toml:2: [queues.mail] workers = []: queue"
        " 'mail' needs a worker to run its jobs: name one of main"
    )


def test_a_setting_directly_under_queues_says_it_goes_in_a_queue_s_section(
    tmp_path: Path,
) -> None:
    write(tmp_path, "[queues]\nretry = 2\n")
    refused = mistakes()
    assert refused.endswith(
        "- conveyor.toml:2: retry = 2 is directly under [queues]: a setting goes in the section"
        " of its queue, [queues.<name>]"
    )


def test_an_option_a_redis_driver_does_not_take_is_an_error_not_a_type_error_at_first_use(
    tmp_path: Path,
) -> None:
    url = "redis://:hunter2@127.0.0.1:6379/0"
    write(tmp_path, f'[drivers.main]\nurl = "{url}"\npool_size = 20\n')
    refused = mistakes()
    assert "hunter2" not in refused
    assert (
        "- conveyor.toml:3: [drivers.main] pool_size:"
        " 'redis://:***@127.0.0.1:6379/0?pool_size=***': unknown option 'pool_size'; the options"
        " are prefix, timeout and redis-py's connection settings"
    ) in refused
    write(tmp_path, f'[drivers.main]\nurl = "{url}"\nmax_connections = 8\nclient_name = "x"\n')
    assert source(make_app(), "driver", "main", "max_connections") == ("8", "conveyor.toml:3")


def test_a_timeout_in_the_file_longer_than_the_amqp_consumer_timeout_names_the_line(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        '[drivers.broker]\nurl = "amqp://guest:s3cret@127.0.0.1:5672/"\n\n'
        '[queues.mail]\ndriver = "broker"\ntimeout = "2h"\n',
    )
    refused = mistakes()
    assert "s3cret" not in refused
    assert refused.endswith(
        "- conveyor.toml:6: [queues.mail] timeout = '2h': queue 'mail' would let a job run"
        " longer than its driver 'broker' lets one stay unacknowledged (1800 s, the broker's"
        " consumer_timeout): lower the timeout, or raise consumer_timeout on the broker and tell"
        " the driver with ?consumer_timeout= in its URL"
    )


def test_an_option_for_the_memory_driver_says_it_takes_none(tmp_path: Path) -> None:
    write(tmp_path, '[drivers.main]\nurl = "memory://"\nprefix = "app"\n')
    refused = mistakes()
    assert refused.endswith(
        "- conveyor.toml:2: [drivers.main] url = 'memory://': 'memory://?prefix=app': the memory"
        " driver takes no host, path or option: write memory://"
    )


def test_a_named_pyproject_without_a_tool_conveyor_table_is_an_error_not_ignored(
    tmp_path: Path,
) -> None:
    write(tmp_path, '[project]\nname = "app"\n', name="pyproject.toml")
    registry = make_app()
    registry.configure(tmp_path / "pyproject.toml")
    with pytest.raises(ConfigError, match=r"pyproject.toml: has no \[tool.conveyor\] table: add"):
        registry.freeze()
    write(tmp_path, "[tool.conveyor-lint]\nstrict = true\n", name="pyproject.toml")
    assert source(make_app(), "queue", "mail", "retry") == ("3", "default")  # not conveyor's


def test_a_database_url_its_driver_refuses_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "database")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://app:s3cret@127.0.0.1/x?bogus=1")
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert "s3cret" not in str(caught.value)
    assert "- environment variable DATABASE_URL: bad PostgreSQL connection settings" in str(
        caught.value
    )


def test_an_option_a_driver_refuses_names_the_option_s_line(tmp_path: Path) -> None:
    url = "postgresql://app:s3cret@127.0.0.1:1/db"
    write(tmp_path, f'[drivers.main]\nurl = "{url}"\nprefix = "app"\npool_size = "many"\n')
    refused = mistakes()
    assert "s3cret" not in refused
    assert refused.endswith(
        "- conveyor.toml:4: [drivers.main] pool_size: 'postgresql://app:***@127.0.0.1:1/db"
        "?prefix=app&pool_size=many': pool_size='many' is not a positive whole number; write"
        " pool_size=10"
    )


def test_an_option_the_amqp_driver_does_not_read_is_an_error_not_ignored(tmp_path: Path) -> None:
    write(
        tmp_path,
        '[drivers.main]\nurl = "amqp://guest:s3cret@127.0.0.1:5672/"\nheartbeat = 5\n'
        "pool_size = 4\n",
    )
    refused = mistakes()
    assert "s3cret" not in refused
    assert (
        "- conveyor.toml:4: [drivers.main] pool_size: 'amqp://guest:***@127.0.0.1:5672/"
        "?heartbeat=5&pool_size=***': unknown option 'pool_size'; the options are prefix,"
    ) in refused


def test_an_array_of_tables_where_sections_belong_names_its_line(tmp_path: Path) -> None:
    write(tmp_path, "retry = 1\n\n[[workers]]\nconcurrency = 2\n")
    refused = mistakes()
    assert refused.endswith("- conveyor.toml:3: workers must be [workers.<name>] sections")


@pytest.mark.parametrize(
    "driver", ["host=127.0.0.1 password='hunter2' dbname=x", "postgresql:/app:hunter2@127.0.0.1/x"]
)
def test_a_queue_driver_that_is_neither_a_name_nor_a_url_is_refused_with_its_password_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    write(tmp_path, f"[queues.mail]\ndriver = {driver!r}\n")
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert "hunter2" not in str(caught.value)
    assert "- conveyor.toml:2: [queues.mail] driver = " in str(caught.value)
    assert "cannot make a driver from" in str(caught.value)
    (tmp_path / "conveyor.toml").unlink()
    monkeypatch.setenv("CONVEYOR_QUEUE_MAIL_DRIVER", driver)
    with pytest.raises(ConfigError) as caught:
        make_app().freeze()
    assert "hunter2" not in str(caught.value)
    assert "- environment variable CONVEYOR_QUEUE_MAIL_DRIVER=" in str(caught.value)
    assert "use a URL starting with one of memory://" in str(caught.value)


@pytest.mark.parametrize("retention", ["forever", "7d"])
def test_a_retention_in_code_as_text_says_to_give_seconds_or_none(retention: str) -> None:
    """Before, `retention="forever"` in code said only "must be seconds or a timedelta": the
    configuration file's word for keeping finished jobs is no value in code, where None is."""
    registry = Registry()
    with pytest.raises(ConfigError) as caught:
        registry.queue("mail", retention=retention)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"queue 'mail' retention must be seconds or a timedelta (None keeps finished jobs"
        f" forever), not {retention!r}"
    )
