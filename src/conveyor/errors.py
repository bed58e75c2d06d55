"""Every error conveyor raises, under one root.

    ConveyorError
    ├── RegistryError          a queue, worker, job or driver registered wrongly, or after freeze()
    ├── UnknownJobError        a job name nobody registered
    ├── UnknownQueueError      a queue name nobody registered
    ├── UnknownWorkerError     a worker name nobody registered
    ├── PayloadError           a payload that fails validation, is not JSON or is too large
    ├── ConfigError            malformed configuration or a bad driver URL
    ├── JobTimeoutError        recorded on a job whose handler ran past its timeout
    ├── LeaseExpiredError      recorded on a job that kept dying with the worker running it alone
    ├── CorruptJobError        recorded on a job whose stored record cannot be read
    ├── JobCancelledError      recorded on a job cancelled while it ran
    ├── JobFailedError         a job whose result was awaited failed or was cancelled, or
    │                          one pushed under conveyor.testing.use_sync failed for good
    ├── ChainExistsError       start_chain given the id of a chain started with other arguments
    └── DriverError            the backend failed; drivers translate their client's errors to these
        ├── BackendUnavailableError   the backend cannot be reached
        └── Unsupported               the driver cannot do this operation

A message names the offending item and says what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConveyorError(Exception):
    """The root of every error conveyor raises."""


class RegistryError(ConveyorError):
    """A queue, worker, job or driver was registered wrongly, or the registry is frozen."""


class UnknownJobError(ConveyorError):
    """A job name that no handler was registered for."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"no job named {name!r} is registered: decorate its handler with "
            f"@registry.job({name!r})"
        )
        self.name = name


class UnknownQueueError(ConveyorError):
    """A queue name that was never registered."""

    def __init__(
        self, name: str, message: str | None = None, *, registered: Iterable[str] | None = None
    ) -> None:
        named = "" if registered is None else f" (registered: {', '.join(registered) or 'none'})"
        super().__init__(
            message or f"no queue named {name!r}{named}: add it with registry.queue({name!r}, ...)"
        )
        self.name = name


class UnknownWorkerError(ConveyorError):
    """A worker name that was never registered."""

    def __init__(self, name: str, *, registered: Iterable[str] | None = None) -> None:
        named = "" if registered is None else f" (registered: {', '.join(registered) or 'none'})"
        super().__init__(
            f"no worker named {name!r}{named}: add it with registry.worker({name!r}, ...)"
        )
        self.name = name


class PayloadError(ConveyorError):
    """A payload that fails validation against its job's type, is not JSON, or is too large."""


class ConfigError(ConveyorError):
    """Malformed configuration: a bad value, file or driver URL."""


class JobTimeoutError(ConveyorError):
    """Recorded on a job whose handler ran longer than its timeout and was cancelled."""


class LeaseExpiredError(ConveyorError):
    """Recorded on a job whose worker stopped answering (crash, kill -9, out of memory) while it
    ran alone, until its attempts were used up: the likely cause of those deaths."""


class CorruptJobError(ConveyorError):
    """Recorded on a job whose stored record could not be read (a field damaged by hand, by
    another program or on disk); the job is failed without running, its raw record kept."""


class JobCancelledError(ConveyorError):
    """Recorded on a job cancelled while it ran (`registry.cancel`): not retried."""


class ChainExistsError(ConveyorError):
    """`start_chain` was given the `chain_id` of a chain that exists with another job, queue,
    payload or cursor: the start stored nothing (the id is the chain's first page's)."""

    def __init__(self, chain_id: str, message: str) -> None:
        super().__init__(message)
        self.chain_id = chain_id


class JobFailedError(ConveyorError):
    """`registry.result()` waited for a job that failed for good or was cancelled, or a push
    under `conveyor.testing.use_sync` ran a job that failed for good; the message names the
    job and its last error."""


class DriverError(ConveyorError):
    """The backend failed. Drivers translate their client library's errors to this tree."""


class BackendUnavailableError(DriverError):
    """The backend could not be reached (refused, timed out, lost)."""


class Unsupported(DriverError):
    """The driver cannot do this operation; the message names the driver and the operation."""

    def __init__(self, driver: str, operation: str, hint: str = "") -> None:
        message = f"the {driver!r} driver does not support {operation}"
        super().__init__(f"{message}: {hint}" if hint else message)
        self.driver = driver
        self.operation = operation
