"""Registration: names, duplicates, freeze() and its report, and pushing to unknown names."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conveyor import (
    Job,
    Registry,
    RegistryError,
    UnknownJobError,
    UnknownQueueError,
    UnknownWorkerError,
)


async def noop(job: Job[dict[str, Any]]) -> None:
    """A handler that does nothing."""


def valid_registry() -> Registry:
    """One queue, its worker and a job: a registry that freezes cleanly."""
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    registry.job("mail.send")(noop)
    return registry


# -- freeze() -----------------------------------------------------------------------------


def test_freeze_reports_every_mistake_in_one_error() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("lonely")
    registry.queue("mail", workers=["ghost"])
    registry.worker("idle")
    with pytest.raises(RegistryError) as caught:
        registry.freeze()
    message = str(caught.value)
    assert "queue 'lonely' has no worker: add workers=[...]" in message
    assert "queue 'mail' names worker 'ghost', which is not registered" in message
    assert "registry.worker('ghost')" in message
    assert "worker 'idle' serves no queue" in message
    assert "workers=['idle']" in message


def test_freeze_reports_only_the_real_mistake() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    registry.worker("idle")
    with pytest.raises(RegistryError) as caught:
        registry.freeze()
    message = str(caught.value)
    assert "worker 'idle' serves no queue" in message
    assert "'mail'" not in message
    assert "'main'" not in message


def test_freeze_of_a_valid_registry_succeeds_and_is_safe_twice() -> None:
    registry = valid_registry()
    registry.freeze()
    registry.freeze()


def test_failed_freeze_leaves_the_registry_open_to_fix() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["main"])
    with pytest.raises(RegistryError):
        registry.freeze()
    registry.worker("main")
    registry.freeze()


def test_freeze_reports_an_unknown_driver_name() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail", driver="nowhere", workers=["main"])
    registry.worker("main")
    with pytest.raises(RegistryError) as caught:
        registry.freeze()
    message = str(caught.value)
    assert "unknown driver 'nowhere'" in message
    assert "registry.driver('nowhere', ...)" in message


def test_freeze_reports_an_unknown_default_driver() -> None:
    registry = Registry(default_driver="carrier-pigeon")
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    with pytest.raises(RegistryError, match="unknown driver 'carrier-pigeon'"):
        registry.freeze()


def test_queue_may_name_a_registered_driver() -> None:
    registry = Registry(default_driver="nowhere")
    registry.driver("fast", "memory://")
    registry.queue("mail", driver="fast", workers=["main"])
    registry.worker("main")
    registry.freeze()


# -- names --------------------------------------------------------------------------------

BAD_NAMES = ["", "x" * 129, "has space", "a/b", ".", ".."]


def register(registry: Registry, kind: str, name: str) -> None:
    """Register one item of `kind` under `name`."""
    if kind == "queue":
        registry.queue(name, workers=["main"])
    elif kind == "worker":
        registry.worker(name)
    elif kind == "job":
        registry.job(name)(noop)
    else:
        registry.driver(name, "memory://")


@pytest.mark.parametrize("kind", ["queue", "worker", "job", "driver"])
@pytest.mark.parametrize(
    "name", BAD_NAMES, ids=["empty", "129-chars", "space", "slash", "dot", "dot-dot"]
)
def test_invalid_name_is_refused_naming_the_item(kind: str, name: str) -> None:
    registry = Registry(default_driver="memory")
    with pytest.raises(RegistryError) as caught:
        register(registry, kind, name)
    message = str(caught.value)
    assert f"{kind} name {name!r} is not valid" in message
    assert "A-Z a-z 0-9 _ . : -" in message


@pytest.mark.parametrize("kind", ["queue", "worker", "job", "driver"])
@pytest.mark.parametrize("name", ["x" * 128, "a", "mail.send", "v1:jobs-B_2"])
def test_valid_name_is_accepted(kind: str, name: str) -> None:
    registry = Registry(default_driver="memory")
    register(registry, kind, name)


@pytest.mark.parametrize("kind", ["queue", "worker", "job", "driver"])
def test_non_string_name_is_refused(kind: str) -> None:
    registry = Registry(default_driver="memory")
    with pytest.raises(RegistryError, match=f"{kind} name 42 is not valid"):
        register(registry, kind, 42)  # type: ignore[arg-type]


# -- duplicates ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["queue", "worker", "job", "driver"])
def test_duplicate_name_is_refused(kind: str) -> None:
    registry = Registry(default_driver="memory")
    register(registry, kind, "twin")
    with pytest.raises(RegistryError) as caught:
        register(registry, kind, "twin")
    assert f"{kind} 'twin' is registered twice: give each a unique name" in str(caught.value)


def test_same_name_for_a_queue_a_worker_and_a_job_is_allowed() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["mail"])
    registry.worker("mail")
    registry.job("mail")(noop)
    registry.freeze()


# -- after freeze -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["queue", "worker", "job", "driver"])
def test_registering_after_freeze_is_refused(kind: str) -> None:
    registry = valid_registry()
    registry.freeze()
    with pytest.raises(RegistryError) as caught:
        register(registry, kind, "late")
    assert f"cannot register {kind} 'late': the registry is frozen" in str(caught.value)
    assert "register before the first push, worker or freeze()" in str(caught.value)


async def test_push_freezes_the_registry() -> None:
    registry = valid_registry()
    await registry.push("mail", "mail.send", {})
    with pytest.raises(RegistryError, match="frozen"):
        registry.worker("late")


# -- worker and queue arguments -----------------------------------------------------------


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_worker_concurrency_below_one_or_not_whole_is_refused(concurrency: Any) -> None:
    registry = Registry(default_driver="memory")
    with pytest.raises(RegistryError, match="worker 'main': concurrency must be a whole number"):
        registry.worker("main", concurrency=concurrency)


@pytest.mark.parametrize("key", ["concurrency", "prefetch"])
def test_worker_concurrency_or_prefetch_past_what_a_backend_counts_is_refused(key: str) -> None:
    registry = Registry(default_driver="memory")
    with pytest.raises(RegistryError, match=f"worker 'main': {key} must be .*at most 2147483647"):
        registry.worker("main", **{key: 2**31})


def test_queue_workers_given_as_a_string_is_refused() -> None:
    registry = Registry(default_driver="memory")
    with pytest.raises(RegistryError) as caught:
        registry.queue("mail", workers="main")
    message = str(caught.value)
    assert "queue 'mail'" in message
    assert "workers=['main']" in message
    assert "mail" not in registry.queues


# -- pushing to unknown names -------------------------------------------------------------


async def test_push_of_an_unknown_job_name_says_how_to_register_it() -> None:
    registry = valid_registry()
    with pytest.raises(UnknownJobError) as caught:
        await registry.push("mail", "mail.sned", {})
    assert caught.value.name == "mail.sned"
    assert "no job named 'mail.sned' is registered" in str(caught.value)
    assert "@registry.job('mail.sned')" in str(caught.value)


async def test_push_to_an_unknown_queue_raises_unknown_queue_error() -> None:
    registry = valid_registry()
    with pytest.raises(UnknownQueueError) as caught:
        await registry.push("mial", "mail.send", {})
    assert caught.value.name == "mial"
    assert "registry.queue('mial', ...)" in str(caught.value)


async def test_push_many_of_an_unknown_job_name_raises_and_stores_nothing() -> None:
    registry = valid_registry()
    with pytest.raises(UnknownJobError):
        await registry.push_many("mail", "nope", [{}, {}])
    assert (await registry.queue_info())["mail"].pending == 0


def test_worker_spec_of_an_unknown_worker_raises_unknown_worker_error() -> None:
    registry = valid_registry()
    with pytest.raises(UnknownWorkerError, match=re.escape("registry.worker('nobody', ...)")):
        registry.worker_spec("nobody")


def test_queues_of_lists_the_queues_a_worker_serves_in_order() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("b", workers=["main"])
    registry.queue("a", workers=["main", "other"])
    registry.queue("c", workers=["other"])
    registry.worker("main")
    registry.worker("other")
    assert registry.queues_of("main") == ["b", "a"]
    assert registry.queues_of("other") == ["a", "c"]


def test_conveyor_driver_environment_variable_sets_the_default_driver_over_the_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_DRIVER", "memory://")
    for registry in (Registry(), Registry(default_driver="sync")):
        registry.freeze()  # the environment is read here, and wins over the code
        assert registry.default_driver == "memory://"
        assert registry.queues["default"].driver == "memory://"
    monkeypatch.delenv("CONVEYOR_DRIVER")
    registry = Registry()
    registry.freeze()
    assert registry.default_driver == "sqlite"
