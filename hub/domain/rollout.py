"""Rollout control of a job: pacing (rate, ramp, concurrency), abort thresholds, retries and
continuous jobs -- the optional ``rollout``, ``abort``, ``retry`` and ``continuous`` fields.

Semantics follow AWS IoT Jobs (``jobExecutionsRolloutConfig``, ``abortConfig``,
``jobExecutionsRetryConfig``) where the fleethub issue is silent:

- ``rollout``: ``maxPerMinute`` 1-1000 alone is a constant rate. ``baseRatePerMinute`` 1-1000,
  ``incrementFactor`` 1.1-5 (one decimal) and ``rateIncreaseCriteria`` (exactly one of
  ``numberOfNotifiedDevices`` / ``numberOfSucceededDevices``, >= 1) make a ramp: the rate is
  ``base * factor ** (count // threshold)``, so with base 50, factor 2, threshold 1000 it is
  50/100/200/400 per minute from 0/1000/2000/3000 devices. As in AWS, ``maxPerMinute`` given
  with a ramp caps it (default cap 1000, AWS's own rollout rate). ``maxConcurrency``
  (1-10000) bounds the devices in flight, with or without a rate.
- ``abort``: ``{"criteria": [...]}`` or the bare list (stored and returned in the object form);
  1-10 criteria, each with ``failureType`` failed|timedOut|all, ``thresholdPercentage`` 0-100
  (two decimals) and ``minNumberOfExecutedDevices`` >= 1, all required. A criterion trips when
  at least that many devices have executed (finished) and at least one failure makes up at
  least the threshold of them; the first tripped criterion in request order wins.
- ``retry`` (method jobs only): ``maxAttempts`` 1-10 counts every attempt (1 = no retry; AWS
  allows 10 retries, fleethub 9), ``backoffSeconds`` 0-3600 (default 10) and ``backoffFactor``
  1-10 (default 1 = a fixed delay; 2 doubles it after each attempt; every delay is capped at
  3600 s), ``retryOn`` a non-empty subset of DeviceNotOnline, GatewayTimeout, failed (a reply
  status outside 200-299); default the two transport errors, because a device that answers
  with an error usually means it (AWS's REJECTED is never retried either).
- ``continuous``: a boolean; false is the same as absent.

A null field is the same as an absent one; unknown fields are refused. Every ``document()``
gives back the JSON the request would have to send for the same configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from fractions import Fraction

from hub.domain.json import JsonObject, JsonValue, is_integer
from hub.errors import BadRequestError

__all__ = [
    "DEFAULT_BACKOFF_SECONDS",
    "DEFAULT_RETRY_ON",
    "MAX_ABORT_CRITERIA",
    "MAX_ATTEMPTS",
    "MAX_BACKOFF_SECONDS",
    "MAX_CONCURRENCY",
    "MAX_PER_MINUTE",
    "NO_CONTROLS",
    "AbortConfig",
    "AbortCounts",
    "AbortCriterion",
    "AbortVerdict",
    "Allowance",
    "ExponentialRate",
    "FailureType",
    "JobControls",
    "Pacer",
    "RateIncreaseCriterion",
    "RetryConfig",
    "RetryDecision",
    "RetryOn",
    "RolloutConfig",
    "RolloutProgress",
    "decide_retry",
    "evaluate_abort",
    "parse_abort",
    "parse_continuous",
    "parse_retry",
    "parse_rollout",
    "retry_kind",
]

MAX_PER_MINUTE = 1000
MAX_CONCURRENCY = 10_000
MAX_ABORT_CRITERIA = 10
MAX_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 3600.0
DEFAULT_BACKOFF_SECONDS = 10
_MAX_COUNT = 1_000_000_000
# A late start keeps up to half an interval of credit, so timer jitter in the runner does not
# lower the achieved rate; the bucket never holds two whole tokens, so no two devices start at
# the same instant and any 60 s window sees at most rate + 1 starts.
_BUCKET_CAPACITY = 1.5
# Float sums of 60/rate drift by a few ulps; a start due "now" must not be refused for that.
_EPSILON = 1e-9


# -- field checks --------------------------------------------------------------------------


def _object(value: JsonValue, field: str, known: Sequence[str]) -> dict[str, JsonValue]:
    """``value`` as an object without its null members; unknown members are refused."""
    if not isinstance(value, dict):
        raise BadRequestError(f"{field} must be a JSON object, got {value!r}")
    present: dict[str, JsonValue] = {k: v for k, v in value.items() if v is not None}
    unknown = sorted(set(present) - set(known))
    if unknown:
        raise BadRequestError(f"{field} has unknown field {unknown[0]!r}; known fields are {', '.join(known)}")
    return present


def _integer(value: JsonValue, field: str, low: int, high: int) -> int:
    if not is_integer(value) or not low <= value <= high:
        raise BadRequestError(f"{field} must be an integer from {low} to {high}, got {value!r}")
    return value


def _number(value: JsonValue, field: str, low: float, high: float, decimals: int | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequestError(f"{field} must be a number from {low:g} to {high:g}, got {value!r}")
    if not low <= value <= high:
        raise BadRequestError(f"{field} must be a number from {low:g} to {high:g}, got {value!r}")
    if decimals is not None and round(value, decimals) != value:
        raise BadRequestError(f"{field} may have at most {decimals} digits after the decimal point, got {value!r}")
    return value


def _required(members: Mapping[str, JsonValue], name: str, field: str) -> JsonValue:
    if name not in members:
        raise BadRequestError(f"{field}.{name} is required")
    return members[name]


# -- rollout: configuration ----------------------------------------------------------------


class RateIncreaseCriterion(StrEnum):
    NOTIFIED = "numberOfNotifiedDevices"
    SUCCEEDED = "numberOfSucceededDevices"


@dataclass(frozen=True, slots=True)
class ExponentialRate:
    base_rate_per_minute: int
    increment_factor: float
    criterion: RateIncreaseCriterion
    threshold: int


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    """With ``exponential_rate``, ``max_per_minute`` is the ramp's cap (None = 1000)."""

    max_per_minute: int | None = None
    exponential_rate: ExponentialRate | None = None
    max_concurrency: int | None = None

    def rate_per_minute(self, notified: int, succeeded: int) -> float | None:
        """The rate in force after ``notified`` starts and ``succeeded`` successes; None = no rate."""
        ramp = self.exponential_rate
        if ramp is None:
            return None if self.max_per_minute is None else float(self.max_per_minute)
        cap = float(self.max_per_minute if self.max_per_minute is not None else MAX_PER_MINUTE)
        count = notified if ramp.criterion is RateIncreaseCriterion.NOTIFIED else succeeded
        rate = float(ramp.base_rate_per_minute)
        # A loop, not factor ** steps: steps can be huge, and the cap is reached within 73 rounds.
        for _ in range(count // ramp.threshold):
            rate *= ramp.increment_factor
            if rate >= cap:
                return cap
        return min(rate, cap)

    def document(self) -> JsonObject:
        doc: JsonObject = {}
        if self.max_per_minute is not None:
            doc["maxPerMinute"] = self.max_per_minute
        if self.exponential_rate is not None:
            ramp = self.exponential_rate
            doc["baseRatePerMinute"] = ramp.base_rate_per_minute
            doc["incrementFactor"] = ramp.increment_factor
            doc["rateIncreaseCriteria"] = {ramp.criterion.value: ramp.threshold}
        if self.max_concurrency is not None:
            doc["maxConcurrency"] = self.max_concurrency
        return doc


_ROLLOUT_FIELDS = ("maxPerMinute", "baseRatePerMinute", "incrementFactor", "rateIncreaseCriteria", "maxConcurrency")
_RAMP_FIELDS = ("baseRatePerMinute", "incrementFactor", "rateIncreaseCriteria")


def parse_rollout(value: JsonValue) -> RolloutConfig | None:
    """The job request's ``rollout`` field; None when absent."""
    if value is None:
        return None
    members = _object(value, "rollout", _ROLLOUT_FIELDS)
    if not members:
        raise BadRequestError("rollout must set maxPerMinute, baseRatePerMinute or maxConcurrency")
    max_per_minute = None
    if "maxPerMinute" in members:
        max_per_minute = _integer(members["maxPerMinute"], "rollout.maxPerMinute", 1, MAX_PER_MINUTE)
    ramp = None
    if any(name in members for name in _RAMP_FIELDS):
        ramp = _parse_ramp(members)
        if max_per_minute is not None and ramp.base_rate_per_minute > max_per_minute:
            raise BadRequestError(
                f"rollout.baseRatePerMinute ({ramp.base_rate_per_minute}) exceeds rollout.maxPerMinute "
                f"({max_per_minute}), which caps the ramp"
            )
    max_concurrency = None
    if "maxConcurrency" in members:
        max_concurrency = _integer(members["maxConcurrency"], "rollout.maxConcurrency", 1, MAX_CONCURRENCY)
    return RolloutConfig(max_per_minute, ramp, max_concurrency)


def _parse_ramp(members: Mapping[str, JsonValue]) -> ExponentialRate:
    base = _integer(_required(members, "baseRatePerMinute", "rollout"), "rollout.baseRatePerMinute", 1, MAX_PER_MINUTE)
    factor = _number(_required(members, "incrementFactor", "rollout"), "rollout.incrementFactor", 1.1, 5, decimals=1)
    field = "rollout.rateIncreaseCriteria"
    criteria = _object(
        _required(members, "rateIncreaseCriteria", "rollout"), field, [c.value for c in RateIncreaseCriterion]
    )
    if len(criteria) != 1:
        raise BadRequestError(f"{field} must set exactly one of numberOfNotifiedDevices and numberOfSucceededDevices")
    [(name, count)] = criteria.items()
    threshold = _integer(count, f"{field}.{name}", 1, _MAX_COUNT)
    return ExponentialRate(base, float(factor), RateIncreaseCriterion(name), threshold)


# -- rollout: pacing -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    """Counts that drive pacing, as the job's device records stand: ``notified`` devices started
    (called or patched) so far, ``succeeded`` of them, ``in_flight`` started and not finished."""

    notified: int = 0
    succeeded: int = 0
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Allowance:
    """What the pacer allows at one moment.

    ``may_start``: devices that may start now (None = no limit at all; with a rate it is 0 or
    1). ``next_start_at``: the monotonic time at which the rate allows one more start beyond
    ``may_start`` (None when no rate applies). ``concurrency_full``: ``maxConcurrency`` devices
    are in flight, so a start must also wait for one of them to finish.
    """

    may_start: int | None
    next_start_at: float | None
    concurrency_full: bool = False


@dataclass(frozen=True, slots=True)
class Pacer:
    """A token bucket on an injected monotonic clock, as an immutable value.

    Tokens accrue at the rate in force (so a ramp step applies from the moment the counts
    reach it) up to 1.5 tokens, and a start spends one; the job starts with one token, so the
    first device starts at once and the second one interval later -- no burst at start. The
    counts come from the caller each time rather than being kept here, so after a restart a
    new pacer resumes the ramp where the stored records left it.
    """

    rollout: RolloutConfig
    tokens: float
    at: float

    @classmethod
    def begin(cls, rollout: RolloutConfig | None, now: float) -> Pacer:
        return cls(rollout or RolloutConfig(), 1.0, now)

    def _tokens(self, now: float, rate: float) -> float:
        elapsed = max(0.0, now - self.at)
        return min(_BUCKET_CAPACITY, self.tokens + elapsed * rate / 60.0)

    def allowance(self, now: float, progress: RolloutProgress) -> Allowance:
        limit = self.rollout.max_concurrency
        free = None if limit is None else max(0, limit - progress.in_flight)
        full = free == 0
        rate = self.rollout.rate_per_minute(progress.notified, progress.succeeded)
        if rate is None:
            return Allowance(free, None, full)
        tokens = self._tokens(now, rate)
        may_start = 1 if tokens >= 1.0 - _EPSILON else 0
        if free is not None:
            may_start = min(may_start, free)
        missing = max(0.0, 1.0 - (tokens - may_start))
        return Allowance(may_start, now + missing * 60.0 / rate, full)

    def started(self, now: float, progress: RolloutProgress) -> Pacer:
        """The pacer after one device started at ``now``; ``progress`` as given to ``allowance``.
        Starting what ``allowance`` did not allow is a bug (ValueError)."""
        rate = self.rollout.rate_per_minute(progress.notified, progress.succeeded)
        limit = self.rollout.max_concurrency
        if limit is not None and progress.in_flight >= limit:
            raise ValueError(f"{progress.in_flight} devices already in flight (maxConcurrency {limit})")
        if rate is None:
            return self
        tokens = self._tokens(now, rate)
        if tokens < 1.0 - _EPSILON:
            raise ValueError(f"no start allowed at {now}: the bucket holds {tokens:.3f} tokens")
        return replace(self, tokens=max(0.0, tokens - 1.0), at=max(now, self.at))


# -- abort ---------------------------------------------------------------------------------


class FailureType(StrEnum):
    FAILED = "failed"
    TIMED_OUT = "timedOut"
    ALL = "all"


_FAILURE_WORDS = {
    FailureType.FAILED: "failed",
    FailureType.TIMED_OUT: "timed out",
    FailureType.ALL: "failed or timed out",
}


@dataclass(frozen=True, slots=True)
class AbortCriterion:
    failure_type: FailureType
    threshold_percentage: float
    min_executed: int

    def document(self) -> JsonObject:
        return {
            "failureType": self.failure_type.value,
            "thresholdPercentage": self.threshold_percentage,
            "minNumberOfExecutedDevices": self.min_executed,
        }


@dataclass(frozen=True, slots=True)
class AbortConfig:
    criteria: tuple[AbortCriterion, ...]

    def document(self) -> JsonObject:
        return {"criteria": [criterion.document() for criterion in self.criteria]}


_CRITERION_FIELDS = ("failureType", "thresholdPercentage", "minNumberOfExecutedDevices")


def parse_abort(value: JsonValue) -> AbortConfig | None:
    """The job request's ``abort`` field, ``{"criteria": [...]}`` or the bare list; None when absent."""
    if value is None:
        return None
    field = "abort"
    items: JsonValue = value
    if not isinstance(items, list):
        field = "abort.criteria"
        items = _object(value, "abort", ("criteria",)).get("criteria")
        if not isinstance(items, list):
            raise BadRequestError(f"abort.criteria must be a list of criteria, got {items!r}")
    if not 1 <= len(items) <= MAX_ABORT_CRITERIA:
        raise BadRequestError(f"{field} must hold 1 to {MAX_ABORT_CRITERIA} criteria, got {len(items)}")
    return AbortConfig(tuple(_parse_criterion(item, f"{field}[{i}]") for i, item in enumerate(items)))


def _parse_criterion(value: JsonValue, field: str) -> AbortCriterion:
    members = _object(value, field, _CRITERION_FIELDS)
    kind = _required(members, "failureType", field)
    try:
        failure_type = FailureType(kind) if isinstance(kind, str) else None
    except ValueError:
        failure_type = None
    if failure_type is None:
        raise BadRequestError(
            f"{field}.failureType must be one of {', '.join(t.value for t in FailureType)}, got {kind!r}"
        )
    threshold = _number(
        _required(members, "thresholdPercentage", field), f"{field}.thresholdPercentage", 0, 100, decimals=2
    )
    min_executed = _integer(
        _required(members, "minNumberOfExecutedDevices", field), f"{field}.minNumberOfExecutedDevices", 1, _MAX_COUNT
    )
    return AbortCriterion(failure_type, threshold, min_executed)


@dataclass(frozen=True, slots=True)
class AbortCounts:
    """``executed``: devices whose attempt finished (succeeded, failed or timed out; canceled
    ones do not count); ``failed`` and ``timed_out`` are disjoint parts of it."""

    executed: int
    failed: int = 0
    timed_out: int = 0

    def __post_init__(self) -> None:
        if min(self.executed, self.failed, self.timed_out) < 0 or self.failed + self.timed_out > self.executed:
            raise ValueError(f"inconsistent abort counts {self}")

    def failures(self, failure_type: FailureType) -> int:
        if failure_type is FailureType.FAILED:
            return self.failed
        if failure_type is FailureType.TIMED_OUT:
            return self.timed_out
        return self.failed + self.timed_out


@dataclass(frozen=True, slots=True)
class AbortVerdict:
    criterion: AbortCriterion
    failures: int
    executed: int

    @property
    def percentage(self) -> float:
        return 100.0 * self.failures / self.executed

    @property
    def failure_reason(self) -> str:
        """The job's ``failureReason``, e.g. ``abort: 35.0% of 40 executed devices failed
        (threshold 30%, failureType failed)``."""
        criterion = self.criterion
        return (
            f"abort: {self.percentage:.1f}% of {self.executed} executed devices "
            f"{_FAILURE_WORDS[criterion.failure_type]} (threshold {criterion.threshold_percentage:g}%, "
            f"failureType {criterion.failure_type.value})"
        )


def evaluate_abort(config: AbortConfig | None, counts: AbortCounts) -> AbortVerdict | None:
    """The first criterion, in request order, that trips on ``counts``; None when none does."""
    if config is None:
        return None
    for criterion in config.criteria:
        if counts.executed < criterion.min_executed:
            continue
        failures = counts.failures(criterion.failure_type)
        # Exact arithmetic: 3 of 10 against 30% must trip, whatever 0.3 is in binary.
        threshold = Fraction(str(criterion.threshold_percentage))
        if failures > 0 and failures * 100 >= threshold * counts.executed:
            return AbortVerdict(criterion, failures, counts.executed)
    return None


# -- retry ---------------------------------------------------------------------------------


class RetryOn(StrEnum):
    # The first two are the codes of DeviceNotOnlineError and GatewayTimeoutError.
    DEVICE_NOT_ONLINE = "DeviceNotOnline"
    GATEWAY_TIMEOUT = "GatewayTimeout"
    FAILED = "failed"


DEFAULT_RETRY_ON = frozenset({RetryOn.DEVICE_NOT_ONLINE, RetryOn.GATEWAY_TIMEOUT})


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    backoff_factor: float = 1.0
    retry_on: frozenset[RetryOn] = DEFAULT_RETRY_ON

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) before the next one."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        # Capped before the power can overflow: factor <= 10 and attempt <= MAX_ATTEMPTS in use.
        exponent = min(attempt - 1, 64)
        return min(MAX_BACKOFF_SECONDS, self.backoff_seconds * self.backoff_factor**exponent)

    def document(self) -> JsonObject:
        return {
            "maxAttempts": self.max_attempts,
            "backoffSeconds": self.backoff_seconds,
            "backoffFactor": self.backoff_factor,
            "retryOn": [kind.value for kind in RetryOn if kind in self.retry_on],
        }


