"""conveyor: background jobs for Python.

Register queues, workers and typed jobs on a `Registry`, push jobs from your application, and
run `conveyor work WORKER --app module:registry` (or `Worker(registry, name).run()`).
"""

from conveyor.chain import ChainInfo
from conveyor.drivers.base import Capabilities, Driver, QueueCounts, Throughput, WorkerCounts
from conveyor.errors import (
    BackendUnavailableError,
    ChainExistsError,
    ConfigError,
    ConveyorError,
    CorruptJobError,
    DriverError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    LeaseExpiredError,
    PayloadError,
    RegistryError,
    UnknownJobError,
    UnknownQueueError,
    UnknownWorkerError,
    Unsupported,
)
from conveyor.handle import JobHandle
from conveyor.job import ErrorInfo, FailedAttempt, Job, JobInfo, JobState
from conveyor.registry import Registry
from conveyor.retry import Exponential, Fail, Fixed, Retry
from conveyor.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Capabilities",
    "ChainExistsError",
    "ChainInfo",
    "ConfigError",
    "ConveyorError",
    "CorruptJobError",
    "Driver",
    "DriverError",
    "ErrorInfo",
    "Exponential",
    "Fail",
    "FailedAttempt",
    "Fixed",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobHandle",
    "JobInfo",
    "JobState",
    "JobTimeoutError",
    "LeaseExpiredError",
    "PayloadError",
    "QueueCounts",
    "Registry",
    "RegistryError",
    "Retry",
    "Throughput",
    "UnknownJobError",
    "UnknownQueueError",
    "UnknownWorkerError",
    "Unsupported",
    "Worker",
    "WorkerCounts",
]
