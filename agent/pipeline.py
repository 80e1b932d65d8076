"""One batch through the agent: records → encoder → detectors → incidents → one commit → ack.

The pipeline is the only writer of detector state and of source positions, and it commits
each batch's incidents, quarantined records, drift reports and the source position in one
transaction before acknowledging the batch to its source. Crash anywhere and the next start
resumes from the last commit: at-least-once delivery, made exactly-once in effect by the
store's idempotency keys.

Windowed detectors add one subtlety: a window spans several batches, so after a crash the
window has to be rebuilt or the windows after the restart would differ from the ones an
uninterrupted run would have tested. The committed position therefore also names where the
oldest record any detector still needs starts (``rewind``: each detector says how many recent
records it needs through ``records_to_replay``) and how many records lie between it and the
commit (``warmup``). On restart those records are read again and fed to the detectors only;
their per-record results were committed already and are not repeated. The position also
carries the open groups of per-record findings (:mod:`agent.grouping`), so a burst that spans
a restart stays one incident with an exact count.

A source that several replicas read together (``adapters.base.SharedSource``: a Redis Streams
consumer group) commits its position under a name of its own replica, so replicas never
overwrite each other's positions or open groups, and it is handed a reader of the positions
other replicas committed: what a dead replica committed and never acknowledged is then
acknowledged by the replica that takes it over, not judged twice.

When the live model is loaded, each batch is judged by one model version (pinned for the
batch) and its embeddings are computed once and shared by every detector that asks for them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from adapters.base import Batch, CountedStream, RawRecord, SharedSource, Source
from adapters.columnar import ColumnarRecords
from agent.config import AgentConfig
from agent.detection import DetectorSet, Judgement, window_bounds
from agent.grouping import Finding, Grouper, Placement, record_time
from agent.incidents import IncidentPolicy, RecordContext, RecordIncidents
from agent.metrics import Metrics
from agent.redaction import Redactor, redact_excerpt
from agent.references import ReferenceKeeper
from agent.salvage import commit_salvaging
from agent.schema import Encoded, Encoder
from detectors.base import DriftReport, FeatureBatch
from storage import (
    CommitResult,
    IncidentExample,
    IncidentUpdate,
    NewDriftReport,
    NewIncident,
    NewReferenceVersion,
    QuarantinedRecord,
    Store,
    StoreRejected,
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
    findings: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    windows_tested: int = 0
    seconds: float = 0.0


@dataclass
class _StreamState:
    """Per-source state that outlives a batch (and, through the position, a restart)."""

    detectors: DetectorSet
    grouper: Grouper
    references: ReferenceKeeper
    # (offset key, raw index, id, timestamp) of the latest records fed to the detectors: at
    # least a window and a batch, so every window reported in a batch can be named end to end.
    window_keys: deque[tuple[str, int, str | None, str | None]]
    raw_seen: int = 0            # raw records read in this process, warm-up included
    warmup_remaining: int = 0    # records still to re-read for detector state only
    processed_total: int = 0     # cumulative, persisted in the position
    rejected_total: int = 0
    fed_since_test: int = 0      # ok records fed since the last window report or timer test
    last_key: str | None = None  # offset key of the last record fed to the detectors
    replica: str | None = None   # the replica's position name (shared sources): who tested


class Pipeline:
    """Processes batches for any number of sources against one encoder and one store."""

    def __init__(self, config: AgentConfig, encoder: Encoder, reference: FeatureBatch,
                 store: Store, metrics: Metrics, *,
                 should_stop: Callable[[], bool] = lambda: False,
                 model: Any = None) -> None:
        self.config = config
        self.encoder = encoder
        self.reference = reference
        self.store = store
        self.metrics = metrics
        self.model = model  # the ModelRuntime (a ModelHandle that can pin per batch), or None
        # Fields the schema says to mask in every excerpt the agent stores or sends.
        self.redactor = Redactor.from_config(config)
        self.policy = IncidentPolicy(config.incidents, self.redactor)
        self.record_policy = RecordIncidents(config.incidents, self.redactor)
        self._should_stop = should_stop
        self._states: dict[str, _StreamState] = {}
        self._lock = threading.Lock()  # one batch or timer test at a time touches detector state

    # --- sources ---------------------------------------------------------------------------

    def attach(self, source: Source) -> None:
        """Open a source where the last commit left it, rebuilding detector state if needed."""
        if isinstance(source, SharedSource):
            source.bind_committed_positions(self._committed_source_position)
        position = self.store.load_position(position_name(source)) or {}
        detectors = DetectorSet(self.config, self.reference, self.model,
                                self.encoder.tensor_layouts(self.reference.encoded))
        cfg = self.config.incidents
        grouper = Grouper(span_records=cfg.group_span_records, span_s=cfg.group_span_s,
                          examples=cfg.examples_per_incident)
        grouper.restore(position.get("groups") or [])
        keeper = ReferenceKeeper(self.config.reference, self.store, source.name,
                                 detectors.windows, self.reference)
        keeper.attach()
        state = _StreamState(detectors=detectors, grouper=grouper, references=keeper,
                             window_keys=deque(maxlen=detectors.buffer_size(
                                 self.config.pipeline.batch_size)),
                             replica=(source.position_name if isinstance(source, SharedSource)
                                      else None))
        state.processed_total = int(position.get("processed", 0))
        state.rejected_total = int(position.get("rejected", 0))
        can_resume = getattr(source, "can_resume", None)
        rewind = position.get("rewind")
        if rewind is not None and can_resume is not None and not can_resume(rewind):
            # The file the window began in is gone or replaced: re-reading from there would
            # take records of another file for committed ones. Resume after the commit and
            # let the windows refill instead.
            log.warning("source %s: the records to rebuild detector windows from are gone; "
                        "resuming after the last commit with empty windows", source.name)
            rewind = None
        if rewind is not None and detectors.stateful:
            source.open(rewind)
            state.warmup_remaining = int(position.get("warmup", 0))
            log.info("source %s: rebuilding detector windows from %d committed records",
                     source.name, state.warmup_remaining)
        else:
            source.open(position.get("source"))
        self._states[source.name] = state

    def _committed_source_position(self, name: str) -> dict[str, Any] | None:
        """The source part of the position committed under ``name`` (another replica's)."""
        source_position = (self.store.load_position(name) or {}).get("source")
        return source_position if isinstance(source_position, dict) else None

    def totals(self, source: str) -> tuple[int, int]:
        """(processed, rejected) for a source over its whole life, as committed."""
        state = self._states[source]
        return state.processed_total, state.rejected_total

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

        if isinstance(records, ColumnarRecords):  # a clean block: every record parsed
            quarantine: list[QuarantinedRecord] = []
            parsed = np.arange(len(records), dtype=np.int64)
            encoded = self.encoder.encode(records, textual=batch.textual)
        else:
            quarantine = [self._quarantined(batch.source, r, r.error or "decode", r.detail or "")
                          for r in records[warm:] if r.fields is None]
            good = [i for i, r in enumerate(records) if r.fields is not None]
            parsed = np.asarray(good, dtype=np.int64)
            encoded = self.encoder.encode([records[i].fields for i in good],  # type: ignore[misc]
                                          textual=batch.textual)
        for err in encoded.errors:
            index = int(parsed[err.index])
            if index >= warm:
                quarantine.append(self._quarantined(batch.source, records[index], err.reason,
                                                    err.detail))
        ok_index = parsed[encoded.ok]
        fresh = np.flatnonzero(ok_index >= warm)

        drift_rows: list[NewDriftReport] = []
        incidents: list[NewIncident] = []
        updates: list[IncidentUpdate] = []
        examples: list[IncidentExample] = []
        with self._lock, self._pinned_model() as model:
            references: list[NewReferenceVersion] = state.references.poll()
            features = encoded.features
            if model is not None and state.detectors.needs_embeddings and len(features):
                features = features.with_embeddings(model.embed(features.encoded))
            moved: list[NewReferenceVersion] = []
            for detector, report, end_key, end_index, span in self._feed_windows(
                    state, records, encoded, features, ok_index, base, warm, moved, incidents):
                if end_index < warm:
                    continue  # this window was committed before the restart
                stored, incident = self.policy.drift_records(report, source=batch.source,
                                                             window_end_key=end_key, span=span)
                drift_rows.append(stored)
                if incident is not None:
                    incidents.append(incident)
                    references.extend(state.references.candidate(detector, report, incident))
                self._observe_report(report)
                outcome.windows_tested += 1
            references.extend(moved)
            judgements = state.detectors.judge(features, fresh)
            found, updates, examples = self._record_findings(
                state, judgements, features, encoded, records, ok_index, batch,
                model_version=None if model is None else model.version, outcome=outcome)
            incidents.extend(found)

        outcome.received = len(records) - warm
        outcome.processed = int(fresh.size)
        outcome.rejected = Counter(q.reason for q in quarantine)
        state.processed_total += int(fresh.size)
        state.rejected_total += len(quarantine)
        state.grouper.close_expired(state.processed_total)

        result = self._commit(source=position_name(source),
                              position=self._position(state, source, batch),
                              incidents=incidents, quarantine=quarantine, drift_reports=drift_rows,
                              incident_updates=updates, examples=examples,
                              references=references)
        source.ack(batch)
        self._count_incidents(incidents, result, outcome)
        outcome.seconds = time.perf_counter() - started
        self._observe_batch(batch, outcome, source)
        return outcome

    @contextlib.contextmanager
    def _pinned_model(self) -> Iterator[Any]:
        if self.model is None:
            yield None
            return
        with self.model.pinned() as model:
            yield model

    def _feed_windows(self, state: _StreamState, records: Sequence[RawRecord],
                      encoded: Encoded, features: FeatureBatch, ok_index: np.ndarray,
                      base: int, warm: int, moved: list[NewReferenceVersion],
                      held: list[NewIncident],
                      ) -> list[tuple[Any, DriftReport, str, int, dict[str, Any]]]:
        """Feed window detectors; each report is named after the record that closed its window.

        The span says which records a window covered (first and last offset key, and the
        schema's id and timestamp fields when it names them), so an analyst can go and look.
        A moving reference follows each fresh window that raised no alarm before the next
        window is tested (``moved``: the versions to commit; ``held``: the incidents raised
        when the reference may not follow).
        """
        if not state.detectors.stateful or len(ok_index) == 0:
            return []
        keys = offset_keys(records, ok_index)
        n = len(keys)
        ids = encoded.ids if encoded.ids is not None else [None] * n
        times = encoded.times if encoded.times is not None else [None] * n
        state.window_keys.extend(zip(keys, (base + ok_index).tolist(), ids, times, strict=True))
        state.last_key = keys[-1]
        state.references.remember(features)

        def follow(detector: Any, before: int, report: DriftReport) -> None:
            closing = report.records_seen - before - 1
            if int(ok_index[closing]) >= warm:  # windows re-read after a restart moved it then
                versions, incidents = state.references.follow(detector, report)
                moved.extend(versions)
                held.extend(incidents)

        on_report = follow if state.references.moves_on_reports else None
        out: list[tuple[Any, DriftReport, str, int, dict[str, Any]]] = []
        for detector, before, report in state.detectors.feed_windows(features, on_report):
            last = report.records_seen - before - 1  # the record that closed this window
            closing = len(state.window_keys) - (n - last)
            first, stop = window_bounds(report)
            end = closing - (report.records_seen - stop)
            out.append((detector, report, keys[last], int(ok_index[last]),
                        _span(state.window_keys, end - (stop - first) + 1, end, state.replica)))
        state.fed_since_test = 0 if out else state.fed_since_test + len(keys)
        return out

    def _record_findings(self, state: _StreamState, judgements: list[Judgement],
                         features: FeatureBatch, encoded: Encoded,
                         records: Sequence[RawRecord], ok_index: np.ndarray, batch: Batch, *,
                         model_version: str | None, outcome: BatchOutcome,
                         ) -> tuple[list[NewIncident], list[IncidentUpdate], list[IncidentExample]]:
        """Group the flagged fresh records into incidents, with explanations for a few."""
        findings: list[tuple[int, int, Finding]] = []
        verdicts = {}
        counted: Counter[tuple[str, str, str | None]] = Counter()
        for order, judgement in enumerate(judgements):
            detector, verdict = judgement.detector, judgement.verdict
            verdicts[detector.name] = (detector, judgement)
            for i in np.flatnonzero(verdict.flagged):
                row = int(judgement.rows[i])
                kind = verdict.kind_of(int(i), detector.kind)
                predicted = (None if verdict.predicted_class is None
                             or verdict.predicted_class[i] is None
                             else str(verdict.predicted_class[i]))
                time_field = None if encoded.times is None else encoded.times[row]
                findings.append((int(i), order, Finding(
                    detector=detector.name, kind=kind, predicted=predicted,
                    index=state.processed_total + int(i),
                    offset=offset_key_at(records, int(ok_index[row])),
                    time=record_time(time_field), row=row)))
                counted[(detector.name, kind, predicted)] += 1
        for (name, kind, predicted), count in counted.items():
            outcome.findings[kind] += count
            self.metrics.findings.labels(name, kind, self.metrics.class_label(predicted)
                                         ).inc(count)
        if not findings:
            return [], [], []
        findings.sort(key=lambda item: (item[0], item[1]))
        placements = state.grouper.place(f for _, _, f in findings)
        contexts = self._contexts(placements, verdicts, features, encoded, records, ok_index,
                                  batch)
        return self.record_policy.rows(placements, contexts, source=batch.source,
                                       model_version=model_version)

    def _contexts(self, placements: list[Placement], verdicts: dict[str, Any],
                  features: FeatureBatch, encoded: Encoded, records: Sequence[RawRecord],
                  ok_index: np.ndarray, batch: Batch) -> dict[tuple[str, int], RecordContext]:
        """Details, and the detector's explanation, of the records incidents will show."""
        wanted: dict[str, list[int]] = {}
        for placement in placements:
            if placement.opened or placement.example:
                rows = wanted.setdefault(placement.finding.detector, [])
                if placement.finding.row not in rows:
                    rows.append(placement.finding.row)
        contexts: dict[tuple[str, int], RecordContext] = {}
        for name, rows in wanted.items():
            detector, judgement = verdicts[name]
            explanations = detector.explain(features, rows)
            position = {int(r): i for i, r in enumerate(judgement.rows)}
            verdict = judgement.verdict
            for row, explanation in zip(rows, explanations, strict=True):
                i = position[row]
                record = records[int(ok_index[row])]
                contexts[(name, row)] = RecordContext(
                    excerpt=record.raw[:EXCERPT_CHARS], fields=record.fields,
                    textual=batch.textual, features=encoded.x[row].astype(float).tolist(),
                    score=float(verdict.score[i]),
                    p_value=None if verdict.p_value is None else float(verdict.p_value[i]),
                    confidence=(None if verdict.confidence is None
                                else float(verdict.confidence[i])),
                    explanation=explanation)
        return contexts

    def _position(self, state: _StreamState, source: Source, batch: Batch) -> dict[str, Any]:
        """Where to resume: the source's own position, how to rebuild state, open groups."""
        position: dict[str, Any] = {
            "source": batch.position,
            "processed": state.processed_total,
            "rejected": state.rejected_total,
            "rewind": None,
            "warmup": 0,
            "groups": state.grouper.saved(),
        }
        position_at = getattr(source, "position_at", None)
        replay = state.detectors.records_to_replay()
        if state.window_keys and replay and position_at is not None:
            buffered = len(state.window_keys)
            if replay > buffered:
                log.debug("source %s: %d records to replay, %d remembered", source.name,
                          replay, buffered)
            oldest_key, oldest_raw, _, _ = state.window_keys[max(0, buffered - replay)]
            rewind = position_at(oldest_key)
            if rewind is not None:
                position["rewind"] = rewind
                position["warmup"] = state.raw_seen - oldest_raw
        return position

    # --- timer-driven tests --------------------------------------------------------------------

    def test_windows(self) -> int:
        """Test every source's current (possibly partial) window now; returns windows tested.

        Run by the scheduler, so a slow stream is still tested regularly, and at the end of a
        replay. A window is tested once: without new records since the last test there is
        nothing new to say. Returns the reports stored (a window already stored is not again).
        """
        tested = 0
        with self._lock:
            for name, state in self._states.items():
                if (not state.detectors.windows or state.fed_since_test == 0
                        or state.last_key is None):
                    continue
                drift_rows: list[NewDriftReport] = []
                incidents: list[NewIncident] = []
                references: list[NewReferenceVersion] = []
                for detector in state.detectors.windows:
                    report = detector.test()
                    if report is None:
                        continue
                    first, stop = window_bounds(report)
                    end = len(state.window_keys) - 1 - (report.records_seen - stop)
                    span = _span(state.window_keys, end - (stop - first) + 1, end,
                                 state.replica)
                    stored, incident = self.policy.drift_records(report, source=name,
                                                                 window_end_key=state.last_key,
                                                                 span=span)
                    drift_rows.append(stored)
                    if incident is not None:
                        incidents.append(incident)
                        # A rejected partial window can be approved like any other.
                        references.extend(state.references.candidate(detector, report,
                                                                     incident))
                    self._observe_report(report)
                if not drift_rows:
                    continue
                state.fed_since_test = 0
                result = self._commit(source=name, position=None, incidents=incidents,
                                      quarantine=[], drift_reports=drift_rows,
                                      references=references)
                self._count_incidents(incidents, result, BatchOutcome(source=name))
                # A window stored before (a rerun that re-read it to rebuild state) is keyed
                # by the same last record, so the store keeps one report: count that one.
                tested += result.drift_reports
        return tested

    # --- commit with retry ---------------------------------------------------------------

    def _commit(self, **kwargs: Any) -> CommitResult:
        """Commit, retrying with capped backoff while the database is down.

        The agent fetches nothing new while a commit is pending, so the only buffered data is
        the batch in hand and the source keeps the rest: memory stays bounded however long the
        outage. Stopping during an outage gives up; the uncommitted batch is replayed at the
        next start.

        A batch the database refuses outright (``StoreRejected``) is never retried as it is:
        every retry and every restart would read and refuse the same batch, and ingestion would
        stop for good. Its refused rows are stored degraded instead (``agent.salvage``),
        counted and logged.
        """
        with self.metrics.in_flight.track():
            try:
                result = self._commit_retrying(**kwargs)
            except StoreRejected as exc:
                result = self._commit_salvaging(exc, **kwargs)
        self.metrics.last_commit.set_to_current_time()
        return result

    def _commit_retrying(self, **kwargs: Any) -> CommitResult:
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

    def _commit_salvaging(self, refusal: StoreRejected, **kwargs: Any) -> CommitResult:
        result, salvage = commit_salvaging(self._commit_retrying, **kwargs)
        for table, count in salvage.degraded.items():
            self.metrics.rows_degraded.labels(table, "degraded").inc(count)
        for table, count in salvage.dropped.items():
            self.metrics.rows_degraded.labels(table, "dropped").inc(count)
        log.warning("the database refused a batch from source %s (%s); stored %d row(s) with "
                    "their text in ASCII escapes and dropped %d: %s", kwargs["source"], refusal,
                    sum(salvage.degraded.values()), sum(salvage.dropped.values()),
                    dict(salvage.degraded + salvage.dropped))
        return result

    # --- helpers ---------------------------------------------------------------------------

    def _quarantined(self, source: str, record: RawRecord, reason: str,
                     detail: str) -> QuarantinedRecord:
        excerpt = redact_excerpt(self.redactor, record.raw, record.fields, source=source)
        return QuarantinedRecord(source=source, offset_key=record.offset_key, reason=reason,
                                 detail=detail, raw_excerpt=excerpt[:EXCERPT_CHARS])

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
        take_skipped = getattr(source, "take_skipped", None)  # file sources only
        if take_skipped is not None:
            for reason, skipped_bytes in take_skipped().items():
                m.source_skipped.labels(batch.source, reason).inc(skipped_bytes)


def position_name(source: Source) -> str:
    """Where a source's position is stored: its name, or its replica's (shared sources)."""
    return source.position_name if isinstance(source, SharedSource) else source.name


def observe_stream(metrics: Metrics, source: Source) -> None:
    """Export a consumer-group source's backlog and counts (Redis Streams), if it has them."""
    if getattr(type(source), "stream_stats", None) is None:
        return
    counted = cast(CountedStream, source)
    metrics.observe_stream(counted.name, lambda: counted.stream_stats)


def offset_key_at(records: Sequence[RawRecord], index: int) -> str:
    """The offset key of ``records[index]``, without making the record of a columnar block."""
    if isinstance(records, ColumnarRecords):
        return records.keys[index]
    return records[index].offset_key


def offset_keys(records: Sequence[RawRecord], index: np.ndarray) -> list[str]:
    """The offset keys of ``records[i]`` for each ``i`` in ``index``, without making records."""
    if isinstance(records, ColumnarRecords):
        keys = records.keys
        if len(index) == len(keys):  # every record of the block: no lookups at all
            return list(keys)
        return [keys[i] for i in index.tolist()]
    return [records[i].offset_key for i in index.tolist()]


def _span(entries: deque[tuple[str, int, str | None, str | None]], first: int,
          last: int, replica: str | None = None) -> dict[str, Any]:
    """First and last record of a window, as far as the buffer still remembers them, and the
    replica that tested it when several share the source (each keeps windows of its own)."""
    start = entries[max(first, 0)]
    end = entries[last]
    span: dict[str, Any] = {"first_offset": start[0], "last_offset": end[0]}
    if replica is not None:
        span["replica"] = replica
    if end[2] is not None:
        span |= {"first_id": start[2], "last_id": end[2]}
    if end[3] is not None:
        span |= {"first_time": start[3], "last_time": end[3]}
    return span


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, deadline - time.monotonic()))
