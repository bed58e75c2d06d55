"""What `RegistryCore.overview()` returns: every registered queue and worker as read in one go,
for `conveyor list`, the dashboard and the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.drivers.base import QueueCounts, WorkerCounts, WorkerPresence

__all__ = ["Overview"]


@dataclass(slots=True)
class Overview:
    """Every registered queue and worker as `RegistryCore.overview()` read them: the queues
    whose backend answered, and for each queue whose backend could not be reached, why."""

    counts: dict[str, QueueCounts] = field(default_factory=dict)
    #: Queues that are paused, and those whose backend can pause them (amqp's cannot).
    paused: set[str] = field(default_factory=set)
    controlled: set[str] = field(default_factory=set)
    #: Totals of every registered worker over the backends that answered.
    workers: dict[str, WorkerCounts] = field(default_factory=dict)
    #: Worker processes heard from recently, oldest first.
    alive: list[WorkerPresence] = field(default_factory=list)
    #: Queue -> why its backend could not be read (its counts are missing above).
    down: dict[str, str] = field(default_factory=dict)
    #: Queues whose backend does not count delayed jobs (0 above), and those whose workers'
    #: totals and processes only the worker's own process sees (amqp: docs/drivers.md).
    uncounted: set[str] = field(default_factory=set)
    unshared: set[str] = field(default_factory=set)
    #: Queue -> why its backend holds no job yet (Driver.unmade: read as empty, not created).
    unmade: dict[str, str] = field(default_factory=dict)
