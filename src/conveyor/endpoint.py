"""The small HTTP servers of `conveyor work`: `--metrics-port` (conveyor.metrics) and
`--health-port` (conveyor.health). Each answers GET and HEAD of its paths, one request per
connection, from the worker's event loop; anything else gets 404 or 405."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from conveyor.errors import ConfigError

#: Seconds a request may take to arrive, and its answer to be taken, before the connection is
#: closed unanswered.
REQUEST_DEADLINE = 5.0

#: A request cut off, too slow, malformed, or past the reader's 64 KiB: not answered.
_UNANSWERED = (
    TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
)  # fmt: skip

#: What a path answers: (status line, body, content type).
Answer = tuple[bytes, bytes, str]
Route = Callable[[], Awaitable[Answer]]


async def serve(routes: Mapping[bytes, Route], host: str, port: int, what: str) -> asyncio.Server:
    """Answer GET and HEAD of each path of `routes` on `host:port` from the running loop.
    `what` ("metrics", "health") names the server in the error when the port cannot be had,
    and its options, `--{what}-port` and `--{what}-host`. Close the returned server to stop."""
    listed = b", ".join(routes)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = request.split(b"\r\n", 1)[0].split(b" ")
            route = routes.get(path.split(b"?")[0])
            if method not in (b"GET", b"HEAD"):
                status, body, kind = b"405 Method Not Allowed", b"GET only\n", "text/plain"
            elif route is None:
                status, body, kind = b"404 Not Found", b"see " + listed + b"\n", "text/plain"
            else:
                status, body, kind = await route()
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                status, kind.encode(), len(body),
            )  # fmt: skip
            writer.write(head + b"Connection: close\r\n\r\n" + (b"" if method == b"HEAD" else body))
            async with asyncio.timeout(REQUEST_DEADLINE):
                await writer.drain()
        except _UNANSWERED:
            pass
        finally:
            writer.close()

    try:
        return await asyncio.start_server(answer, host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve {what} on {host}:{port} ({exc}): choose a free port with"
            f" --{what}-port, or another address with --{what}-host"
        ) from exc
