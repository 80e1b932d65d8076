"""Every metric the agent exports, defined once.

Dashboards, alert rules and tests all check against ``CATALOGUE``, so a renamed metric
breaks a test instead of a dashboard in production. Label values are bounded: source and
detector names come from the config, reasons and kinds from fixed vocabularies; never a
record id, a feature value or free text.

Each agent owns its own ``CollectorRegistry`` (``Metrics()``), so tests and several agents in
one process never collide in the global registry.
"""

from __future__ import annotations

import itertools
import math
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from adapters.base import StreamStats
from adapters.sinks.base import FAILURE_REASONS
from agent.version import __version__

#: name as scraped (counters with ``_total``, histograms by base name) -> kind
CATALOGUE: Final[dict[str, str]] = {
    "metasentry_build_info": "info",
    "metasentry_config_info": "info",
    "metasentry_model_info": "info",
    "metasentry_ready": "gauge",
    "metasentry_records_received_total": "counter",
    "metasentry_records_processed_total": "counter",
    "metasentry_records_rejected_total": "counter",
    "metasentry_incidents_created_total": "counter",
    "metasentry_batch_duration_seconds": "histogram",
    "metasentry_detector_last_p_value": "gauge",
    "metasentry_detector_last_statistic": "gauge",
    "metasentry_drift_windows_total": "counter",
    "metasentry_drift_windows_rejected_total": "counter",
    "metasentry_scheduler_job_runs_total": "counter",
    "metasentry_scheduler_job_failures_total": "counter",
    "metasentry_scheduler_job_last_success_timestamp_seconds": "gauge",
    "metasentry_source_lag_bytes": "gauge",
    "metasentry_source_exhausted": "gauge",
    "metasentry_source_skipped_bytes_total": "counter",
    "metasentry_store_commit_retries_total": "counter",
    "metasentry_store_buffered_batches": "gauge",
    "metasentry_last_batch_timestamp_seconds": "gauge",
    "metasentry_last_commit_timestamp_seconds": "gauge",
    "metasentry_batch_in_flight_age_seconds": "gauge",
    "metasentry_store_rows_degraded_total": "counter",
    "metasentry_findings_total": "counter",
    "metasentry_labels_total": "counter",
    "metasentry_adaptations_total": "counter",
    "metasentry_adaptation_duration_seconds": "histogram",
    "metasentry_model_canary_accuracy": "gauge",
    "metasentry_model_benign_false_alarm_rate": "gauge",
    "metasentry_alerts_delivered_total": "counter",
    "metasentry_alert_delivery_failures_total": "counter",
    "metasentry_alert_permanent_failures_total": "counter",
    "metasentry_alert_outbox_pending": "gauge",
    "metasentry_alert_outbox_oldest_pending_age_seconds": "gauge",
    "metasentry_source_reachable": "gauge",
    "metasentry_stream_pending_entries": "gauge",
    "metasentry_stream_group_lag_entries": "gauge",
    "metasentry_stream_unread_trimmed_entries": "gauge",
    "metasentry_stream_oldest_pending_age_seconds": "gauge",
    "metasentry_stream_entries_read_total": "counter",
    "metasentry_stream_entries_acked_total": "counter",
    "metasentry_stream_entries_claimed_total": "counter",
    "metasentry_stream_entries_dead_lettered_total": "counter",
    "metasentry_stream_entries_trimmed_total": "counter",
    "metasentry_stream_entries_redelivered_total": "counter",
    "metasentry_source_sessions_lost_total": "counter",
    # the HTTP ingest source (``POST /v1/ingest``)
    "metasentry_ingest_requests_total": "counter",
    "metasentry_ingest_records_total": "counter",
    "metasentry_ingest_queue_records": "gauge",
    "metasentry_ingest_queue_bytes": "gauge",
}

#: values of ``outcome`` on metasentry_ingest_requests_total: 200 (all accepted, some
#: quarantined, answered from the idempotency memory), then each refusal the route gives
INGEST_OUTCOMES: Final[tuple[str, ...]] = (
    "accepted", "partial", "replayed", "throttled", "too_large", "unsupported_media_type",
    "invalid", "conflict", "timeout", "unavailable",
)

