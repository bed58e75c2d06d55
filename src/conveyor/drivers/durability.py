"""What survives a crash on each driver: the one table docs/reliability.md is checked against.

A row says what becomes of a job whose `push` returned when the process that pushed dies, when
the database server's process dies, when the operating system crashes, and when the power is
cut. Where a server setting decides (postgres, mysql, redis), there is a row per setting, and
`Driver.durability()` names the row in force by reading the server. Only pushes are covered:
reserves and settles may be relaxed (postgres, sqlite), which never loses a job, only makes one
run again.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FACTS", "IN_PROCESS", "Durability", "facts_of", "losses"]

#: The setting of the drivers that keep jobs in the process's memory (memory, sync).
IN_PROCESS = "in this process"

KEPT = "kept"
LOST = "lost"
NO_SERVER = "(no server)"
SECOND = "last ~1 s lost"
WAL_WRITER = "last ~0.6 s lost"  # 3 x wal_writer_delay (200 ms)
SNAPSHOT = "all since the last snapshot"
ANYTHING = "any, even the database"


@dataclass(frozen=True, slots=True)
class Durability:
    """What becomes of a pushed job after each kind of crash, under one setting of a driver."""

    kind: str
    #: As `Driver.durability()` reports it: "synchronous=FULL", "appendfsync everysec", ...
    setting: str
    app_crash: str
    server_crash: str
    os_crash: str
    power_cut: str


FACTS: tuple[Durability, ...] = (
    Durability("memory", IN_PROCESS, LOST, NO_SERVER, LOST, LOST),
    Durability("sync", IN_PROCESS, LOST, NO_SERVER, LOST, LOST),
    Durability("sqlite", "synchronous=FULL", KEPT, NO_SERVER, KEPT, KEPT),
    Durability("postgres", "synchronous_commit=on", KEPT, KEPT, KEPT, KEPT),
    Durability("postgres", "synchronous_commit=off", KEPT, WAL_WRITER, WAL_WRITER, WAL_WRITER),
    Durability("postgres", "fsync=off", KEPT, KEPT, ANYTHING, ANYTHING),
    Durability("mysql", "innodb_flush_log_at_trx_commit=1, binlog off", KEPT, KEPT, KEPT, KEPT),
    Durability("mysql", "innodb_flush_log_at_trx_commit=1, sync_binlog=1", KEPT, KEPT, KEPT, KEPT),
    Durability(
        "mysql",
        "innodb_flush_log_at_trx_commit=1, sync_binlog=0",
        KEPT,
        KEPT,
        "unsynced binlog tail lost",
        "unsynced binlog tail lost",
    ),
    Durability("mysql", "innodb_flush_log_at_trx_commit=2", KEPT, KEPT, SECOND, SECOND),
    Durability("mysql", "innodb_flush_log_at_trx_commit=0", KEPT, SECOND, SECOND, SECOND),
    Durability("redis", "appendonly no", KEPT, SNAPSHOT, SNAPSHOT, SNAPSHOT),
    Durability("redis", "appendfsync always", KEPT, KEPT, KEPT, KEPT),
    Durability("redis", "appendfsync everysec", KEPT, KEPT, "last ~1-2 s lost", "last ~1-2 s lost"),
    Durability("redis", "appendfsync no", KEPT, KEPT, "last ~30 s lost", "last ~30 s lost"),
    Durability("amqp", "persistent, confirmed", KEPT, KEPT, KEPT, KEPT),
)


def facts_of(kind: str, setting: str) -> Durability | None:
    """The row for a driver kind under a setting, or None for a setting the table lacks."""
    return next((row for row in FACTS if (row.kind, row.setting) == (kind, setting)), None)


#: The setting that keeps every push through every crash, per server kind.
_SAFE = {
    "postgres": "synchronous_commit = on (and fsync = on)",
    "mysql": "innodb_flush_log_at_trx_commit = 1, and sync_binlog = 1 if the binary log is on",
    "redis": "appendonly yes with appendfsync always",
}


def losses(kind: str, setting: str) -> list[str]:
    """What a crash loses of the jobs pushed under `setting`, said with the setting that keeps
    them, for a worker to log at start; [] where every crash keeps them, for a setting the
    table lacks, and for the in-process drivers (losing jobs with the process is their point)."""
    row = facts_of(kind, setting)
    if row is None or setting == IN_PROCESS:
        return []
    crashes = (
        ("a crash of the server", row.server_crash),
        ("a crash of its machine", row.os_crash),
        ("a power cut", row.power_cut),
    )
    by_fate: dict[str, list[str]] = {}
    for crash, fate in crashes:
        if fate not in (KEPT, NO_SERVER):
            by_fate.setdefault(fate, []).append(crash)
    if not by_fate:
        return []
    lost = "; ".join(f"{_either(crash)} ({fate})" for fate, crash in by_fate.items())
    return [
        f"{kind} runs with {setting}: a returned push is not kept through {lost}; for jobs you"
        f" must not lose set {_SAFE.get(kind, 'the setting docs/reliability.md names')}"
        " (docs/reliability.md)"
    ]


def _either(items: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
