"""The blocking facade, and a worker, in a process monkey-patched by gevent or eventlet
(`gunicorn -k gevent`, `celery -P gevent`): threads are greenlets of one OS thread there.

asyncio keeps the running event loop per OS thread, so every greenlet saw the loop the facade
runs in a greenlet of its own as running in its thread, and the facade refused each call as
made from async code ("registry.blocking was called from async code"): not one push worked. A
worker's plain handler (a greenlet too) met the same refusal pushing through the facade. Each
case runs in a fresh interpreter, patched before anything else is imported, as such a server
does; on every driver with storage, many greenlets at once, as a server's concurrent requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.processes import PYTHONPATH, backend_of, clean_backend, run_cli

pytestmark = pytest.mark.timeout(120)

LIBRARIES = ["gevent", "eventlet"]

#: The patching each library's servers do first, as the first lines of the script or app.
PATCH = {
    "gevent": "from gevent import monkey\nmonkey.patch_all()\n",
    "eventlet": "import eventlet\neventlet.monkey_patch()\n",
}

#: Every greenlet is one request: pushes, a batch, a lookup of its job, the queues' counts.
REQUESTS = r"""
import json, sys, threading
from dataclasses import dataclass
from conveyor import Job, Registry

GREENLETS, PUSHES = 20, 5
url, lookup = sys.argv[1], sys.argv[2] == "lookup"
registry = Registry(default_driver=url)
registry.queue("q", workers=["w"])
registry.worker("w")

@dataclass
class Note:
    n: int

@registry.job("note")
def note(job: Job[Note]) -> None: ...

failures = []

def request(n: int) -> None:
    try:
        ids = [registry.blocking.push("q", "note", Note(n)) for _ in range(PUSHES)]
        ids += registry.blocking.push_many("q", "note", [Note(n), Note(n)])
        if lookup and registry.blocking.job_info(ids[0]) is None:
            failures.append(f"job {ids[0]} not found")
        registry.blocking.queue_info()
    except Exception as error:
        failures.append(repr(error))

greenlets = [threading.Thread(target=request, args=(n,)) for n in range(GREENLETS)]
for greenlet in greenlets:
    greenlet.start()
for greenlet in greenlets:
    greenlet.join()
pending = registry.blocking.queue_info()["q"].pending
registry.blocking.close()
expected = GREENLETS * (PUSHES + 2)
print(json.dumps({"failures": failures[:3], "pending": pending, "expected": expected}))
"""

#: Kinds whose jobs can be looked up by id (amqp's broker cannot).
LOOKUP = {"sqlite", "postgres", "mysql", "redis"}


def _run(script: Path, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql", "redis", "amqp"])
def test_requests_in_greenlets_push_through_the_facade(
    tmp_path: Path, kind: str, library: str
) -> None:
    url, prefix = backend_of(kind, tmp_path)
    script = tmp_path / "requests.py"
    script.write_text(PATCH[library] + REQUESTS)
    try:
        result = _run(script, url, "lookup" if kind in LOOKUP else "no-lookup")
    finally:
        asyncio.run(clean_backend(kind, prefix))
    assert result["failures"] == []
    assert result["pending"] == result["expected"]


APP = r"""
import os
from dataclasses import dataclass
from conveyor import Job, Registry

registry = Registry(default_driver=os.environ["GREEN_URL"])
registry.queue("q", workers=["w"])
registry.worker("w", concurrency=4, poll_interval=0.05)

@dataclass
class Step:
    n: int

@registry.job("sync_step")
def sync_step(job: Job[Step]) -> None:
    # a plain handler (a greenlet here) pushing the next step through the facade
    registry.blocking.push("q", "async_step", Step(job.payload.n))

@registry.job("async_step")
async def async_step(job: Job[Step]) -> None:
    print("ran", job.payload.n, flush=True)
"""


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_patched_worker_runs_jobs_that_push_through_the_facade(
    tmp_path: Path, library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "green_app.py").write_text(PATCH[library] + APP)
    monkeypatch.setenv("GREEN_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    push = tmp_path / "push.py"
    push.write_text(
        PATCH[library]
        + "from green_app import Step, registry\n"
        + "registry.blocking.push_many('q', 'sync_step', [Step(n) for n in range(5)])\n"
        + "registry.blocking.close()\n"
        + "print('{}')\n"
    )
    _run(push)
    worked = run_cli(tmp_path, "green_app:registry", "work", "--burst")
    assert worked.returncode == 0, worked.stderr[-3000:]
    ran = [int(line.split()[1]) for line in worked.stdout.splitlines() if line.startswith("ran ")]
    assert sorted(ran) == list(range(5)), worked.stderr[-3000:]


#: PostgreSQL's check of a pooled connection, run in the event loop's greenlet: with another
#: greenlet ready to run, any switch to the hub lets it run first.
CHECK = r"""
import json, sys, threading, time
import psycopg
from conveyor.drivers.sql.postgres.socket import ended_by_server

with psycopg.Connection.connect(sys.argv[1], autocommit=True) as conn:
    others = []

    def other():  # started at once, then ready to go on at the hub's next turn
        time.sleep(0)
        others.append(1)

    threading.Thread(target=other).start()
    ended = ended_by_server(conn)
    print(json.dumps({"ended": ended, "switched": others != []}))
"""


@pytest.mark.parametrize("library", LIBRARIES)
def test_the_check_of_a_pooled_postgres_connection_never_switches_greenlets(
    tmp_path: Path, library: str
) -> None:
    """eventlet's select(..., 0) waited a turn of its hub, in the middle of the event loop's
    callback: 50 greenlets pushing at once stored 90 jobs a second instead of 1,100."""
    url, _ = backend_of("postgres", tmp_path)
    script = tmp_path / "check.py"
    script.write_text(PATCH[library] + CHECK)
    assert _run(script, url.partition("?")[0]) == {"ended": False, "switched": False}
