"""What a new user gets wrong on the `conveyor` command line, run as a subprocess: each mistake
is one line on stderr naming what was wrong and what to do, a non-zero exit, no traceback and
never a password."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backends import amqp as amqp_backend
from tests.backends import redis as redis_backend
from tests.backends import require_service
from tests.integration.processes import PYTHONPATH, backend_of, run_cli
from tests.integration.test_secrets import closed_port

pytestmark = pytest.mark.timeout(60)

PASSWORD = "hunter2"

APP_SOURCE = """
from conveyor import Job, Registry

registry = Registry(default_driver={url!r})


@registry.job("add")
def add(job: Job[dict[str, int]]) -> None:
    pass
"""


def conveyor(folder: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`conveyor ARGS` on an app whose default driver is `url`."""
    (folder / "urlapp.py").write_text(APP_SOURCE.format(url=url))
    return run_cli(folder, "urlapp:registry", *args)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed, once its exit status and cleanliness are checked."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:abc/0", "write it as redis://"),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/jobs", "the database 'jobs' is not a number"),
        (f"mysql://root:{PASSWORD}@127.0.0.1:3306", "names no database"),
        (f"postgresql://u:{PASSWORD}@127.0.0.1:5432/test?bogus=1", "only libpq's parameters"),
        ("sqlite://jobs.db", "write sqlite:///relative/path.db"),
        (f"amqp://guest:{PASSWORD}@127.0.0.1:notaport/", "is not an AMQP URL"),
    ],
    ids=["redis-port", "redis-db", "mysql-db", "postgres-option", "sqlite-host", "amqp-port"],
)
def test_a_bad_url_of_a_known_driver_says_what_is_wrong_with_it(
    tmp_path: Path, url: str, says: str
) -> None:
    line = one_error_line(conveyor(tmp_path, url, "list"))

    assert says in line, line
    assert "unknown driver" not in line and "registry.driver(" not in line, line


def test_an_amqp_url_whose_port_is_not_a_number_says_how_to_write_one(tmp_path: Path) -> None:
    line = one_error_line(conveyor(tmp_path, f"amqp://guest:{PASSWORD}@127.0.0.1:x/", "list"))

    assert "write amqp://user:password@host:5672/vhost" in line, line
    assert "ValueError" not in line, line


def test_an_unreachable_amqp_broker_is_one_line(tmp_path: Path) -> None:
    url = f"amqp://guest:{PASSWORD}@127.0.0.1:{closed_port()}/"

    line = one_error_line(conveyor(tmp_path, url, "list"))

    assert "is not reachable" in line and "is it running?" in line, line


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--retry", "100000000000"], "'--retry': 100000000000 is not in the range 0<=x<="),
        (["--priority", "2147483648"], "'--priority': 2147483648 is not in the range"),
        (["--delay", "99999999999d"], "'--delay': it must be from 0 seconds to 100 years"),
        (["--delay=-5"], "'--delay': it must be from 0 seconds to 100 years (3153600000s), not"),
        (["--timeout", "0"], "'--timeout': it must be more than 0 seconds and at most 100"),
        (["--unique", "k" * 300], "'--unique': unique must be a string of at most 256"),
        (["--unique", ""], "'--unique': unique must be a non-empty string"),
    ],
    ids=["retry-past-int32", "priority-past-int32", "delay-past-any-date", "negative-delay",
         "no-timeout", "unique-too-long", "unique-empty"],
)  # fmt: skip
def test_push_refuses_an_option_no_backend_can_store_or_show_as_a_usage_error(
    tmp_path: Path, option: list[str], says: str
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    result = conveyor(tmp_path, url, "push", "default", "add", "--payload", "{}", *option)

    # A bad option is a usage mistake (exit status 2, as for --delay soon), naming the option.
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"Error: Invalid value for {says}" in result.stderr, result.stderr
    assert run_cli(tmp_path, "urlapp:registry", "list", "--json").stdout.count('"pending": 0') == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("urlapp.py:registry", "give the module's dotted name, as myapp.jobs for myapp/jobs.py"),
        ("./urlapp:registry", "give the module's dotted name"),
        ("nosuchmodule:registry", "run conveyor in the folder that holds it"),
    ],
    ids=["file-name", "file-path", "not-found"],
)
def test_an_app_given_as_a_file_or_not_found_says_how_to_name_it(
    tmp_path: Path, spec: str, says: str
) -> None:
    (tmp_path / "urlapp.py").write_text(APP_SOURCE.format(url="memory://"))

    result = run_cli(tmp_path, spec, "list")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid value for '--app'" in result.stderr and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", [["--limit", "-1"], ["--limit", "0"], ["--offset", "-3"]])
