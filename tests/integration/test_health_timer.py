"""The agent refreshes its own readiness and source lag on a timer, bounded in time.

Without it ``metasentry_ready`` moved only when /readyz was called and the lag only after a
committed batch, so MetaSentryNotReady and MetaSentrySourceStalled could not fire during a
database outage. Here nobody calls /readyz and no batch is processed: the monitor alone has
to show the outage, through a relay that silently drops every packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pg_faults import Relay

from adapters.memory import MemorySource
from agent.config import load_config
from agent.health import HealthMonitor
from agent.metrics import Metrics
from agent.service import Agent
from storage import Store, StoreTimeouts

pytestmark = pytest.mark.postgres
FAST = StoreTimeouts(connect_s=2, statement_s=2, operation_s=3, ping_s=1)


def _within(predicate: Callable[[], bool], timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return round(time.monotonic() - started, 2)
        time.sleep(0.05)
    return None


def test_readiness_and_lag_follow_the_database_without_anyone_asking(
        write_config: Callable[..., Path], fresh_database: Callable[..., str],
        relay: Relay) -> None:
    url = relay.url(fresh_database("metasentry_health_test"))
    config = load_config(write_config(**{"storage.url": url}), need_token=False)
    metrics = Metrics()
    agent = Agent(config, metrics=metrics)
    agent.store.close()
    agent.store = Store(config.storage_url(), timeouts=FAST)
    agent.readiness_timeout_s = 1.0
    agent.prepare()
    source = MemorySource("mem", ["{}"] * 50, follow=True)
    agent.attach(source)  # attached, never fetched: no batch will ever update the lag

    def ready() -> float | None:
        return metrics.registry.get_sample_value("metasentry_ready")

    def lag() -> float | None:
        return metrics.registry.get_sample_value("metasentry_source_lag_bytes",
                                                 {"source": "mem"})

    monitor = HealthMonitor(agent, interval_s=0.2)
    monitor.start()
    try:
        assert _within(lambda: lag() == 50, 5) is not None
        source.append(["{}"] * 25)
        assert _within(lambda: lag() == 75, 5) is not None
        assert _within(lambda: ready() == 1, 5) is not None

        relay.blackhole()
        noticed = _within(lambda: ready() == 0, 10)
        assert noticed is not None, "ready stayed 1 with a silent database"
        asked = time.monotonic()
        checks = agent.readiness()  # what /readyz answers, within its deadline
        assert time.monotonic() - asked < 2.5
        assert checks["database_reachable"] is False

        relay.heal()
        recovered = _within(lambda: ready() == 1, 15)
        assert recovered is not None, "ready again once the network is back"
        print(f"\nhealth: ready 0 after {noticed}s of blackhole, 1 again {recovered}s after")
    finally:
        monitor.stop()
        agent.close()
