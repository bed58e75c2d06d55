"""Retry delay policies: Fixed, Exponential (with and without jitter), JSON round trips."""

from __future__ import annotations

import json

import pytest

from conveyor import ConfigError, Exponential, Fixed
from conveyor.retry import as_policy, from_json, to_json


def test_fixed_waits_the_same_for_every_attempt() -> None:
    policy = Fixed(2.5)
    assert [policy.delay(attempt) for attempt in range(1, 6)] == [2.5] * 5


def test_exponential_without_jitter_doubles_from_base() -> None:
    policy = Exponential(base=1.0, factor=2.0, max=3600.0, jitter=False)
    assert [policy.delay(attempt) for attempt in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_exponential_without_jitter_is_capped_at_max() -> None:
    policy = Exponential(base=1.0, factor=2.0, max=10.0, jitter=False)
    assert [policy.delay(attempt) for attempt in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]


def test_exponential_uses_base_and_factor() -> None:
    policy = Exponential(base=0.5, factor=3.0, max=1000.0, jitter=False)
    assert [policy.delay(attempt) for attempt in (1, 2, 3)] == [0.5, 1.5, 4.5]


def test_exponential_treats_attempt_zero_like_the_first() -> None:
    policy = Exponential(base=2.0, factor=2.0, max=100.0, jitter=False)
    assert policy.delay(0) == 2.0


def test_exponential_huge_attempt_stays_at_max() -> None:
    policy = Exponential(base=1.0, factor=2.0, max=60.0, jitter=False)
    assert policy.delay(1000) == 60.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20])
def test_exponential_with_jitter_stays_between_half_and_full_value(attempt: int) -> None:
    policy = Exponential(base=1.0, factor=2.0, max=100.0, jitter=True)
    full = min(100.0, 2.0 ** (attempt - 1))
    delays = [policy.delay(attempt) for _ in range(300)]
    assert all(full / 2 <= delay <= full for delay in delays)
    # Jitter actually spreads the waits: 300 draws are not all the same number.
    assert len(set(delays)) > 1


def test_exponential_jitter_is_on_by_default() -> None:
    assert Exponential().jitter is True


@pytest.mark.parametrize(
    "policy",
    [
        Fixed(0.0),
        Fixed(2.5),
        Exponential(),
        Exponential(base=0.5, factor=3.0, max=60.0, jitter=False),
        Exponential(base=2.0, factor=1.5, max=7.0, jitter=True),
    ],
)
def test_to_json_then_from_json_gives_an_equal_policy(policy: Fixed | Exponential) -> None:
    text = to_json(policy)
    json.loads(text)  # real JSON, storable as text by any driver
    assert from_json(text) == policy


def test_to_json_of_fixed_is_tagged_fixed() -> None:
    assert json.loads(to_json(Fixed(3.0))) == {"fixed": 3.0}


@pytest.mark.parametrize("seconds", [0, 3, 0.25])
def test_as_policy_turns_a_number_into_fixed(seconds: float) -> None:
    policy = as_policy(seconds)
    assert policy == Fixed(float(seconds))
    assert isinstance(policy.seconds, float)


@pytest.mark.parametrize("policy", [Fixed(1.0), Exponential(jitter=False)])
def test_as_policy_keeps_a_policy_unchanged(policy: Fixed | Exponential) -> None:
    assert as_policy(policy) is policy


@pytest.mark.parametrize("value", [-1, -0.5, True, "5", None])
def test_as_policy_refuses_negative_and_non_numbers(value: object) -> None:
    with pytest.raises(ConfigError, match="retry_delay"):
        as_policy(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "{",
        "[1, 2]",
        "5",
        '"fixed"',
        "{}",
        '{"linear": 3}',
        '{"fixed": "soon"}',
        '{"fixed": null}',
        '{"exponential": [1, 2]}',
        '{"exponential": {"bogus": 1}}',
    ],
)
def test_from_json_of_garbage_falls_back_to_one_second_fixed(text: str | None) -> None:
    assert from_json(text) == Fixed(1.0)


@pytest.mark.parametrize(
    "text",
    [
        '{"exponential": {"base": "x"}}',
        '{"exponential": {"factor": null}}',
    ],
)
def test_from_json_never_returns_a_policy_whose_delay_raises(text: str) -> None:
    # A stored policy that parses but holds the wrong types is as unreadable as bad JSON:
    # the worker calls .delay() while settling a failed attempt, so it must not raise there.
    policy = from_json(text)
    assert isinstance(policy.delay(1), float)


def test_a_stored_policy_refused_today_still_decodes_as_stored() -> None:
    """Jobs pushed before factor < 1 was refused keep their policy: no error, no fallback."""
    shrinking = Exponential(base=10.0, factor=0.5, max=60.0, jitter=False)
    assert from_json(to_json(shrinking)) == shrinking
    assert from_json(to_json(shrinking)).delay(2) == 5.0
