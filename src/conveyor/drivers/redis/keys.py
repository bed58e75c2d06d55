"""Key names of the Redis driver, and the reservation tokens that name a job's queue.

The layout is drawn in driver.py's docstring. Every key of a queue shares the hash tag
`{queue}`, so on Redis Cluster a queue lives in one slot and each script touches one slot.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = ["SCRIPT_KEYS", "QueueKeys", "new_token", "queue_of"]

#: The KEYS each script takes, in order (each lua/<name>.lua documents them too).
SCRIPT_KEYS: dict[str, tuple[str, ...]] = {
    "push": ("pending", "delayed", "unique", "wake", "pending_ids"),
    "push_one": ("pending", "delayed", "wake", "pending_ids"),
    "reserve": ("pending", "delayed", "reserved", "wake", "pending_ids"),
    "renew": ("reserved",),
    "ack": ("reserved", "succeeded", "unique"),
    "release": ("pending", "delayed", "reserved", "wake", "pending_ids"),
    "fail": ("reserved", "failed", "unique", "cancelled", "failed_ids"),
    "retry": ("pending", "failed", "unique", "wake", "pending_ids", "failed_ids"),
    "purge": (
        "pending",
        "delayed",
        "succeeded",
        "failed",
        "unique",
        "cancelled",
        "pending_ids",
        "failed_ids",
    ),
    "prune": ("succeeded", "failed", "cancelled", "failed_ids"),
    "counts": ("pending", "delayed", "reserved", "succeeded", "failed", "cancelled"),
    "cancel": ("pending", "delayed", "cancelled", "unique", "pending_ids"),
}


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue; `job` is the prefix of its job hashes (job + id)."""

    job: str
    pending: str
    delayed: str
    reserved: str
    succeeded: str
    failed: str
    unique: str
    wake: str
    cancelled: str
    paused: str
    pending_ids: str
    failed_ids: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueKeys:
        """The keys of `queue` under `prefix`: `<prefix>{<queue>}:<name>`."""
        base = f"{prefix}{{{queue}}}:"
        names = (
            "job:", "pending", "delayed", "reserved", "succeeded", "failed", "unique", "wake",
            "cancelled", "paused", "pending_ids", "failed_ids",
        )  # fmt: skip
        return cls(*(base + name for name in names))

    def of_script(self, name: str) -> list[str]:
        """The KEYS of script `name` for this queue."""
        return [getattr(self, key) for key in SCRIPT_KEYS[name]]


def new_token(queue: str) -> str:
    """A fresh reservation token: 32 random hex digits, ':', and the queue. Settling calls
    carry only (id, token); the token tells which queue's keys to run the script on."""
    return f"{uuid.uuid4().hex}:{queue}"


def queue_of(token: str) -> str | None:
    """The queue a reservation token names, or None for a token `reserve` never made."""
    if len(token) < 33 or token[32] != ":":
        return None
    return token[33:]
