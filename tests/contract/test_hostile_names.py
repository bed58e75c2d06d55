"""Hostile names, keys and meta: each is refused with a clear error or stored and read back
exactly, on every driver; none reaches a client library as something it chokes on.

Queue, job, worker and driver names are refused by the registry unless they match
NAME_PATTERN (1 to 128 of A-Z a-z 0-9 _ . : -); unique keys hold at most 256 characters and
no NUL or lone surrogate; meta must be UTF-8 JSON. Everything else (quotes, SQL and Lua
metacharacters, braces, colons, percent signs, newlines, astral characters, 10 kB meta) is
stored exactly. Names a driver is given directly, past the registry, are stored exactly too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor import ConfigError, Job, Registry, RegistryError
from conveyor.drivers.base import Driver, QueueCounts, WorkerCounts
from conveyor.job import ErrorInfo, JobState
from conveyor.registry import NAME_PATTERN
from tests.backends import needs

from .helpers import LONG_LEASE, failure_of, make_job, reservation

#: Text that means something to SQL, Lua, Redis keys, JSON, printf or a terminal.
HOSTILE = [
    "it's",
    'say "hi"',
    "'; DROP TABLE conveyor_jobs; --",
    "x' OR '1'='1",
    "%s %(now)s %% %d",
    "$1 ? :name @var",
    "{q}",
    "}{",
    "a:b::c:",
    "line\nbreak\r\nand\ttab",
    "back\\slash\\",
    "redis.call('FLUSHALL')",
    "]]..[[ --[==[",
    "KEYS[1] ARGV[1]",
    "*?[abc]",
    "ünïcødé ÆØÅ",
    "😀 astral 𝄞 𠜎",
    "zero\u200bwidth \u2028 \ufeff",
    "\x01\x1f\x7f control",
]

#: 10 kB of text with a bit of everything in it.
BIG = ("'\"{}:%\n😀é" * 1000)[:10_000]


def registry_on(driver: Driver, *, queue: str = "q", job: str = "j", worker: str = "w") -> Registry:
    """A registry whose only queue is stored by `driver`, with one job taking a dict."""
    registry = Registry(default_driver="memory")
    registry.queue(queue, driver=driver, workers=[worker])
    registry.worker(worker)

    @registry.job(job)
    async def handle(job: Job[dict[str, Any]]) -> None:
        """Never run: the tests reserve through the driver."""

    return registry


async def reserve_one(driver: Driver, queue: str = "q", worker: str = "w") -> Any:
    jobs = await driver.reserve([queue], 1, LONG_LEASE, worker)
    assert len(jobs) == 1
    return jobs[0]


# -- names: the registry refuses what is not in its alphabet ------------------------------

#: Every hostile text but those of the alphabet alone ("a:b::c:" is a fine name), and more.
REFUSED_NAMES = [
    *(text for text in HOSTILE if not NAME_PATTERN.fullmatch(text)),
    *("", " ", "a b", "a\0b", "q\ud800", "é", "q/x", "x" * 129, "q" * 10_000),
]


@pytest.mark.parametrize("name", REFUSED_NAMES)
@pytest.mark.parametrize("kind", ["queue", "worker", "job", "driver"])
def test_registry_refuses_names_outside_its_alphabet(kind: str, name: str) -> None:
    registry = Registry(default_driver="memory")
    register = {
        "queue": lambda: registry.queue(name, workers=["w"]),
        "worker": lambda: registry.worker(name),
        "job": lambda: registry.job(name),
        "driver": lambda: registry.driver(name, "memory"),
    }[kind]

    with pytest.raises(RegistryError, match=f"^{kind} name .* is not valid: use 1 to 128"):
        register()


@needs("exact_counts")
async def test_names_at_the_edge_of_the_alphabet_work_end_to_end(driver: Driver) -> None:
    edge = ("Az09_.:-" * 16)[:128]
    names = {kind: f"{kind[0]}{edge}"[:128] for kind in ("queue", "job", "worker")}
    assert all(NAME_PATTERN.fullmatch(name) for name in names.values())
    registry = registry_on(driver, **names)

    job_id = await registry.push(names["queue"], names["job"], {"n": 1})
    job = await reserve_one(driver, names["queue"], names["worker"])
    await driver.ack([reservation(job)])
    await driver.record_stats(names["worker"], WorkerCounts(processed=1, succeeded=1))

    assert (job.id, job.queue, job.name, job.worker) == (
        job_id,
        names["queue"],
        names["job"],
        names["worker"],
    )
    assert (await driver.worker_stats())[names["worker"]] == WorkerCounts(1, 1, 0, 0)
    assert await driver.counts([names["queue"]]) == {names["queue"]: QueueCounts(succeeded=1)}


# -- unique keys -------------------------------------------------------------------------------


@needs("lookup")
@needs("unique")
async def test_hostile_unique_keys_are_stored_exactly_and_keep_apart(driver: Driver) -> None:
    registry = registry_on(driver)
    keys = [*HOSTILE, "k", "k ", "K", "😀" * 256, "'" * 256]

    first = [await registry.push("q", "j", {}, unique=key) for key in keys]
    again = [await registry.push("q", "j", {}, unique=key) for key in keys]

    assert again == first and len(set(first)) == len(keys)
    for key, job_id in zip(keys, first, strict=True):
        stored = await driver.get(job_id)
        assert stored is not None and stored.unique == key


@needs("unique")
async def test_a_unique_key_is_free_again_after_its_job_finishes(driver: Driver) -> None:
    registry = registry_on(driver)
    key = "'; DELETE FROM jobs; --{q}:%s\n😀"

    first = await registry.push("q", "j", {}, unique=key)
    await driver.ack([reservation(await reserve_one(driver))])
    second = await registry.push("q", "j", {}, unique=key)

    assert second != first


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("k\0a", "NUL character"),
        ("\0", "NUL character"),
        ("k\ud800", "lone surrogate"),
        ("\udfff", "lone surrogate"),
        ("x" * 257, "at most 256 characters"),
        (BIG, "at most 256 characters"),
        ("", "non-empty"),
    ],
)
async def test_unique_keys_no_driver_stores_exactly_are_refused(
    driver: Driver, key: str, says: str
) -> None:
    registry = registry_on(driver)

    with pytest.raises(ConfigError, match=says):
        await registry.push("q", "j", {}, unique=key)

    assert await driver.counts(["q"]) == {"q": QueueCounts()}


@needs("lookup")
@needs("unique")
async def test_keys_that_differ_after_a_nul_are_never_merged(driver: Driver) -> None:
    registry = registry_on(driver)
    stored = await registry.push("q", "j", {}, unique="k")

    for key in ("k\0a", "k\0b"):
        with pytest.raises(ConfigError, match="NUL"):
            await registry.push("q", "j", {}, unique=key)

    assert [job.id for job in await driver.list_jobs("q", JobState.PENDING)] == [stored]


# -- meta and payloads ---------------------------------------------------------------------------


@needs("lookup")
async def test_hostile_meta_keys_and_values_are_stored_exactly(driver: Driver) -> None:
    meta: dict[str, Any] = {text: text for text in HOSTILE}
    meta |= {"nul\0key": "nul\0value", BIG: BIG, "nested": {"a\0": [BIG, "😀", None, 1.5]}}
    registry = registry_on(driver)

    job_id = await registry.push("q", "j", {}, meta=meta)

    reserved = await reserve_one(driver)
    stored = await driver.get(job_id)
    assert reserved.meta == meta
    assert stored is not None and stored.meta == meta


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ({"a": "x\udc80"}, r"meta\['a'\]"),
        ({"\ud800": 1}, "meta key '\\\\ud800'"),
        ({"a": [1, {"b": "\ud800"}]}, r"meta\['a'\]\[1\]\['b'\]"),
    ],
)
async def test_meta_utf8_cannot_encode_is_refused_naming_where(
    driver: Driver, meta: dict[str, Any], where: str
) -> None:
    registry = registry_on(driver)

    with pytest.raises(ConfigError, match=f"{where} holds a lone surrogate"):
        await registry.push("q", "j", {}, meta=meta)
    with pytest.raises(ConfigError, match="lone surrogate"):
        await registry.push_many("q", "j", [{}, {}], meta=meta)

    assert await driver.counts(["q"]) == {"q": QueueCounts()}


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ({1: "a"}, "meta key 1"),
        ({None: 1, "null": 2}, "meta key None"),
        ({"a": [{"b": {True: 1}}]}, r"meta\['a'\]\[0\]\['b'\] key True"),
    ],
)
async def test_meta_keys_that_are_not_text_are_refused_naming_where(
    driver: Driver, meta: dict[Any, Any], where: str
) -> None:
    """JSON writes 1, None and True as the keys "1", "null" and "true": read back, they were
    other keys than pushed (or two keys one, an entry lost) on every driver but memory."""
    registry = registry_on(driver)

    with pytest.raises(ConfigError, match=f"{where} is not a string: JSON keys are text"):
        await registry.push("q", "j", {}, meta=meta)

    assert await driver.counts(["q"]) == {"q": QueueCounts()}


@needs("lookup")
async def test_payload_strings_with_nul_and_hostile_text_are_stored_exactly(
    driver: Driver,
) -> None:
    payload = {"nul": "a\0b", "big": BIG, **{f"k{i}": text for i, text in enumerate(HOSTILE)}}
    registry = registry_on(driver)

    ids = await registry.push_many("q", "j", [payload, {"nul\0key": "\0"}])

    stored = [await driver.get(job_id) for job_id in ids]
    assert [json.loads(job.payload) for job in stored if job] == [payload, {"nul\0key": "\0"}]


# -- past the registry: what a driver is handed directly -----------------------------------------


@pytest.mark.parametrize("name", HOSTILE[:-1])
@needs("lookup")
@needs("exact_counts")
async def test_a_driver_stores_hostile_queue_job_and_worker_names_exactly(
    driver: Driver, name: str
) -> None:
    job = make_job(queue=f"q{name}", name=f"j{name}", meta={name: name})
    await driver.push(job)

    reserved = await driver.reserve([job.queue], 1, LONG_LEASE, f"w{name}")
    await driver.fail([failure_of(reserved[0], ErrorInfo(name, name + BIG, name))])
    failed = await driver.list_jobs(job.queue, JobState.FAILED)
    await driver.record_stats(f"w{name}", WorkerCounts(processed=1, failed=1))

    assert [(j.id, j.queue, j.name, j.worker) for j in failed] == [
        (job.id, job.queue, job.name, f"w{name}")
    ]
    assert failed[0].error == ErrorInfo(name, name + BIG, name)
    assert failed[0].meta == {name: name}
    assert (await driver.counts([job.queue]))[job.queue] == QueueCounts(failed=1)
    assert (await driver.worker_stats())[f"w{name}"] == WorkerCounts(1, 0, 1, 0)
    assert await driver.retry_failed(job.queue) == 1
    assert await driver.purge(job.queue, JobState.PENDING) == 1


# -- ids looked up, cancelled, retried or purged -------------------------------------------------


@pytest.mark.parametrize("tail", ["\0x", "\0", "\ud800", "\udcff"])
@needs("lookup")
@needs("control")
async def test_an_id_no_job_can_have_names_no_job_and_never_another(
    driver: Driver, tail: str
) -> None:
    """A NUL or a lone surrogate (what argv holds for bytes that are not UTF-8) is in no stored
    id: such an id names no job, as an unknown one does. SQLite read 'ID\\0x' as 'ID' (purge
    deleted job ID); the others raised their client's error."""
    registry = registry_on(driver)
    failed_id = await registry.push("q", "j", {})
    await driver.fail([failure_of(await reserve_one(driver), ErrorInfo("E", "m", "t"))])
    job_id = await registry.push("q", "j", {})

    assert await registry.job_info(job_id + tail) is None
    assert await registry.list_jobs("q", JobState.PENDING, name="j" + tail) == []
    assert await registry.chain_info(job_id + tail) is None
    assert await registry.cancel(job_id + tail) is False
    assert await registry.purge("q", JobState.PENDING, [job_id + tail]) == 0
    assert await registry.purge("q", JobState.FAILED, [failed_id + tail]) == 0
    assert await registry.retry_failed("q", [failed_id + tail]) == 0

    assert await driver.counts(["q"]) == {"q": QueueCounts(pending=1, failed=1)}
    assert await registry.retry_failed("q", [failed_id + tail, failed_id]) == 1
    assert await registry.purge("q", JobState.PENDING, [job_id + tail, job_id]) == 1
