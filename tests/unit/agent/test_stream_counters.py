"""The ``metasentry_stream_entries_*_total`` counters follow a source's own counts exactly,
though the pipeline thread and the health thread both export them."""

from __future__ import annotations

import threading

from adapters import StreamStats
from agent.metrics import Metrics
from agent.pipeline import observe_stream


class SlowSnapshots:
    """A consumer-group source whose first snapshot is held back until the test releases it,
    the way a thread can be preempted between reading the counts and exporting them."""

    name = "events"

    def __init__(self) -> None:
        self.claimed = 0
        self.first_taken = threading.Event()
        self.release_first = threading.Event()
        self._calls = 0

    @property
    def stream_stats(self) -> StreamStats:
        self._calls += 1
        snapshot = StreamStats(claimed=self.claimed)
        if self._calls == 1:
            self.first_taken.set()
            assert self.release_first.wait(10)
        return snapshot


def claimed(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("metasentry_stream_entries_claimed_total",
                                             {"source": "events"})


def test_an_older_snapshot_exported_late_is_not_taken_for_a_restart() -> None:
    metrics = Metrics()
    source = SlowSnapshots()
    source.claimed = 10
    health = threading.Thread(target=observe_stream, args=(metrics, source))
    health.start()
    assert source.first_taken.wait(10)
    source.claimed = 25  # the pipeline claims more and exports while the old snapshot waits
    pipeline = threading.Thread(target=observe_stream, args=(metrics, source))
    pipeline.start()
    pipeline.join(0.3)
    source.release_first.set()
    health.join(10)
    pipeline.join(10)
    assert claimed(metrics) == 25

