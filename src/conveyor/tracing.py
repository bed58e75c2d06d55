"""OpenTelemetry traces (extra `conveyor[otel]`, the API package only), built on the hooks.

    import conveyor.tracing
    conveyor.tracing.install(registry)   # in the web app and in the worker

A push makes a producer span ("publish QUEUE", child of whatever span is current: the web
request's) and writes its W3C trace context into the job's metadata (`traceparent`, and
`tracestate` when there is one). A run makes a consumer span ("process JOB") whose parent is
that context, so one trace crosses from the request into the worker; each retry is a span of
its own under the same parent. The handler runs inside the consumer span: spans it makes are
its children. A failed attempt records the exception and sets the span's status to error, with
the password of any URL in its message and traceback hidden, as in the job's stored error.

Spans go to whatever tracer provider the application set up (the SDK, an exporter); without
one, the API's no-op provider makes this free. Tracing faults never break a push or a job.
"""

from __future__ import annotations

import logging
from typing import Any

from conveyor.attempt import error_info
from conveyor.core import RegistryCore
from conveyor.hooks import CallNext
from conveyor.job import Job

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        'conveyor.tracing needs opentelemetry-api: pip install "conveyor[otel]"'
    ) from exc

log = logging.getLogger("conveyor.tracing")

#: The metadata keys the trace context travels in (W3C Trace Context header names).
CONTEXT_KEYS = ("traceparent", "tracestate")


class Tracing:
    """The producer stamp and the consumer middleware of one registry."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer if tracer is not None else trace.get_tracer("conveyor")

    def stamp(self, queue: str, name: str, meta: dict[str, Any]) -> dict[str, Any]:
        """Make the producer span of one pushed job; return its context for the metadata."""
        attributes = {
            "messaging.system": "conveyor",
            "messaging.operation.type": "publish",
            "messaging.destination.name": queue,
            "conveyor.job.name": name,
        }
        with self.tracer.start_as_current_span(
            f"publish {queue}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        return {key: carrier[key] for key in CONTEXT_KEYS if key in carrier}

    async def middleware(self, job: Job[Any], call_next: CallNext) -> Any:
        """Run the handler inside the consumer span, child of the pushed context."""
        try:
            carrier = {key: str(job.meta[key]) for key in CONTEXT_KEYS if key in job.meta}
            parent = propagate.extract(carrier)
            span = self.tracer.start_span(
                f"process {job.name}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "conveyor",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": job.queue,
                    "messaging.message.id": job.id,
                    "conveyor.job.name": job.name,
                    "conveyor.job.attempt": job.attempt,
                },
            )
            token = otel_context.attach(trace.set_span_in_context(span))
        except Exception:
            log.exception("tracing: could not start the span of job %s", job.id)
            return await call_next(job)
        try:
            returned = await call_next(job)
        except BaseException as exc:
            error = error_info(exc)  # as the job's error: passwords in URLs hidden
            span.record_exception(
                exc,
                {"exception.message": error.message, "exception.stacktrace": error.traceback},
            )
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {error.message}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()
        return returned


def install(registry: RegistryCore, tracer: Tracer | None = None) -> Tracing:
    """Trace the registry's pushes and runs with `tracer` (default: the global provider's
    "conveyor" tracer), in each process that pushes or works. Installed on first call; a
    later call returns the same object (with `tracer`, now tracing with it): never a second
    span per push or run."""
    tracing = registry.hooks.installed.get("tracing")
    if isinstance(tracing, Tracing):
        if tracer is not None:
            tracing.tracer = tracer
        return tracing
    tracing = Tracing(tracer)
    registry.hooks.add_stamp(tracing.stamp)
    registry.hooks.add_middleware(tracing.middleware)
    registry.hooks.installed["tracing"] = tracing
    return tracing
