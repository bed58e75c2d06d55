"""Command deadlines of the Redis driver, kept by one timer for all of a driver's calls.

Every call the driver makes on the event loop has the same deadline, `timeout` seconds after
it starts (connection.COMMAND_TIMEOUT, or the URL's `?timeout=`). `asyncio.timeout` would do,
but it schedules a timer for each call and cancels it after, about 20 µs of Python per call
on a loaded machine, the largest part of a single push's own cost after its JSON. Here a call
only joins a list on entry and leaves it on exit; one timer, due at the oldest call's
deadline, cancels the calls past theirs and is then set for the next oldest (the calls are in
order of their deadlines, all being as long). No call in flight, no timer: an idle driver
wakes nobody.

What a call past its deadline sees is what `asyncio.timeout` gives: its task is cancelled
where it waits, and the CancelledError becomes TimeoutError as it leaves the call, unless the
task was also cancelled from outside (then the CancelledError goes on, as it must).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Deadline", "Deadlines"]


class Deadline:
    """One call's place among the calls in flight (see the module docstring)."""

    __slots__ = ("_cancelling", "_deadlines", "_expired", "_task", "at")

    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines
        self._expired = False
        self._task: asyncio.Task[object]
        self._cancelling = 0
        #: The loop's time past which the call is cancelled (set on entry).
        self.at = 0.0

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Redis command must run in a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._deadlines.join(self)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._deadlines.leave(self)
        # As asyncio.timeout: ours was the cancellation, unless another came from outside.
        expired = self._expired and self._task.uncancel() <= self._cancelling
        if expired and kind is asyncio.CancelledError:
            raise TimeoutError from exc

    def expire(self) -> None:
        """Cancel the call's task where it waits (the timer's part)."""
        self._expired = True
        self._task.cancel()


class Deadlines:
    """The calls in flight on one event loop, oldest first, and the one timer over them."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._calls: dict[Deadline, None] = {}  # in order of joining, so of deadline
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def call(self) -> Deadline:
        """The deadline of one call: `async with deadlines.call(): ...`."""
        return Deadline(self)

    def join(self, call: Deadline) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a driver opened again on another loop
            self._loop, self._timer = loop, None
            self._calls.clear()
        call.at = loop.time() + self.timeout
        self._calls[call] = None
        if self._timer is None:
            self._timer = loop.call_at(call.at, self._expire)

    def leave(self, call: Deadline) -> None:
        self._calls.pop(call, None)

    def _expire(self) -> None:
        """Cancel every call past its deadline, then wait for the next oldest, if any."""
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        for call in list(self._calls):
            if call.at > now:
                self._timer = self._loop.call_at(call.at, self._expire)
                return
            del self._calls[call]
            call.expire()
