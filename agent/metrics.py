"""Every metric the agent exports, defined once.

Dashboards, alert rules and tests all check against ``CATALOGUE``, so a renamed metric
breaks a test instead of a dashboard in production. Label values are bounded: source and
detector names come from the config, reasons and kinds from fixed vocabularies; never a
record id, a feature value or free text.

Each agent owns its own ``CollectorRegistry`` (``Metrics()``), so tests and several agents in
one process never collide in the global registry.
"""

from __future__ import annotations

import platform
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
    "metasentry_store_commit_retries_total": "counter",
    "metasentry_store_buffered_batches": "gauge",
    "metasentry_last_batch_timestamp_seconds": "gauge",
}

#: the bounded vocabulary of ``reason`` on metasentry_records_rejected_total
REJECT_REASONS: Final[tuple[str, ...]] = (
    "decode", "not_json", "not_object", "csv_columns", "oversize",
    "missing_field", "wrong_type", "non_finite", "bad_shape",
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _base(name: str) -> str:
    """prometheus-client adds ``_total`` / ``_info`` itself; it wants the base name."""
    return name.removesuffix("_total").removesuffix("_info")


class Metrics:
    """The agent's metric objects, registered in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
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
        self.store_retries = Counter(_base("metasentry_store_commit_retries_total"),
                                     "Batch commits retried after a database failure.", registry=r)
        self.store_buffered = Gauge("metasentry_store_buffered_batches",
                                    "Batches held in memory while the database is unavailable.",
                                    registry=r)
        self.last_batch = Gauge("metasentry_last_batch_timestamp_seconds",
                                "Unix time of the source's last committed batch.", ["source"],
                                registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version(),
                              "tensorflow": _tensorflow_version()})

    def set_config(self, sha256: str) -> None:
        self.config_info.info({"sha256": sha256})

    def set_model(self, version: str, algorithm: str, sha256: str) -> None:
        self.model_info.info({"version": version, "algorithm": algorithm, "sha256": sha256})


def _tensorflow_version() -> str:
    """TensorFlow's version without importing it (importing costs seconds at start-up)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "absent"