_RETRY_ON_VALUES = frozenset(kind.value for kind in RetryOn)
_RETRY_FIELDS = ("maxAttempts", "backoffSeconds", "backoffFactor", "retryOn")


def parse_retry(value: JsonValue) -> RetryConfig | None:
    """The job request's ``retry`` field; None when absent."""
    if value is None:
        return None
    members = _object(value, "retry", _RETRY_FIELDS)
    attempts = _integer(_required(members, "maxAttempts", "retry"), "retry.maxAttempts", 1, MAX_ATTEMPTS)
    backoff = _number(
        members.get("backoffSeconds", DEFAULT_BACKOFF_SECONDS), "retry.backoffSeconds", 0, MAX_BACKOFF_SECONDS
    )
    factor = _number(members.get("backoffFactor", 1.0), "retry.backoffFactor", 1, 10)
    retry_on = DEFAULT_RETRY_ON
    if "retryOn" in members:
        names = members["retryOn"]
        known = ", ".join(kind.value for kind in RetryOn)
        if not isinstance(names, list) or not names:
            raise BadRequestError(f"retry.retryOn must be a non-empty list of {known}, got {names!r}")
        kinds: set[RetryOn] = set()
        for i, name in enumerate(names):
            if not isinstance(name, str) or name not in _RETRY_ON_VALUES:
                raise BadRequestError(f"retry.retryOn[{i}] must be one of {known}, got {name!r}")
            kinds.add(RetryOn(name))
        retry_on = frozenset(kinds)
    return RetryConfig(attempts, backoff, factor, retry_on)


