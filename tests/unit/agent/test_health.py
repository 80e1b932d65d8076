"""Bounded probes and the commit-in-flight gauge: what the agent shows while it waits."""

from __future__ import annotations

import doctest
import threading
import time

import pytest

import agent.health
from agent.health import BoundedProbe, HealthMonitor
from agent.metrics import InFlight, Metrics


def test_the_module_examples_run() -> None:
    assert doctest.testmod(agent.health).failed == 0


def test_a_hung_probe_is_waited_on_not_duplicated() -> None:
    release = threading.Event()
    started: list[float] = []

    def probe() -> str:
        started.append(time.monotonic())
        release.wait(10)
        return "answered"

    bounded = BoundedProbe(probe, name="test")
    for _ in range(3):
        before = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer within 0.05s"):
            bounded(0.05)
        assert time.monotonic() - before < 1
    assert len(started) == 1, "one hung probe at a time, however often readiness is asked"
    release.set()
    assert bounded(2) == "answered"
    assert bounded(2) == "answered" and len(started) == 2, "a finished probe is run afresh"


def test_a_probe_that_raises_hands_the_error_to_the_caller() -> None:
    def probe() -> None:
        raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        BoundedProbe(probe, name="test")(1)


def test_the_in_flight_age_grows_while_a_commit_runs_and_is_zero_after() -> None:
    metrics = Metrics()

    def age() -> float:
        return metrics.registry.get_sample_value("metasentry_batch_in_flight_age_seconds") or 0

    assert age() == 0
    with metrics.in_flight.track():
        time.sleep(0.05)
        with metrics.in_flight.track():  # a second, younger commit: the oldest counts
            assert age() >= 0.05
    assert age() == 0


def test_in_flight_ends_when_the_block_raises() -> None:
    in_flight = InFlight()
    with pytest.raises(ValueError), in_flight.track():
        raise ValueError
    assert in_flight.oldest_age() == 0


def test_the_monitor_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval_s must be positive, got 0"):
        HealthMonitor(None, interval_s=0)  # type: ignore[arg-type]
