"""Configuration, a user's mistakes and expectations past the basics: a URL from the environment
over the file's driver options and with white space around it, a file or variable that moves a
queue off a worker, a schedule the file declares with a payload its job refuses or no rule,
variables spelt in the wrong case or with dashes, the redis and amqp drivers' URL variables,
a file that is not UTF-8 or nested too deep, durations of the wrong TOML type, settings in the
wrong section or under an unquoted dotted name, a misspelt default queue, and a pyproject table
left unread."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import ConfigError, ConveyorError, Job, JobState, Registry
from conveyor.config import effective
from tests.backends import postgres as pg
from tests.backends import redis as redis_backend
from tests.backends import require_service
from tests.unit.test_config import (  # noqa: F401 - in_tmp_path: its autouse fixture
    in_tmp_path,
    source,
    write,
)


async def send(job: Job[dict[str, Any]]) -> None:
    """A handler that does nothing."""


@dataclass
class Email:
    to: str


async def test_a_driver_url_from_the_environment_keeps_its_own_options_over_the_file_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is development's (prefix dev_); production's URL, in the environment, says
    prefix=...: jobs go to production's tables, not the file's."""
    require_service("postgres", 5432, pg.START)
    dev, prod = pg.fresh_prefix(), pg.fresh_prefix()
    write(
        tmp_path,
        f"""
        [drivers.main]
        url = "{pg.URL}"
        prefix = "{dev}"
        pool_size = 2

        [queues.mail]
        driver = "main"
        """,
    )
    monkeypatch.setenv("CONVEYOR_DRIVER_MAIN_URL", f"{pg.URL}?prefix={prod}")
    registry = Registry()
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    registry.job("mail.send", queue="mail")(send)
    try:
        job_id = await registry.push("mail", "mail.send", {})
        driver = await registry.driver_of("mail")
        assert driver.prefix == prod  # type: ignore[attr-defined]
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.PENDING
        assert source(registry, "driver", "main", "url") == (
            f"{pg.URL}?prefix={prod}&pool_size=2",
            "env CONVEYOR_DRIVER_MAIN_URL",
        )
        assert source(registry, "driver", "main", "pool_size") == ("2", "conveyor.toml:4")
        assert not [s for s in effective(registry) if s.key == "prefix"]
    finally:
        await registry.close()
        await pg.drop_tables(prod)
        await pg.drop_tables(dev)


def two_queues(tmp_path: Path) -> Registry:
    """Queue "mail" served by worker "mailer", "batch" by "batcher", in a SQLite file."""
    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'jobs.db'}")
    registry.queue("mail", workers=["mailer"])
    registry.queue("batch", workers=["batcher"])
    registry.worker("mailer")
    registry.worker("batcher")
    return registry


def test_workers_moved_by_the_configuration_off_a_worker_name_where_not_the_code(
    tmp_path: Path,
) -> None:
    registry = two_queues(tmp_path)
    registry.configure(environ={"CONVEYOR_QUEUE_MAIL_WORKERS": "batcher"})
    with pytest.raises(ConfigError) as caught:
        registry.freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- environment variable"
        " CONVEYOR_QUEUE_MAIL_WORKERS='batcher': worker 'mailer' is then left serving no queue"
        " (it served 'mail'): keep it in the workers of 'mail', or name it in another queue's"
        " workers"
    )
    write(tmp_path, '[queues.batch]\nworkers = ["mailer"]\n')
    with pytest.raises(ConfigError, match=r"conveyor.toml:2: \[queues.batch\] workers = \["):
        two_queues(tmp_path).freeze()
    # Swapped, every worker still serves a queue: that is fine.
    write(tmp_path, '[queues.batch]\nworkers = ["mailer"]\n[queues.mail]\nworkers = ["batcher"]\n')
    registry = two_queues(tmp_path)
    registry.freeze()
    assert registry.queues_of("mailer") == ["batch"]


