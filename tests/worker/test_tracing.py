"""OpenTelemetry: one trace runs from the span around a push into the worker's run of the
job, through the W3C trace context the push writes into the job's metadata."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import Job, JobState
from conveyor import tracing as conveyor_tracing

from .conftest import App, settle

# Each case waits for jobs by looking them up: a driver without lookup cannot be watched.
pytestmark = pytest.mark.needs("lookup")


@dataclass
class Item:
    n: int


async def test_one_trace_from_the_request_through_push_into_the_run(app: App, start) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    registry = app.registry(retry=1, retry_delay=0.0)
    conveyor_tracing.install(registry, provider.get_tracer("conveyor"))

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        with tracer.start_as_current_span("inside the handler"):
            if job.attempt == 1:
                raise ValueError("first attempt fails")

    with tracer.start_as_current_span("web request") as request:
        job_id = await registry.push("q", "item", Item(1))
    info = await registry.job_info(job_id)
    assert info.meta["traceparent"].split("-")[1] == format(
        request.get_span_context().trace_id, "032x"
    )

    start(registry)
    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
    spans = {
        (s.name, s.attributes.get("conveyor.job.attempt")): s for s in exporter.get_finished_spans()
    }
    web = spans[("web request", None)]
    publish = spans[("publish q", None)]
    first, second = spans[("process item", 1)], spans[("process item", 2)]
    trace_ids = {s.context.trace_id for s in exporter.get_finished_spans()}
    assert trace_ids == {web.context.trace_id}  # one trace, every span in it
    assert publish.kind is SpanKind.PRODUCER and publish.parent.span_id == web.context.span_id
    for run in (first, second):
        assert run.kind is SpanKind.CONSUMER and run.parent.span_id == publish.context.span_id
    assert first.status.status_code is StatusCode.ERROR
    assert first.events[0].name == "exception"
    assert second.status.status_code is StatusCode.UNSET
    inner = [s for s in exporter.get_finished_spans() if s.name == "inside the handler"]
    assert {s.parent.span_id for s in inner} == {first.context.span_id, second.context.span_id}


async def test_a_handler_error_quoting_a_url_has_its_password_hidden_in_the_span(
    app: App, start
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = app.registry(retry=0)
    conveyor_tracing.install(registry, provider.get_tracer("conveyor"))

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        raise ConnectionError("cannot reach postgresql://app:s3cr%40t@db/app")

    job_id = await registry.push("q", "item", Item(1))
    start(registry)
    info = await settle(registry, job_id)

    assert info.state is JobState.FAILED and "s3cr" not in info.error.message
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "process item"]
    (event,) = run.events
    shown = [run.status.description, *map(str, event.attributes.values())]
    assert all("s3cr" not in text for text in shown), shown
    assert "postgresql://app:***@db/app" in run.status.description
    assert "postgresql://app:***@db/app" in event.attributes["exception.message"]
    assert "postgresql://app:***@db/app" in event.attributes["exception.stacktrace"]


async def test_a_plain_handler_runs_in_its_span_and_its_push_continues_the_trace(
    app: App, start
) -> None:
    # Before, a plain handler's thread had none of the worker's context: spans it opened
    # were roots of traces of their own, and so was the producer span of a job it pushed
    # (registry.blocking.push from the thread ran on the worker's loop in the loop's context).
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    registry = app.registry()
    conveyor_tracing.install(registry, provider.get_tracer("conveyor"))
    pushed: list[str] = []

    @registry.job("outer")
    def outer(job: Job[Item]) -> None:
        with tracer.start_as_current_span("inside the plain handler"):
            pass
        pushed.append(registry.blocking.push("q", "inner", Item(job.payload.n + 1)))

    @registry.job("inner")
    async def inner(job: Job[Item]) -> None: ...

    with tracer.start_as_current_span("web request") as request:
        job_id = await registry.push("q", "outer", Item(1))
    start(registry)
    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
    assert (await settle(registry, pushed[0])).state is JobState.SUCCEEDED
    finished = exporter.get_finished_spans()
    by_name = {s.name: s for s in finished}
    run = by_name["process outer"]
    assert by_name["inside the plain handler"].parent.span_id == run.context.span_id
    publishes = [s for s in finished if s.name == "publish q"]
    assert [s.parent.span_id for s in publishes] == [
        request.get_span_context().span_id,
        run.context.span_id,
    ]
    assert by_name["process inner"].parent.span_id == publishes[1].context.span_id
    assert {s.context.trace_id for s in finished} == {request.get_span_context().trace_id}


async def test_tracing_installed_twice_makes_one_span_per_push_and_run(app: App, start) -> None:
    # Before, each install added a stamp and a middleware of its own: every push made two
    # producer spans (the job's metadata naming the second), every attempt two consumer spans.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = app.registry()
    tracer = provider.get_tracer("conveyor")
    first = conveyor_tracing.install(registry, tracer)  # the application's module, say
    again = conveyor_tracing.install(registry, tracer)  # and its worker's start-up

    @registry.job("item")
    async def handle(job: Job[Item]) -> None: ...

    job_id = await registry.push("q", "item", Item(1))
    start(registry)
    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["process item", "publish q"]
    assert again is first
