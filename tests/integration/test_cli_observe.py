"""`conveyor work --metrics-port` serves /metrics while it works, and `conveyor dashboard` serves
the dashboard, both as a user starts them (sqlite)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.backends.private import spare_port, wait_for_port
from tests.integration.processes import PYTHONPATH

pytestmark = pytest.mark.timeout(60)

APP_SOURCE = """
from conveyor import Job, Registry

registry = Registry(default_driver="sqlite:///jobs.db")
registry.queue("tasks", workers=["w"])
registry.worker("w", poll_interval=0.05)


@registry.job("tick", queue="tasks")
async def tick(job: Job[dict[str, int]]) -> None:
    pass
"""


def _start(folder: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    (folder / "obsapp.py").write_text(APP_SOURCE)
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args, "--app", "obsapp:registry"],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


def test_work_serves_metrics_on_the_port_given(tmp_path: Path) -> None:
    port = spare_port()
    process = _start(tmp_path, "work", "w", "--metrics-port", str(port))
    try:
        wait_for_port(port, up=True, timeout=20)
        deadline = time.monotonic() + 20
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            if 'conveyor_queue_jobs{queue="tasks",state="pending"}' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    finally:
        output = _stop(process)
    assert process.returncode == 0, output


def test_dashboard_serves_its_queues_page(tmp_path: Path) -> None:
    port = spare_port()
    process = _start(tmp_path, "dashboard", "--port", str(port), "--read-only")
    try:
        wait_for_port(port, up=True, timeout=20)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5, follow_redirects=True)
    finally:
        _stop(process)
    assert page.status_code == 200, page.text[:500]
    assert "tasks" in page.text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_dashboard_stopped_by_a_signal_exits_0(tmp_path: Path, signum: int) -> None:
    # Before, uvicorn sent itself the signal again once shut down: SIGTERM ended the process
    # by it (status -15, 143 in a shell), SIGINT (Ctrl-C) in "Aborted!" and status 1.
    port = spare_port()
    process = _start(tmp_path, "dashboard", "--port", str(port))
    # As soon as the port answers: a signal that came before uvicorn took over the signals
    # ended the dashboard in "Aborted!" (status 1) or by SIGTERM.
    wait_for_port(port, up=True, timeout=20, every=0.0005)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Aborted" not in output, output
    assert "Application shutdown complete" in output, output


def test_dashboard_on_an_ipv6_address_says_a_url_that_opens(tmp_path: Path) -> None:
    # Before, it said "running on http://::1:PORT", which no browser or curl reads as a URL.
    port = spare_port()
    process = _start(tmp_path, "dashboard", "--port", str(port), "--host", "::1")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                page = httpx.get(f"http://[::1]:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard never answered on ::1"
                time.sleep(0.1)
    finally:
        output = _stop(process)
    assert page.status_code == 200, page.text[:500]
    assert f"running on http://[::1]:{port}" in output, output


@pytest.mark.parametrize("name", ["token", "%74ok%65n"])  # Starlette decodes a name's escapes
def test_dashboard_never_logs_its_token(tmp_path: Path, name: str) -> None:
    port = spare_port()
    process = _start(tmp_path, "dashboard", "--port", str(port), "--token", "s3cret-token")
    try:
        wait_for_port(port, up=True, timeout=20)
        login = httpx.get(f"http://127.0.0.1:{port}/?{name}=s3cret-token&x=1", timeout=5)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5, cookies=login.cookies)
    finally:
        output = _stop(process)
    assert login.status_code == 303 and page.status_code == 200, page.text[:500]
    assert "s3cret-token" not in output
    assert f"GET /?{name}=***&x=1 HTTP/1.1" in output, output


def test_dashboard_logs_json_lines_with_log_format_json(tmp_path: Path) -> None:
    # Before, uvicorn's lines (start-up, each request) came out as its own text among them.
    port = spare_port()
    process = _start(
        tmp_path, "--log-format", "json", "dashboard", "--port", str(port), "--token", "s3cret"
    )
    try:
        wait_for_port(port, up=True, timeout=20)
        login = httpx.get(f"http://127.0.0.1:{port}/?token=s3cret", timeout=5)
    finally:
        output = _stop(process)
    assert login.status_code == 303
    lines = [json.loads(line) for line in output.splitlines()]  # each line one JSON object
    requests = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert len(requests) == 1, output
    assert requests[0]["message"].endswith(' - "GET /?token=*** HTTP/1.1" 303'), output
    assert "s3cret" not in output


def test_dashboard_takes_basic_auth_from_the_environment(tmp_path: Path) -> None:
    # An argument would show the password to anyone who lists the machine's processes.
    port = spare_port()
    process = _start(tmp_path, "dashboard", "--port", str(port),
                     CONVEYOR_DASHBOARD_BASIC_AUTH="ada:s3cret-pw")  # fmt: skip
    try:
        wait_for_port(port, up=True, timeout=20)
        refused = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5, auth=("ada", "s3cret-pw"))
    finally:
        output = _stop(process)
    assert refused.status_code == 401 and page.status_code == 200, page.text[:500]
    assert "s3cret-pw" not in output


HOSTILE_APP = """
from conveyor import Job, Registry

