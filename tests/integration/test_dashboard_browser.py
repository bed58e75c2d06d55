"""The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
.ci/run installs): open a queue's failed jobs, click retry, see the job succeed; an injected
`<script>` payload shows as text and never runs; the schedules and chain pages open. Screenshots
of every page (queues, a queue's jobs, by name, a job, schedules, a chain) go to the test's
temporary folder, or with CONVEYOR_SCREENSHOTS=1 to docs/screenshots/ (shown in
docs/observability.md and the README), so a plain test run leaves the work tree clean."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from conveyor import Job, JobState, Registry, Worker
from conveyor.dashboard.app import create_app

DOCS_SHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
XSS = "<script>document.title='pwned';window.ran=1</script>"
#: Attempts of "mail.send" that fail: the first job's three (retry=2), so it fails for good.
FAILING = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def browser() -> webdriver.Chrome:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, (
        "the browser test needs Debian's chromium and chromium-driver:"
        " apt-get install chromium chromium-driver (make test does, as root)"
    )
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Registry, list[str]]]:
    """The dashboard and a worker on one sqlite file: "mail.send" fails its first three
    attempts (the job that gets them fails for good) and succeeds after; "report.page" is a
    chain of three pages; "nightly" a schedule that has not ticked yet."""
    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'jobs.db'}")
    registry.queue("mail", workers=["main"], retry=2, retry_delay=0)
    registry.queue("reports", workers=["main"])
    registry.worker("main", poll_interval=0.05)
    attempts: list[str] = []

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[dict[str, str]]) -> None:
        attempts.append(job.id)
        if len(attempts) <= FAILING:
            raise ConnectionError(f"smtp server <em>refused</em> (attempt {job.attempt})")

    @registry.job("report.page", queue="reports", chain=True)
    async def page(job: Job[dict[str, str]]) -> int | None:
        return (job.page or 0) + 1 if (job.page or 0) < 2 else None

    @registry.job("cleanup", queue="reports")
    async def cleanup(job: Job[dict[str, str]]) -> None: ...

    # A chain's page is no schedule's job (freeze refuses it): the schedule pushes another.
    registry.schedule(
        "nightly", job="cleanup", cron="0 2 * * *", tz="Europe/Berlin", payload={},
        catch_up=False,
    )  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(registry), port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    worker = Worker(registry, "main")
    working = asyncio.create_task(worker.run())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", registry, attempts
    finally:
        worker.stop()
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(working, serving), 15)
        await registry.close()


async def finished(registry: Registry, job_id: str) -> JobState:
    for _ in range(200):
        info = await registry.job_info(job_id)
        if info is not None and info.state in (JobState.SUCCEEDED, JobState.FAILED):
            return info.state
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished")


async def test_retry_a_failed_job_in_chromium_and_no_script_runs(
    served: tuple[str, Registry, list[str]], tmp_path: Path
) -> None:
    base, registry, _ = served
    shots = DOCS_SHOTS if os.environ.get("CONVEYOR_SCREENSHOTS") == "1" else tmp_path
    job_id = await registry.push("mail", "mail.send", {"to": "a@example.com", "note": XSS})
    assert await finished(registry, job_id) is JobState.FAILED
    sent = [await registry.push("mail", "mail.send", {"to": f"{n}@example.com"}) for n in range(5)]
    chain_id = await registry.start_chain("report.page", {}, chain_id="report-2026-12")
    for other in sent:
        assert await finished(registry, other) is JobState.SUCCEEDED
    for _ in range(200):
        chain = await registry.chain_info(chain_id)
        if chain is not None and chain.state == "done":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the chain never finished")
    shots.mkdir(parents=True, exist_ok=True)
    chrome = await asyncio.to_thread(browser)
    try:

        def walk() -> None:
            chrome.get(base + "/")
            chrome.save_screenshot(str(shots / "queues.png"))
            chrome.find_element(By.ID, "failed-mail").click()
            assert job_id in chrome.page_source
            chrome.save_screenshot(str(shots / "failed-jobs.png"))
            chrome.find_element(By.LINK_TEXT, job_id).click()
            payload = chrome.find_element(By.ID, "payload").text
            assert XSS in payload  # shown as text...
            assert chrome.execute_script("return window.ran === undefined")  # ...never run
            assert chrome.title != "pwned"
            assert "<em>refused</em> (attempt 3)" in chrome.find_element(By.ID, "error").text
            assert "(attempt 1)" in chrome.page_source and "(attempt 2)" in chrome.page_source
            chrome.save_screenshot(str(shots / "job.png"))
            chrome.find_element(By.ID, f"retry-{job_id}").click()

        await asyncio.to_thread(walk)
        for _ in range(200):
            info = await registry.job_info(job_id)
            if info is not None and info.state is JobState.SUCCEEDED:
                break
            await asyncio.sleep(0.05)
        assert info is not None and info.state is JobState.SUCCEEDED

        def see_success() -> str:
            chrome.get(f"{base}/jobs/{job_id}")
            chrome.save_screenshot(str(shots / "job-succeeded.png"))
            return str(chrome.find_element(By.ID, "state").text)

        assert await asyncio.to_thread(see_success) == "succeeded"

        def other_pages() -> None:
            chrome.get(f"{base}/queues/mail?state=succeeded&name=mail.send")
            assert job_id in chrome.page_source
            chrome.save_screenshot(str(shots / "jobs-by-name.png"))
            chrome.get(f"{base}/schedules")
            assert "cron 0 2 * * * Europe/Berlin" in chrome.page_source
            chrome.save_screenshot(str(shots / "schedules.png"))
            chrome.get(f"{base}/chains/{chain_id}")
            assert "report-2026-12" in chrome.page_source and "done" in chrome.page_source
            chrome.save_screenshot(str(shots / "chain.png"))

        await asyncio.to_thread(other_pages)
    finally:
        await asyncio.to_thread(chrome.quit)