def test_a_schedule_of_the_file_whose_payload_its_job_refuses_names_the_file_s_line(
    tmp_path: Path,
) -> None:
    def app() -> Registry:
        registry = Registry(default_driver=f"sqlite:///{tmp_path / 'jobs.db'}")
        registry.queue("mail", workers=["main"])
        registry.worker("main")

        @registry.job("mail.send", queue="mail")
        async def mail(job: Job[Email]) -> None:
            """A handler that does nothing."""

        return registry

    write(
        tmp_path,
        """
        [schedules.digest]
        job = "mail.send"
        cron = "0 8 * * *"
        payload = { too = "ada@example.com" }
        """,
    )
    with pytest.raises(ConfigError) as caught:
        app().freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- conveyor.toml:4: [schedules.digest] payload of job"
        " 'mail.send' has keys that are no field of Email: 'too' (its fields: to): a misspelt"
        " key would be dropped; remove them or add the fields"
    )
    write(tmp_path, '[schedules.digest]\njob = "mail.send"\ncron = "0 8 * * *"\n')
    with pytest.raises(ConfigError, match=r"conveyor.toml:1: \[schedules.digest\] payload of"):
        app().freeze()


def test_a_variable_spelt_in_another_case_or_with_dashes_is_a_warning_giving_the_right_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'jobs.db'}")
    registry.queue("mail", workers=["mailer", "mail-send"])
    registry.worker("mailer")
    registry.worker("mail-send")
    registry.configure(
        environ={
            "conveyor_worker_mailer_concurrency": "8",
            "CONVEYOR_WORKER_Mailer_LEASE": "1m",
            "CONVEYOR_WORKER_MAIL-SEND_CONCURRENCY": "4",
            "queue_timeout": "60",
            "conveyor_worker_mialer_lease": "1m",
            "queue_colour": "blue",  # no seed's name: none of conveyor's business
        }
    )
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        registry.freeze()
    rule = "(upper case, _ for . : and -): ignored; rename it"
    assert caplog.messages == [
        "environment variable conveyor_worker_mailer_concurrency is not read: conveyor's name"
        f" for it is CONVEYOR_WORKER_MAILER_CONCURRENCY {rule}",
        "environment variable CONVEYOR_WORKER_Mailer_LEASE is not read: conveyor's name for it"
        f" is CONVEYOR_WORKER_MAILER_LEASE {rule}",
        "environment variable CONVEYOR_WORKER_MAIL-SEND_CONCURRENCY is not read: conveyor's"
        f" name for it is CONVEYOR_WORKER_MAIL_SEND_CONCURRENCY {rule}",
        "environment variable queue_timeout is not read: conveyor's name for it is"
        f" QUEUE_TIMEOUT {rule}",
        "environment variable conveyor_worker_mialer_lease names no registered queue, worker"
        " or driver, or no setting of one (registered workers: mailer, mail-send): ignored",
    ]
    assert registry.worker_spec("mailer").concurrency == 1
    assert registry.worker_spec("mail-send").concurrency == 1
    assert registry.queue_spec("mail").options.timeout is None  # conveyor's default


async def test_queue_driver_redis_shows_and_names_the_url_variable_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_service("redis", 6379, redis_backend.START)
    prefix = redis_backend.fresh_prefix()
    monkeypatch.setenv("QUEUE_DRIVER", "redis")
    monkeypatch.setenv("CONVEYOR_REDIS_URL", f"redis://127.0.0.1:6379/0?prefix={prefix}")
    registry = two_queues(tmp_path)
    registry.job("mail.send", queue="mail")(send)
    try:
        job_id = await registry.push("mail", "mail.send", {})
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.PENDING
        assert (await registry.driver_of("mail")).prefix == prefix  # type: ignore[attr-defined]
        assert source(registry, "driver", "redis", "url") == (
            f"redis://127.0.0.1:6379/0?prefix={prefix}",
            "env CONVEYOR_REDIS_URL",
        )
    finally:
        await registry.close()
        await redis_backend.delete_prefix(prefix)
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://:s3cret@127.0.0.1:6379/0?bogus=1")
    with pytest.raises(ConfigError) as caught:
        two_queues(tmp_path).freeze()
    assert str(caught.value).startswith(
        "the configuration has mistakes:\n- environment variable CONVEYOR_REDIS_URL:"
        " 'redis://:***@127.0.0.1:6379/0?bogus=***': unknown option 'bogus'"
    )
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "127.0.0.1:6379")
    with pytest.raises(ConfigError) as caught:
        two_queues(tmp_path).freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- environment variable"
        " CONVEYOR_REDIS_URL='127.0.0.1:6379': the redis driver's URL must start with redis://"
        " (or rediss:// for TLS)"
    )