registry = Registry(default_driver="sqlite:///jobs.db")
registry.queue("tasks", workers=["w"], retry=0)
registry.worker("w", poll_interval=0.05)


@registry.job("say", queue="tasks")
async def say(job: Job[dict[str, str]]) -> None:
    raise ValueError(job.payload["text"])
"""

#: Retitles the window, plants a link, clears the line: what a stored error could do to a
#: terminal that printed it as it is.
ESCAPES = "\x1b]0;PWNED\x07\x1b]8;;http://evil/\x07here\x1b]8;;\x07\rFAKE\u202e"


def test_job_failed_list_and_logs_print_no_terminal_control_from_storage(tmp_path: Path) -> None:
    (tmp_path / "hostileapp.py").write_text(HOSTILE_APP)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{PYTHONPATH}"}

    def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--app", "hostileapp:registry"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip

    pushed = conveyor("push", "tasks", "say", "--payload", json.dumps({"text": ESCAPES}))
    logged = conveyor("work", "w", "--burst").stderr
    assert not any(c in logged for c in "\x1b\x07\r\u202e"), repr(logged)
    assert "failed for good after attempt 1: ValueError: \\x1b]0;PWNED" in logged
    shown = conveyor("job", pushed.stdout.strip()).stdout
    listed = conveyor("failed", "list", "tasks").stdout
    for output in (shown, listed):
        assert not any(c in output for c in "\x1b\x07\r\u202e"), repr(output)
        assert "ValueError: \\x1b]0;PWNED\\x07\\x1b]8;;http://evil/\\x07here" in output
    assert "\\x0dFAKE\\u202e" in shown  # the message in full, and in its traceback


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ((), {"CONVEYOR_DASHBOARD_TOKEN": ""}),
        ((), {"CONVEYOR_DASHBOARD_BASIC_AUTH": ""}),
        (("--token", ""), {}),
        (("--token", "  "), {}),
        (("--basic-auth", "admin:"), {}),
    ],
)
def test_dashboard_refuses_an_empty_secret(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    # Before, an empty CONVEYOR_DASHBOARD_TOKEN (a secret that did not reach the deploy's
    # environment) served the dashboard with no login at all.
    process = _start(tmp_path, "dashboard", "--port", str(spare_port()), *args, **env)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2, output
    assert "it is empty (or only spaces): give the secret" in output or "both given" in output


def test_list_shows_the_queues_it_can_read_and_names_a_backend_it_cannot(tmp_path: Path) -> None:
    """Was: one backend refusing connections made `conveyor list` print only that error, not
    the queues of the backends that answered."""
    closed = spare_port()  # nothing listens there: the connection is refused
    (tmp_path / "twoapp.py").write_text(
        APP_SOURCE + f'registry.queue("far", driver="redis://127.0.0.1:{closed}/0?timeout=2",'
        ' workers=["w"])\n'
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{PYTHONPATH}"}

    def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--app", "twoapp:registry"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    conveyor("push", "tasks", "tick", "--payload", "{}").check_returncode()
    listed = conveyor("list")
    assert listed.returncode == 1, listed
    first_table = listed.stdout.split("\n\n")[0].splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in first_table}
    assert rows["tasks"][:1] == ["1"] and rows["far"][-1] == "unreachable", listed.stdout
    assert (
        "could not read queues 'far': " in listed.stderr and f"127.0.0.1:{closed}" in listed.stderr
    )
    assert len(listed.stderr.strip().splitlines()) == 1  # one line, as every command's error
    as_json = conveyor("list", "--json")
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["queues"]["tasks"]["pending"] == 1 and list(document["unreachable"]) == ["far"]