#: values of ``result`` on metasentry_ingest_records_total
INGEST_RECORD_RESULTS: Final[tuple[str, ...]] = ("accepted", "quarantined")

#: the bounded vocabulary of ``reason`` on metasentry_records_rejected_total
REJECT_REASONS: Final[tuple[str, ...]] = (
    "decode", "not_json", "not_object", "csv_columns", "oversize",
    "missing_field", "wrong_type", "non_finite", "bad_shape", "blank", "max_deliveries",
)

#: the bounded vocabulary of ``reason`` on metasentry_source_skipped_bytes_total
SKIP_REASONS: Final[tuple[str, ...]] = ("rotated_missing", "truncated", "replaced", "unreadable",
                                        "compressed")

#: tables and outcomes of metasentry_store_rows_degraded_total (see agent.salvage)
DEGRADED_TABLES: Final[tuple[str, ...]] = ("incidents", "quarantine", "drift_reports",
                                           "source_offsets")
DEGRADED_OUTCOMES: Final[tuple[str, ...]] = ("degraded", "dropped")

#: values of ``status`` on metasentry_labels_total
LABEL_STATUSES: Final[tuple[str, ...]] = ("received", "held", "used", "rejected", "released")

#: values of ``outcome`` on metasentry_adaptations_total
ADAPTATION_OUTCOMES: Final[tuple[str, ...]] = ("activated", "rejected", "failed")

#: predicted-class label values are class names of the model, at most this many distinct ones
MAX_CLASS_LABELS: Final = 64


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _base(name: str) -> str:
    """prometheus-client adds ``_total`` / ``_info`` itself; it wants the base name."""
    return name.removesuffix("_total").removesuffix("_info")


