"""Rollout control: request fields, the pacer (rate, ramp, concurrency) on an injected clock,
abort thresholds and retry decisions."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.domain.json import JsonValue
from hub.domain.rollout import (
    DEFAULT_RETRY_ON,
    MAX_BACKOFF_SECONDS,
    AbortConfig,
    AbortCounts,
    AbortCriterion,
    Allowance,
    ExponentialRate,
    FailureType,
    JobControls,
    Pacer,
    RateIncreaseCriterion,
    RetryConfig,
    RetryOn,
    RolloutConfig,
    RolloutProgress,
    decide_retry,
    evaluate_abort,
    parse_abort,
    parse_continuous,
    parse_retry,
    parse_rollout,
    retry_kind,
)
from hub.errors import BadRequestError, DeviceNotOnlineError, GatewayTimeoutError

RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


# -- a simulated runner on an injected clock ---------------------------------------------------


def run_rollout(
    rollout: RolloutConfig,
    seconds: float,
    *,
    lateness: Callable[[], float] = lambda: 0.0,
    succeeded: Callable[[int], int] = lambda notified: notified,
) -> list[float]:
    """Start devices as fast as the pacer allows until ``seconds``, waking ``lateness()`` after
    each ``next_start_at``; returns the start times."""
    pacer = Pacer.begin(rollout, 0.0)
    now = 0.0
    starts: list[float] = []
    while now < seconds:
        progress = RolloutProgress(notified=len(starts), succeeded=succeeded(len(starts)))
        allowance = pacer.allowance(now, progress)
        if allowance.may_start:
            assert allowance.may_start == 1  # never two at one instant
            pacer = pacer.started(now, progress)
            starts.append(now)
            continue
        assert allowance.next_start_at is not None
        assert allowance.next_start_at > now
        now = allowance.next_start_at + lateness()
    return starts


def most_in_window(starts: list[float], window: float = 60.0) -> int:
    """The most starts inside any closed window of ``window`` seconds."""
    most, j = 0, 0
    for i, start in enumerate(starts):
        j = max(j, i)
        while j + 1 < len(starts) and starts[j + 1] <= start + window:
            j += 1
        most = max(most, j - i + 1)
    return most


# -- pacer: constant rate ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 7, 60, 100, 1000])
def test_achieved_rate_over_a_minute_is_max_per_minute(rate: int) -> None:
    starts = run_rollout(RolloutConfig(max_per_minute=rate), 60.0)
    assert abs(len([s for s in starts if s < 60.0]) - rate) <= 1
    assert most_in_window(starts) <= rate + 1


def test_no_burst_at_start() -> None:
    pacer = Pacer.begin(RolloutConfig(max_per_minute=120), 100.0)
    first = pacer.allowance(100.0, RolloutProgress())
    assert first == Allowance(may_start=1, next_start_at=100.5)
    pacer = pacer.started(100.0, RolloutProgress())
    again = pacer.allowance(100.0, RolloutProgress(notified=1, in_flight=1))
    assert again.may_start == 0
    assert again.next_start_at == pytest.approx(100.5)
    assert pacer.allowance(100.49, RolloutProgress(notified=1)).may_start == 0
    assert pacer.allowance(100.5, RolloutProgress(notified=1)).may_start == 1


def test_idle_time_gives_no_burst() -> None:
    """After a long pause (no device to start) the bucket holds less than two starts."""
    pacer = Pacer.begin(RolloutConfig(max_per_minute=60), 0.0).started(0.0, RolloutProgress())
    progress = RolloutProgress(notified=1)
    assert pacer.allowance(3600.0, progress).may_start == 1
    pacer = pacer.started(3600.0, progress)
    progress = RolloutProgress(notified=2)
    assert pacer.allowance(3600.0, progress).may_start == 0
    # Half an interval of credit at most: the next start comes 0.5 s later, not at once.
    assert pacer.allowance(3600.0, progress).next_start_at == pytest.approx(3600.5)


def test_late_wakeups_keep_the_rate() -> None:
    """A runner that wakes up to 40% of an interval late still gets its maxPerMinute."""
    rng = random.Random(7)
    starts = run_rollout(RolloutConfig(max_per_minute=100), 600.0, lateness=lambda: rng.uniform(0, 0.24))
    assert abs(len([s for s in starts if s < 600.0]) - 1000) <= 1
    assert most_in_window(starts) <= 101


def test_start_without_allowance_is_a_bug() -> None:
    pacer = Pacer.begin(RolloutConfig(max_per_minute=10), 0.0).started(0.0, RolloutProgress())
    with pytest.raises(ValueError, match="no start allowed"):
        pacer.started(1.0, RolloutProgress(notified=1))
    limited = Pacer.begin(RolloutConfig(max_concurrency=1), 0.0)
    with pytest.raises(ValueError, match="maxConcurrency 1"):
        limited.started(0.0, RolloutProgress(in_flight=1))


def test_no_rollout_means_no_limit() -> None:
    pacer = Pacer.begin(None, 0.0)
    assert pacer.allowance(0.0, RolloutProgress(notified=10**6, in_flight=10**6)) == Allowance(None, None)
    assert pacer.started(0.0, RolloutProgress()) is pacer


# -- pacer: concurrency --------------------------------------------------------------------------


def test_max_concurrency_alone() -> None:
    pacer = Pacer.begin(RolloutConfig(max_concurrency=3), 0.0)
    assert pacer.allowance(0.0, RolloutProgress(in_flight=0)) == Allowance(3, None)
    assert pacer.allowance(0.0, RolloutProgress(in_flight=2)) == Allowance(1, None)
    assert pacer.allowance(0.0, RolloutProgress(in_flight=3)) == Allowance(0, None, concurrency_full=True)


def test_rate_waits_for_a_free_slot() -> None:
    pacer = Pacer.begin(RolloutConfig(max_per_minute=60, max_concurrency=1), 0.0)
    full = pacer.allowance(0.0, RolloutProgress(in_flight=1))
    # The rate would allow a start now; the concurrency cap holds it back.
    assert full == Allowance(0, 0.0, concurrency_full=True)


def test_max_concurrency_is_respected_with_a_rate() -> None:
    """600/min but each call takes 1 s and only 2 may be in flight: about 2 starts a second."""
    rollout = RolloutConfig(max_per_minute=600, max_concurrency=2)
    pacer = Pacer.begin(rollout, 0.0)
    now = 0.0
    starts: list[float] = []
    finishes: list[float] = []  # when the calls in flight end
    while now < 60.0:
        finishes = [f for f in finishes if f > now]
        progress = RolloutProgress(notified=len(starts), succeeded=len(starts) - len(finishes), in_flight=len(finishes))
        allowance = pacer.allowance(now, progress)
        if allowance.may_start:
            pacer = pacer.started(now, progress)
            starts.append(now)
            finishes.append(now + 1.0)
            assert len(finishes) <= 2
            continue
        assert allowance.next_start_at is not None
        now = allowance.next_start_at
        if allowance.concurrency_full:
            now = max(now, min(finishes))
    assert 119 <= len(starts) <= 121


# -- pacer: exponential ramp ---------------------------------------------------------------------


def ramp(base: int, factor: float, threshold: int, *, cap: int | None = None, succeeded: bool = False) -> RolloutConfig:
    criterion = RateIncreaseCriterion.SUCCEEDED if succeeded else RateIncreaseCriterion.NOTIFIED
    return RolloutConfig(max_per_minute=cap, exponential_rate=ExponentialRate(base, factor, criterion, threshold))


def test_ramp_steps_as_aws_documents() -> None:
    """Base 50, x2, every 1000 notified: 50/100/200/400 per minute, stepping at 1000/2000/3000."""
    config = ramp(50, 2.0, 1000)
    rates = {n: config.rate_per_minute(n, 0) for n in (0, 999, 1000, 1999, 2000, 3000, 4000, 5000, 10**9)}
    assert rates == {0: 50, 999: 50, 1000: 100, 1999: 100, 2000: 200, 3000: 400, 4000: 800, 5000: 1000, 10**9: 1000}


def test_ramp_capped_by_max_per_minute() -> None:
    config = ramp(10, 1.5, 5, cap=30)
    assert [config.rate_per_minute(n, 0) for n in (0, 5, 10, 15, 20)] == [10, 15, 22.5, 30, 30]


def test_ramp_steps_at_the_right_counts_in_a_rollout() -> None:
    """Base 10/min, x2 every 20 notified, cap 40: gaps of 6 s, then 3 s, then 1.5 s."""
    starts = run_rollout(ramp(10, 2.0, 20, cap=40), 200.0)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    # Gap i follows start i+1: notified is i+1 when the gap accrues.
    assert gaps[:19] == [6.0] * 19
    assert gaps[19:39] == [3.0] * 20
    assert set(gaps[39:]) == {1.5}
    assert most_in_window(starts) <= 41


def test_ramp_on_succeeded_devices() -> None:
    config = ramp(60, 2.0, 10, succeeded=True)
    assert config.rate_per_minute(notified=500, succeeded=9) == 60
    assert config.rate_per_minute(notified=500, succeeded=10) == 120
    # Nothing succeeds: the rollout stays at its base rate however many were notified.
    starts = run_rollout(config, 60.0, succeeded=lambda notified: 0)
    assert len([s for s in starts if s < 60.0]) == 60


rollouts = st.one_of(
    st.builds(RolloutConfig, max_per_minute=st.integers(1, 200)),
    st.builds(
        ramp,
        base=st.integers(1, 50),
        factor=st.sampled_from([1.1, 1.5, 2.0, 5.0]),
        threshold=st.integers(1, 30),
        cap=st.one_of(st.none(), st.integers(50, 200)),
    ),
)


@RELAXED
@given(rollouts, st.lists(st.one_of(st.just(0.0), st.floats(-3.0, 5.0)), min_size=1, max_size=300))
def test_any_minute_sees_at_most_max_per_minute_plus_one(rollout: RolloutConfig, jitters: list[float]) -> None:
    """However the runner polls (on time, early, late), any 60 s window holds at most rate + 1 starts."""
    pacer = Pacer.begin(rollout, 0.0)
    now = 0.0
    starts: list[float] = []
    for jitter in jitters:
        progress = RolloutProgress(notified=len(starts), succeeded=len(starts))
        allowance = pacer.allowance(now, progress)
        if allowance.may_start:
            pacer = pacer.started(now, progress)
            starts.append(now)
            progress = RolloutProgress(notified=len(starts), succeeded=len(starts))
            allowance = pacer.allowance(now, progress)
            assert allowance.may_start == 0
        assert allowance.next_start_at is not None
        now = max(now, allowance.next_start_at + jitter)
    cap = rollout.max_per_minute or 1000
    assert most_in_window(starts) <= cap + 1


# -- abort ---------------------------------------------------------------------------------------


def abort(*criteria: tuple[str, float, int]) -> AbortConfig:
    return AbortConfig(tuple(AbortCriterion(FailureType(t), p, n) for t, p, n in criteria))


def test_abort_on_failed() -> None:
    config = abort(("failed", 30, 10))
    verdict = evaluate_abort(config, AbortCounts(executed=40, failed=14, timed_out=5))
    assert verdict is not None
    assert verdict.criterion is config.criteria[0]
    assert verdict.failure_reason == "abort: 35.0% of 40 executed devices failed (threshold 30%, failureType failed)"
    assert evaluate_abort(config, AbortCounts(executed=40, failed=11, timed_out=20)) is None


def test_abort_threshold_is_inclusive_and_exact() -> None:
    config = abort(("failed", 30, 1))
    assert evaluate_abort(config, AbortCounts(executed=10, failed=3)) is not None
    assert evaluate_abort(abort(("failed", 33.34, 1)), AbortCounts(executed=3, failed=1)) is None
    assert evaluate_abort(abort(("failed", 33.33, 1)), AbortCounts(executed=3, failed=1)) is not None


def test_abort_on_timed_out() -> None:
    config = abort(("timedOut", 50, 4))
    assert evaluate_abort(config, AbortCounts(executed=4, failed=4)) is None
    verdict = evaluate_abort(config, AbortCounts(executed=4, timed_out=2))
    assert verdict is not None
    assert verdict.failure_reason == (
        "abort: 50.0% of 4 executed devices timed out (threshold 50%, failureType timedOut)"
    )


def test_abort_on_all_counts_failed_and_timed_out() -> None:
    config = abort(("all", 25.5, 10))
    verdict = evaluate_abort(config, AbortCounts(executed=20, failed=3, timed_out=3))
    assert verdict is not None
    assert verdict.failures == 6
    assert verdict.failure_reason == (
        "abort: 30.0% of 20 executed devices failed or timed out (threshold 25.5%, failureType all)"
    )
    assert evaluate_abort(config, AbortCounts(executed=20, failed=3, timed_out=2)) is None


def test_abort_waits_for_min_executed() -> None:
    config = abort(("failed", 10, 20))
    assert evaluate_abort(config, AbortCounts(executed=19, failed=19)) is None
    assert evaluate_abort(config, AbortCounts(executed=20, failed=19)) is not None


def test_first_tripped_criterion_wins() -> None:
    config = abort(("timedOut", 50, 1), ("failed", 20, 5), ("all", 10, 5))
    verdict = evaluate_abort(config, AbortCounts(executed=10, failed=5))
    assert verdict is not None
    assert verdict.criterion is config.criteria[1]
    verdict = evaluate_abort(config, AbortCounts(executed=10, failed=5, timed_out=5))
    assert verdict is not None
    assert verdict.criterion is config.criteria[0]


def test_zero_threshold_trips_on_the_first_failure_only() -> None:
    config = abort(("all", 0, 1))
    assert evaluate_abort(config, AbortCounts(executed=100)) is None
    assert evaluate_abort(config, AbortCounts(executed=100, timed_out=1)) is not None


def test_no_abort_config_never_aborts() -> None:
    assert evaluate_abort(None, AbortCounts(executed=10, failed=10)) is None


@pytest.mark.parametrize("counts", [(5, 3, 3), (-1, 0, 0), (5, -1, 0)])
def test_inconsistent_abort_counts_are_a_bug(counts: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        AbortCounts(*counts)


# -- retry ---------------------------------------------------------------------------------------


def test_retry_kinds() -> None:
    assert retry_kind(DeviceNotOnlineError.code) is RetryOn.DEVICE_NOT_ONLINE
    assert retry_kind(GatewayTimeoutError.code) is RetryOn.GATEWAY_TIMEOUT
    assert retry_kind(500) is RetryOn.FAILED
    assert retry_kind(404) is RetryOn.FAILED
    assert retry_kind(199) is RetryOn.FAILED
    assert retry_kind(200) is None
    assert retry_kind(299) is None
    assert retry_kind("DeviceNotFound") is None
    assert retry_kind("JobTimedOut") is None


@pytest.mark.parametrize("code", ["DeviceNotOnline", "GatewayTimeout"])
def test_transport_errors_are_retried_by_default(code: str) -> None:
    decision = decide_retry(RetryConfig(max_attempts=3), 1, code)
    assert decision.retry
    assert decision.next_attempt == 2
    assert decision.delay_seconds == 10
    assert code in decision.reason


def test_failed_replies_are_retried_only_when_asked() -> None:
    assert not decide_retry(RetryConfig(max_attempts=3), 1, 500).retry
    config = RetryConfig(max_attempts=3, backoff_seconds=2, retry_on=frozenset({RetryOn.FAILED}))
    decision = decide_retry(config, 1, 503)
    assert (decision.retry, decision.next_attempt, decision.delay_seconds) == (True, 2, 2)
    assert not decide_retry(config, 1, GatewayTimeoutError.code).retry
    assert "not retried" in decide_retry(config, 1, DeviceNotOnlineError.code).reason


def test_success_and_unknown_codes_are_not_retried() -> None:
    config = RetryConfig(max_attempts=5, retry_on=frozenset(RetryOn))
    assert not decide_retry(config, 1, 200).retry
    assert not decide_retry(config, 1, "DeviceNotFound").retry
    assert not decide_retry(config, 1, "JobTimedOut").retry
    assert not decide_retry(None, 1, GatewayTimeoutError.code).retry


def test_max_attempts_counts_every_attempt() -> None:
    config = RetryConfig(max_attempts=3)
    assert decide_retry(config, 2, "GatewayTimeout").retry
    last = decide_retry(config, 3, "GatewayTimeout")
    assert not last.retry
    assert "3 attempts" in last.reason
    assert not decide_retry(RetryConfig(max_attempts=1), 1, "GatewayTimeout").retry


def test_exponential_backoff_is_capped() -> None:
    config = RetryConfig(max_attempts=10, backoff_seconds=5, backoff_factor=2)
    assert [decide_retry(config, n, "GatewayTimeout").delay_seconds for n in range(1, 5)] == [5, 10, 20, 40]
    steep = RetryConfig(max_attempts=10, backoff_seconds=3000, backoff_factor=10)
    assert steep.delay_after(9) == MAX_BACKOFF_SECONDS
    assert steep.delay_after(10**6) == MAX_BACKOFF_SECONDS
    with pytest.raises(ValueError, match="from 1"):
        steep.delay_after(0)


def test_no_retry_past_the_deadline() -> None:
    config = RetryConfig(max_attempts=3, backoff_seconds=10)
    assert decide_retry(config, 1, "GatewayTimeout", seconds_left=10.5).retry
    late = decide_retry(config, 1, "GatewayTimeout", seconds_left=9.0)
    assert not late.retry
    assert "deadline" in late.reason


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        decide_retry(RetryConfig(max_attempts=3), 0, "GatewayTimeout")


# -- parsing: accepted forms and documents -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"maxPerMinute": 100}, RolloutConfig(max_per_minute=100)),
        ({"maxConcurrency": 5}, RolloutConfig(max_concurrency=5)),
        ({"maxPerMinute": 1000, "maxConcurrency": 10_000}, RolloutConfig(1000, None, 10_000)),
        (
            {"baseRatePerMinute": 50, "incrementFactor": 2, "rateIncreaseCriteria": {"numberOfNotifiedDevices": 1000}},
            ramp(50, 2.0, 1000),
        ),
        (
            {
                "baseRatePerMinute": 1,
                "incrementFactor": 1.1,
                "rateIncreaseCriteria": {"numberOfSucceededDevices": 1, "numberOfNotifiedDevices": None},
                "maxPerMinute": 1,
                "maxConcurrency": None,
            },
            ramp(1, 1.1, 1, cap=1, succeeded=True),
        ),
    ],
)
def test_rollout_forms(body: dict[str, JsonValue], expected: RolloutConfig) -> None:
    config = parse_rollout(body)
    assert config == expected
    assert parse_rollout(config.document()) == config


def test_rollout_document() -> None:
    config = ramp(50, 2.0, 1000, cap=800, succeeded=True)
    assert config.document() == {
        "maxPerMinute": 800,
        "baseRatePerMinute": 50,
        "incrementFactor": 2.0,
        "rateIncreaseCriteria": {"numberOfSucceededDevices": 1000},
    }


def test_abort_accepts_the_object_and_the_bare_list() -> None:
    criterion: JsonValue = {"failureType": "all", "thresholdPercentage": 12.25, "minNumberOfExecutedDevices": 8}
    from_object = parse_abort({"criteria": [criterion]})
    assert from_object == parse_abort([criterion]) == abort(("all", 12.25, 8))
    assert from_object is not None
    assert from_object.document() == {"criteria": [criterion]}
    assert parse_abort(from_object.document()) == from_object


def test_retry_defaults_and_document() -> None:
    config = parse_retry({"maxAttempts": 3})
    assert config == RetryConfig(3, 10, 1.0, DEFAULT_RETRY_ON)
    assert config.document() == {
        "maxAttempts": 3,
        "backoffSeconds": 10,
        "backoffFactor": 1.0,
        "retryOn": ["DeviceNotOnline", "GatewayTimeout"],
    }
    full = parse_retry({"maxAttempts": 10, "backoffSeconds": 0.5, "backoffFactor": 2, "retryOn": ["failed", "failed"]})
    assert full == RetryConfig(10, 0.5, 2, frozenset({RetryOn.FAILED}))
    assert parse_retry(full.document()) == full


def test_absent_fields() -> None:
    assert parse_rollout(None) is None
    assert parse_abort(None) is None
    assert parse_retry(None) is None
    assert parse_continuous(None) is False
    assert parse_continuous(True) is True
    assert parse_continuous(False) is False


def test_job_controls() -> None:
    body: dict[str, JsonValue] = {
        "jobId": "j1",
        "rollout": {"maxPerMinute": 10},
        "abort": [{"failureType": "failed", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 5}],
        "retry": {"maxAttempts": 2, "retryOn": ["GatewayTimeout"]},
        "continuous": True,
    }
    controls = JobControls.create(body, method_job=True)
    assert controls.rollout == RolloutConfig(max_per_minute=10)
    assert controls.continuous
    assert controls.document() == {
        "rollout": {"maxPerMinute": 10},
        "abort": {"criteria": [{"failureType": "failed", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 5}]},
        "retry": {"maxAttempts": 2, "backoffSeconds": 10, "backoffFactor": 1.0, "retryOn": ["GatewayTimeout"]},
        "continuous": True,
    }
    assert JobControls.create(controls.document(), method_job=True) == controls
    plain = JobControls.create({"jobId": "j2", "continuous": False}, method_job=False)
    assert plain == JobControls()
    assert plain.document() == {}


def test_retry_is_for_method_jobs_only() -> None:
    with pytest.raises(BadRequestError, match="scheduleDeviceMethod jobs only"):
        JobControls.create({"retry": {"maxAttempts": 2}}, method_job=False)
    assert JobControls.create({"rollout": {"maxConcurrency": 2}}, method_job=False).rollout is not None


# -- parsing: errors name the field --------------------------------------------------------------

RAMP: dict[str, Any] = {
    "baseRatePerMinute": 10,
    "incrementFactor": 2,
    "rateIncreaseCriteria": {"numberOfNotifiedDevices": 100},
}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "rollout must be a JSON object"),
        ({}, "rollout must set maxPerMinute, baseRatePerMinute or maxConcurrency"),
        ({"maxPerMinut": 5}, "rollout has unknown field 'maxPerMinut'"),
        ({"maxPerMinute": 0}, r"rollout.maxPerMinute must be an integer from 1 to 1000, got 0"),
        ({"maxPerMinute": 1001}, "rollout.maxPerMinute must be an integer from 1 to 1000"),
        ({"maxPerMinute": 10.0}, "rollout.maxPerMinute must be an integer"),
        ({"maxPerMinute": True}, "rollout.maxPerMinute must be an integer"),
        ({"maxPerMinute": "10"}, "rollout.maxPerMinute must be an integer"),
        ({"maxConcurrency": 0}, "rollout.maxConcurrency must be an integer from 1 to 10000"),
        ({"maxConcurrency": 10_001}, "rollout.maxConcurrency must be an integer from 1 to 10000"),
        ({**RAMP, "baseRatePerMinute": None}, r"rollout.baseRatePerMinute is required"),
        ({**RAMP, "baseRatePerMinute": 0}, "rollout.baseRatePerMinute must be an integer from 1 to 1000"),
        ({**RAMP, "baseRatePerMinute": 1001}, "rollout.baseRatePerMinute must be an integer from 1 to 1000"),
        ({**RAMP, "maxPerMinute": 5}, r"rollout.baseRatePerMinute \(10\) exceeds rollout.maxPerMinute \(5\)"),
        ({"incrementFactor": 2}, "rollout.baseRatePerMinute is required"),
        ({**RAMP, "incrementFactor": None}, "rollout.incrementFactor is required"),
        ({**RAMP, "incrementFactor": 1.0}, "rollout.incrementFactor must be a number from 1.1 to 5, got 1.0"),
        ({**RAMP, "incrementFactor": 5.5}, "rollout.incrementFactor must be a number from 1.1 to 5"),
        ({**RAMP, "incrementFactor": 1.55}, "rollout.incrementFactor may have at most 1 digits after"),
        ({**RAMP, "incrementFactor": "2"}, "rollout.incrementFactor must be a number"),
        ({**RAMP, "incrementFactor": False}, "rollout.incrementFactor must be a number"),
        ({**RAMP, "rateIncreaseCriteria": None}, "rollout.rateIncreaseCriteria is required"),
        ({**RAMP, "rateIncreaseCriteria": 100}, "rollout.rateIncreaseCriteria must be a JSON object"),
        ({**RAMP, "rateIncreaseCriteria": {}}, "rollout.rateIncreaseCriteria must set exactly one"),
        (
            {**RAMP, "rateIncreaseCriteria": {"numberOfNotifiedDevices": 1, "numberOfSucceededDevices": 1}},
            "rollout.rateIncreaseCriteria must set exactly one",
        ),
        (
            {**RAMP, "rateIncreaseCriteria": {"numberOfNotifiedThings": 1}},
            "rollout.rateIncreaseCriteria has unknown field 'numberOfNotifiedThings'",
        ),
        (
            {**RAMP, "rateIncreaseCriteria": {"numberOfSucceededDevices": 0}},
            r"rollout.rateIncreaseCriteria.numberOfSucceededDevices must be an integer from 1 to",
        ),
    ],
)
def test_rollout_errors(value: JsonValue, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        parse_rollout(value)


CRITERION: dict[str, Any] = {"failureType": "failed", "thresholdPercentage": 30, "minNumberOfExecutedDevices": 10}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("all", "abort must be a JSON object"),
        ({}, r"abort.criteria must be a list of criteria, got None"),
        ({"criteria": {}}, "abort.criteria must be a list of criteria"),
        ({"criteriaList": []}, "abort has unknown field 'criteriaList'"),
        ({"criteria": []}, r"abort.criteria must hold 1 to 10 criteria, got 0"),
        ([], "abort must hold 1 to 10 criteria, got 0"),
        ([CRITERION] * 11, "abort must hold 1 to 10 criteria, got 11"),
        ({"criteria": ["failed"]}, r"abort.criteria\[0\] must be a JSON object"),
        ([CRITERION, {**CRITERION, "action": "CANCEL"}], r"abort\[1\] has unknown field 'action'"),
        ([{**CRITERION, "failureType": None}], r"abort\[0\].failureType is required"),
        ([{**CRITERION, "failureType": "FAILED"}], r"abort\[0\].failureType must be one of failed, timedOut, all"),
        ([{**CRITERION, "failureType": "rejected"}], r"abort\[0\].failureType must be one of"),
        ([{**CRITERION, "failureType": 1}], r"abort\[0\].failureType must be one of"),
        ([{**CRITERION, "thresholdPercentage": None}], r"abort\[0\].thresholdPercentage is required"),
        ([{**CRITERION, "thresholdPercentage": -1}], r"abort\[0\].thresholdPercentage must be a number from 0 to 100"),
        ([{**CRITERION, "thresholdPercentage": 100.5}], r"abort\[0\].thresholdPercentage must be a number"),
        ([{**CRITERION, "thresholdPercentage": 12.345}], r"abort\[0\].thresholdPercentage may have at most 2 digits"),
        ([{**CRITERION, "thresholdPercentage": float("nan")}], r"abort\[0\].thresholdPercentage must be a number"),
        ([{**CRITERION, "thresholdPercentage": "30%"}], r"abort\[0\].thresholdPercentage must be a number"),
        ([{**CRITERION, "minNumberOfExecutedDevices": None}], r"abort\[0\].minNumberOfExecutedDevices is required"),
        ([{**CRITERION, "minNumberOfExecutedDevices": 0}], r"abort\[0\].minNumberOfExecutedDevices must be an integer"),
        ([{**CRITERION, "minNumberOfExecutedDevices": 2.5}], r"abort\[0\].minNumberOfExecutedDevices must be an"),
        (
            {"criteria": [CRITERION, {**CRITERION, "minNumberOfExecutedDevices": -3}]},
            r"abort.criteria\[1\].minNumberOfExecutedDevices must be an integer from 1",
        ),
    ],
)
def test_abort_errors(value: JsonValue, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        parse_abort(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, "retry must be a JSON object"),
        ({}, "retry.maxAttempts is required"),
        ({"maxAttempts": 3, "numberOfRetries": 2}, "retry has unknown field 'numberOfRetries'"),
        ({"maxAttempts": 0}, "retry.maxAttempts must be an integer from 1 to 10, got 0"),
        ({"maxAttempts": 11}, "retry.maxAttempts must be an integer from 1 to 10, got 11"),
        ({"maxAttempts": 2.0}, "retry.maxAttempts must be an integer"),
        ({"maxAttempts": 3, "backoffSeconds": -1}, "retry.backoffSeconds must be a number from 0 to 3600"),
        ({"maxAttempts": 3, "backoffSeconds": 3601}, "retry.backoffSeconds must be a number from 0 to 3600"),
        ({"maxAttempts": 3, "backoffSeconds": "5s"}, "retry.backoffSeconds must be a number"),
        ({"maxAttempts": 3, "backoffSeconds": float("inf")}, "retry.backoffSeconds must be a number"),
        ({"maxAttempts": 3, "backoffFactor": 0.5}, "retry.backoffFactor must be a number from 1 to 10"),
        ({"maxAttempts": 3, "backoffFactor": 11}, "retry.backoffFactor must be a number from 1 to 10"),
        ({"maxAttempts": 3, "retryOn": []}, "retry.retryOn must be a non-empty list of DeviceNotOnline"),
        ({"maxAttempts": 3, "retryOn": "failed"}, "retry.retryOn must be a non-empty list"),
        ({"maxAttempts": 3, "retryOn": ["failed", "Failed"]}, r"retry.retryOn\[1\] must be one of"),
        (
            {"maxAttempts": 3, "retryOn": ["DeviceNotFound"]},
            r"retry.retryOn\[0\] must be one of .*got 'DeviceNotFound'",
        ),
        ({"maxAttempts": 3, "retryOn": [500]}, r"retry.retryOn\[0\] must be one of"),
    ],
)
def test_retry_errors(value: JsonValue, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        parse_retry(value)


@pytest.mark.parametrize("value", ["true", 1, 0, [], {}])
def test_continuous_errors(value: JsonValue) -> None:
    with pytest.raises(BadRequestError, match="continuous must be true or false"):
        parse_continuous(value)


def test_job_controls_errors_name_the_field() -> None:
    with pytest.raises(BadRequestError, match=r"rollout\.maxPerMinute"):
        JobControls.create({"rollout": {"maxPerMinute": -5}}, method_job=True)
    with pytest.raises(BadRequestError, match="continuous"):
        JobControls.create({"continuous": "yes"}, method_job=True)
