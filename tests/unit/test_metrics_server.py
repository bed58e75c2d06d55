"""The /metrics server of `conveyor work --metrics-port` on requests it does not answer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conveyor import Registry
from conveyor import metrics as conveyor_metrics


async def test_a_request_past_64_kib_of_headers_is_dropped_without_an_error_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, asyncio logged "Unhandled exception in client_connected_cb" with a traceback at
    # ERROR: anyone who could reach the port could fill the worker's log with them.
    registry = Registry()
    registry.queue("q", driver="memory", workers=["w"])
    registry.worker("w")
    server = await conveyor_metrics.serve(registry, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.ERROR):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, unanswered
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"conveyor_queue_jobs" in answer
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        server.close()
        await server.wait_closed()
        await registry.close()
