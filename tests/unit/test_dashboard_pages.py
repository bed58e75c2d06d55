"""The dashboard's schedules, chains and job pages (memory driver, through the ASGI app)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from conveyor import Job, Registry
from conveyor.dashboard.app import create_app
from conveyor.worker import Worker


def _registry() -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("batch", workers=["w"])
    registry.worker("w", poll_interval=0.01)
    return registry


def _client(registry: Registry) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(registry))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://dash")


async def test_schedules_page_lists_rules_next_ticks_and_the_last_tick() -> None:
    registry = _registry()

    @registry.job("tick", queue="batch")
    async def tick(job: Job[dict[str, int]]) -> None: ...

    nightly = registry.schedule("nightly", job="tick", cron="0 2 * * *", tz="Europe/Berlin")
    registry.schedule("often", job="tick", every="30s")
    registry.freeze()
    driver = await registry.driver_of("batch")
    at = nightly.next_after(0.0)
    await registry.push("batch", "tick", {}, job_id=nightly.tick_id(at))
    await driver.mark_tick("nightly", at, nightly.tick_id(at))

    async with _client(registry) as client:
        page = await client.get("/schedules")

    assert page.status_code == 200
    assert "cron 0 2 * * * Europe/Berlin" in page.text and "every 30s" in page.text
    assert f"/jobs/{nightly.tick_id(at)}" in page.text and "pending" in page.text
    assert "never" in page.text  # "often" has not ticked yet
    await registry.close()


async def test_chains_page_shows_how_far_a_chain_got_and_an_unknown_one() -> None:
    registry = _registry()

    @registry.job("walk", queue="batch", chain=True)
    async def walk(job: Job[dict[str, int]]) -> int | None:
        return (job.page or 0) + 1 if (job.page or 0) < 2 else None

    chain_id = await registry.start_chain("walk", {}, chain_id="nightly-3")
    await Worker(registry, "w", burst=True).run()

    async with _client(registry) as client:
        shown = await client.get("/chains", params={"id": chain_id})
        unknown = await client.get("/chains", params={"id": "<b>nobody</b>"})

    assert shown.status_code == 200
    assert "done" in shown.text and "<td>3</td>" in shown.text
    assert "nightly-3" in shown.text
    assert "No chain &lt;b&gt;nobody&lt;/b&gt;" in unknown.text  # escaped, never markup
    assert unknown.status_code == 404
    await registry.close()


async def test_a_first_request_sees_the_implicit_queue_and_the_files_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No page was asked for before: the registry is not frozen yet, so the implicit "default"
    # queue and the schedules of conveyor.toml exist only once the page freezes it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conveyor.toml").write_text('[schedules.hourly]\njob = "tick"\nevery = "1h"\n')
    registry = Registry(default_driver="memory")

    @registry.job("tick")
    async def tick(job: Job[dict[str, int]]) -> None: ...

    async with _client(registry) as client:
        schedules = await client.get("/schedules")
    assert schedules.status_code == 200 and "hourly" in schedules.text
    await registry.close()

    registry = Registry(default_driver="memory")
    registry.job("tick")(tick)
    async with _client(registry) as client:
        jobs = await client.get("/queues/default", params={"state": "failed"})
    assert jobs.status_code == 200
    await registry.close()


async def test_the_pager_of_a_list_oldest_first_leads_to_newer_jobs() -> None:
    registry = _registry()

    @registry.job("tick", queue="batch")
    async def tick(job: Job[dict[str, int]]) -> None: ...

    for n in range(50):
        await registry.push("batch", "tick", {"n": n})
    await asyncio.sleep(0.002)  # lists order by the millisecond, then by id
    newest = await registry.push("batch", "tick", {"n": 50})
    async with _client(registry) as client:
        first = (await client.get("/queues/batch?state=pending")).text
        second = (await client.get("/queues/batch?state=pending&page=2")).text

    assert first.count('class="job-link"') == 50 and newest not in first
    assert newest in second
    assert '&amp;page=2">newer →</a>' in first and "older</a>" not in first
    assert '&amp;page=1">← older</a>' in second and "newer →</a>" not in second
    await registry.close()


async def test_a_job_that_succeeded_on_a_retry_shows_its_earlier_errors_not_an_error() -> None:
    registry = _registry()

    @registry.job("flaky", queue="batch", retry=1, retry_delay=0)
    async def flaky(job: Job[dict[str, int]]) -> None:
        if job.attempt == 1:
            raise ValueError("smtp down")

    job_id = await registry.push("batch", "flaky", {})
    await Worker(registry, "w", burst=True).run()
    info = await registry.job_info(job_id)

    async with _client(registry) as client:
        page = await client.get(f"/jobs/{job_id}")

    assert info is not None and info.error is None and len(info.errors) == 1
    assert "Errors of earlier attempts (the last one succeeded)" in page.text, page.text
    assert "attempt 1" in page.text and "smtp down" in page.text
    await registry.close()


async def test_every_response_forbids_framing_sniffing_and_scripts() -> None:
    # Before, no header: any site could frame the pages and have a visitor click "Purge
    # failed" through a decoy (clickjacking).
    registry = _registry()
    guarded = create_app(registry, token="s3cret")
    transport = httpx.ASGITransport(app=guarded)  # type: ignore[arg-type]
    async with (
        _client(registry) as client,
        httpx.AsyncClient(transport=transport, base_url="http://dash") as locked,
    ):
        answers = [
            await client.get("/"),
            await client.get("/queues/batch?state=failed"),
            await client.get("/static/style.css"),
            await client.post("/queues/batch/pause", data={"csrf": "forged"}),
            await locked.get("/"),
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 403, 401]
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    await registry.close()


async def test_a_payload_nested_deeper_than_json_reads_shows_as_its_text(tmp_path: Path) -> None:
    # Written by another program: before, the job's page answered 500 (RecursionError).
    import contextlib
    import sqlite3

    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'q.db'}")
    registry.queue("batch", workers=["w"])
    registry.worker("w")

    @registry.job("tick", queue="batch")
    async def tick(job: Job[dict[str, int]]) -> None: ...

    job_id = await registry.push("batch", "tick", {"n": 1})
    deep = "[" * 100_000 + "]" * 100_000
    with contextlib.closing(sqlite3.connect(tmp_path / "q.db")) as db, db:
        db.execute("UPDATE conveyor_jobs SET payload = ? WHERE id = ?", (deep, job_id))
    async with _client(registry) as client:
        page = await client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "[[[[[[" in page.text
    await registry.close()


async def test_a_job_id_stored_by_another_program_cannot_aim_a_button_elsewhere(
    tmp_path: Path,
) -> None:
    # Before, the id went into the form's action as it was: the failed job's Retry button
    # posted to /jobs/../queues/batch/purge-failed?=/retry, which a browser sends to
    # /queues/batch/purge-failed: clicking Retry purged the queue's failed jobs.
    import contextlib
    import sqlite3

    registry = Registry(default_driver=f"sqlite:///{tmp_path / 'q.db'}")
    registry.queue("batch", workers=["w"], retry=0)
    registry.worker("w")

    @registry.job("tick", queue="batch")
    async def tick(job: Job[dict[str, int]]) -> None:
        raise ValueError("no")

    job_id = await registry.push("batch", "tick", {"n": 1})
    await Worker(registry, "w", burst=True).run()
    hostile = "../queues/batch/purge-failed?="
    with contextlib.closing(sqlite3.connect(tmp_path / "q.db")) as db, db:
        db.execute("UPDATE conveyor_jobs SET id = ? WHERE id = ?", (hostile, job_id))
    async with _client(registry) as client:
        listed = (await client.get("/queues/batch?state=failed")).text
        found = await client.get("/jobs", params={"id": hostile})
    quoted = "..%2Fqueues%2Fbatch%2Fpurge-failed%3F%3D"
    assert f'action="/jobs/{quoted}/retry"' in listed and f'href="/jobs/{quoted}"' in listed
    assert "/jobs/../" not in listed
    assert found.status_code == 303 and found.headers["location"] == f"/jobs/{quoted}"
    await registry.close()


async def test_its_cookies_stay_under_its_mount_and_over_https() -> None:
    # Before, both cookies went to the whole host (Path=/): the rest of a mounting application
    # received the dashboard's token with every request, and over https they lacked Secure.
    from starlette.applications import Starlette
    from starlette.routing import Mount

    registry = _registry()
    outer = Starlette(routes=[Mount("/conveyor", create_app(registry, token="s3cret"))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="https://web") as web:
        login = await web.get("/conveyor/?token=s3cret")
        page = await web.get("/conveyor/")
    token_cookie = login.headers["set-cookie"]
    csrf_cookie = page.headers["set-cookie"]
    for cookie in (token_cookie, csrf_cookie):
        assert "Path=/conveyor;" in cookie and "Secure" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
    await registry.close()


def test_an_empty_or_blank_token_or_password_is_refused_when_the_app_is_made() -> None:
    # Before, create_app(registry, token=os.environ.get("T", "")) made a dashboard that
    # answered 401 to everyone, with nothing saying why.
    from conveyor.errors import ConfigError

    blank = ({"token": "  "}, {"basic_auth": ("admin", " ")})  # no secret either
    for options in ({"token": ""}, {"basic_auth": ("admin", "")}, {"basic_auth": ("", "pw")}):
        with pytest.raises(ConfigError, match=r"is empty \(or only spaces\), which is no secret"):
            create_app(_registry(), **options)  # type: ignore[arg-type]
    for options in blank:
        with pytest.raises(ConfigError, match="no secret"):
            create_app(_registry(), **options)  # type: ignore[arg-type]


def test_only_loopback_addresses_count_as_private() -> None:
    # serve() warns that a dashboard with no login is open to anyone on any other address.
    from conveyor.dashboard.app import _loopback

    assert all(_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "dash.example.com"))


async def test_the_auth_scheme_is_read_in_any_case() -> None:
    # RFC 9110 11.1: "bearer" and "BASIC" name the same schemes; they were answered 401.
    registry = _registry()
    token = httpx.ASGITransport(app=create_app(registry, token="s3cret"))  # type: ignore[arg-type]
    basic = httpx.ASGITransport(app=create_app(registry, basic_auth=("admin", "pw")))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=token, base_url="http://dash") as web:
        for header in ("bearer s3cret", "BEARER s3cret"):
            assert (await web.get("/", headers={"Authorization": header})).status_code == 200
        assert (await web.get("/", headers={"Authorization": "bearer wrong"})).status_code == 401
    async with httpx.AsyncClient(transport=basic, base_url="http://dash") as web:
        assert (
            await web.get("/", headers={"Authorization": "BASIC YWRtaW46cHc="})
        ).status_code == 200
    await registry.close()


async def test_a_page_filtered_by_job_name_offers_no_bulk_retry_or_purge() -> None:
    """The bulk buttons retry or purge every failed job of the queue, whatever its name.
    Before, they sat on a page showing only one name's failed jobs, where "Purge failed" read
    as "purge these" and deleted the failed jobs of every other name too."""
    registry = _registry()

    @registry.job("mail", queue="batch")
    async def mail(job: Job[dict[str, int]]) -> None:
        raise ValueError("down")

    await registry.push("batch", "mail", {}, retry=0)
    await Worker(registry, "w", burst=True).run()

    async with _client(registry) as client:
        whole = await client.get("/queues/batch", params={"state": "failed"})
        named = await client.get("/queues/batch", params={"state": "failed", "name": "mail"})

    assert "/queues/batch/purge-failed" in whole.text
    assert "/queues/batch/retry-failed" in whole.text
    assert named.status_code == 200 and "ValueError: down" in named.text
    assert "/queues/batch/purge-failed" not in named.text
    assert "/queues/batch/retry-failed" not in named.text
    assert "clear the filter" in named.text
    await registry.close()


async def test_a_path_that_names_no_page_or_action_is_not_found_not_a_wrong_method() -> None:
    """Before, any GET of three path segments (a mistyped /queues/batch/failed, or /foo/bar/baz)
    matched the actions' POST route and answered 405 Method Not Allowed: as if the page existed."""
    registry = _registry()
    async with _client(registry) as client:
        mistyped = await client.get("/queues/batch/failed")
        unknown = await client.get("/foo/bar/baz")
        posted = await client.post("/foo/bar/baz")
        action = await client.get("/queues/batch/pause")
    assert (mistyped.status_code, unknown.status_code, posted.status_code) == (404, 404, 404)
    assert action.status_code == 405 and action.headers["allow"] == "POST"
    await registry.close()