def retry_kind(outcome: str | int) -> RetryOn | None:
    """What an attempt's outcome is for ``retryOn``: an error code (``DeviceNotOnline``,
    ``GatewayTimeout``; any other code is never retried) or the device's reply status
    (200-299 is success, None; anything else is ``failed``)."""
    if isinstance(outcome, int):
        return None if 200 <= outcome < 300 else RetryOn.FAILED
    if outcome in (RetryOn.DEVICE_NOT_ONLINE, RetryOn.GATEWAY_TIMEOUT):
        return RetryOn(outcome)
    return None


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``retry``: attempt ``next_attempt`` after ``delay_seconds``; ``reason`` says why (not)."""

    retry: bool
    next_attempt: int
    delay_seconds: float
    reason: str


def decide_retry(
    config: RetryConfig | None, attempt: int, outcome: str | int, *, seconds_left: float | None = None
) -> RetryDecision:
    """Whether attempt ``attempt`` (1-based), which ended with ``outcome`` (see ``retry_kind``),
    is tried again. ``seconds_left`` until the job's deadline, when given, refuses a retry that
    could not begin before it, so the device fails with its real error rather than JobTimedOut."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, got {attempt}")
    if isinstance(outcome, int) and 200 <= outcome < 300:
        return RetryDecision(False, attempt, 0.0, f"attempt {attempt} succeeded")
    if config is None:
        return RetryDecision(False, attempt, 0.0, "the job has no retry policy")
    kind = retry_kind(outcome)
    if kind is None or kind not in config.retry_on:
        shown = f"reply status {outcome}" if isinstance(outcome, int) else outcome
        return RetryDecision(False, attempt, 0.0, f"{shown} is not retried (retryOn)")
    if attempt >= config.max_attempts:
        return RetryDecision(False, attempt, 0.0, f"{config.max_attempts} attempts made (maxAttempts)")
    delay = config.delay_after(attempt)
    if seconds_left is not None and delay >= seconds_left:
        return RetryDecision(
            False, attempt, 0.0, f"a retry in {delay:g} s would come after the job's deadline ({seconds_left:g} s left)"
        )
    return RetryDecision(True, attempt + 1, delay, f"{kind.value}: attempt {attempt + 1} in {delay:g} s")