def test_queue_driver_amqp_shows_the_broker_it_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "amqp")
    registry = two_queues(tmp_path)
    assert source(registry, "driver", "amqp", "url") == (
        "amqp://guest:***@127.0.0.1:5672/",
        "default",
    )
    monkeypatch.setenv("CONVEYOR_AMQP_URL", "amqp://app:s3cret@127.0.0.1:5672/?bogus=1")
    with pytest.raises(ConfigError) as caught:
        two_queues(tmp_path).freeze()
    assert "- environment variable CONVEYOR_AMQP_URL: 'amqp://app:***@" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_file_that_is_not_utf8_names_its_line_and_says_to_save_it_as_utf8(
    tmp_path: Path,
) -> None:
    (tmp_path / "conveyor.toml").write_bytes(b"retry = 2\n# caf\xe9\n[workers.mailer]\n")
    with pytest.raises(ConfigError) as caught:
        two_queues(tmp_path).freeze()
    assert str(caught.value) == (
        "conveyor.toml:2: is not UTF-8 text (byte 0xe9 at offset 15): a TOML file is UTF-8;"
        " save it as UTF-8"
    )
    (tmp_path / "conveyor.toml").write_bytes("retry = 2\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"^conveyor.toml:1: is not UTF-8 text \(byte 0xff"):
        two_queues(tmp_path).freeze()
    (tmp_path / "conveyor.toml").write_bytes(b"\xef\xbb\xbfretry = 2\n")  # UTF-8, with a BOM
    registry = two_queues(tmp_path)
    assert source(registry, "conveyor", "", "retry") == ("2", "conveyor.toml:1")


def test_a_schedule_with_neither_cron_nor_every_says_to_give_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [schedules.digest]
        job = "mail.send"
        """,
    )
    registry = two_queues(tmp_path)
    registry.job("mail.send", queue="mail")(send)
    with pytest.raises(ConfigError) as caught:
        registry.freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- conveyor.toml:1: [schedules.digest]: schedule"
        " 'digest': give either cron='0 2 * * *' or every='30s', it has neither"
    )
    write(tmp_path, '[schedules.digest]\njob = "mail.send"\ncron = "0 8 * * *"\nevery = "1h"\n')
    with pytest.raises(ConfigError, match=r"or every='30s', not both$"):
        two_queues(tmp_path).freeze()


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            "[queues.mail]\ntimeout = 00:05:00",
            "conveyor.toml:2: [queues.mail] timeout = datetime.time(0, 5): expected seconds, or"
            ' text such as "500ms", "30s", "5m", "24h", "7d" (00:05:00 is a time of day in'
            ' TOML: "5m")',
        ),
        (
            "[workers.mailer]\nlease = [30]",
            "conveyor.toml:2: [workers.mailer] lease = [30]: expected seconds, or text such as"
            ' "500ms", "30s", "5m", "24h", "7d"',
        ),
        (
            '[queues.mail]\nretry_delay = ["1s", "5s", "30s"]',
            "conveyor.toml:2: [queues.mail] retry_delay = ['1s', '5s', '30s']: expected seconds,"
            ' or text such as "500ms", "30s", "5m", "24h", "7d", or a table such as'
            ' { base = "1s", factor = 2 }',
        ),
        (
            '[queues.mail]\nretry_delay = { base = "1s", factor = "2" }',
            "conveyor.toml:2: [queues.mail] retry_delay = {'base': '1s', 'factor': '2'}: expected"
            " factor = a number (1 or more, such as 2), not '2'",
        ),
        (
            "[queues.mail]\nretention = 2030-01-01",
            "conveyor.toml:2: [queues.mail] retention = datetime.date(2030, 1, 1): expected"
            ' seconds, or text such as "500ms", "30s", "5m", "24h", "7d", or "forever" to keep'
            " them all",
        ),
    ],
)
def test_a_duration_of_the_wrong_toml_type_says_how_to_write_one_in_the_file(
    tmp_path: Path, line: str, said: str
) -> None:
    write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as caught:
        two_queues(tmp_path).freeze()
    assert str(caught.value) == f"the configuration has mistakes:\n- {said}"


def test_a_worker_or_queue_setting_at_the_top_of_the_file_says_which_section_it_goes_in(
    tmp_path: Path,
) -> None:
    write(tmp_path, "concurrency = 8\npriority = 5\n")
    with pytest.raises(ConfigError) as caught:
        two_queues(tmp_path).freeze()
    expected = (
        "expected one of driver, default_queue, retry, retry_delay, timeout, queues, workers,"
        " drivers, schedules"
    )
    assert str(caught.value) == (
        f"the configuration has mistakes:\n- conveyor.toml:1: unknown key 'concurrency':"
        f" {expected}; concurrency is a setting of each worker: write it in [workers.<name>]\n"
        f"- conveyor.toml:2: unknown key 'priority': {expected}; priority is a setting of each"
        " queue: write it in [queues.<name>]"
    )


def test_a_dotted_name_left_unquoted_in_a_section_header_says_to_quote_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def app() -> Registry:
        registry = Registry(default_driver=f"sqlite:///{tmp_path / 'jobs.db'}")
        registry.queue("mail.send", workers=["mail.worker"])
        registry.worker("mail.worker")
        return registry

    write(tmp_path, 'retry = 1\n[queues.mail.send]\ntimeout = "30s"\n')
    with (
        caplog.at_level(logging.WARNING, logger="conveyor.config"),
        pytest.raises(ConfigError) as caught,
    ):
        app().freeze()
    assert str(caught.value) == (
        "the configuration has mistakes:\n- conveyor.toml:2: [queues.mail] unknown key 'send':"
        " expected one of driver, workers, retry, retry_delay, timeout, priority, retention,"
        ' meta; a queue named mail.send is written with quotes, [queues."mail.send"]'
    )
    assert caplog.messages == [
        "conveyor.toml:2: [queues.mail] names a queue the code did not register: ignored"
        " (registered: mail.send)"
    ]
    write(tmp_path, 'retry = 1\n[queues."mail.send"]\ntimeout = "30s"\n')
    registry = app()
    registry.freeze()
    assert registry.queue_spec("mail.send").options.timeout == 30


async def test_a_driver_url_s_surrounding_white_space_in_the_environment_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .env file's trailing space, a mounted secret's newline: the worker and the app that
    pushes must use the same SQLite file, and postgres the database named."""
    monkeypatch.setenv("CONVEYOR_DRIVER", f" sqlite:///{tmp_path / 'jobs.db'}\n")
    registry = Registry()
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    registry.job("mail.send", queue="mail")(send)
    try:
        await registry.push("mail", "mail.send", {})
    finally:
        await registry.close()
    assert sorted(path.name for path in tmp_path.glob("jobs.db*"))[0] == "jobs.db"
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(("\n", " "))]

    require_service("postgres", 5432, pg.START)
    prefix = pg.fresh_prefix()
    monkeypatch.setenv("CONVEYOR_DRIVER", "database")
    monkeypatch.setenv("DATABASE_URL", f"{pg.URL}?prefix={prefix}\n")
    registry = Registry()
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    registry.job("mail.send", queue="mail")(send)
    try:
        info = await registry.job_info(await registry.push("mail", "mail.send", {}))
        assert info is not None and info.state is JobState.PENDING
        assert source(registry, "driver", "database", "url") == (
            f"{pg.URL}?prefix={prefix}",
            "env DATABASE_URL",
        )
    finally:
        await registry.close()
        await pg.drop_tables(prefix)


def test_a_file_or_variable_nested_too_deep_to_read_is_a_config_error_naming_it(
    tmp_path: Path,
) -> None:
    write(tmp_path, "[queues.mail]\nmeta = " + "{ a = " * 3000 + "1" + " }" * 3000 + "\n")
    with pytest.raises(ConfigError) as caught:
        two_queues(tmp_path).freeze()
    assert str(caught.value) == "conveyor.toml: tables or arrays nested too deep to read"
    (tmp_path / "conveyor.toml").unlink()
    registry = two_queues(tmp_path)
    registry.configure(environ={"CONVEYOR_QUEUE_MAIL_META": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ConfigError) as caught:
        registry.freeze()
    assert str(caught.value).endswith(
        ']\': expected a JSON object, such as {"team": "mail"}'
    ) and str(caught.value).startswith(
        "the configuration has mistakes:\n- environment variable CONVEYOR_QUEUE_MAIL_META='[[["
    )


async def test_a_default_queue_the_file_misspells_is_a_warning_at_start_not_at_first_push(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, 'default_queue = "mial"\n')
    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'jobs.db'}")
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    hello = registry.job("hello")(send)
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        registry.freeze()
    assert caplog.messages == [
        "conveyor.toml:1: default_queue = 'mial': 'mial' is no registered queue (registered:"
        " mail): a push of job hello without queue= will be refused; name a registered queue"
    ]
    try:
        with pytest.raises(ConveyorError, match="the default queue 'mial' is not registered"):
            await hello.push({})
        assert await hello.push({}, queue="mail")  # a push naming its queue is fine
    finally:
        await registry.close()


def test_a_pyproject_table_left_unread_beside_conveyor_toml_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "retry = 1\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.conveyor]\nretry = 4\n'
    )
    registry = two_queues(tmp_path)
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        registry.freeze()
    assert caplog.messages == [
        "pyproject.toml has a [tool.conveyor] table, which is not read: conveyor.toml is; move"
        " its settings into conveyor.toml (or remove conveyor.toml to use pyproject.toml's)"
    ]
    assert registry.queue_spec("mail").options.retry == 1
    caplog.clear()
    registry = two_queues(tmp_path)
    registry.configure(tmp_path / "conveyor.toml")  # named: the choice is the user's
    with caplog.at_level(logging.WARNING, logger="conveyor.config"):
        registry.freeze()
    assert caplog.messages == []


