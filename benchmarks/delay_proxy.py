"""A TCP proxy on 127.0.0.1 that holds every chunk a fixed time each way, in a process of its
own, for benchmarks/latency.py: the servers stay on loopback and untouched (no tc/netem).

Each direction of a connection has a reader thread, which stamps each chunk with the moment it
is due (arrival + delay) and queues it, and a sender thread, which sleeps until the head of its
queue is due and sends it. Chunks keep their order and never wait behind one another's sleeps
(a chunk queued during a sleep is due later anyway), so the delay adds no limit on throughput.
Threads and `time.sleep`, not asyncio: the event loop's timers have a millisecond's
granularity (epoll), which would turn a 0.5 ms delay into 1 ms or more; `time.sleep`'s own
lateness is measured as the proxy starts and taken off each sleep.

It counts chunks per direction: a chunk from the client is one request written to the server
(or a few a client wrote at once, which cost one round trip all the same).
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection


@dataclass
class Counts:
    """Chunks and bytes per direction since the last reset, and connections opened."""

    up: int = 0
    down: int = 0
    up_bytes: int = 0
    down_bytes: int = 0
    connections: int = 0
    per_connection: dict[int, int] = field(default_factory=dict)


class _Server:
    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.counts = Counts()
        self.overshoot = _overshoot()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._serial = 0

    def serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for end in (client, upstream):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._serial += 1
            self.counts.connections += 1
            self._direction(client, upstream, True, self._serial)
            self._direction(upstream, client, False, self._serial)

    def _direction(self, source: socket.socket, target: socket.socket, up: bool, n: int) -> None:
        chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def read() -> None:
            while data := _recv(source):
                chunks.put((time.monotonic() + self.delay, data))
                if up:
                    self.counts.up += 1
                    self.counts.up_bytes += len(data)
                    self.counts.per_connection[n] = self.counts.per_connection.get(n, 0) + 1
                else:
                    self.counts.down += 1
                    self.counts.down_bytes += len(data)
            chunks.put((0.0, b""))

        def send() -> None:
            while True:
                due, data = chunks.get()
                if not data:
                    break
                if (wait := due - time.monotonic() - self.overshoot) > 0:
                    time.sleep(wait)
                try:
                    target.sendall(data)
                except OSError:
                    break
            for end in (source, target):
                _close(end)

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=send, daemon=True).start()


def _overshoot() -> float:
    """How much longer than asked `time.sleep` sleeps here (the median of 50): taken off each
    wait, so that a chunk leaves when it is due, not 0.1 ms later (on this machine)."""
    late = []
    for _ in range(50):
        started = time.monotonic()
        time.sleep(0.0003)
        late.append(time.monotonic() - started - 0.0003)
    return statistics.median(late)


def _recv(end: socket.socket) -> bytes:
    try:
        return end.recv(262144)
    except OSError:
        return b""


def _close(end: socket.socket) -> None:
    with suppress(OSError):
        end.shutdown(socket.SHUT_RDWR)
    end.close()


def _run(upstream_port: int, delay: float, control: Connection) -> None:
    server = _Server(upstream_port, delay)
    threading.Thread(target=server.serve, daemon=True).start()
    control.send(server.port)
    while True:
        command = control.recv()
        if command == "counts":
            control.send(server.counts)
        elif command == "reset":
            server.counts = Counts()
            control.send(None)
        else:
            return


class DelayProxy:
    """A proxy process: `port` to connect to, `counts()` and `reset()` of its chunk counts."""

    def __init__(self, control: Connection, port: int) -> None:
        self._control = control
        self.port = port

    def counts(self) -> Counts:
        self._control.send("counts")
        counts: Counts = self._control.recv()
        return counts

    def reset(self) -> None:
        self._control.send("reset")
        self._control.recv()


@contextmanager
def delay_proxy(upstream_port: int, delay: float) -> Iterator[DelayProxy]:
    """A proxy to 127.0.0.1:`upstream_port` holding each chunk `delay` seconds each way."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_run, args=(upstream_port, delay, theirs), daemon=True
    )
    process.start()
    try:
        yield DelayProxy(ours, ours.recv())
    finally:
        ours.send("stop")
        process.join(5)
        if process.is_alive():
            process.kill()