def test_failed_list_refuses_a_negative_limit_or_offset(tmp_path: Path, option: list[str]) -> None:
    result = conveyor(tmp_path, "memory://", "failed", "list", "default", *option)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Invalid value for '{option[0]}'" in result.stderr, result.stderr


def test_job_on_amqp_says_its_queues_cannot_be_searched_by_id(tmp_path: Path) -> None:
    url, prefix = backend_of("amqp", tmp_path)
    try:
        pushed = conveyor(tmp_path, url, "push", "default", "add", "--payload", "{}")
        assert pushed.returncode == 0, pushed.stderr

        line = one_error_line(run_cli(tmp_path, "urlapp:registry", "job", pushed.stdout.strip()))
    finally:
        asyncio.run(amqp_backend.delete_prefix(prefix, {"default"}))

    assert "queue(s) 'default' were not searched: their driver cannot find a job by id" in line


@pytest.mark.parametrize("name", ["nosuch.jsonl", "."], ids=["missing", "a-folder"])
def test_push_file_that_cannot_be_read_is_a_usage_error_naming_it(
    tmp_path: Path, name: str
) -> None:
    result = conveyor(tmp_path, "memory://", "push", "default", "add", "--file", name)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Invalid value for --file: cannot read {name!r}" in result.stderr, result.stderr
    assert "Error: FileNotFoundError" not in result.stderr and "Traceback" not in result.stderr


def test_push_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    (tmp_path / "jobs.jsonl").write_bytes(b'{"n": 1}\n\xff\n')

    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    line = one_error_line(conveyor(tmp_path, url, "push", "default", "add", "--file", "jobs.jsonl"))

    assert "--file is not UTF-8 text (invalid start byte): save it as UTF-8" in line, line


def test_push_file_with_a_line_past_the_first_batch_not_json_says_how_many_were_pushed(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "jobs.jsonl").write_text('{"n": 1}\n' * 1000 + "{nope\n")

    line = one_error_line(conveyor(tmp_path, url, "push", "default", "add", "--file", "jobs.jsonl"))

    assert "line 1001 is not JSON" in line, line
    assert "1000 job(s) from the lines before its batch were pushed" in line, line


