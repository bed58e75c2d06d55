"""Push options: precedence push > job > queue > default, merged meta, validation, delay."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from conveyor import ConfigError, Exponential, Fixed, Job, JobInfo, JobState, Registry
from conveyor.options import DEFAULT_PRIORITY, DEFAULT_RETRY, DEFAULT_TIMEOUT
from conveyor.retry import to_json

OPTIONS = ("retry", "retry_delay", "timeout", "priority")


def make_registry(queue_options: dict[str, Any], job_options: dict[str, Any]) -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("q", workers=["w"], **queue_options)
    registry.worker("w")

    @registry.job("j", **job_options)
    async def handler(job: Job[dict[str, Any]]) -> None: ...

    return registry


async def stored(registry: Registry, **push_options: Any) -> JobInfo:
    """Push one job with `push_options` and return it as the driver stored it."""
    job_id = await registry.push("q", "j", {}, **push_options)
    info = await registry.job_info(job_id)
    assert info is not None
    return info


# Values per level: queue, job, push. Each is distinct so the winner is unambiguous.
LEVELS: dict[str, tuple[Any, Any, Any]] = {
    "retry": (1, 2, 5),
    "retry_delay": (10.0, Fixed(20.0), Exponential(base=3.0, jitter=False)),
    "timeout": (11.0, 22.0, 33.0),
    "priority": (-1, 7, 9),
}


def stored_value(info: JobInfo, option: str) -> Any:
    """The stored form of one option."""
    if option == "retry":
        return info.max_attempts - 1
    if option == "retry_delay":
        return json.loads(info.retry_delay or "null")
    return getattr(info, option)


def expected_value(option: str, given: Any) -> Any:
    if option == "retry_delay":
        return json.loads(to_json(Fixed(float(given)) if isinstance(given, float) else given))
    return given


@pytest.mark.parametrize("option", OPTIONS)
async def test_push_option_wins_over_job_and_queue(option: str) -> None:
    on_queue, on_job, on_push = LEVELS[option]
    registry = make_registry({option: on_queue}, {option: on_job})
    info = await stored(registry, **{option: on_push})
    assert stored_value(info, option) == expected_value(option, on_push)


@pytest.mark.parametrize("option", OPTIONS)
async def test_job_option_wins_over_queue(option: str) -> None:
    on_queue, on_job, _ = LEVELS[option]
    registry = make_registry({option: on_queue}, {option: on_job})
    info = await stored(registry)
    assert stored_value(info, option) == expected_value(option, on_job)


@pytest.mark.parametrize("option", OPTIONS)
async def test_queue_option_wins_over_the_default(option: str) -> None:
    on_queue, _, _ = LEVELS[option]
    registry = make_registry({option: on_queue}, {})
    info = await stored(registry)
    assert stored_value(info, option) == expected_value(option, on_queue)


@pytest.mark.parametrize("option", OPTIONS)
async def test_push_option_wins_when_only_the_queue_sets_it(option: str) -> None:
    on_queue, _, on_push = LEVELS[option]
    registry = make_registry({option: on_queue}, {})
    info = await stored(registry, **{option: on_push})
    assert stored_value(info, option) == expected_value(option, on_push)


async def test_defaults_apply_when_no_level_says_otherwise() -> None:
    registry = make_registry({}, {})
    info = await stored(registry)
    assert info.max_attempts == DEFAULT_RETRY + 1
    assert info.timeout == DEFAULT_TIMEOUT
    assert info.priority == DEFAULT_PRIORITY
    assert json.loads(info.retry_delay or "null") == {
        "exponential": {"base": 1.0, "factor": 2.0, "max": 3600.0, "jitter": True}
    }
    assert info.meta == {}


async def test_retry_zero_means_one_attempt() -> None:
    registry = make_registry({"retry": 4}, {})
    info = await stored(registry, retry=0)
    assert info.max_attempts == 1


async def test_zero_priority_on_push_wins_over_a_job_priority() -> None:
    # 0 is a value, not "unset": it must not fall through to the next level.
    registry = make_registry({"priority": 3}, {"priority": 5})
    info = await stored(registry, priority=0)
    assert info.priority == 0


async def test_zero_retry_delay_on_push_wins_over_the_queue() -> None:
    registry = make_registry({"retry_delay": 9.0}, {})
    info = await stored(registry, retry_delay=0)
    assert json.loads(info.retry_delay or "null") == {"fixed": 0.0}


async def test_meta_is_merged_by_key_queue_then_job_then_push() -> None:
    registry = make_registry(
        {"meta": {"a": "queue", "b": "queue", "c": "queue"}},
        {"meta": {"b": "job", "c": "job", "d": "job"}},
    )
    info = await stored(registry, meta={"c": "push", "e": "push"})
    assert info.meta == {"a": "queue", "b": "job", "c": "push", "d": "job", "e": "push"}


async def test_push_meta_does_not_leak_into_the_next_push() -> None:
    registry = make_registry({"meta": {"a": 1}}, {})
    await stored(registry, meta={"b": 2})
    info = await stored(registry)
    assert info.meta == {"a": 1}


async def test_options_given_after_pushes_without_any_still_win() -> None:
    # Pushes without options reuse what was resolved for their queue and job; one with
    # options resolves its own, and the next without is back to the defaults in force.
    registry = make_registry({"priority": 1}, {"timeout": 5.0})
    first = await stored(registry)
    given = await stored(registry, priority=9, timeout=7.0)
    last = await stored(registry)
    assert (first.priority, first.timeout) == (1, 5.0)
    assert (given.priority, given.timeout) == (9, 7.0)
    assert (last.priority, last.timeout) == (1, 5.0)


async def test_a_delay_or_unique_key_given_between_plain_pushes_is_theirs_alone() -> None:
    registry = make_registry({}, {})
    await registry.push("q", "j", {})
    await registry.push("q", "j", {}, delay=3600)
    await registry.push("q", "j", {}, unique="k")
    last = await stored(registry)
    assert (last.state, last.unique) == (JobState.PENDING, None)
    counts = (await registry.queue_info())["q"]
    assert (counts.pending, counts.delayed) == (3, 1)


async def test_jobs_pushed_without_options_each_get_their_own_meta() -> None:
    registry = make_registry({"meta": {"a": 1}}, {})
    first = await stored(registry)
    first.meta["b"] = 2  # a handler may change its job's meta
    assert (await stored(registry)).meta == {"a": 1}


async def test_handler_receives_the_merged_meta() -> None:
    registry = Registry(default_driver="sync")
    registry.queue("q", workers=["w"], meta={"tenant": "acme", "source": "queue"})
    registry.worker("w")
    seen: list[dict[str, Any]] = []

    @registry.job("j", meta={"source": "job"})
    async def handler(job: Job[dict[str, Any]]) -> None:
        seen.append(job.meta)

    await registry.push("q", "j", {}, meta={"trace": "t1"})
    assert seen == [{"tenant": "acme", "source": "job", "trace": "t1"}]


# -- invalid values -----------------------------------------------------------------------

INVALID = [
    ("retry", -1),
    ("retry", True),
    ("retry", 1.5),
    ("retry", "3"),
    ("timeout", 0),
    ("timeout", -1),
    ("timeout", float("inf")),
    ("timeout", "10"),
    ("priority", "high"),
    ("priority", 1.5),
    ("priority", True),
    ("retry_delay", -1),
    ("meta", ["not", "a", "dict"]),
]


@pytest.mark.parametrize(("option", "value"), INVALID)
async def test_invalid_option_on_push_raises_config_error(option: str, value: Any) -> None:
    registry = make_registry({}, {})
    with pytest.raises(ConfigError, match=option):
        await registry.push("q", "j", {}, **{option: value})
    assert (await registry.queue_info())["q"].pending == 0


@pytest.mark.parametrize(("option", "value"), INVALID)
def test_invalid_option_on_a_job_raises_config_error(option: str, value: Any) -> None:
    registry = Registry(default_driver="memory")
    with pytest.raises(ConfigError, match=option):
        registry.job("j", **{option: value})


@pytest.mark.parametrize(("option", "value"), INVALID)
def test_invalid_option_on_a_queue_raises_config_error(option: str, value: Any) -> None:
    registry = Registry(default_driver="memory")
    with pytest.raises(ConfigError, match=option):
        registry.queue("q", workers=["w"], **{option: value})


# -- delay --------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [60, 60.0, timedelta(minutes=1)], ids=["int", "float", "td"])
async def test_delay_makes_a_delayed_job_due_that_much_later(delay: Any) -> None:
    registry = make_registry({}, {})
    before = time.time()
    info = await stored(registry, delay=delay)
    assert info.state is JobState.DELAYED
    assert before + 60 <= info.available_at <= time.time() + 60
    assert info.available_at - info.created_at == pytest.approx(60.0, abs=1e-3)
    counts = (await registry.queue_info())["q"]
    assert (counts.pending, counts.delayed) == (0, 1)


@pytest.mark.parametrize("delay", [0, 0.0, timedelta(0)])
async def test_zero_delay_makes_a_pending_job(delay: Any) -> None:
    registry = make_registry({}, {})
    info = await stored(registry, delay=delay)
    assert info.state is JobState.PENDING


@pytest.mark.parametrize("delay", [-1, timedelta(seconds=-5), "soon", True])
async def test_negative_or_non_number_delay_raises_config_error(delay: Any) -> None:
    registry = make_registry({}, {})
    with pytest.raises(ConfigError, match="delay"):
        await registry.push("q", "j", {}, delay=delay)


async def test_delay_applies_to_every_job_of_push_many() -> None:
    registry = make_registry({}, {})
    ids = await registry.push_many("q", "j", [{}, {}, {}], delay=timedelta(hours=1))
    assert len(ids) == 3
    for job_id in ids:
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.DELAYED


async def test_push_many_options_follow_the_same_precedence() -> None:
    registry = make_registry({"retry": 1, "priority": 1}, {"retry": 2})
    ids = await registry.push_many("q", "j", [{}, {}], priority=4)
    for job_id in ids:
        info = await registry.job_info(job_id)
        assert info is not None
        assert (info.max_attempts, info.priority) == (3, 4)
