"""The registry: queues, workers, typed jobs and drivers, registered once and then frozen.

    registry = Registry()
    registry.queue("mail", workers=["main"], retry=5)
    registry.worker("main", concurrency=20)

    @registry.job("mail.send", queue="mail")
    async def send(job: Job[Email]) -> None: ...

    await send.push(Email(to="a@example.com"))                   # typed
    await registry.push("mail", "mail.send", {"to": "a@example.com"})  # by name

Pushing (or starting a worker) freezes the registry; `freeze()` does it explicitly, applies
the configuration (./conveyor.toml, the environment, the command line: `conveyor.config`) and
reports every mistake it finds, naming the item and the fix. A registry that declares no queue
has one implicitly: the default queue, served by a worker of the same name.

`Registry` is `RegistryCore` (`conveyor.core`) joined to what the core must not import: the
configuration, typed job handles, the blocking facade and the worker's inline runner for the
sync driver. The worker and the facade are written against the core, so imports run one way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from conveyor import config
from conveyor.blocking import BlockingRegistry
from conveyor.core import RegistryCore
from conveyor.errors import RegistryError
from conveyor.handle import JobDecorator, JobHandle, handle_for
from conveyor.inline import run_inline
from conveyor.options import Options
from conveyor.payload import DEFAULT_MAX_BYTES
from conveyor.registration import Effective
from conveyor.retry import RetryDelay
from conveyor.spec import NAME_PATTERN, JobSpec, QueueSpec, WorkerSpec, check_name

__all__ = [
    "NAME_PATTERN",
    "JobSpec",
    "QueueSpec",
    "Registry",
    "WorkerSpec",
    "check_name",
]


class Registry(RegistryCore):
    """Holds what an application registers, and pushes and inspects jobs once frozen."""

    def __init__(
        self,
        *,
        default_driver: str | None = None,
        default_queue: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """`default_driver` is the driver of queues that name none: a URL, a registered name
        or "database" (default: the SQLite file conveyor.db). `default_queue` is the queue a
        job handle pushes to when neither it nor the push names one (default: "default").
        The configuration file and the environment (CONVEYOR_DRIVER, QUEUE_DRIVER,
        QUEUE_DEFAULT, ...) win over both; see docs/configuration.md."""
        super().__init__(
            default_driver=default_driver,
            default_queue=default_queue,
            max_payload_bytes=max_payload_bytes,
        )
        self._request = config.Request()
        self._blocking: BlockingRegistry | None = None

    def configure(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Iterable[config.Override] = (),
    ) -> None:
        """Say where the configuration comes from, before freeze() applies it: the file
        `path` (else CONVEYOR_CONFIG, else ./conveyor.toml, else pyproject.toml's
        [tool.conveyor]), `environ` instead of os.environ, and the command line's
        `overrides`, added to any given before. Only what is given changes."""
        if self._frozen:
            raise RegistryError(
                "cannot configure: the registry is frozen; configure it before the first "
                "push, worker or freeze()"
            )
        request = self._request
        self._request = config.Request(
            path=request.path if path is None else path,
            environ=request.environ if environ is None else environ,
            overrides=(*request.overrides, *overrides),
        )

    def _effective(self) -> Effective:
        return config.apply(self, self._request)

    def job(
        self,
        name: str,
        *,
        queue: str | None = None,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        meta: dict[str, Any] | None = None,
        payload: Any = None,
        keep_result: bool = False,
        chain: bool = False,
    ) -> JobDecorator:
        """Decorator registering a handler, `async def` or plain, taking one `Job[T]`, and
        returning its typed handle: `await send.push(Email(...))`, `send.blocking.push(...)`,
        and `await send(job)` (or `send(job)`) runs the handler itself, as a test would.

        The payload type T comes from the annotation (dataclass, pydantic model, TypedDict or
        dict), or from `payload=` when given. `queue` is where the handle pushes unless told
        otherwise (default: the registry's default queue). With `keep_result`, the handler's
        return value (anything pydantic can write as JSON) is kept with the job, for
        `registry.result(job_id)`. With `chain`, the job is a page of a cursor-chained job
        (see conveyor.chain): its handler returns the next page's cursor, or None at the end,
        and `registry.start_chain` starts one."""
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )
        register = self.register_job(
            name,
            queue=queue,
            options=options,
            payload=payload,
            keep_result=keep_result,
            chain=chain,
        )

        def make(handler: Any) -> JobHandle[Any]:
            spec: JobSpec = register(handler)
            return handle_for(self, spec, lambda: self.blocking)

        return JobDecorator(make)

    @property
    def blocking(self) -> BlockingRegistry:
        """The same API for code without an event loop: `registry.blocking.push(...)`."""
        if self._blocking is None:
            self._blocking = BlockingRegistry(self)
        return self._blocking

    async def _run_inline(self, queue: str) -> None:
        await run_inline(self, queue)