@pytest.mark.parametrize("command", ["retry", "purge"])
def test_failed_retry_or_purge_of_an_id_that_is_no_failed_job_exits_1_and_says_so(
    tmp_path: Path, command: str
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    result = conveyor(tmp_path, url, "failed", command, "default", "nosuchid", "nosuchid")

    assert "0 failed job(s) of queue 'default'" in result.stdout, result.stdout
    line = one_error_line(result)
    assert "1 of the 1 id(s) named are not failed jobs of queue 'default'" in line, line
    assert "conveyor failed list default" in line, line


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`conveyor config | head -1`: the pipe closes before conveyor has written; no
    'Error: BrokenPipeError' on stderr."""
    (tmp_path / "urlapp.py").write_text(APP_SOURCE.format(url="memory://"))
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "config", "--app", "urlapp:registry"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the only reader: every write of conveyor's now fails with EPIPE

    with process.stderr:
        errors = process.stderr.read()

    assert process.wait(60) == 1
    assert errors == ""


def test_dashboard_on_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = conveyor(tmp_path, "memory://", "dashboard", "--port", str(port))

    line = one_error_line(result)
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in line, line
    assert "choose a free port with --port" in line, line


def test_metrics_on_an_address_that_is_no_host_names_the_host_option(tmp_path: Path) -> None:
    result = conveyor(
        tmp_path, "memory://", "work", "--metrics-port", "9", "--metrics-host", "999.1.1.1"
    )

    line = one_error_line(result)
    assert "cannot serve metrics on 999.1.1.1:9" in line and "--metrics-host" in line, line


def test_an_app_that_fails_on_import_with_a_url_in_its_error_never_shows_the_password(
    tmp_path: Path,
) -> None:
    (tmp_path / "failing.py").write_text(
        f'raise RuntimeError("cannot reach postgresql://app:{PASSWORD}@db@127.0.0.1/x")\n'
    )

    result = run_cli(tmp_path, "failing:registry", "list")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot reach postgresql://app:***@127.0.0.1/x" in result.stderr, result.stderr
    assert PASSWORD not in result.stderr and "@db" not in result.stderr, result.stderr


LEAKY_APP = f"""
from conveyor import Job, Registry

registry = Registry(default_driver={{url!r}})


@registry.job("fetch", retry=0)
def fetch(job: Job[dict[str, int]]) -> None:
    raise RuntimeError("cannot reach postgresql://app:{PASSWORD}@10.0.0.1/db")
"""


def test_a_handler_error_quoting_a_url_never_shows_its_password(tmp_path: Path) -> None:
    (tmp_path / "leaky.py").write_text(LEAKY_APP.format(url=f"sqlite:///{tmp_path / 'jobs.db'}"))
    assert run_cli(tmp_path, "leaky:registry", "push", "default", "fetch", "--payload", "{}")

    worked = run_cli(tmp_path, "leaky:registry", "work", "--burst")
    listed = run_cli(tmp_path, "leaky:registry", "failed", "list", "default", "--json")

    assert worked.returncode == 0 and listed.returncode == 0, worked.stderr + listed.stderr
    assert "cannot reach postgresql://app:***@10.0.0.1/db" in worked.stderr, worked.stderr
    assert "postgresql://app:***@10.0.0.1/db" in listed.stdout, listed.stdout
    assert PASSWORD not in worked.stdout + worked.stderr + listed.stdout


def test_ctrl_c_during_push_file_says_how_many_jobs_were_pushed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "urlapp.py").write_text(APP_SOURCE.format(url=url))
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "push", "default", "add", "--file", "-",
         "--app", "urlapp:registry"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write('{"n": 1}\n' * 1000)  # one whole batch; the pipe stays open
    process.stdin.flush()
    deadline = time.monotonic() + 30
    while '"pending": 1000' not in run_cli(tmp_path, "urlapp:registry", "list", "--json").stdout:
        assert time.monotonic() < deadline, "the first batch was never pushed"
        time.sleep(0.2)

    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=30)

    assert process.returncode == 1, errors
    assert "interrupted: 1000 job(s) pushed" in errors and "Traceback" not in errors, errors


@pytest.mark.parametrize(
    "source", [["--payload", "{}"], ["--file", "jobs.jsonl"]], ids=["payload", "file"]
)
def test_push_to_a_queue_on_the_memory_driver_is_refused_not_lost(
    tmp_path: Path, source: list[str]
) -> None:
    (tmp_path / "jobs.jsonl").write_text("{}\n")

    line = one_error_line(conveyor(tmp_path, "memory://", "push", "default", "add", *source))

    assert "queue 'default' is on the memory driver, which keeps jobs in one process only" in line
    assert "put the queue on a driver that keeps them" in line, line


def test_an_argument_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "urlapp.py").write_text(APP_SOURCE.format(url=f"sqlite:///{tmp_path / 'j.db'}"))

    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"conveyor", b"failed", b"retry", b"default",
         b"ab\xc3", b"--app", b"urlapp:registry"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip

    assert result.returncode == 2, result.stdout + result.stderr
    assert "the argument 'ab\\udcc3' is not UTF-8 text" in result.stderr, result.stderr
    assert "UnicodeEncodeError" not in result.stderr


@pytest.mark.parametrize("source", ["payload", "file"])
def test_a_payload_nested_too_deeply_to_read_says_so_and_pushes_nothing(
    tmp_path: Path, source: str
) -> None:
    nested = "[" * 20_000 + "]" * 20_000  # past json's limit: 10,000 levels from Python 3.13
    (tmp_path / "jobs.jsonl").write_text(nested + "\n")
    given = ["--payload", nested] if source == "payload" else ["--file", "jobs.jsonl"]
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    line = one_error_line(conveyor(tmp_path, url, "push", "default", "add", *given))

    named = "--payload" if source == "payload" else "line 1"
    assert f"{named} is not JSON: its arrays or objects nest too deeply to read" in line, line
    assert "RecursionError" not in line, line
    assert run_cli(tmp_path, "urlapp:registry", "list", "--json").stdout.count('"pending": 0') == 1


@pytest.mark.parametrize("option", ["--limit", "--offset"])
def test_failed_list_refuses_a_number_past_what_a_backend_holds(
    tmp_path: Path, option: str
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    result = conveyor(tmp_path, url, "failed", "list", "default", option, str(2**64))

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Invalid value for '{option}'" in result.stderr, result.stderr
    assert "OverflowError" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("source", "code"),
    [("raise SystemExit(0)\n", "0"),
     ("import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n", "2")],
    ids=["exit-0", "argparse"],
)  # fmt: skip
def test_an_app_module_that_exits_on_import_is_a_usage_error_saying_so(
    tmp_path: Path, source: str, code: str
) -> None:
    (tmp_path / "script.py").write_text(source)

    result = run_cli(tmp_path, "script:registry", "list")

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"importing 'script' called sys.exit({code})" in result.stderr, result.stderr
    assert 'under `if __name__ == "__main__":`' in result.stderr, result.stderr


def test_an_app_attribute_that_is_missing_names_the_registry_the_module_holds(
    tmp_path: Path,
) -> None:
    (tmp_path / "urlapp.py").write_text(APP_SOURCE.format(url="memory://"))

    result = run_cli(tmp_path, "urlapp:app", "list")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "module 'urlapp' has no attribute 'app'; its registry: urlapp:registry" in (
        result.stderr
    ), result.stderr


def test_an_amqp_vhost_that_is_not_there_says_to_check_the_vhost(tmp_path: Path) -> None:
    require_service("amqp", 5672, amqp_backend.START)
    url = "amqp://guest:guest@127.0.0.1:5672/conveyor-test-no-such-vhost"  # the broker's login

    line = one_error_line(conveyor(tmp_path, url, "list"))

    assert "closed a connection on opening the URL's vhost" in line, line
    assert "check that the vhost exists and that the user may use it" in line, line
    assert "InvalidFrameError" not in line and "<Connection.Close object" not in line, line


def test_a_redis_user_the_server_refuses_says_to_check_the_user_and_password(
    tmp_path: Path,
) -> None:
    require_service("redis", 6379, redis_backend.START)
    url = f"redis://conveyor-test-nobody:{PASSWORD}@127.0.0.1:6379/0"

    line = one_error_line(conveyor(tmp_path, url, "list"))

    assert "refused the credentials" in line, line
    assert "check the URL's user and password" in line, line
    assert "check that it is running" not in line, line


@pytest.mark.parametrize(
    ("command", "option"),
    [(["list"], ["--config", "conveyor.toml"]),
     (["failed", "list", "default"], ["--log-level", "debug"]),
     (["work", "--burst"], ["--log-format=json"])],
    ids=["config", "log-level-of-a-subcommand", "log-format"],
)  # fmt: skip
def test_an_option_of_conveyor_itself_after_the_command_says_to_put_it_before(
    tmp_path: Path, command: list[str], option: list[str]
) -> None:
    result = conveyor(tmp_path, "memory://", *command, *option)

    name = option[0].partition("=")[0]
    said = f"{name} is an option of conveyor itself: put it before the command, as conveyor {name}"
    assert result.returncode == 2, result.stdout + result.stderr
    assert said in result.stderr, result.stderr
    assert f"No such option '{name}'" not in result.stderr, result.stderr


def test_work_with_a_concurrency_past_what_a_backend_counts_is_a_usage_error(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    result = conveyor(tmp_path, url, "work", "--burst", "--concurrency", str(2**64))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid value for '--concurrency'" in result.stderr, result.stderr
    assert "reserve failed" not in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["pause", "resume"])
@pytest.mark.parametrize("url", ["memory://", "sync://"])
def test_queue_pause_or_resume_on_a_driver_of_one_process_is_refused_not_claimed(
    tmp_path: Path, command: str, url: str
) -> None:
    line = one_error_line(conveyor(tmp_path, url, "queue", command, "default"))

    kind = url.removesuffix("://")
    assert f"queue 'default' is on the {kind} driver, which keeps jobs in one process only" in line
    assert f"the {command} would be lost when it exits" in line, line
    assert "(sqlite, postgres, mysql, redis)" in line, "amqp cannot pause: not advised"


def test_push_file_that_starts_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    (tmp_path / "jobs.jsonl").write_bytes(b'\xef\xbb\xbf{"n": 1}\r\n{"n": 2}\r\n')  # Notepad's
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    result = conveyor(tmp_path, url, "push", "default", "add", "--file", "jobs.jsonl")

    assert result.returncode == 0, result.stderr
    assert "2 job(s) 'add' pushed to queue 'default'" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["work", "nosuch"], 1, "no worker named 'nosuch'"),
        (["failed", "list", "nowhere"], 1, "no queue named 'nowhere'"),
        (["work", "--bogus"], 2, "No such option '--bogus'"),
    ],
    ids=["unknown-worker", "unknown-queue", "usage"],
)
def test_with_log_format_json_an_error_is_a_json_line_too(
    tmp_path: Path, args: list[str], status: int, says: str
) -> None:
    (tmp_path / "urlapp.py").write_text(APP_SOURCE.format(url=f"sqlite:///{tmp_path / 'j.db'}"))

    result = run_cli(tmp_path, "urlapp:registry", "--log-format", "json", "--log-level",
                     "critical", *args)  # fmt: skip

    assert result.returncode == status, result.stderr
    [line] = result.stderr.strip().splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"]) == ("ERROR", "conveyor.cli")
    assert says in record["message"], record
