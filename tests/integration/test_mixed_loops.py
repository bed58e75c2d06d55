"""One registry used from several event loops in one process, as applications do: a script or
a Flask view calling `asyncio.run(registry.push(...))` more than once (a new loop each time),
then the blocking facade, and the interpreter's exit with nothing closed by the code.

Before, the drivers stayed open on the first loop once it ended: the next `asyncio.run` push
failed with "Event loop is closed" (redis) or "attached to a different loop" (mysql), the
facade's calls with a RegistryError, and on postgres the exit printed a RegistryError
traceback from the facade's close. Now each loop's end closes the drivers it opened."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from conveyor import Job
from tests.integration.processes import PYTHONPATH
from tests.integration.test_blocking_lifecycle import make_registry
from tests.integration.test_blocking_lifecycle import url as url  # its four backends

pytestmark = pytest.mark.timeout(120)


def several_runs(url: str) -> int:
    """In a thread without a loop, as a script or a WSGI view: three `asyncio.run` pushes,
    none closing the registry, then the facade (a unique key takes its loop everywhere)."""
    registry = make_registry(url)
    for n in range(3):
        asyncio.run(registry.push("q", "j", {"n": n}))
    registry.blocking.push("q", "j", {"n": 3}, unique="u")
    registry.blocking.push("q", "j", {"n": 4})
    counted = registry.blocking.queue_info()["q"].pending
    registry.blocking.close()
    return counted


async def test_asyncio_run_again_and_again_then_the_facade(url: str) -> None:
    assert await asyncio.to_thread(several_runs, url) == 5


#: What both scripts start with: a registry on the URL given, with one job.
PREAMBLE = r"""
import asyncio, sys
from conveyor import Job, Registry

registry = Registry(default_driver=sys.argv[1])
registry.queue("q", workers=["w"])
registry.worker("w")

@registry.job("j", queue="q")
async def j(job: Job[dict]) -> None: ...
"""

SCRIPT = (
    PREAMBLE
    + r"""
print(asyncio.run(registry.push("q", "j", {})), flush=True)
print(registry.blocking.push("q", "j", {}, unique="once"), flush=True)
print(registry.blocking.queue_info()["q"].pending, flush=True)
"""
)


async def run(script: str, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """`script` in a Python process of its own, given `url`, importing this tree's conveyor."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *flags, "-c", script, url],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": PYTHONPATH, "PYTHONWARNINGS": "error::ResourceWarning"},
    )


async def test_exit_after_asyncio_run_and_the_facade_says_nothing(url: str) -> None:
    done = await run(SCRIPT, url, "-X", "dev")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "2", done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "RegistryError" not in done.stderr, done.stderr
    assert "unclosed" not in done.stderr, done.stderr


BY_HAND = (
    PREAMBLE
    + r"""
from conveyor.errors import RegistryError

loop = asyncio.new_event_loop()
print(loop.run_until_complete(registry.push("q", "j", {})), flush=True)
loop.close()  # by hand: nothing closes the drivers
try:
    print(registry.blocking.queue_info()["q"].pending, flush=True)
except RegistryError as error:
    print("said:", error, flush=True)
registry.blocking.close()  # forgets what it cannot close: the facade opens anew
print(registry.blocking.queue_info()["q"].pending, flush=True)
"""
)


async def test_drivers_left_on_a_loop_closed_by_hand_neither_hang_nor_spoil_the_exit(
    url: str,
) -> None:
    """Their calls say what to do (or work: sqlite, postgres); the facade's close forgets what
    it cannot close, and the exit says nothing. Before, the close (at exit too) raised the
    RegistryError, printing its traceback at exit, and on mysql waited forever: the process
    never exited."""
    done = await run(BY_HAND, url)
    assert done.returncode == 0, done.stderr
    _, said, after_close = done.stdout.split("\n")[:3]
    assert said == "1" or "await registry.close()" in said, done.stdout
    assert after_close == "1", done.stdout
    assert "RegistryError" not in done.stderr, done.stderr
    assert "conveyor/blocking.py" not in done.stderr, done.stderr


def app_after_startup_push(url: str) -> list[int]:
    """A push under asyncio.run at start-up, then a FastAPI app whose lifespan runs the
    worker, pushing from an async and a plain endpoint: which payloads its worker ran."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import conveyor.asgi

    registry = make_registry(url)
    ran: list[int] = []

    @registry.job("seen", queue="q")
    async def seen(job: Job[dict[str, int]]) -> None:
        ran.append(job.payload["n"])

    app = FastAPI(lifespan=conveyor.asgi.lifespan(registry, "w"))

    @app.post("/async")
    async def pushed() -> dict[str, str]:
        return {"id": await seen.push({"n": 1})}

    @app.post("/plain")
    def pushed_from_a_thread() -> dict[str, str]:
        return {"id": seen.blocking.push({"n": 2})}

    asyncio.run(seen.push({"n": 0}))
    with TestClient(app) as client:
        assert client.post("/async").status_code == 200
        assert client.post("/plain").status_code == 200
        deadline = time.monotonic() + 30
        while len(ran) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    return sorted(ran)


async def test_a_web_app_after_a_push_under_asyncio_run_runs_its_jobs(url: str) -> None:
    """Before, on redis the app's lifespan met the drivers the start-up's loop left open:
    its worker failed with "Event loop is closed" and ran nothing."""
    assert await asyncio.to_thread(app_after_startup_push, url) == [0, 1, 2]
