"""The event loop conveyor's commands run on: asyncio's own (the default) or uvloop's, an
opt-in (`pip install "conveyor[uvloop]"`, then `conveyor work --loop uvloop`).

uvloop is libuv under asyncio's API: the same code runs on it, its sockets and callbacks cost
less, so a worker whose jobs are short spends less of each job in the loop. docs/benchmarks.md
has what it gains here. In your own program, pass `loop_factory("uvloop")` to
`asyncio.Runner` (or call `uvloop.run`); conveyor itself needs nothing more.

A registry's drivers belong to the loop that opened them (`refuse_other_loop`), and are closed
as that loop shuts down (`LoopEnd`): `asyncio.run(registry.push(...))` twice, or followed by the
blocking facade, opens them anew each time rather than use connections of an ended loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from conveyor.errors import ConfigError, RegistryError

__all__ = [
    "LOOPS",
    "LoopEnd",
    "loop_factory",
    "loop_of_this_thread",
    "made_by_facade",
    "refuse_other_loop",
    "run",
]

T = TypeVar("T")

#: The loops a command can run on, the default first.
LOOPS = ("asyncio", "uvloop")

#: The loops the blocking facade runs in threads of its own (conveyor.blocking).
_facade_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a new loop of kind `name`, for `asyncio.Runner`: None for asyncio's own
    default, uvloop's `new_event_loop` for uvloop. ConfigError for another name, or for
    uvloop when it is not installed (naming the extra to install)."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise ConfigError(f"event loop {name!r} is not known: use one of {', '.join(LOOPS)}")
    try:
        import uvloop
    except ImportError:
        raise ConfigError(
            'the uvloop event loop needs uvloop: pip install "conveyor[uvloop]"'
        ) from None
    return uvloop.new_event_loop


def run(coroutine: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """`asyncio.run(coroutine)`, on a new loop of kind `loop`."""
    try:
        factory = loop_factory(loop)
    except ConfigError:
        coroutine.close()  # never awaited: say nothing of it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def refuse_other_loop(owner: asyncio.AbstractEventLoop | None) -> None:
    """RegistryError when the registry's drivers were opened on `owner`, a loop still running
    in another thread (a worker's), and this call runs on a loop of its own (`asyncio.run` in
    a plain handler): their connections belong to `owner`, and used from another loop they
    break it (redis: the worker's next call fails with "Event loop is closed")."""
    if owner is None or owner is asyncio.get_running_loop() or not owner.is_running():
        return  # the common case first: one test per call of the registry's
    if owner in _facade_loops:
        return  # code outside any loop that also runs the async API (conveyor.testing's run_all)
    raise RegistryError(
        "this registry's drivers were opened on an event loop that runs in another thread (a"
        " worker's), so it cannot be awaited on a loop of its own (asyncio.run(...) in a plain"
        " handler): call registry.blocking (registry.blocking.push(...)), which runs the call"
        " on that loop"
    )


def loop_of_this_thread() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any. Under gevent's or eventlet's monkey
    patching (gunicorn -k gevent, celery -P gevent) threads are greenlets of one OS thread,
    while asyncio keeps its running loop per OS thread: every greenlet would see the loop that
    another one runs (the blocking facade's, a worker's) as its own, and the facade refused
    them all (IN_LOOP). A loop notes the thread that runs it (`_thread_id`, the greenlet's
    when patched): a loop of another's is not this thread's. One that does not note it
    (uvloop) is taken to be this thread's, as it is without patching."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    runner = getattr(loop, "_thread_id", None)
    return loop if runner is None or runner == threading.get_ident() else None


def made_by_facade(loop: asyncio.AbstractEventLoop) -> None:
    """Note `loop` as the blocking facade's own: `refuse_other_loop` lets other loops use the
    drivers it opened, as a test outside any loop does (`asyncio.run(queues.run_all())`)."""
    _facade_loops.add(loop)


async def _nothing() -> None:
    """What a LoopEnd closes before it is told what."""


class LoopEnd:
    """Closes a registry's drivers as the event loop that opened them shuts down. `asyncio.run`
    (and `asyncio.Runner`, pytest-asyncio's loops, `conveyor.loop.run`) closes each async
    generator a loop started before closing the loop; `bind` starts one whose `finally` awaits
    `close` there, while the loop can still run it. Without it the drivers stayed open on an
    ended loop: the next `asyncio.run(registry.push(...))` failed with "Event loop is closed"
    (redis) or "attached to a different loop" (mysql), and the facade with a RegistryError,
    at exit too. A loop closed without that step (`loop.close()` alone) closes nothing.

    The blocking facade's loops get none: the facade closes what it opened (`close()`)."""

    def __init__(self) -> None:
        #: What the loop's end awaits (RegistryCore's close).
        self.close: Callable[[], Awaitable[None]] = _nothing
        #: The generator's token while one is armed: it closes only while still the one armed.
        self._armed: object | None = None
        #: The generators not finished yet, held: a loop holds its generators weakly.
        self._held: list[AsyncIterator[None]] = []

    async def bind(self) -> asyncio.AbstractEventLoop:
        """The running loop, now closing the drivers at its end (unless the facade's)."""
        loop = asyncio.get_running_loop()
        if self._armed is None and loop not in _facade_loops:
            token = self._armed = object()
            guard = self._closing(token)
            self._held = [*(held for held in self._held if _unfinished(held)), guard]
            await anext(guard)
        return loop

    def unbind(self) -> None:
        """The drivers are closed (or belong to a parent process): the armed generator, if
        any, closes nothing; the next `bind` arms one anew."""
        self._armed = None

    async def _closing(self, token: object) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._armed is token:
                self._armed = None
                await self.close()


def _unfinished(generator: AsyncIterator[None]) -> bool:
    return getattr(generator, "ag_frame", None) is not None
