"""A job's rollout controls as the SDK sends and reads them: pacing, abort criteria, retries.

The limits and meanings are the hub's (``hub.domain.rollout`` documents every field); these
types only shape the JSON. ``from_json`` is lenient, so a newer hub does not break an older
SDK, and ``to_json`` writes only what was set, so the hub's defaults apply to the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.domain.rollout import FailureType, RateIncreaseCriterion, RetryOn
from job_client._json import enum_or_text, integer

__all__ = [
    "AbortCriterion",
    "FailureType",
    "RateIncreaseCriterion",
    "RetryOn",
    "RetryPolicy",
    "Rollout",
    "RolloutRamp",
    "abort_json",
    "option_json",
]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


@dataclass(frozen=True, slots=True)
class RolloutRamp:
    """An exponential rate: ``base_rate_per_minute``, times ``increment_factor`` after every
    ``threshold`` devices notified (or, with ``criterion`` SUCCEEDED, succeeded)."""

    base_rate_per_minute: int
    increment_factor: float
    threshold: int
    criterion: RateIncreaseCriterion = RateIncreaseCriterion.NOTIFIED


@dataclass(frozen=True, slots=True)
class Rollout:
    """A job's ``rollout``: a constant ``max_per_minute``, or a ``ramp`` (capped by
    ``max_per_minute`` when both are given), and/or ``max_concurrency`` devices in flight."""

    max_per_minute: int | None = None
    ramp: RolloutRamp | None = None
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.max_per_minute is None and self.ramp is None and self.max_concurrency is None:
            raise ValueError("a rollout needs max_per_minute, ramp or max_concurrency")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.max_per_minute is not None:
            doc["maxPerMinute"] = self.max_per_minute
        if self.ramp is not None:
            doc["baseRatePerMinute"] = self.ramp.base_rate_per_minute
            doc["incrementFactor"] = self.ramp.increment_factor
            doc["rateIncreaseCriteria"] = {self.ramp.criterion.value: self.ramp.threshold}
        if self.max_concurrency is not None:
            doc["maxConcurrency"] = self.max_concurrency
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Rollout | None:
        """The rollout a job document carries; None when it sets nothing this SDK knows."""
        ramp = None
        base, factor = integer(doc.get("baseRatePerMinute")), _number(doc.get("incrementFactor"))
        criteria = doc.get("rateIncreaseCriteria")
        if base is not None and factor is not None and isinstance(criteria, Mapping):
            for criterion in RateIncreaseCriterion:
                threshold = integer(criteria.get(criterion.value))
                if threshold is not None:
                    ramp = RolloutRamp(base, float(factor), threshold, criterion)
                    break
        max_per_minute, max_concurrency = integer(doc.get("maxPerMinute")), integer(doc.get("maxConcurrency"))
        if max_per_minute is None and ramp is None and max_concurrency is None:
            return None
        return cls(max_per_minute, ramp, max_concurrency)


@dataclass(frozen=True, slots=True)
class AbortCriterion:
    """Abort the job once ``min_executed`` devices have finished and at least
    ``threshold_percentage`` of them ended with ``failure_type``."""

    failure_type: FailureType | str
    threshold_percentage: float
    min_executed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "failureType": str(self.failure_type),
            "thresholdPercentage": self.threshold_percentage,
            "minNumberOfExecutedDevices": self.min_executed,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AbortCriterion:
        return cls(
            enum_or_text(FailureType, doc.get("failureType")),
            _number(doc.get("thresholdPercentage")) or 0.0,
            integer(doc.get("minNumberOfExecutedDevices")) or 0,
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A method job's ``retry``: ``max_attempts`` counts every attempt (1 = none repeated);
    fields left None take the hub's defaults (10 s, factor 1, DeviceNotOnline and GatewayTimeout)."""

    max_attempts: int
    backoff_seconds: float | None = None
    backoff_factor: float | None = None
    retry_on: tuple[RetryOn | str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"maxAttempts": self.max_attempts}
        if self.backoff_seconds is not None:
            doc["backoffSeconds"] = self.backoff_seconds
        if self.backoff_factor is not None:
            doc["backoffFactor"] = self.backoff_factor
        if self.retry_on is not None:
            doc["retryOn"] = [str(kind) for kind in self.retry_on]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RetryPolicy:
        retry_on = doc.get("retryOn")
        return cls(
            integer(doc.get("maxAttempts")) or 1,
            _number(doc.get("backoffSeconds")),
            _number(doc.get("backoffFactor")),
            tuple(enum_or_text(RetryOn, kind) for kind in retry_on) if isinstance(retry_on, list) else None,
        )


def abort_json(abort: Sequence[AbortCriterion] | AbortCriterion | Mapping[str, Any]) -> dict[str, Any]:
    """The ``abort`` field: ``{"criteria": [...]}`` from criteria, or a document given as is."""
    if isinstance(abort, AbortCriterion):
        abort = [abort]
    if isinstance(abort, Mapping):
        return dict(abort)
    return {"criteria": [criterion.to_json() for criterion in abort]}


def option_json(
    *,
    rollout: Rollout | Mapping[str, Any] | None = None,
    abort: Sequence[AbortCriterion] | AbortCriterion | Mapping[str, Any] | None = None,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    continuous: bool = False,
) -> dict[str, Any]:
    """The rollout-control members of a job request; only those given, so a plain job stays IoT Hub's."""
    doc: dict[str, Any] = {}
    if rollout is not None:
        doc["rollout"] = rollout.to_json() if isinstance(rollout, Rollout) else dict(rollout)
    if abort is not None:
        doc["abort"] = abort_json(abort)
    if retry is not None:
        doc["retry"] = retry.to_json() if isinstance(retry, RetryPolicy) else dict(retry)
    if continuous:
        doc["continuous"] = True
    return doc
