"""Prometheus metrics (extra `conveyor[metrics]`), built on the lifecycle hooks.

    metrics = conveyor.metrics.install(registry)       # counters and histograms, by hook
    app.mount("/metrics", conveyor.metrics.asgi_app(registry))   # in a Starlette/FastAPI app
    server = await conveyor.metrics.serve(registry, 9108)        # or a port of its own

Metrics (docs/observability.md has example alert rules):
- conveyor_jobs_total{queue,job,outcome}: outcomes written by this process's workers
  (succeeded, retried, failed, cancelled, lease_lost);
- conveyor_jobs_pushed_total{queue,job}: jobs pushed by this process;
- conveyor_job_run_seconds{queue,job}: how long attempts ran (histogram);
- conveyor_job_wait_seconds{queue,job}: from due to started (histogram);
- conveyor_queue_jobs{queue,state}: jobs per queue and state, read from the backend when
  scraped, at most once per `cache_for` seconds whatever the scrape rate;
- conveyor_queue_oldest_pending_seconds{queue}: age of the oldest due job;
- conveyor_workers_alive{worker}: worker processes that beat recently, read the same way;
- conveyor_backend_up: 1 when every backend answered the last of those reads in time, 0 when
  one failed or ran past READ_DEADLINE (the gauges of its queues, and workers_alive, then hold
  their last values; the other queues' are read as usual): what to alert on.

Counters and histograms count what this process saw; the gauges read the backend, so any
process (the web app, a worker) shows the same depth. The scrape-time reads run on the event
loop that serves the scrape, which must be the registry's (the worker's, or the web app's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import fields
from typing import Any

from conveyor import endpoint
from conveyor.attempt import printable
from conveyor.core import RegistryCore
from conveyor.endpoint import Answer
from conveyor.hooks import Event

log = logging.getLogger("conveyor.metrics")

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        'conveyor.metrics needs prometheus-client: pip install "conveyor[metrics]"'
    ) from exc

#: Seconds a scrape-time read of the backend is reused for.
CACHE_FOR = 5.0
#: Seconds a scrape-time read may take before the last values are served instead.
READ_DEADLINE = 5.0

OUTCOMES = ("succeeded", "retried", "failed", "cancelled", "lease_lost")
STATES = ("pending", "delayed", "reserved", "succeeded", "failed", "cancelled")
#: The states a backend without exact counts does not know (amqp): left out of its queues'.
UNCOUNTED = ("delayed", "succeeded")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Metrics:
    """The metrics of one registry, in a Prometheus `CollectorRegistry` of their own (or the
    one given); `install()` makes one and registers its hook."""

    def __init__(
        self,
        registry: RegistryCore,
        *,
        collectors: CollectorRegistry | None = None,
        cache_for: float = CACHE_FOR,
    ) -> None:
        self.registry = registry
        self.collectors = collectors if collectors is not None else CollectorRegistry()
        self.cache_for = cache_for
        self._read_at = -float("inf")
        #: Workers counted by an earlier read: gone since, they read 0, not their last count.
        self._workers_seen: set[str] = set()
        self._lock = asyncio.Lock()
        on = self.collectors
        self.jobs = Counter(
            "conveyor_jobs", "Job outcomes written by this process's workers.",
            ["queue", "job", "outcome"], registry=on,
        )  # fmt: skip
        self.pushed = Counter(
            "conveyor_jobs_pushed", "Jobs pushed by this process.", ["queue", "job"], registry=on
        )
        self.run_seconds = Histogram(
            "conveyor_job_run_seconds", "How long job attempts ran.",
            ["queue", "job"], buckets=_BUCKETS, registry=on,
        )  # fmt: skip
        self.wait_seconds = Histogram(
            "conveyor_job_wait_seconds", "Seconds from a job being due to its start.",
            ["queue", "job"], buckets=_BUCKETS, registry=on,
        )  # fmt: skip
        self.depth = Gauge(
            "conveyor_queue_jobs", "Jobs per queue and state, read from the backend.",
            ["queue", "state"], registry=on,
        )  # fmt: skip
        self.oldest = Gauge(
            "conveyor_queue_oldest_pending_seconds", "Age of the oldest due job of a queue.",
            ["queue"], registry=on,
        )  # fmt: skip
        self.alive = Gauge(
            "conveyor_workers_alive", "Worker processes that beat recently.", ["worker"],
            registry=on,
        )  # fmt: skip
        self.up = Gauge(
            "conveyor_backend_up",
            "1 when every backend answered the last read of queue depths and workers in time,"
            " else 0.",
            registry=on,
        )

    def on_event(self, event: Event) -> None:
        """The lifecycle hook: count outcomes and pushes, time runs and waits."""
        # A damaged record's name holds lone surrogates: as a label, every scrape would fail.
        queue, name = printable(event.queue), printable(event.name)
        if event.kind == "pushed":
            self.pushed.labels(queue, name).inc()
        elif event.kind == "started":
            if event.wait is not None:
                self.wait_seconds.labels(queue, name).observe(event.wait)
        elif event.kind in OUTCOMES:
            self.jobs.labels(queue, name, event.kind).inc()
            if event.duration is not None:
                self.run_seconds.labels(queue, name).observe(event.duration)

    async def refresh(self) -> None:
        """Read queue depths and live workers from the backend, unless read within
        `cache_for` seconds; a read that fails or overruns keeps the last values."""
        async with self._lock:
            if time.monotonic() - self._read_at < self.cache_for:
                return
            self._read_at = time.monotonic()
            try:
                seen = await self.registry.overview(deadline=READ_DEADLINE)
            except Exception as exc:
                log.warning("metrics: could not read queue depths (%s); serving the last", exc)
                self.up.set(0)
                return
        if seen.down:
            why = "; ".join(dict.fromkeys(seen.down.values()))
            log.warning(
                "metrics: could not read queues %s (%s); serving their last", [*seen.down], why
            )
        self.up.set(0 if seen.down else 1)
        for queue, counts in seen.counts.items():
            unknown = UNCOUNTED if queue in seen.uncounted else ()  # absent, not a false 0
            for f in fields(counts):
                if f.name in STATES and f.name not in unknown:
                    self.depth.labels(queue, f.name).set(getattr(counts, f.name))
            age = counts.oldest_pending_age
            self.oldest.labels(queue).set(age if age is not None else 0.0)
        if seen.down:
            return  # the processes that beat to the unread backend are not counted
        per_worker = dict.fromkeys([*self.registry.workers, *self._workers_seen], 0)
        for presence in seen.alive:
            worker = printable(presence.worker)
            per_worker[worker] = per_worker.get(worker, 0) + 1
        for worker, count in per_worker.items():
            self.alive.labels(worker).set(count)
        self._workers_seen = set(per_worker)

    async def exposition(self) -> bytes:
        """The text a scrape gets, gauges refreshed first."""
        await self.refresh()
        return generate_latest(self.collectors)


def install(registry: RegistryCore, *, cache_for: float | None = None) -> Metrics:
    """The registry's metrics, made and hooked on first call; the same object after (with
    `cache_for`, now caching that long). `cache_for` defaults to CACHE_FOR seconds."""
    metrics = registry.hooks.installed.get("metrics")
    if not isinstance(metrics, Metrics):
        metrics = Metrics(registry, cache_for=CACHE_FOR if cache_for is None else cache_for)
        registry.hooks.add(metrics.on_event)
        registry.hooks.installed["metrics"] = metrics
    elif cache_for is not None:
        metrics.cache_for = cache_for
    return metrics


def asgi_app(registry: RegistryCore) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering every GET with the registry's metrics (mount it at /metrics)."""
    metrics = install(registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain")
            return
        await _respond(send, 200, await metrics.exposition(), CONTENT_TYPE_LATEST)

    return app


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve(registry: RegistryCore, port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Serve /metrics (and /) on `host:port` from the running loop (a worker's), for
    `conveyor work --metrics-port`. Close the returned server to stop."""
    metrics = install(registry)

    async def exposition() -> Answer:
        return b"200 OK", await metrics.exposition(), CONTENT_TYPE_LATEST

    return await endpoint.serve({b"/metrics": exposition, b"/": exposition}, host, port, "metrics")
