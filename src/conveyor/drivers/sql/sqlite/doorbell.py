"""How a push wakes the idle workers of other processes at once. SQLite has no signal between
processes: each driver that waits for jobs binds a Unix datagram socket in a folder beside the
database file (`jobs.db-wake/`), and a driver that pushed, released or retried jobs sends every
socket there one byte after its commit. A byte lost costs only the wait for the watcher's next
look at the file (watcher.py), which stays as the fallback: without Unix sockets (Windows), with
a folder that cannot be made, or a file that processes of several machines share.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable

__all__ = ["Doorbell", "Ringer", "folder_of"]

#: Seconds a ringer keeps its list of sockets while the folder's mtime stays the same: a socket
#: bound within the same clock tick as the last listing leaves the mtime as it was.
RELIST_EVERY = 1.0

#: The longest socket address Linux and macOS take (sun_path), less its terminating NUL.
_MAX_ADDRESS = 103

#: The longest name a socket gets in the folder: the process id in hex, a dot, 4 hex digits.
_NAME = 11


def folder_of(path: str) -> str:
    """The folder of the sockets of the workers waiting on the database file `path`: beside it,
    or, where that would make an address too long, in the temporary folder under a name made
    of the file's path (the same in every process of the machine that shares that folder)."""
    beside = f"{path}-wake"
    if len(os.fsencode(beside)) + 1 + _NAME <= _MAX_ADDRESS:
        return beside
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"conveyor-wake-{digest}")


class Doorbell:
    """A waiting driver's socket; `notify` runs in the event loop each time it rings."""

    def __init__(self, path: str) -> None:
        self._folder = folder_of(path)
        self._socket: socket.socket | None = None
        self._address = ""
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tried = False

    def open(self, notify: Callable[[], None]) -> None:
        """Bind the socket and listen on the running loop: tried once until `close`, and
        quietly nothing where it cannot be done (the watcher's looks remain)."""
        if self._tried or not hasattr(socket, "AF_UNIX"):
            return
        self._tried = True
        address = os.path.join(self._folder, f"{os.getpid():x}.{secrets.token_hex(2)}")
        if len(os.fsencode(address)) > _MAX_ADDRESS:
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            os.makedirs(self._folder, exist_ok=True)
            listener.setblocking(False)
            listener.bind(address)
        except OSError:
            listener.close()
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(listener.fileno(), _rang, listener, notify)
        self._socket, self._address, self._pid = listener, address, os.getpid()

    def close(self) -> None:
        """Stop listening and remove the socket (not in a forked child: it is the parent's)."""
        listener, self._socket, self._tried = self._socket, None, False
        if listener is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError, ValueError):  # another thread's loop
                self._loop.remove_reader(listener.fileno())
        listener.close()
        if self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self._address)


def _rang(listener: socket.socket, notify: Callable[[], None]) -> None:
    with contextlib.suppress(OSError):  # BlockingIOError once every byte is read
        while listener.recv(64):
            pass
    notify()


class Ringer:
    """Rings every socket in the folder: from the event loop or from plain threads."""

    def __init__(self, path: str) -> None:
        self._folder = folder_of(path)
        self._addresses: tuple[str, ...] = ()
        self._listed: tuple[int, float] | None = None  # the folder's mtime, monotonic time
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def ring(self) -> None:
        """One byte to each waiting driver; a dead process's socket is removed."""
        try:
            mtime = os.stat(self._folder).st_mtime_ns
        except OSError:
            return  # no driver has waited on this file
        listed, now = self._listed, time.monotonic()
        if listed is None or listed[0] != mtime or now - listed[1] > RELIST_EVERY:
            with contextlib.suppress(OSError):
                names = os.listdir(self._folder)
                self._addresses = tuple(os.path.join(self._folder, name) for name in names)
                self._listed = (mtime, now)
        for address in self._addresses:
            try:
                self._sender().sendto(b"\0", address)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(address)  # no socket bound there: its process has ended
            except OSError:
                pass  # its buffer is full (it has been rung already), or anything else

    def _sender(self) -> socket.socket:
        with self._lock:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            return self._socket

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
