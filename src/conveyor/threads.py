"""The threads plain handlers run on: daemon threads of conveyor's own.

Not a ThreadPoolExecutor: the interpreter joins its threads at exit, so one handler that never
returns would hold a stopped worker's process open for as long as it runs. A daemon thread
ends with the process. Python cannot stop a thread, so the worker keeps a job whose handler
still runs reserved until its thread ends (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class Call:
    """One handler call handed to a thread: queued, then running, then finished; or cancelled
    while still queued, in which case it never runs."""

    def __init__(self, function: Callable[[Any], Any], argument: Any) -> None:
        self._function = function
        self._argument = argument
        # The caller's context variables (the job's trace span), as asyncio.to_thread passes.
        self._context = contextvars.copy_context()
        self._loop = asyncio.get_running_loop()
        #: Done once the thread has finished the call (never, if it was cancelled first).
        self.finished: asyncio.Future[None] = self._loop.create_future()
        self._state = "queued"
        self._lock = threading.Lock()
        self._result: Any = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        """True while a thread runs the handler: nothing can stop it then."""
        return self._state == "running"

    def cancel(self) -> bool:
        """Make sure a call no thread has taken yet never runs; False once it has started."""
        with self._lock:
            if self._state == "queued":
                self._state = "cancelled"
            return self._state == "cancelled"

    def result(self) -> Any:
        """What the handler returned, or the exception it raised, raised again."""
        if self._error is not None:
            raise self._error
        return self._result

    def run(self) -> None:
        """Run the handler in the calling thread, unless the call was cancelled."""
        with self._lock:
            if self._state != "queued":
                return
            self._state = "running"
        try:
            self._result = self._context.run(self._function, self._argument)
        except BaseException as exc:  # SystemExit too: the job's fault, reported on the loop
            self._error = exc
        with self._lock:
            self._state = "finished"
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(_finish, self.finished)


def _finish(finished: asyncio.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)


class HandlerThreads:
    """At most `size` daemon threads, started as calls need them, running calls in order."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: deque[Call] = deque()
        self._threads = 0
        self._idle = 0
        self._closed = False
        self._ready = threading.Condition()

    def submit(self, function: Callable[[Any], Any], argument: Any) -> Call:
        """Queue `function(argument)` for the next free thread; call from the event loop."""
        call = Call(function, argument)
        with self._ready:
            if self._closed:
                raise RuntimeError(f"threads {self._name} are closed")
            self._queue.append(call)
            if len(self._queue) > self._idle and self._threads < self._size:
                self._threads += 1
                threading.Thread(
                    target=self._serve, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
            self._ready.notify()
        return call

    def close(self) -> None:
        """Let idle threads end; a thread still running a handler ends when it returns."""
        with self._ready:
            self._closed = True
            for call in self._queue:
                call.cancel()
            self._queue.clear()
            self._ready.notify_all()

    def _serve(self) -> None:
        while (call := self._next()) is not None:
            call.run()

    def _next(self) -> Call | None:
        with self._ready:
            self._idle += 1
            while not self._queue and not self._closed:
                self._ready.wait()
            self._idle -= 1
            if not self._queue:
                self._threads -= 1
                return None
            return self._queue.popleft()