async def test_a_driver_s_seconds_options_in_the_file_take_a_duration_as_every_duration_does(
    tmp_path: Path,
) -> None:
    require_service("postgres", 5432, pg.START)
    prefix = pg.fresh_prefix()
    write(
        tmp_path,
        f"""
        [drivers.main]
        url = "{pg.URL}?prefix={prefix}"
        timeout = "1m30s"

        [queues.mail]
        driver = "main"
        """,
    )
    registry = two_queues(tmp_path)
    registry.job("mail.send", queue="mail")(send)
    try:
        info = await registry.job_info(await registry.push("mail", "mail.send", {}))
        assert info is not None and info.state is JobState.PENDING
        driver = await registry.driver_of("mail")
        assert driver.target.timeout == 90  # type: ignore[attr-defined]
        assert source(registry, "driver", "main", "timeout") == ("90", "conveyor.toml:3")
    finally:
        await registry.close()
        await pg.drop_tables(prefix)
    write(tmp_path, f'[drivers.main]\nurl = "{pg.URL}"\ntimeout = "14d"\n')
    assert source(two_queues(tmp_path), "driver", "main", "timeout") == (
        "1209600",
        "conveyor.toml:3",
    )
    write(tmp_path, f'[drivers.main]\nurl = "{pg.URL}"\ntimeout = "soon"\n')
    with pytest.raises(ConfigError, match=r"conveyor.toml:3: \[drivers.main\] timeout: .*'soon'"):
        two_queues(tmp_path).freeze()
