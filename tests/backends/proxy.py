"""A TCP proxy in front of a local server, for tests of a server that goes away and comes
back, or goes silent, or sits a round trip away, while the real server, shared with other
tests, is never touched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False)
class _Link:
    """One client connection and the proxy's connection upstream (None while swallowed)."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    #: Set by a blackhole: every byte is dropped, both ways, and neither side is closed.
    silent: bool = False

    def abort(self) -> None:
        for end in (self.client, self.upstream):
            if end is not None:
                end.transport.abort()


class Proxy:
    """A TCP proxy from a port of its own to the local server, which a test can cut and
    restore (to the driver, a server that went down and came back), or blackhole (a server
    that went silent, as behind a failed NAT gateway or firewall), while the real server,
    shared with other tests, is never touched."""

    def __init__(
        self,
        upstream_port: int,
        *,
        delay: float = 0.0,
        record: bool = False,
        adjustable: bool = False,
    ) -> None:
        self.upstream_port = upstream_port
        #: Seconds each chunk is held, each way (in order, never one behind another's wait).
        #: The event loop's timers round it up to the millisecond: for counts, not timings
        #: (benchmarks/delay_proxy.py delays precisely). Read as each connection opens; with
        #: `adjustable`, as each chunk comes (a server that slows down under open connections).
        self.delay = delay
        self.adjustable = adjustable
        #: Chunks passed from clients to the server: requests, one round trip each (a few
        #: written at once may arrive as one chunk: they cost one round trip too).
        self.requests = 0
        #: With `record`, those chunks themselves, in order (`reset()` forgets them).
        self.sent: list[bytes] | None = [] if record else None
        self.port = 0
        #: Connections accepted while new ones were swallowed.
        self.swallowed = 0
        #: Connections accepted so far; those past `admit` (when set) are swallowed.
        self.accepted = 0
        self.admit: int | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._swallow_until = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and break every open one."""
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.abort()
        self._links.clear()

    def blackhole(self, *, new_for: float = 0.0) -> None:
        """From now on drop every byte of the connections open at this moment, both ways, and
        keep their sockets open: neither the client nor the server ever hears of it. With
        `new_for`, connections made in the next `new_for` seconds are accepted and swallowed
        the same way (never connected upstream); after that, new ones work again."""
        for link in self._links:
            link.silent = True
        self._swallow_until = asyncio.get_running_loop().time() + new_for

    def reset(self) -> None:
        """Count (and record) from zero."""
        self.requests = 0
        if self.sent is not None:
            self.sent.clear()

    def _request(self, data: bytes) -> None:
        self.requests += 1
        if self.sent is not None:
            self.sent.append(data)

    async def close(self) -> None:
        """Stop listening and close every connection, blackholed ones included."""
        await self.cut()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        self.accepted += 1
        try:
            over = self.admit is not None and self.accepted > self.admit
            if over or asyncio.get_running_loop().time() < self._swallow_until:
                self.swallowed += 1
                link.silent = True
                await _pipe(reader, None, link)
                return
            upstream_reader, link.upstream = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
            fixed = self.delay
            delay = (lambda: self.delay) if self.adjustable else (lambda: fixed) if fixed else None
            await asyncio.gather(
                _pipe(reader, link.upstream, link, delay, self._request),
                _pipe(upstream_reader, writer, link, delay),
                return_exceptions=True,
            )
        finally:
            link.abort()
            self._links.discard(link)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    link: _Link,
    delay: Callable[[], float] | None = None,
    passed: Callable[[bytes], None] | None = None,
) -> None:
    """Copy until end of stream, dropping what arrives once the link is silent. A silent link
    passes no close on: the other side stays open (until it closes itself, or `cut`), as
    behind a blackhole. With `delay`, each chunk leaves `delay()` seconds after it came."""
    loop = asyncio.get_running_loop()
    later: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    sender = None
    if delay is not None and writer is not None:
        sender = asyncio.create_task(_send_later(later, writer, link))
    try:
        while data := await reader.read(65536):
            if link.silent or writer is None:
                continue
            if passed is not None:
                passed(data)
            if sender is None:
                writer.write(data)
                await writer.drain()
            else:
                later.put_nowait((loop.time() + delay(), data))
    except BaseException:
        if sender is not None:
            sender.cancel()
        raise
    if sender is not None:
        later.put_nowait((0.0, b""))
        await sender
    if writer is not None and not link.silent:
        writer.transport.abort()


async def _send_later(
    later: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter, link: _Link
) -> None:
    """Write each chunk once it is due: they come due in the order they came, so a chunk that
    came while the one before waited leaves right after it, never a whole delay later."""
    loop = asyncio.get_running_loop()
    while (item := await later.get())[1]:
        due, data = item
        await asyncio.sleep(max(0.0, due - loop.time()))
        if not link.silent:
            writer.write(data)
            await writer.drain()