# -- all together --------------------------------------------------------------------------


def parse_continuous(value: JsonValue) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequestError(f"continuous must be true or false, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class JobControls:
    """The rollout-control fields of one job request, each optional."""

    rollout: RolloutConfig | None = None
    abort: AbortConfig | None = None
    retry: RetryConfig | None = None
    continuous: bool = False

    @classmethod
    def create(cls, body: Mapping[str, JsonValue], *, method_job: bool) -> JobControls:
        """Validate ``rollout``, ``abort``, ``retry`` and ``continuous`` of a job request body
        (other fields are the caller's); ``retry`` is refused on twin jobs, which never retry."""
        retry = parse_retry(body.get("retry"))
        if retry is not None and not method_job:
            raise BadRequestError("retry applies to scheduleDeviceMethod jobs only")
        return cls(
            parse_rollout(body.get("rollout")),
            parse_abort(body.get("abort")),
            retry,
            parse_continuous(body.get("continuous")),
        )

    def document(self) -> JsonObject:
        """The fields to merge into the job's document; only those set, so a plain job's
        document stays exactly IoT Hub's."""
        doc: JsonObject = {}
        if self.rollout is not None:
            doc["rollout"] = self.rollout.document()
        if self.abort is not None:
            doc["abort"] = self.abort.document()
        if self.retry is not None:
            doc["retry"] = self.retry.document()
        if self.continuous:
            doc["continuous"] = True
        return doc


NO_CONTROLS = JobControls()  # a plain job: no pacing, no abort, no retry, not continuous
