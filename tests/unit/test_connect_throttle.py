"""The per-device connect throttle: a burst, then a steady rate; memory only for recent ids."""

from __future__ import annotations

import pytest

from hub.gateway.throttle import ConnectThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    throttle = ConnectThrottle(burst=3, per_minute=6, clock=clock)  # one every 10 s
    assert [throttle.allow("d") for _ in range(4)] == [True, True, True, False]
    clock.now += 9.9
    assert not throttle.allow("d")
    clock.now += 0.2
    assert throttle.allow("d")
    assert not throttle.allow("d")


def test_device_ids_are_throttled_apart() -> None:
    throttle = ConnectThrottle(burst=1, per_minute=1, clock=Clock())
    assert throttle.allow("a")
    assert not throttle.allow("a")
    assert throttle.allow("b")


def test_refusals_do_not_postpone_the_next_token() -> None:
    clock = Clock()
    throttle = ConnectThrottle(burst=1, per_minute=60, clock=clock)
    assert throttle.allow("d")
    for _ in range(50):
        clock.now += 0.01
        assert not throttle.allow("d")
    clock.now += 0.51  # one second after the token was spent, refusals or not
    assert throttle.allow("d")


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    clock = Clock()
    throttle = ConnectThrottle(burst=2, per_minute=60, clock=clock)
    throttle.allow("d")
    clock.now += 3600
    assert [throttle.allow("d") for _ in range(3)] == [True, True, False]


def test_refilled_buckets_are_forgotten() -> None:
    clock = Clock()
    throttle = ConnectThrottle(burst=2, per_minute=60, clock=clock)
    for n in range(1023):
        throttle.allow(f"old-{n}")
    clock.now += 10  # every old bucket is full again
    throttle.allow("new")  # the 1024th id: a sweep
    assert len(throttle) == 1


@pytest.mark.parametrize(("burst", "per_minute"), [(0, 1), (1, 0), (1, -1)])
def test_nonsense_limits_are_refused(burst: int, per_minute: float) -> None:
    with pytest.raises(ValueError, match="burst"):
        ConnectThrottle(burst=burst, per_minute=per_minute, clock=Clock())
