"""One batch through the agent: records → encoder → detectors → incidents → one commit → ack.

The pipeline is the only writer of detector state and of source positions, and it commits
each batch's incidents, quarantined records, drift reports and the source position in one
transaction before acknowledging the batch to its source. Crash anywhere and the next start
resumes from the last commit: at-least-once delivery, made exactly-once in effect by the
store's idempotency keys.

Windowed detectors add one subtlety: a window spans several batches, so after a crash the
window has to be rebuilt or the windows after the restart would differ from the ones an
uninterrupted run would have tested. The committed position therefore also names where the
oldest record of the current window starts (``rewind``) and how many records lie between it
and the commit (``warmup``). On restart those records are read again and fed to the
detectors only; their per-record results were committed already and are not repeated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.base import Batch, RawRecord, Source
from agent.config import AgentConfig
from agent.incidents import IncidentPolicy
from agent.metrics import Metrics
from agent.schema import Encoded, Encoder
from detectors.base import FeatureBatch
from detectors.feature_drift import DriftReport, FeatureDriftDetector
from storage import (
    CommitResult,
    NewDriftReport,
    NewIncident,
    QuarantinedRecord,
    Store,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

EXCERPT_CHARS = 2000


@dataclass
class BatchOutcome:
    """What one batch did, for the replay summary and for tests."""

    source: str
    received: int = 0
    processed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    incidents: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    windows_tested: int = 0
    seconds: float = 0.0


@dataclass
class _StreamState:
    """Per-source state that outlives a batch (and, through the position, a restart)."""

    detectors: list[FeatureDriftDetector]
    # (offset key, raw index, id, timestamp) of the latest records fed to the detectors: at
    # least a window and a batch, so every window reported in a batch can be named end to end.
    window_keys: deque[tuple[str, int, str | None, str | None]]
    raw_seen: int = 0            # raw records read in this process, warm-up included
    warmup_remaining: int = 0    # records still to re-read for detector state only
    processed_total: int = 0     # cumulative, persisted in the position
    rejected_total: int = 0
    fed_since_test: int = 0      # ok records fed since the last window report or timer test
    last_key: str | None = None  # offset key of the last record fed to the detectors


class Pipeline:
    """Processes batches for any number of sources against one encoder and one store."""

    def __init__(self, config: AgentConfig, encoder: Encoder, reference: FeatureBatch,
                 store: Store, metrics: Metrics, *,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.config = config
        self.encoder = encoder
        self.reference = reference
        self.store = store
        self.metrics = metrics
        self.policy = IncidentPolicy(config.incidents)
        self._should_stop = should_stop
        self._states: dict[str, _StreamState] = {}
        self._lock = threading.Lock()  # one batch or timer test at a time touches detector state

    # --- sources ---------------------------------------------------------------------------

    def attach(self, source: Source) -> None:
        """Open a source where the last commit left it, rebuilding window state if needed."""
        position = self.store.load_position(source.name) or {}
        state = _StreamState(detectors=self._new_detectors(),
                             window_keys=deque(maxlen=self._window_size()
                                               + self.config.pipeline.batch_size))
        state.processed_total = int(position.get("processed", 0))
        state.rejected_total = int(position.get("rejected", 0))
        if position.get("rewind") is not None and state.detectors:
            source.open(position["rewind"])
            state.warmup_remaining = int(position.get("warmup", 0))
            log.info("source %s: rebuilding detector windows from %d committed records",
                     source.name, state.warmup_remaining)
        else:
            source.open(position.get("source"))
        self._states[source.name] = state

    def totals(self, source: str) -> tuple[int, int]:
        """(processed, rejected) for a source over its whole life, as committed."""
        state = self._states[source]
        return state.processed_total, state.rejected_total

    def _window_size(self) -> int:
        return self.config.detectors.feature_drift.window

    def _new_detectors(self) -> list[FeatureDriftDetector]:
        cfg = self.config.detectors.feature_drift
        if not cfg.enabled:
            return []
        detector = FeatureDriftDetector(
            "feature_drift", window=cfg.window, step=cfg.step, alpha=cfg.alpha,
            correction=cfg.correction, top_k=cfg.top_k, min_window=cfg.min_window)
        detector.fit(self.reference)
        return [detector]

    # --- one batch ---------------------------------------------------------------------------

    def process(self, source: Source, batch: Batch) -> BatchOutcome:
        """Encode, detect, commit and acknowledge one batch."""
        started = time.perf_counter()
        state = self._states[source.name]
        outcome = BatchOutcome(source=source.name)
        records = batch.records
        warm = min(state.warmup_remaining, len(records))
        state.warmup_remaining -= warm
        base = state.raw_seen
        state.raw_seen += len(records)

        quarantine = [self._quarantined(batch.source, r, r.error or "decode", r.detail or "")
                      for r in records[warm:] if r.fields is None]
        parsed = [i for i, r in enumerate(records) if r.fields is not None]
        encoded = self.encoder.encode([records[i].fields for i in parsed],  # type: ignore[misc]
                                      textual=batch.textual)
        for err in encoded.errors:
            index = parsed[err.index]
            if index >= warm:
                quarantine.append(self._quarantined(batch.source, records[index], err.reason,
                                                    err.detail))
        ok_index = np.asarray(parsed, dtype=np.int64)[encoded.ok]

        drift_rows: list[NewDriftReport] = []
        incidents: list[NewIncident] = []
        with self._lock:
            for report, end_key, end_index, span in self._feed_windows(
                    state, records, encoded, ok_index, base):
                if end_index < warm:
                    continue  # this window was committed before the restart
                stored, incident = self.policy.drift_records(report, source=batch.source,
                                                             window_end_key=end_key, span=span)
                drift_rows.append(stored)
                if incident is not None:
                    incidents.append(incident)
                self._observe_report(report)
                outcome.windows_tested += 1

        fresh_ok = int((ok_index >= warm).sum())
        outcome.received = len(records) - warm
        outcome.processed = fresh_ok
        outcome.rejected = Counter(q.reason for q in quarantine)
        state.processed_total += fresh_ok
        state.rejected_total += len(quarantine)

        result = self._commit(source=batch.source, position=self._position(state, source, batch),
                              incidents=incidents, quarantine=quarantine, drift_reports=drift_rows)
        source.ack(batch)
        self._count_incidents(incidents, result, outcome)
        outcome.seconds = time.perf_counter() - started
        self._observe_batch(batch, outcome, source)
        return outcome

    def _feed_windows(self, state: _StreamState, records: Sequence[RawRecord],
                      encoded: Encoded, ok_index: np.ndarray,
                      base: int) -> list[tuple[DriftReport, str, int, dict[str, Any]]]:
        """Feed window detectors; each report is named after the record that closed its window.

        The span says which records a window covered (first and last offset key, and the
        schema's id and timestamp fields when it names them), so an analyst can go and look.
        """
        if not state.detectors or len(ok_index) == 0:
            return []
        keys = [records[i].offset_key for i in ok_index]
        n = len(keys)
        ids = encoded.ids if encoded.ids is not None else [None] * n
        times = encoded.times if encoded.times is not None else [None] * n
        state.window_keys.extend(zip(keys, (base + ok_index).tolist(), ids, times, strict=True))
        state.last_key = keys[-1]
        out: list[tuple[DriftReport, str, int, dict[str, Any]]] = []
        for detector in state.detectors:
            before = detector.records_seen
            for report in detector.update(encoded.features):
                last = report.records_seen - before - 1  # the record that closed this window
                end = len(state.window_keys) - (n - last)
                out.append((report, keys[last], int(ok_index[last]),
                            _span(state.window_keys, end - report.n_window + 1, end)))
        state.fed_since_test = 0 if out else state.fed_since_test + len(keys)
        return out

    def _position(self, state: _StreamState, source: Source, batch: Batch) -> dict[str, Any]:
        """Where to resume: the source's own position, plus how to rebuild the window."""
        position: dict[str, Any] = {
            "source": batch.position,
            "processed": state.processed_total,
            "rejected": state.rejected_total,
            "rewind": None,
            "warmup": 0,
        }
        position_at = getattr(source, "position_at", None)
        if state.window_keys and state.detectors and position_at is not None:
            oldest_key, oldest_raw, _, _ = state.window_keys[self._rewind_index(state)]
            rewind = position_at(oldest_key)
            if rewind is not None:
                position["rewind"] = rewind
                position["warmup"] = state.raw_seen - oldest_raw
        return position

    @staticmethod
    def _rewind_index(state: _StreamState) -> int:
        """Index in ``window_keys`` of the first record of the next window to be reported.

        Re-reading from there after a restart makes the detector's next report fall on exactly
        the record it would have fallen on without the restart (its schedule is window, then
        every step), so the windows tested, and the incidents keyed by them, are the same.
        """
        buffered = len(state.window_keys)
        first = buffered
        for detector in state.detectors:
            seen = detector.records_seen
            if seen < detector.window:
                due = detector.window
            else:
                reports_done = (seen - detector.window) // detector.step + 1
                due = detector.window + reports_done * detector.step
            first = min(first, max(0, due - detector.window) - (seen - buffered))
        return max(0, min(first, buffered - 1))

    # --- timer-driven tests --------------------------------------------------------------------

    def test_windows(self) -> int:
        """Test every source's current (possibly partial) window now; returns windows tested.

        Run by the scheduler, so a slow stream is still tested regularly, and at the end of a
        replay. A window is tested once: without new records since the last test there is
        nothing new to say.
        """
        tested = 0
        with self._lock:
            for name, state in self._states.items():
                if not state.detectors or state.fed_since_test == 0 or state.last_key is None:
                    continue
                drift_rows: list[NewDriftReport] = []
                incidents: list[NewIncident] = []
                for detector in state.detectors:
                    report = detector.test()
                    if report is None:
                        continue
                    end = len(state.window_keys) - 1
                    span = _span(state.window_keys, end - report.n_window + 1, end)
                    stored, incident = self.policy.drift_records(report, source=name,
                                                                 window_end_key=state.last_key,
                                                                 span=span)
                    drift_rows.append(stored)
                    if incident is not None:
                        incidents.append(incident)
                    self._observe_report(report)
                if not drift_rows:
                    continue
                state.fed_since_test = 0
                result = self._commit(source=name, position=None, incidents=incidents,
                                      quarantine=[], drift_reports=drift_rows)
                self._count_incidents(incidents, result, BatchOutcome(source=name))
                tested += len(drift_rows)
        return tested

    # --- commit with retry ---------------------------------------------------------------

    def _commit(self, **kwargs: Any) -> CommitResult:
        """Commit, retrying with capped backoff while the database is down.

        The agent fetches nothing new while a commit is pending, so the only buffered data is
        the batch in hand and the source keeps the rest: memory stays bounded however long the
        outage. Stopping during an outage gives up; the uncommitted batch is replayed at the
        next start.
        """
        delay = 0.2
        buffered = False
        while True:
            try:
                result = self.store.commit_batch(**kwargs)
                if buffered:
                    self.metrics.store_buffered.set(0)
                    log.info("database is back; batch committed")
                return result
            except StoreUnavailable as exc:
                if self._should_stop():
                    raise
                buffered = True
                self.metrics.store_buffered.set(1)
                self.metrics.store_retries.inc()
                log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
                _sleep_unless(self._should_stop, delay)
                delay = min(delay * 2, self.config.storage.retry_max_backoff_s)

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _quarantined(source: str, record: RawRecord, reason: str, detail: str) -> QuarantinedRecord:
        return QuarantinedRecord(source=source, offset_key=record.offset_key, reason=reason,
                                 detail=detail, raw_excerpt=record.raw[:EXCERPT_CHARS])

    def _observe_report(self, report: DriftReport) -> None:
        self.metrics.windows.labels(report.detector).inc()
        if report.rejected:
            self.metrics.windows_rejected.labels(report.detector).inc()
        self.metrics.detector_p_value.labels(report.detector).set(report.p_value)
        self.metrics.detector_statistic.labels(report.detector).set(report.statistic)

    def _count_incidents(self, incidents: Sequence[NewIncident], result: CommitResult,
                         outcome: BatchOutcome) -> None:
        """Count only incidents the store actually created, not replayed duplicates."""
        outcome.duplicates += result.incidents_duplicate
        if result.incidents_duplicate == 0:
            created = list(incidents)
        else:  # which ones were duplicates: the store returns the ids of new rows only
            created = [self.store.get_incident(i) for i in result.created_ids]  # type: ignore[misc]
        for inc in created:
            outcome.incidents[inc.kind] += 1
            self.metrics.incidents.labels(inc.kind, inc.severity).inc()

    def _observe_batch(self, batch: Batch, outcome: BatchOutcome, source: Source) -> None:
        m = self.metrics
        m.received.labels(batch.source).inc(outcome.received)
        m.processed.labels(batch.source).inc(outcome.processed)
        for reason, count in outcome.rejected.items():
            m.rejected.labels(batch.source, reason).inc(count)
        m.batch_seconds.labels(batch.source).observe(outcome.seconds)
        m.last_batch.labels(batch.source).set_to_current_time()
        lag = source.lag
        if lag is not None:
            m.source_lag.labels(batch.source).set(lag)
        m.source_exhausted.labels(batch.source).set(1 if batch.exhausted else 0)


def _span(entries: deque[tuple[str, int, str | None, str | None]], first: int,
          last: int) -> dict[str, Any]:
    """First and last record of a window, as far as the buffer still remembers them."""
    start = entries[max(first, 0)]
    end = entries[last]
    span: dict[str, Any] = {"first_offset": start[0], "last_offset": end[0]}
    if end[2] is not None:
        span |= {"first_id": start[2], "last_id": end[2]}
    if end[3] is not None:
        span |= {"first_time": start[3], "last_time": end[3]}
    return span


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, deadline - time.monotonic()))