class Metrics:
    """The agent's metric objects, registered in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._class_labels: set[str] = set()
        self._class_lock = threading.Lock()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build_info = Info(_base("metasentry_build_info"), "Agent build.", registry=r)
        self.config_info = Info(_base("metasentry_config_info"),
                                "sha256 of the loaded agent.yaml.", registry=r)
        self.model_info = Info(_base("metasentry_model_info"),
                               "Active classifier model version and its sha256.", registry=r)
        self.ready = Gauge("metasentry_ready",
                           "1 when the reference is fitted, the database answers and its schema is "
                           "at head.", registry=r)
        self.received = Counter(_base("metasentry_records_received_total"),
                                "Records read from a source.", ["source"], registry=r)
        self.processed = Counter(_base("metasentry_records_processed_total"),
                                 "Records encoded and scored.", ["source"], registry=r)
        self.rejected = Counter(_base("metasentry_records_rejected_total"),
                                "Records quarantined, by reason.", ["source", "reason"], registry=r)
        self.incidents = Counter(_base("metasentry_incidents_created_total"),
                                 "Incidents created (duplicates of replayed records excluded).",
                                 ["kind", "severity"], registry=r)
        self.batch_seconds = Histogram("metasentry_batch_duration_seconds",
                                       "Encode, detect and commit time of one batch.", ["source"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.detector_p_value = Gauge("metasentry_detector_last_p_value",
                                      "p-value of the detector's last test.", ["detector"],
                                      registry=r)
        self.detector_statistic = Gauge("metasentry_detector_last_statistic",
                                        "Statistic of the detector's last test.", ["detector"],
                                        registry=r)
        self.windows = Counter(_base("metasentry_drift_windows_total"),
                               "Windows tested for drift.", ["detector"], registry=r)
        self.windows_rejected = Counter(_base("metasentry_drift_windows_rejected_total"),
                                        "Windows in which drift was detected.", ["detector"],
                                        registry=r)
        self.job_runs = Counter(_base("metasentry_scheduler_job_runs_total"),
                                "Scheduled job runs.", ["job"], registry=r)
        self.job_failures = Counter(_base("metasentry_scheduler_job_failures_total"),
                                    "Scheduled job runs that raised.", ["job"], registry=r)
        self.job_last_success = Gauge("metasentry_scheduler_job_last_success_timestamp_seconds",
                                      "Unix time of the job's last successful run.", ["job"],
                                      registry=r)
        self.source_lag = Gauge("metasentry_source_lag_bytes",
                                "Bytes known to the source but not yet read.", ["source"],
                                registry=r)
        self.source_exhausted = Gauge("metasentry_source_exhausted",
                                      "1 when a replay source has read everything.", ["source"],
                                      registry=r)
        self.source_skipped = Counter(_base("metasentry_source_skipped_bytes_total"),
                                      "Bytes a source knows it could not read: a rotated file "
                                      "gone, truncated or replaced before its end was read.",
                                      ["source", "reason"], registry=r)
        self.store_retries = Counter(_base("metasentry_store_commit_retries_total"),
                                     "Batch commits retried after a database failure.", registry=r)
        self.store_buffered = Gauge("metasentry_store_buffered_batches",
                                    "Batches held in memory while the database is unavailable.",
                                    registry=r)
        self.last_batch = Gauge("metasentry_last_batch_timestamp_seconds",
                                "Unix time of the source's last committed batch.", ["source"],
                                registry=r)
        self.last_commit = Gauge("metasentry_last_commit_timestamp_seconds",
                                 "Unix time of the last commit to the database (0: none yet).",
                                 registry=r)
        # Computed at scrape time, so a commit hung in the database still shows, and grows.
        self.in_flight = InFlight()
        self.batch_in_flight_age = Gauge("metasentry_batch_in_flight_age_seconds",
                                         "Seconds the oldest batch commit now in flight has been "
                                         "running, retries included (0 when idle).", registry=r)
        self.batch_in_flight_age.set_function(self.in_flight.oldest_age)
        self.rows_degraded = Counter(_base("metasentry_store_rows_degraded_total"),
                                     "Rows the database refused, stored with their text in ASCII "
                                     "escapes (degraded) or, refused even then, dropped.",
                                     ["table", "outcome"], registry=r)
        for table in DEGRADED_TABLES:
            for outcome in DEGRADED_OUTCOMES:
                self.rows_degraded.labels(table, outcome)
        self.findings = Counter(_base("metasentry_findings_total"),
                                "Records flagged by record and labelled-data detectors, by kind "
                                "and predicted class.", ["detector", "kind", "predicted_class"],
                                registry=r)
        self.labels = Counter(_base("metasentry_labels_total"),
                              "Analyst labels, by what happened to them: received (through this "
                              "process's API), held by screening, used by a version, rejected "
                              "with a version that failed its canary, released.",
                              ["status"], registry=r)
        for status in LABEL_STATUSES:
            self.labels.labels(status)
        self.adaptations = Counter(_base("metasentry_adaptations_total"),
                                   "Adaptation runs that produced a version, by outcome.",
                                   ["outcome"], registry=r)
        for outcome in ADAPTATION_OUTCOMES:
            self.adaptations.labels(outcome)
        self.adaptation_seconds = Histogram("metasentry_adaptation_duration_seconds",
                                            "Labels to a registered version: screening, "
                                            "enrolment, canary and registry.",
                                            buckets=_LATENCY_BUCKETS, registry=r)
        self.model_canary_accuracy = Gauge("metasentry_model_canary_accuracy",
                                           "Known-class accuracy of the serving version on the "
                                           "canary set.", registry=r)
        self.model_benign_false_alarm_rate = Gauge(
            "metasentry_model_benign_false_alarm_rate",
            "Share of benign canary records the serving version would alarm on.", registry=r)
        self.alerts_delivered = Counter(_base("metasentry_alerts_delivered_total"),
                                        "Alerts a sink took (a 2xx answer, lines fsynced).",
                                        ["sink"], registry=r)
        self.alert_failures = Counter(_base("metasentry_alert_delivery_failures_total"),
                                      "Failed delivery attempts, by reason (each is retried "
                                      "unless the sink refused it for good).",
                                      ["sink", "reason"], registry=r)
        self.alert_permanent_failures = Counter(
            _base("metasentry_alert_permanent_failures_total"),
            "Alerts given up on: the sink refused them (4xx other than 408/429) on every "
            "attempt. Kept in the outbox with the last error.", ["sink"], registry=r)
        self.alert_outbox_pending = Gauge("metasentry_alert_outbox_pending",
                                          "Alerts queued for the sink and not yet delivered, "
                                          "in the whole database.", ["sink"], registry=r)
        self.alert_outbox_oldest_age = Gauge(
            "metasentry_alert_outbox_oldest_pending_age_seconds",
            "Age of the oldest alert still queued for the sink (0 when none is); computed "
            "when scraped, so it grows while the sink or the database is down.", ["sink"],
            registry=r)
        self._oldest_pending: dict[str, float | None] = {}
        self._stream_metrics(r)
        self._ingest_metrics(r)
        self.build_info.info({"version": __version__, "python": platform.python_version(),
                              "tensorflow": _tensorflow_version()})

    def _ingest_metrics(self, r: CollectorRegistry) -> None:
        """``POST /v1/ingest``: requests by outcome, records by result, the queue's fill."""
        self.ingest_requests = Counter(
            _base("metasentry_ingest_requests_total"),
            "Ingest requests by outcome (401/403 are answered before the route and not "
            "counted).", ["outcome"], registry=r)
        for outcome in INGEST_OUTCOMES:
            self.ingest_requests.labels(outcome)
        self.ingest_records = Counter(
            _base("metasentry_ingest_records_total"),
            "Records of committed ingest requests: accepted, or quarantined (bad JSON, "
            "refused by the encoder).", ["result"], registry=r)
        for result in INGEST_RECORD_RESULTS:
            self.ingest_records.labels(result)
        self.ingest_queue_records = Gauge(
            "metasentry_ingest_queue_records",
            "Records submitted over HTTP and not yet fetched by the pipeline.", ["source"],
            registry=r)
        self.ingest_queue_bytes = Gauge(
            "metasentry_ingest_queue_bytes",
            "Text bytes of the records submitted over HTTP and not yet fetched.", ["source"],
            registry=r)

    def class_label(self, name: str | None) -> str:
        """A predicted class as a metric label: ``none``, a class name, or ``other`` past the cap.

        Class names come from the model's enrolled classes, which analysts can extend; the cap
        keeps a runaway labelling from turning into a runaway number of series.
        """
        if name is None:
            return "none"
        with self._class_lock:
            if name in self._class_labels:
                return name
            if len(self._class_labels) < MAX_CLASS_LABELS:
                self._class_labels.add(name)
                return name
        return "other"

    def track_sink(self, sink: str) -> None:
        """Export a configured sink's series (at 0) before its first delivery."""
        self.alerts_delivered.labels(sink)
        for reason in FAILURE_REASONS:
            self.alert_failures.labels(sink, reason)
        self.alert_permanent_failures.labels(sink)
        self.alert_outbox_pending.labels(sink).set(0)
        self._oldest_pending.setdefault(sink, None)
        self.alert_outbox_oldest_age.labels(sink).set_function(
            lambda: self._oldest_pending_age(sink))

    def set_alert_backlog(self, sink: str, pending: int, oldest: datetime | None) -> None:
        """What the outbox holds for ``sink``, as last read from the database."""
        self.alert_outbox_pending.labels(sink).set(pending)
        self._oldest_pending[sink] = None if oldest is None else oldest.timestamp()

    def _oldest_pending_age(self, sink: str) -> float:
        oldest = self._oldest_pending.get(sink)
        return 0.0 if oldest is None else max(0.0, datetime.now(UTC).timestamp() - oldest)

    def _stream_metrics(self, r: CollectorRegistry) -> None:
        """Sources read from a broker (Redis Streams consumer groups, MQTT sessions): backlog and
        what happened to entries. Gauges are NaN while unknown (adapters/_redis_stats.py; an
        MQTT broker reports no group lag, docs/SOURCES.md)."""
        self.source_reachable = Gauge("metasentry_source_reachable",
                                      "1 when the server a source reads from answered its last "
                                      "call, 0 during an outage (network sources only).",
                                      ["source"], registry=r)
        self.stream_pending = Gauge("metasentry_stream_pending_entries",
                                    "Entries delivered to the consumer group (any replica) and "
                                    "not acknowledged (XPENDING).", ["source"], registry=r)
        self.stream_lag = Gauge("metasentry_stream_group_lag_entries",
                                "Entries added to the stream and not yet delivered to the "
                                "consumer group; NaN when the server cannot tell (Redis < 7, "
                                "entries deleted before delivery).", ["source"], registry=r)
        self.stream_unread_trimmed = Gauge(
            "metasentry_stream_unread_trimmed_entries",
            "Entries added to the stream that the group will never read, trimmed or deleted "
            "before delivery, as far as the server's counters show; NaN when unknown.",
            ["source"], registry=r)
        self.stream_oldest_pending_age = Gauge(
            "metasentry_stream_oldest_pending_age_seconds",
            "Seconds since the oldest pending entry of the group was added (from its id); 0 "
            "when none is pending. Computed when scraped.", ["source"], registry=r)
        help_texts = {
            "read": "Entries delivered to this replica (new, its own pending, or claimed).",
            "acked": "Entries this replica acknowledged, after their batch was committed.",
            "claimed": "Entries this replica took over from an idle consumer (XAUTOCLAIM).",
            "dead_lettered": "Entries delivered more than max_deliveries times, moved to the "
                             "dead-letter stream and quarantined.",
            "trimmed": "Pending entries found trimmed or deleted before they were judged "
                       "(their content is lost).",
            "redelivered": "Entries delivered again after their batch was committed (a crash "
                           "between commit and acknowledgement); acknowledged, not re-judged.",
        }
        self.sessions_lost = Counter(
            _base("metasentry_source_sessions_lost_total"),
            "Reconnections on which the broker no longer had this agent's session (expired or "
            "lost): messages it held unacknowledged are gone (MQTT).", ["source"], registry=r)
        self.stream_counters = {
            name: Counter(_base(f"metasentry_stream_entries_{name}_total"), text, ["source"],
                          registry=r)
            for name, text in help_texts.items()}
        assert tuple(self.stream_counters) == StreamStats.COUNTERS
        self._stream_seen: dict[tuple[str, str], int] = {}
        self._stream_oldest: dict[str, int | None] = {}
        self._stream_lock = threading.Lock()

    def observe_stream(self, source: str, read: Callable[[], StreamStats]) -> None:
        """Export a consumer-group source's figures; counters advance by what is new.

        Called after each fetch round (one that only acknowledges or claims too) and by the
        health thread, so the counters take the difference from the last call (a source object
        started afresh counts from 0 again). ``read`` takes the snapshot under the lock: one
        taken earlier and exported later would look like a restart and be counted twice.
        """
        def value(figure: int | None) -> float:
            return math.nan if figure is None else float(figure)

        with self._stream_lock:
            stats = read()
            self.source_reachable.labels(source).set(1 if stats.reachable else 0)
            self.stream_pending.labels(source).set(value(stats.pending))
            self.stream_lag.labels(source).set(value(stats.group_lag))
            self.stream_unread_trimmed.labels(source).set(value(stats.unread_trimmed))
            if source not in self._stream_oldest:
                self.stream_oldest_pending_age.labels(source).set_function(
                    lambda: self._stream_oldest_age(source))
            self._stream_oldest[source] = stats.oldest_pending_ms
            counters = {**self.stream_counters, "sessions_lost": self.sessions_lost}
            for name, counter in counters.items():
                now = getattr(stats, name)
                before = self._stream_seen.get((source, name), 0)
                counter.labels(source).inc(now - before if now >= before else now)
                self._stream_seen[(source, name)] = now

    def _stream_oldest_age(self, source: str) -> float:
        oldest_ms = self._stream_oldest.get(source)
        return 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)

    def set_config(self, sha256: str) -> None:
        self.config_info.info({"sha256": sha256})

    def set_model(self, version: str, algorithm: str, sha256: str) -> None:
        self.model_info.info({"version": version, "algorithm": algorithm, "sha256": sha256})


class InFlight:
    """Start times of the commits now running, for an age gauge read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._tokens = itertools.count()

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count the enclosed block as in flight until it returns or raises."""
        token = next(self._tokens)
        with self._lock:
            self._started[token] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                del self._started[token]

    def oldest_age(self) -> float:
        """Seconds since the oldest block in flight began; 0 when none is."""
        with self._lock:
            oldest = min(self._started.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest


def _tensorflow_version() -> str:
    """TensorFlow's version without importing it (importing costs seconds at start-up)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "absent"
