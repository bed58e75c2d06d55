"""No `os.fork()` while an SQLite statement runs in this process.

SQLite keeps the locks of every connection a process has to a file in one table of that
process (the "inode" and WAL-index lock bookkeeping), which a forked child inherits. A child
forked while another thread of its parent was inside a write (a blocking push from a request
thread, the worker's database thread reserving) finds that write lock noted as held by a
connection of its own, which never lets it go: every write of the child, on connections it
opened itself, then waits out the busy timeout and fails ("stayed locked for 30s"), for as long
as the child lives. So each statement (and transaction) runs under `GUARD.statement()`, and a
fork waits until none runs (at most BUSY_TIMEOUT and a second: a statement waits no longer for
another process's lock) and starts none until it is done. Statements of different threads
still run side by side; the guard costs two uncontended lock turns a statement.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

__all__ = ["GUARD", "ForkGuard"]


class ForkGuard:
    """Counts the statements running; a fork waits for none to run, and holds new ones."""

    def __init__(self, wait: float) -> None:
        self._wait = wait
        self._ready = threading.Condition(threading.Lock())
        self._running = 0
        self._forking = False

    @contextlib.contextmanager
    def statement(self) -> Iterator[None]:
        """Run the body as one statement (or transaction) a fork does not cut in two."""
        with self._ready:
            while self._forking:
                self._ready.wait()
            self._running += 1
        try:
            yield
        finally:
            with self._ready:
                self._running -= 1
                if not self._running:
                    self._ready.notify_all()

    def before_fork(self) -> None:
        """Hold new statements and wait (up to the guard's wait) for running ones to end; the
        lock stays held through the fork, released by `after_fork_in_parent`."""
        self._ready.acquire()
        self._forking = True
        deadline = time.monotonic() + self._wait
        while self._running and (left := deadline - time.monotonic()) > 0:
            self._ready.wait(left)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._ready.notify_all()
        self._ready.release()

    def after_fork_in_child(self) -> None:
        """The parent's statements are not this process's: none runs here."""
        self._ready = threading.Condition(threading.Lock())
        self._running = 0
        self._forking = False


#: The guard of every SQLite connection conveyor opens (the busy timeout is BUSY_TIMEOUT).
GUARD = ForkGuard(31.0)

if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(
        before=GUARD.before_fork,
        after_in_parent=GUARD.after_fork_in_parent,
        after_in_child=GUARD.after_fork_in_child,
    )
