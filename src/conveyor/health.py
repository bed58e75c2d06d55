"""`conveyor work --health-port PORT`: what a probe asks a worker process, over HTTP, without
a round trip to any backend (a Kubernetes liveness or readiness probe, a load balancer check).

- `GET /health`: 200 for as long as the process's event loop answers, whatever its workers
  are doing (waiting for their backend, working, stopping): restarting would help none of
  those. No answer means the loop is blocked (a handler that blocks it, a hang): what a
  liveness probe is for.
- `GET /ready`: 200 while every worker of the process is working, 503 while one starts (its
  backend not reached yet) or stops.

Both answer a JSON object: `{"status": "working", "workers": [{"identity": ..., "state": ...,
"running": n}]}`, `status` "stopping" once one of them stops, else "starting" while one
starts, else "working"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor import endpoint
from conveyor.endpoint import Answer

if TYPE_CHECKING:
    from conveyor.worker import Worker


def status(workers: Sequence[Worker]) -> dict[str, object]:
    """The JSON object both paths answer."""
    states = {worker.state for worker in workers}
    if states & {"stopping", "stopped"}:
        overall = "stopping"  # the process is on its way out
    else:
        overall = "starting" if "starting" in states else "working"
    return {
        "status": overall,
        "workers": [
            {"identity": worker.identity, "state": worker.state, "running": worker.running}
            for worker in workers
        ],
    }


async def serve(workers: Sequence[Worker], port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Serve /health and /ready for `workers` on `host:port` from the running loop (theirs).
    Close the returned server to stop."""

    def answer(ready: bool) -> Answer:
        body = json.dumps(status(workers)).encode() + b"\n"
        return (b"200 OK" if ready else b"503 Service Unavailable"), body, "application/json"

    async def health() -> Answer:
        return answer(True)

    async def ready() -> Answer:
        return answer(bool(workers) and all(w.state == "working" for w in workers))

    return await endpoint.serve({b"/health": health, b"/ready": ready}, host, port, "health")
