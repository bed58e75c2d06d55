"""Typed job handles: what `@registry.job(...)` returns.

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    await send.push(Email(to="a@example.com"), delay=5)  # mypy checks the payload's type
    await send.push_many([Email(...), Email(...)])
    send.blocking.push(Email(...))                       # from code without an event loop
    await send(job)                                      # still the handler, for unit tests

A handle pushes to the queue it is given, else to its own `queue=`, else to the registry's
default queue (QUEUE_DEFAULT, else "default"). The string form, `registry.push("mail",
"mail.send", ...)`, keeps working; its payload is checked only when it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from conveyor.errors import UnknownQueueError
from conveyor.job import Job

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from conveyor.blocking import BlockingRegistry
    from conveyor.core import RegistryCore
    from conveyor.options import PushManyOptions, PushOptions
    from conveyor.spec import JobSpec

__all__ = ["AsyncJobHandle", "BlockingJobHandle", "JobDecorator", "JobHandle", "PlainJobHandle"]

T = TypeVar("T")


class JobHandle(Generic[T]):
    """A registered job whose pushes are type-checked: `await send.push(Email(...))`.

    `name` is the job's name, `queue` the queue given to the decorator (None: the registry's
    default queue) and `handler` the function it decorated."""

    def __init__(
        self, registry: RegistryCore, spec: JobSpec, facade: Callable[[], BlockingRegistry]
    ) -> None:
        functools.update_wrapper(self, spec.handler)  # type: ignore[arg-type]  # __name__, __doc__
        self.name = spec.name
        self.queue = spec.queue
        self.handler = spec.handler
        self._registry = registry
        self._facade = facade

    def __repr__(self) -> str:
        return f"<JobHandle {self.name!r} queue={self.queue!r}>"

    def queue_for(self, queue: str | None = None) -> str:
        """The queue a push goes to: `queue`, else the handle's own, else the registry's
        default queue (as settled by freeze(), which this calls)."""
        if queue is not None:
            return queue
        if self.queue is not None:
            return self.queue
        self._registry.freeze()
        default = self._registry.default_queue
        if default not in self._registry.queues:
            raise UnknownQueueError(
                default,
                f"job {self.name!r} names no queue and the default queue {default!r} is not "
                f"registered: give @registry.job({self.name!r}, queue=...) or push(..., queue=...)",
            )
        return default

    async def push(
        self, payload: T, *, queue: str | None = None, **options: Unpack[PushOptions]
    ) -> str:
        """Push one job and return its id; the options are `Registry.push`'s."""
        return await self._registry.push(self.queue_for(queue), self.name, payload, **options)

    async def push_many(
        self, payloads: Iterable[T], *, queue: str | None = None, **options: Unpack[PushManyOptions]
    ) -> list[str]:
        """Push one job per payload, all or none per chunk (any iterable, read a chunk at a
        time); the options are `Registry.push_many`'s."""
        return await self._registry.push_many(self.queue_for(queue), self.name, payloads, **options)

    @property
    def blocking(self) -> BlockingJobHandle[T]:
        """The same pushes for code without an event loop: `send.blocking.push(...)`."""
        return BlockingJobHandle(self, self._facade())


class AsyncJobHandle(JobHandle[T]):
    """The handle of an `async def` handler; calling it runs the handler: `await send(job)`."""

    def __call__(self, job: Job[T]) -> Coroutine[Any, Any, Any]:
        """Run the handler on `job` directly, as a test would; awaited, what it returned (a
        chain page's next cursor, a kept result)."""
        result: Coroutine[Any, Any, Any] = self.handler(job)
        return result


class PlainJobHandle(JobHandle[T]):
    """The handle of a plain `def` handler; calling it runs the handler: `send(job)`."""

    def __call__(self, job: Job[T]) -> Any:
        """Run the handler on `job` directly, as a test would; what it returned (a chain
        page's next cursor, a kept result)."""
        return self.handler(job)


class BlockingJobHandle(Generic[T]):
    """A handle's pushes, blocking until stored: `send.blocking.push(Email(...))`."""

    def __init__(self, handle: JobHandle[T], facade: BlockingRegistry) -> None:
        self._handle = handle
        self._facade = facade

    def push(self, payload: T, *, queue: str | None = None, **options: Unpack[PushOptions]) -> str:
        """`JobHandle.push`, blocking."""
        name = self._handle.name
        return self._facade.push(self._handle.queue_for(queue), name, payload, **options)

    def push_many(
        self, payloads: Iterable[T], *, queue: str | None = None, **options: Unpack[PushManyOptions]
    ) -> list[str]:
        """`JobHandle.push_many`, blocking."""
        name = self._handle.name
        return self._facade.push_many(self._handle.queue_for(queue), name, payloads, **options)


class JobDecorator:
    """What `registry.job(...)` returns: applied to a handler, it registers the handler and
    returns its handle, typed by the handler's `Job[T]` annotation."""

    def __init__(self, make: Callable[[Callable[..., Any]], JobHandle[Any]]) -> None:
        self._make = make

    # A handler may return a value: a chain page its next cursor, a job with keep_result=True
    # its result.
    @overload
    def __call__(
        self, handler: Callable[[Job[T]], Coroutine[Any, Any, Any]]
    ) -> AsyncJobHandle[T]: ...

    @overload
    def __call__(self, handler: Callable[[Job[T]], Any]) -> PlainJobHandle[T]: ...

    def __call__(self, handler: Callable[..., Any]) -> JobHandle[Any]:
        return self._make(handler)


def handle_for(
    registry: RegistryCore, spec: JobSpec, facade: Callable[[], BlockingRegistry]
) -> JobHandle[Any]:
    """The handle of a registered job: async or plain, as its handler is."""
    kind: type[JobHandle[Any]] = AsyncJobHandle if spec.is_async else PlainJobHandle
    return kind(registry, spec, facade)
