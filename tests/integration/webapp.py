"""A FastAPI application whose worker runs inside it (conveyor.asgi.lifespan), served by
uvicorn in tests/integration/test_asgi.py.

Set by the test: WEBAPP_DRIVER (the queue's driver URL), WEBAPP_DIR (where jobs leave
`started-<id>` and `sent-<id>` files) and WEBAPP_STOP_TIMEOUT (the worker's, in seconds).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Response

import conveyor.asgi
from conveyor import Job, Registry

FOLDER = Path(os.environ["WEBAPP_DIR"])

# uvicorn configures its own loggers only: conveyor's lines go to stderr, levels shown.
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

registry = Registry(default_driver=os.environ["WEBAPP_DRIVER"])
registry.queue("mail", workers=["web"], retry=0)
registry.worker(
    "web", concurrency=2, poll_interval=0.2, stop_timeout=float(os.environ["WEBAPP_STOP_TIMEOUT"])
)


@dataclass
class Mail:
    to: str
    seconds: float = 0.0


@registry.job("mail.send", queue="mail")
async def send(job: Job[Mail]) -> None:
    (FOLDER / f"started-{job.id}").touch()
    await asyncio.sleep(job.payload.seconds)
    (FOLDER / f"sent-{job.id}").write_text(job.payload.to)


jobs = conveyor.asgi.lifespan(registry, "web")
app = FastAPI(lifespan=jobs)


@app.post("/mail")
async def mail(to: str, seconds: float = 0.0) -> dict[str, str]:
    """Push from an async endpoint, on the server's loop."""
    return {"id": await send.push(Mail(to, seconds))}


@app.post("/mail-from-thread")
def mail_from_thread(to: str) -> dict[str, str]:
    """Push from a plain endpoint, which FastAPI runs on a thread: the blocking facade."""
    return {"id": send.blocking.push(Mail(to))}


@app.get("/health")
def health(response: Response) -> dict[str, bool]:
    response.status_code = 200 if jobs.healthy else 503
    return {"workers": jobs.healthy}