@pytest.mark.parametrize(
    "path", ["/", "/queues/default", "/jobs/" + "0" * 32, "/schedules", "/chains/nightly"]
)
async def test_no_page_creates_a_sqlite_store_not_made_yet(tmp_path: Path, path: str) -> None:
    """As `conveyor list` does not: the queues page (throughput), a queue's jobs and the job
    page (whether its backend looks jobs up) and the schedules page (ticks) made the file."""
    database = tmp_path / "jobs.db"
    registry = Registry(default_driver=f"sqlite:///{database}")

    @registry.job("tick")
    async def tick(job: Job[dict[str, int]]) -> None: ...

    registry.schedule("often", job="tick", every="30s")

    async with _client(registry) as client:
        page = await client.get(path)

    assert page.status_code in (200, 404)
    assert not database.exists()
    await registry.close()


async def test_the_queues_page_reads_the_queues_throughput_several_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One queue after another: 300 queues took 0.5 s on redis. Now READS_AT_ONCE reads are
    in flight together (each waits here until they all are), never more."""
    from conveyor.dashboard.app import READS_AT_ONCE

    registry = Registry(default_driver="memory")
    for n in range(READS_AT_ONCE + 4):
        registry.queue(f"q{n}", workers=["w"])
    registry.worker("w")
    registry.freeze()
    driver = await registry.driver_of("q0")
    throughput = driver.throughput
    flying, most, all_in = 0, 0, asyncio.Event()

    async def together(queue: str, minutes: int = 60) -> object:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        if flying == READS_AT_ONCE:
            all_in.set()
        try:
            await asyncio.wait_for(all_in.wait(), 5.0)  # read in turn: the first waits alone
            return await throughput(queue, minutes)
        finally:
            flying -= 1

    monkeypatch.setattr(driver, "throughput", together)
    async with _client(registry) as client:
        page = await client.get("/")

    assert (page.status_code, most) == (200, READS_AT_ONCE)
    await registry.close()
