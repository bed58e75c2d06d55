"""The dashboard over every driver: pages, actions behind CSRF, read-only mode, auth and
escaping, driven through httpx on the app's own event loop."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from conveyor import Job, JobState, Registry, Worker
from conveyor.dashboard.app import create_app
from tests.backends import NOT_UTF8, Storage

from .conftest import App, settle

# Each case waits for jobs by looking them up: a driver without lookup cannot be watched.
pytestmark = pytest.mark.needs("lookup")


@dataclass
class Item:
    n: int
    text: str = ""


def client(registry: Registry, **options: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(registry, **options))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://dash")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no action form"
    return found.group(1)


@pytest.fixture
async def failing(app: App, start) -> AsyncIterator[tuple[Registry, str]]:
    """A registry whose job "item" failed once and succeeds when retried."""
    registry = app.registry(retry=0)
    calls: list[int] = []

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        calls.append(job.payload.n)
        if len(calls) == 1:
            raise ValueError("<b>boom</b>")

    job_id = await registry.push("q", "item", Item(1, "<script>alert(1)</script>"))
    start(registry)
    assert (await settle(registry, job_id)).state is JobState.FAILED
    yield registry, job_id


async def test_pages_show_queues_jobs_and_a_job(failing: tuple[Registry, str]) -> None:
    registry, job_id = failing
    async with client(registry) as web:
        home = await web.get("/")
        listed = await web.get("/queues/q?state=failed")
        filtered = await web.get("/queues/q?state=failed&name=other")
        page = await web.get(f"/jobs/{job_id}")
        looked_up = await web.get(f"/jobs?id={job_id}")
        missing = await web.get("/jobs/nope")
        search = await web.get("/jobs")  # the lookup form, nothing asked for yet
    assert home.status_code == 200 and 'id="failed-q">1<' in home.text
    assert "1 failed" in home.text and 'class="chart-failed"' in home.text  # the last hour
    assert "w:" in home.text  # the live worker's identity
    assert job_id in listed.text and job_id not in filtered.text
    assert "ValueError" in page.text and "Traceback" in page.text
    assert looked_up.status_code == 303 and looked_up.headers["location"] == f"/jobs/{job_id}"
    assert "No job nope" in missing.text and missing.status_code == 404
    assert "deleted (purged, or pruned" in missing.text  # not only "pruned": it may be purged
    assert search.status_code == 200


@pytest.mark.needs("error_history")
async def test_the_job_page_shows_every_attempts_error(app: App, start) -> None:
    registry = app.registry(retry=2, retry_delay=0)

    @registry.job("flaky")
    async def flaky(job: Job[Item]) -> None:
        raise ValueError(f"<i>attempt {job.attempt}</i>")

    job_id = await registry.push("q", "flaky", Item(1))
    start(registry)
    job = await settle(registry, job_id)
    assert job.state is JobState.FAILED
    async with client(registry) as web:
        page = (await web.get(f"/jobs/{job_id}")).text
    for n in (1, 2, 3):
        assert f"attempt {n}, " in page and f"&lt;i&gt;attempt {n}&lt;/i&gt;" in page
    assert page.count("Traceback (most recent call last)") == 3


async def test_payloads_and_errors_are_escaped(failing: tuple[Registry, str]) -> None:
    registry, job_id = failing
    async with client(registry) as web:
        page = (await web.get(f"/jobs/{job_id}")).text
        listed = (await web.get("/queues/q?state=failed")).text
    for text in (page, listed):
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>boom</b>" not in page and "&lt;b&gt;boom&lt;/b&gt;" in page


async def test_retry_needs_the_csrf_token_then_the_job_succeeds(
    failing: tuple[Registry, str],
) -> None:
    registry, job_id = failing
    async with client(registry) as web:
        page = await web.get(f"/jobs/{job_id}")
        token = csrf_of(page.text)
        refused = await web.post(f"/jobs/{job_id}/retry", data={"csrf": "forged"})
        assert refused.status_code == 403
        assert (await registry.job_info(job_id)).state is JobState.FAILED
        done = await web.post(f"/jobs/{job_id}/retry", data={"csrf": token, "back": "/"})
        assert done.status_code == 303
    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED


async def test_pause_resume_purge_and_delete(app: App) -> None:
    registry = app.registry()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    kept = await registry.push("q", "item", Item(1))
    async with client(registry) as web:
        token = csrf_of((await web.get("/")).text)
        assert (await web.post("/queues/q/pause", data={"csrf": token})).status_code == 303
        assert await registry.paused_queues() == {"q"}
        assert "paused" in (await web.get("/")).text
        assert (await web.post("/queues/q/resume", data={"csrf": token})).status_code == 303
        assert await registry.paused_queues() == set()
        assert (await web.post(f"/jobs/{kept}/cancel", data={"csrf": token})).status_code == 303
        assert (await registry.job_info(kept)).state is JobState.CANCELLED
        assert (await web.post(f"/jobs/{kept}/delete", data={"csrf": token})).status_code == 303
        assert await registry.job_info(kept) is None
        purged = await web.post("/queues/q/purge-failed", data={"csrf": token, "confirmed": "yes"})
        assert purged.status_code == 303
        unknown = await web.post("/queues/nope/pause", data={"csrf": token})
        assert unknown.status_code == 404 and "no queue called 'nope'" in unknown.text


async def test_read_only_shows_no_action_and_refuses_posts(
    failing: tuple[Registry, str],
) -> None:
    registry, job_id = failing
    async with client(registry, read_only=True) as web:
        page = await web.get(f"/jobs/{job_id}")
        assert "read-only" in page.text and 'name="csrf"' not in page.text
        refused = await web.post(f"/jobs/{job_id}/retry", data={"csrf": "x"})
    assert refused.status_code == 403
    assert (await registry.job_info(job_id)).state is JobState.FAILED


async def test_token_and_basic_auth(app: App) -> None:
    registry = app.registry()
    async with client(registry, token="s3cret") as web:
        assert (await web.get("/")).status_code == 401
        assert (await web.get("/", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await web.get("/", headers={"Authorization": "Bearer s3cret"})).status_code == 200
        login = await web.get("/?token=s3cret")
        assert login.status_code == 303
        assert (await web.get("/")).status_code == 200  # the cookie set by ?token=
    async with client(registry, basic_auth=("admin", "pw")) as web:
        assert (await web.get("/")).status_code == 401
        assert (await web.get("/", auth=("admin", "wrong"))).status_code == 401
        assert (await web.get("/", auth=("admin", "pw"))).status_code == 200


async def test_mounted_under_a_path_its_links_and_actions_keep_the_path(app: App) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    registry = app.registry()
    outer = Starlette(routes=[Mount("/conveyor", create_app(registry))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://web") as web:
        home = await web.get("/conveyor/")
        assert home.status_code == 200
        assert 'href="/conveyor/queues/q?state=pending"' in home.text
        assert 'action="/conveyor/queues/q/pause"' in home.text
        assert (await web.get("/conveyor/static/style.css")).status_code == 200
        paused = await web.post(
            "/conveyor/queues/q/pause", data={"csrf": csrf_of(home.text), "back": "/"}
        )
    assert paused.status_code == 303 and paused.headers["location"] == "/conveyor/"
    assert await registry.paused_queues() == {"q"}


async def test_pages_show_damaged_jobs_as_text(storage: Storage, app: App) -> None:
    """Bytes that are not UTF-8 (kept by the driver as lone surrogates) show as \\x escapes:
    neither the job's page nor its queue's list fails."""
    if not storage.damages:
        pytest.skip("this backend keeps Python objects: nothing can be written behind it")
    registry = app.registry()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    damaged = []
    for n, damage in enumerate(storage.damages):
        job_id = await registry.push("q", "item", Item(n), unique=f"k{n}")
        await storage.damage(job_id, damage.field, damage.raw)
        damaged.append(job_id)
    async with client(registry) as web:
        for job_id in damaged:
            page = await web.get(f"/jobs/{job_id}")
            assert page.status_code == 200, (job_id, page.text)
        listed = await web.get("/queues/q?state=pending")
    assert listed.status_code == 200
    if any(damage.raw == NOT_UTF8 for damage in storage.damages):
        assert "caf\\xe9 \\xff\\xfe" in listed.text


async def test_an_errors_bidirectional_override_is_shown_escaped(app: App) -> None:
    """U+202E reverses what follows it on screen: "invoice\u202efdp.exe" reads as
    "invoiceexe.pdf"."""
    registry = app.registry(retry=0)

    @registry.job("note")
    async def handle(job: Job[dict[str, str]]) -> None:
        raise ValueError("bad file invoice\u202efdp.exe")

    job_id = await registry.push("q", "note", {})
    await Worker(registry, "w", burst=True).run()
    async with client(registry) as web:
        page = await web.get(f"/jobs/{job_id}")
        listed = await web.get("/queues/q?state=failed")
    for shown in (page, listed):
        assert shown.status_code == 200
        assert "invoice\\u202efdp.exe" in shown.text and "\u202e" not in shown.text


async def test_an_action_the_job_is_past_is_refused_naming_its_state(app: App) -> None:
    registry = app.registry()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    done = await registry.push("q", "item", Item(1))
    await Worker(registry, "w", burst=True).run()
    waiting = await registry.push("q", "item", Item(2), delay=3600)
    async with client(registry) as web:
        token = csrf_of((await web.get("/")).text)
        retried = await web.post(f"/jobs/{done}/retry", data={"csrf": token})
        cancelled = await web.post(f"/jobs/{done}/cancel", data={"csrf": token})
        early = await web.post(f"/jobs/{waiting}/retry", data={"csrf": token})
        missing = await web.post("/jobs/nope/retry", data={"csrf": token})
    assert retried.status_code == 409, retried.text
    assert f"job {done} is succeeded, not failed" in retried.text
    assert cancelled.status_code == 409 and "is succeeded: it has finished" in cancelled.text
    assert early.status_code == 409 and "is delayed, not failed" in early.text
    assert missing.status_code == 404 and missing.text == "retry failed: no job 'nope'"
    assert (await registry.job_info(done)).state is JobState.SUCCEEDED
    assert (await registry.job_info(waiting)).state is JobState.DELAYED


@pytest.mark.needs("unique")
async def test_retry_of_a_failed_job_whose_unique_key_is_held_says_so(app: App) -> None:
    registry = app.registry(retry=0)

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        raise ValueError("no")

    failed = await registry.push("q", "item", Item(1), unique="k")
    await Worker(registry, "w", burst=True).run()
    await registry.push("q", "item", Item(2), unique="k", delay=3600)  # holds "k" from now
    async with client(registry) as web:
        token = csrf_of((await web.get("/")).text)
        retried = await web.post(f"/jobs/{failed}/retry", data={"csrf": token})
    assert retried.status_code == 409, retried.text
    assert (
        f"job {failed} is failed, and an unfinished job of its name holds its unique key 'k'"
        in (retried.text)
    )
    assert (await registry.job_info(failed)).state is JobState.FAILED  # type: ignore[union-attr]


async def test_a_page_number_or_name_no_backend_can_take_is_refused(app: App) -> None:
    registry = app.registry()
    async with client(registry) as web:
        far = await web.get("/queues/q?state=failed&page=99999999999999999999")
        nul = await web.get("/queues/q?state=failed&name=a%00b")
        last = await web.get("/queues/q?state=failed&page=1000000000")
    assert far.status_code == 400 and "page must be a number from 1 to" in far.text
    assert nul.status_code == 400 and "job name 'a\\x00b' is not valid" in nul.text
    assert last.status_code == 200 and "no failed job on this page" in last.text


async def test_purge_failed_asks_first_naming_how_many_and_purges_once_confirmed(
    failing: tuple[Registry, str],
) -> None:
    """Was: one click on "Purge failed" deleted every failed job of the queue at once, with
    no question, where `conveyor failed purge` asks first."""
    registry, job_id = failing
    async with client(registry) as web:
        token = csrf_of((await web.get("/queues/q?state=failed")).text)
        back = "/queues/q?state=failed"
        asked = await web.post("/queues/q/purge-failed", data={"csrf": token, "back": back})
        assert asked.status_code == 200
        assert "1 failed job (as counted now) will be deleted for good" in asked.text
        assert 'name="confirmed" value="yes"' in asked.text and csrf_of(asked.text) == token
        assert (await registry.job_info(job_id)).state is JobState.FAILED  # nothing deleted yet
        confirmed = await web.post(
            "/queues/q/purge-failed", data={"csrf": token, "back": back, "confirmed": "yes"}
        )
        assert confirmed.status_code == 303 and confirmed.headers["location"] == back
        unknown = await web.post("/queues/nope/purge-failed", data={"csrf": token})
    assert await registry.job_info(job_id) is None
    assert unknown.status_code == 404


async def test_a_back_link_with_a_backslash_stays_on_the_dashboard(
    failing: tuple[Registry, str],
) -> None:
    """A browser reads /\\evil.example as //evil.example: the purge question's "Keep them"
    link and the redirect after an action went to another site."""
    registry, _ = failing
    async with client(registry) as web:
        token = csrf_of((await web.get("/")).text)
        hostile = "/\\evil.example/x"
        asked = await web.post("/queues/q/purge-failed", data={"csrf": token, "back": hostile})
        paused = await web.post("/queues/q/pause", data={"csrf": token, "back": hostile})
    assert 'href="/" id="cancel-purge"' in asked.text and "evil" not in asked.text
    assert paused.status_code == 303 and paused.headers["location"] == "/"


async def test_a_rows_action_leads_back_to_the_page_and_filter_it_was_clicked_on(
    app: App,
) -> None:
    """Before, Retry on page 2 of a list filtered by job name led back to page 1 of the whole
    list: the filter and the place in the list were lost at each click."""
    registry = app.registry(retry=0)

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        raise ValueError("down")

    for n in range(51):  # a page and one more
        await registry.push("q", "item", Item(n))
    await Worker(registry, "w", burst=True).run()
    async with client(registry) as web:
        page = (await web.get("/queues/q?state=failed&name=item&page=2")).text
        found = re.search(r'/retry" class="action">\s*.*?name="back" value="([^"]+)"', page, re.S)
        assert found, "page 2 has no job to retry"
        back = html.unescape(found.group(1))
        done = await web.post(
            re.findall(r'action="(/jobs/[^"]+/retry)"', page)[0],
            data={"csrf": csrf_of(page), "back": back, "queue": "q"},
        )
    assert done.status_code == 303
    assert done.headers["location"] == "/queues/q?state=failed&name=item&page=2"


@pytest.mark.needs("control")
async def test_a_running_job_cancelled_says_so_until_its_worker_stops_it(app: App) -> None:
    """A running job is stopped at its worker's next lease renewal. Before, its page said
    nothing of the cancel meanwhile (seconds, up to a third of the lease): still reserved, the
    Cancel button still there, as if the click had been lost."""
    registry = app.registry()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    job_id = await registry.push("q", "item", Item(1))
    driver = await registry.driver_of("q")
    assert [job.id for job in await driver.reserve(["q"], 1, 60.0, "elsewhere")] == [job_id]
    async with client(registry) as web:
        before = (await web.get(f"/jobs/{job_id}")).text
        done = await web.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf_of(before)})
        after = (await web.get(f"/jobs/{job_id}")).text
        listed = (await web.get("/queues/q?state=reserved")).text
    assert done.status_code == 303
    assert f"/jobs/{job_id}/cancel" in before and "cancel requested" not in before
    assert (await registry.job_info(job_id)).state is JobState.RESERVED
    assert 'id="cancel-requested"' in after and f"/jobs/{job_id}/cancel" not in after
    assert "cancel requested" in listed and f"/jobs/{job_id}/cancel" not in listed
