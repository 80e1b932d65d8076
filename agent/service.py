"""Assembling the agent from its config, and the loop that feeds the pipeline.

``Agent`` owns the long-lived objects (store, encoder, pipeline, sources, metrics, the alert
delivery worker) and the start-up order: database schema first (nothing may be written to an
old schema), then the reference fit (nothing can be scored without it), then sources at their
committed positions. The store is built with the configured alert sinks' routes, so every
incident any command commits is queued for them; only ``metasentry run`` delivers.
``Agent.run_sources`` is the one loop that fetches; it stops between batches, so a stop never
leaves a half-processed batch behind.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.base import ServerSource, Source
from adapters.files import CsvFileSource, JsonlFileSource
from adapters.http_ingest import HttpIngestSource
from adapters.mqtt import MqttSource
from adapters.redis_stream import RedisStreamSource
from adapters.stdin import StdinSource
from agent.config import (
    AgentConfig,
    CsvFileSourceConfig,
    HttpIngestSourceConfig,
    JsonlFileSourceConfig,
    MqttSourceConfig,
    RedisStreamSourceConfig,
    SourceConfig,
    StdinSourceConfig,
)
from agent.datafile import file_sha256, read_records
from agent.health import READINESS_TIMEOUT_S, BoundedProbe
from agent.metrics import Metrics
from agent.pipeline import BatchOutcome, Pipeline, observe_stream
from agent.schema import Encoder
from detectors.base import FeatureBatch
from storage import Store, StoreTimeouts, StoreUnavailable
from storage.records import MAX_SOURCE_CHARS
from storage.urls import redact_url

if TYPE_CHECKING:
    from agent.adaptation import Adapter
    from agent.delivery import DeliveryWorker
    from agent.model_runtime import ModelRuntime

log = logging.getLogger(__name__)


@dataclass
class RunTotals:
    """Running totals over every batch, for the replay summary."""

    received: int = 0
    processed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    incidents: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    windows_tested: int = 0
    # Bounded: a daemon runs for months; percentiles over the latest batches are what matter.
    batch_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def add(self, outcome: BatchOutcome) -> None:
        self.received += outcome.received
        self.processed += outcome.processed
        self.rejected.update(outcome.rejected)
        self.incidents.update(outcome.incidents)
        self.duplicates += outcome.duplicates
        self.windows_tested += outcome.windows_tested
        if outcome.received:
            self.batch_seconds.append(outcome.seconds)


def tune_garbage_collector() -> None:
    """Collect less often, and never rescan what start-up built.

    A batch allocates tens of thousands of short-lived dicts and strings; with the default
    thresholds CPython runs a collection every 700 allocations and, every so often, walks the
    whole heap, reference data included. Measured on the bundled sample this costs about a
    quarter of the pipeline's time. Cycles are rare in this code, so fewer collections lose
    nothing, and ``gc.freeze`` moves the objects alive after start-up out of every later scan.
    """
    gc.set_threshold(100_000, 50, 100)
    gc.freeze()


# Processes that run the pipeline (``run``, ``replay``) call tune_garbage_collector() once
# after start-up; library users (tests, notebooks) keep the interpreter's defaults.


def build_source(config: AgentConfig, spec: SourceConfig) -> Source:
    """The adapter for one ``sources:`` entry."""
    max_bytes = config.schema.max_record_bytes
    if isinstance(spec, CsvFileSourceConfig):
        columns = None if spec.header else config.schema.columns
        return CsvFileSource(spec.name, config.resolve(spec.path), mode=spec.mode, columns=columns,
                             header=spec.header, delimiter=spec.delimiter,
                             max_record_bytes=max_bytes)
    if isinstance(spec, JsonlFileSourceConfig):
        return JsonlFileSource(spec.name, config.resolve(spec.path), mode=spec.mode,
                               max_record_bytes=max_bytes)
    if isinstance(spec, StdinSourceConfig):
        columns = None if spec.header else config.schema.columns
        return StdinSource(spec.name, format=spec.format, columns=columns, header=spec.header)
    if isinstance(spec, HttpIngestSourceConfig):
        return HttpIngestSource(spec.name, max_queue_records=spec.max_queue_records,
                                max_queue_bytes=spec.max_queue_bytes,
                                remember_keys=spec.remember_keys)
    if isinstance(spec, RedisStreamSourceConfig):
        return RedisStreamSource(  # the redis package is imported here, when one is configured
            spec.name, config.source_url(spec), stream=spec.stream, group=spec.group,
            consumer=config.source_consumer(spec), field=spec.field, format=spec.record_format,
            columns=config.schema.columns, batch_size=spec.batch_size, block_ms=spec.block_ms,
            claim_idle_s=spec.claim_idle_s, max_deliveries=spec.max_deliveries,
            dead_letter_stream=spec.dead_letter_stream, start_id=spec.start_id,
            max_record_bytes=max_bytes, max_backoff_s=config.storage.retry_max_backoff_s,
            log_url=redact_url(spec.url))
    if isinstance(spec, MqttSourceConfig):
        return MqttSource(  # paho is imported here, when an MQTT source is configured
            spec.name, config.source_url(spec), topics=spec.topics, client_id=spec.client_id,
            id_field=spec.id_field, format=spec.format, columns=config.schema.columns,
            session_expiry_s=spec.session_expiry_s, max_buffered=spec.max_buffered,
            keepalive_s=spec.keepalive_s, max_record_bytes=max_bytes,
            max_backoff_s=config.storage.retry_max_backoff_s, log_url=redact_url(spec.url))
    raise TypeError(f"unsupported source config {type(spec).__name__}")


def fit_reference(config: AgentConfig) -> tuple[Encoder, FeatureBatch]:
    """Fit the encoder on the reference file and return the encoded reference."""
    ref = config.reference
    data = read_records(config.resolve(ref.path), columns=config.schema.columns,
                        header=ref.header, limit=ref.limit)
    encoder = Encoder(config.schema).fit(data.records, textual=data.textual)
    encoded = encoder.encode(data.records, textual=data.textual)
    if encoded.errors:
        reasons = Counter(e.reason for e in encoded.errors)
        log.warning("reference: %d records could not be encoded and were left out (%s)",
                    len(encoded.errors), dict(reasons))
    log.info("reference fitted: %d records, %d input columns", encoded.n_ok, encoder.dim)
    return encoder, encoded.features


class Agent:
    """The running agent: store, reference, pipeline, sources and metrics."""

    def __init__(self, config: AgentConfig, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.metrics.set_config(config.sha256)
        self.metrics.ready.set(0)
        self.stop_event = threading.Event()
        self.store = Store(config.storage_url(),
                           timeouts=StoreTimeouts(**config.storage.timeouts.model_dump()),
                           alert_routes=config.alert_routes())
        self.delivery: DeliveryWorker | None = None
        self.encoder: Encoder | None = None
        self.pipeline: Pipeline | None = None
        self.runtime: ModelRuntime | None = None
        self.adapter: Adapter | None = None
        self.sources: list[Source] = []
        self.totals = RunTotals()

    # --- start-up ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Migrate the database and fit the reference; safe to call once before any run."""
        log.info("database %s: applying migrations", self.store.redacted_url)
        self.store.upgrade()
        self.encoder, reference = fit_reference(self.config)
        if self.config.model.enabled:
            self.start_model(reference)
        self.pipeline = Pipeline(self.config, self.encoder, reference, self.store, self.metrics,
                                 should_stop=self.stop_event.is_set, model=self.runtime)
        active = self.store.active_model_version()
        if active is not None:
            self.metrics.set_model(active.version, active.algorithm, active.sha256)
        self.metrics.ready.set(1 if self.is_ready() else 0)

    def start_model(self, reference: FeatureBatch) -> None:
        """Serve the registry's active model version (creating version 1 on a new database)."""
        from agent.adaptation import Adapter
        from agent.model_runtime import ModelRuntime

        assert self.encoder is not None
        self.runtime = ModelRuntime(
            self.config, self.encoder, reference, self.store, self.metrics,
            reference_sha256=file_sha256(self.config.resolve(self.config.reference.path)))
        self.runtime.start()
        self.adapter = Adapter(self.config, self.store, self.runtime, self.metrics)
        self.adapter.apply_configured_settings()
        version = self.runtime.version
        assert version is not None
        log.info("model version %s (%s) serving: %d classes", version.version,
                 version.algorithm, len(version.classes or []))

    def adapt_soon(self, trigger: str) -> None:
        """Adapt in the background if labels are ready (the API answers without waiting)."""
        adapter = self.adapter
        if adapter is None:
            return

        def run() -> None:
            try:
                adapter.run_if_ready(trigger)
            except Exception:  # logged and counted by the adapter; the API call succeeded
                log.exception("background adaptation failed")

        threading.Thread(target=run, name="adaptation", daemon=True).start()

    def attach(self, source: Source) -> None:
        assert self.pipeline is not None, "prepare() first"
        self.pipeline.attach(source)
        self.sources.append(source)

    def attach_configured_sources(self) -> None:
        for spec in self.config.sources:
            self.attach(build_source(self.config, spec))

    #: longest a readiness check waits for the database before answering "not reachable"
    readiness_timeout_s: float = READINESS_TIMEOUT_S
    _was_ready: bool | None = None

    def is_ready(self) -> bool:
        return self.pipeline is not None and all(self.readiness().values())

    def readiness(self) -> dict[str, bool]:
        """Each readiness condition on its own, for /readyz and the health monitor.

        Bounded by ``readiness_timeout_s`` however the database behaves: a probe that has not
        answered by then counts as "database not reachable". With a source that reads from a
        server (Redis), ``sources_reachable`` says whether every such server answers; it never
        waits, the sources remember how their last call went.
        """
        try:
            reachable, at_head = self._database_probe(self.readiness_timeout_s)
        except TimeoutError:
            reachable = at_head = False
        checks = {
            "reference_fitted": self.encoder is not None and self.encoder.is_fitted,
            "database_reachable": reachable,
            "migrations_at_head": at_head,
        }
        # Only sources that talk to a server (Redis) can be unreachable; files cannot.
        servers = [source for source in self.sources if isinstance(source, ServerSource)]
        if servers:
            checks["sources_reachable"] = all(source.reachable for source in servers)
        ready = all(checks.values())
        if ready != self._was_ready:  # once per change: this runs every few seconds
            if ready:
                log.info("agent is ready")
            else:
                log.warning("agent is not ready: %s",
                            ", ".join(name for name, ok in checks.items() if not ok))
            self._was_ready = ready
        self.metrics.ready.set(1 if ready else 0)
        return checks

    @functools.cached_property
    def _database_probe(self) -> BoundedProbe[tuple[bool, bool]]:
        return BoundedProbe(self._probe_database, name="readiness-probe")

    def _probe_database(self) -> tuple[bool, bool]:
        """(reachable, schema at head); the store's own timeouts end it eventually."""
        try:
            reachable = self.store.ping()
            return reachable, reachable and self.store.at_head()
        except StoreUnavailable:
            return False, False

    # --- the loop ------------------------------------------------------------------------

    def run_sources(self, *, stop_when_exhausted: bool, limit: int | None = None,
                    on_batch: Callable[[BatchOutcome], None] | None = None) -> RunTotals:
        """Fetch and process until stopped (or until every source is exhausted).

        The stop event is checked between batches only: a batch that was fetched is always
        processed and committed, so a stop never splits one.
        """
        assert self.pipeline is not None, "prepare() first"
        cfg = self.config.pipeline
        active = list(self.sources)
        while not self.stop_event.is_set():
            if not active:
                if stop_when_exhausted:
                    break
                self.stop_event.wait(cfg.fetch_timeout_s)
                continue
            timeout = cfg.fetch_timeout_s / len(active)
            for source in list(active):
                if self.stop_event.is_set():
                    break
                want = cfg.batch_size
                if limit is not None:
                    want = min(want, limit - self.totals.received)
                    if want <= 0:
                        return self.totals
                batch = source.fetch(want, timeout)
                outcome = self.pipeline.process(source, batch) if batch.records else None
                # Every round, also one that only claimed or acknowledged committed entries.
                observe_stream(self.metrics, source)
                if outcome is not None:
                    self.totals.add(outcome)
                    if on_batch is not None:
                        on_batch(outcome)
                if batch.exhausted:
                    active.remove(source)
                    self.metrics.source_exhausted.labels(source.name).set(1)
                    log.info("source %s: replay finished", source.name)
                    self.totals.windows_tested += self.pipeline.test_windows()
        return self.totals

    # --- alert delivery --------------------------------------------------------------------

    def start_delivery(self) -> None:
        """Start draining the alert outbox to the configured sinks (none: nothing to do)."""
        if not self.config.sinks or self.delivery is not None:
            return
        from agent.delivery import DeliveryWorker, build_sinks

        self.delivery = DeliveryWorker(self.store, build_sinks(self.config), self.metrics)
        self.delivery.start()

    def stop_delivery(self, timeout_s: float = 5.0) -> bool:
        """Stop the delivery threads within ``timeout_s``; True when none is still sending."""
        delivery, self.delivery = self.delivery, None
        return True if delivery is None else delivery.stop(timeout_s)

    def reopen_sinks(self) -> None:
        """Reopen the sinks' files before their next write (SIGHUP, after log rotation)."""
        if self.delivery is not None:
            self.delivery.reopen()

    # --- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        self.stop_delivery(timeout_s=1.0)
        for source in self.sources:
            try:
                source.close()
            except Exception:  # closing is best effort; the positions are already committed
                log.exception("closing source %s failed", source.name)
        self.store.close()


def default_source_name(path: Path) -> str:
    """A source name for an ad-hoc replay file: stable, so a rerun resumes instead of repeating.

    Names longer than the store's source column (255) end in a digest of the whole file name
    instead, so two long names that share a prefix still get different sources.
    """
    stem = "".join(c if c.isalnum() or c in "_.-" else "_" for c in path.name)
    name = f"replay:{stem}"
    if len(name) <= MAX_SOURCE_CHARS:
        return name
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    return f"{name[:MAX_SOURCE_CHARS - len(digest) - 1]}-{digest}"


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
