"""Per source: which reference each window detector tests against, and when it moves.

``reference.mode`` decides (see :mod:`detectors.reference` for the why):

* ``fixed`` — the configured reference, always; nothing is stored.
* ``rolling`` — windows that raised no alarm feed the reference, at most ``follow_rate`` of it
  per window; a move beyond ``anchor_limit`` from the anchor is held back and raised as a
  ``reference_drift`` incident instead.
* ``approved`` — the reference moves only when an analyst labels a drift incident
  ``benign_drift`` (rolling references take such approvals too).

Every move is a version in the store (``storage.references``), committed in the same
transaction as the batch whose window caused it, so a restarted agent resumes with exactly
the reference its committed windows were tested against. Approvals and rollbacks are made by
people at any time; the keeper looks for them between batches (every ``poll_s``) and applies
them with the next commit.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.config import ReferenceConfig
from agent.detection import window_bounds, window_records_bound
from detectors.base import DriftReport, FeatureBatch, FeatureSchemaError
from detectors.reference import (
    RollingPolicy,
    anchor_distance,
    merge_approved,
    pack,
    summarise,
    unpack,
)
from storage import NewIncident, NewReferenceVersion, ReferenceVersion, Store

log = logging.getLogger(__name__)


@dataclass
class _Tracked:
    """One window detector's reference as the keeper knows it."""

    detector: Any
    version: int
    reference: FeatureBatch
    anchor: FeatureBatch
    anchor_version: int
    accepted: int = 0     # records accepted since the anchor (the reservoir's count)
    held: bool = False    # a rolling move waits for a person
    origin: str = "initial"  # of the active version


def records_digest(batch: FeatureBatch) -> str:
    """A digest of the records themselves (an npz archive's bytes carry zip timestamps)."""
    digest = hashlib.sha256()
    for array in (batch.numeric, batch.categorical, batch.encoded):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class ReferenceKeeper:
    """The reference versions of one source's window detectors."""

    def __init__(self, config: ReferenceConfig, store: Store, source: str,
                 detectors: list[Any], initial: FeatureBatch) -> None:
        self.config = config
        self.store = store
        self.source = source
        self.initial = initial
        self.policy = RollingPolicy(follow_rate=config.rolling.follow_rate,
                                    anchor_limit=config.rolling.anchor_limit,
                                    strategy=config.rolling.strategy)
        self.max_records = config.max_records or len(initial)
        self._tracked: dict[str, _Tracked] = {}
        self._detectors = [d for d in detectors if hasattr(d, "set_reference")]
        span = max([window_records_bound(d) for d in self._detectors] + [0])
        self._recent: deque[FeatureBatch] = deque()
        self._recent_rows = 0
        self._span = span
        self._fed = 0          # rows fed to the detectors since attach (their records_seen)
        self._next_poll = 0.0
        self._digest: str | None = None

    @property
    def active(self) -> bool:
        return self.config.mode != "fixed" and bool(self._detectors)

    # --- start -------------------------------------------------------------------------

    def attach(self) -> None:
        """Load each detector's active version, storing the configured one as version 1."""
        if not self.active:
            return
        digest = self._lineage()
        for detector in self._detectors:
            tracked = self._load(detector, digest)
            if tracked is None:
                tracked = self._start_lineage(detector, digest)
            self._tracked[detector.name] = tracked
            if tracked.version > 1 or tracked.reference is not self.initial:
                detector.set_reference(tracked.reference)
            log.info("source %s: %s tests against reference version %d (%d records)",
                     self.source, detector.name, tracked.version, len(tracked.reference))

    def _load(self, detector: Any, digest: str) -> _Tracked | None:
        active = self.store.active_reference(self.source, detector.name)
        if active is None:
            return None
        if active.summary.get("lineage_digest") != digest:
            log.warning("source %s: the configured reference changed since version %d of %s; "
                        "starting a new lineage from it", self.source, active.version,
                        detector.name)
            return None
        try:
            reference = unpack(self.store.reference_data(active.id), self.initial)
            anchor_version = int(active.summary.get("anchor_version", active.version or 1))
            anchor_row = self.store.find_reference(self.source, detector.name, anchor_version)
            anchor = unpack(self.store.reference_data(anchor_row.id), self.initial)
        except (ValueError, FeatureSchemaError, KeyError) as error:
            log.warning("source %s: reference version %d of %s cannot be used (%s); starting "
                        "a new lineage from the configured reference", self.source,
                        active.version, detector.name, error)
            return None
        held = any(c.origin == "rolling" and c.status == "candidate"
                   and c.summary.get("anchor_version") == anchor_version
                   for c in self.store.list_references(source=self.source,
                                                       detector=detector.name,
                                                       candidates=True, limit=20))
        return _Tracked(detector, int(active.version or 1), reference, anchor, anchor_version,
                        accepted=int(active.summary.get("accepted", 0)), held=held,
                        origin=active.origin)

    def _start_lineage(self, detector: Any, digest: str) -> _Tracked:
        latest = self.store.list_references(source=self.source, detector=detector.name, limit=1)
        version = (latest[0].version or 0) + 1 if latest else 1
        row = self._version_row(detector.name, self.initial, origin="initial", version=version,
                                parent=None, anchor_version=version, accepted=0,
                                lineage_digest=digest)
        self.store.commit_batch(source=self.source, position=None, references=[row])
        return _Tracked(detector, version, self.initial, self.initial, version)

    # --- the stream ----------------------------------------------------------------------

    def remember(self, features: FeatureBatch) -> None:
        """Keep the latest records fed to the window detectors (to know a window's records)."""
        if not self.active or len(features) == 0:
            return
        self._recent.append(features)
        self._recent_rows += len(features)
        self._fed += len(features)
        # A window reported in this batch began at most what the detectors would replay.
        keep = len(features) + min(self._span, max(
            [d.records_to_replay() for d in self._detectors] + [0]))
        while self._recent and self._recent_rows - len(self._recent[0]) >= keep:
            self._recent_rows -= len(self._recent.popleft())

    def window_records(self, report: DriftReport) -> FeatureBatch:
        """The records of the window a report tested.

        A time window names its first and last record (late and untimed records among them
        were left out of its test, and are kept here too); a count window is the last
        ``n_window`` records before its report.
        """
        first, last = window_bounds(report)
        start_of_buffer = self._fed - self._recent_rows
        start, stop = max(0, first - start_of_buffer), last - start_of_buffer
        return FeatureBatch.concat(list(self._recent)).take(slice(start, stop))

    @property
    def moves_on_reports(self) -> bool:
        """Whether windows move the reference as they are tested (rolling mode)."""
        return self.active and self.config.mode == "rolling"

    def candidate(self, detector: Any, report: DriftReport, incident: NewIncident | None
                  ) -> list[NewReferenceVersion]:
        """A rejected window's records, kept beside its incident for an analyst to approve."""
        tracked = self._tracked.get(detector.name)
        if tracked is None or incident is None or not report.rejected:
            return []
        window = self.window_records(report)
        return [self._candidate(detector.name, window, "window", incident.offset_key, tracked)]

    def follow(self, detector: Any, report: DriftReport
               ) -> tuple[list[NewReferenceVersion], list[NewIncident]]:
        """A fresh window that raised no alarm: the rolling reference follows it, or is held."""
        tracked = self._tracked.get(detector.name)
        if tracked is None or report.rejected or not self.moves_on_reports or tracked.held:
            return [], []
        return self._follow(tracked, report)

    def _follow(self, tracked: _Tracked, report: DriftReport
                ) -> tuple[list[NewReferenceVersion], list[NewIncident]]:
        detector = tracked.detector
        window = self.window_records(report)
        step = getattr(detector, "step", None)
        new = step if isinstance(step, int) and step > 0 else len(window)  # time: disjoint
        new_records = window.take(slice(max(0, len(window) - new), None))
        seed = zlib.crc32(f"{self.source}/{detector.name}/{tracked.version}".encode())
        proposal = self.policy.follow(tracked.reference, new_records,
                                      accepted_before=tracked.accepted, seed=seed)
        distance = anchor_distance(tracked.anchor, proposal)
        if distance.distance > self.policy.anchor_limit:
            tracked.held = True
            incident = self._hold_incident(tracked, distance, report)
            return ([self._candidate(detector.name, proposal, "rolling", incident.offset_key,
                                     tracked)], [incident])
        tracked.accepted += len(new_records)
        tracked.version += 1
        tracked.reference, tracked.origin = proposal, "rolling"
        detector.set_reference(proposal)
        return [self._version_row(detector.name, proposal, origin="rolling",
                                  version=tracked.version, parent=tracked.version - 1,
                                  anchor_version=tracked.anchor_version,
                                  accepted=tracked.accepted)], []

    def _hold_incident(self, tracked: _Tracked, distance: Any, report: DriftReport
                       ) -> NewIncident:
        summary = (f"{tracked.detector.name}: the rolling reference would move "
                   f"{distance.distance:.2f} from version {tracked.anchor_version} "
                   f"(limit {self.policy.anchor_limit:.2f}): {distance.movement}; it stops "
                   "following until the move is approved (label benign_drift) or rolled back")
        return NewIncident(
            kind="reference_drift", severity="high", source=self.source,
            offset_key=f"reference:{tracked.detector.name}:v{tracked.anchor_version}",
            detector=tracked.detector.name, score=distance.distance,
            explanation={"summary": summary, "anchor_version": tracked.anchor_version,
                         "active_version": tracked.version, **distance.to_dict(),
                         "records_seen": report.records_seen},
            record_excerpt=summary[:2000])

    # --- approvals and rollbacks -----------------------------------------------------------

    def poll(self, *, force: bool = False) -> list[NewReferenceVersion]:
        """Apply approvals and rollbacks made since the last look (at most every ``poll_s``)."""
        if not self.active or (not force and time.monotonic() < self._next_poll):
            return []
        self._next_poll = time.monotonic() + self.config.poll_s
        rows: list[NewReferenceVersion] = []
        for tracked in self._tracked.values():
            self._follow_rollback(tracked)
            for candidate in self.store.approved_candidates(self.source, tracked.detector.name):
                row = self._apply(tracked, candidate)
                if row is not None:
                    rows.append(row)
        return rows

    def _follow_rollback(self, tracked: _Tracked) -> None:
        active = self.store.active_reference(self.source, tracked.detector.name)
        if active is None or active.version is None or active.version <= tracked.version:
            return
        reference = unpack(self.store.reference_data(active.id), self.initial)
        tracked.version = tracked.anchor_version = int(active.version)
        tracked.reference = tracked.anchor = reference
        tracked.accepted, tracked.held, tracked.origin = 0, False, active.origin
        tracked.detector.set_reference(reference)
        log.info("source %s: %s now tests against reference version %d (%s)", self.source,
                 tracked.detector.name, active.version, active.origin)

    def _apply(self, tracked: _Tracked, candidate: ReferenceVersion
               ) -> NewReferenceVersion | None:
        try:
            records = unpack(self.store.reference_data(candidate.id), self.initial)
        except (ValueError, FeatureSchemaError) as error:
            log.warning("source %s: approved candidate %d cannot be applied: %s", self.source,
                        candidate.id, error)
            return None
        if candidate.origin == "rolling":
            merged = records  # the held-back rolling reference itself
        elif self.config.approval == "replace" and tracked.origin != "approved":
            merged = records  # normal looks like this window now; later approvals add to it
        else:
            merged = merge_approved(tracked.reference, records, self.max_records)
        tracked.version += 1
        tracked.reference = tracked.anchor = merged
        tracked.anchor_version, tracked.accepted, tracked.held = tracked.version, 0, False
        tracked.origin = "approved"
        tracked.detector.set_reference(merged)
        log.info("source %s: %s approved by %s; reference version %d (%d records)",
                 self.source, candidate.incident_key, candidate.actor, tracked.version,
                 len(merged))
        return self._version_row(tracked.detector.name, merged, origin="approved",
                                 version=tracked.version, parent=tracked.version - 1,
                                 anchor_version=tracked.version, accepted=0,
                                 applied=[candidate.id], actor=candidate.actor,
                                 note=f"approved {candidate.incident_key}")

    # --- rows ------------------------------------------------------------------------------

    def _version_row(self, detector: str, records: FeatureBatch, *, origin: str, version: int,
                     parent: int | None, anchor_version: int, accepted: int,
                     applied: list[int] | None = None, actor: str | None = None,
                     note: str | None = None, lineage_digest: str | None = None
                     ) -> NewReferenceVersion:
        data, sha = pack(records)
        lineage = lineage_digest or self._lineage()
        summary = {**summarise(records), "anchor_version": anchor_version, "accepted": accepted,
                   "applied_candidates": applied or [], "lineage_digest": lineage}
        return NewReferenceVersion(source=self.source, detector=detector, origin=origin,
                                   data=data, sha256=sha, n_records=len(records),
                                   summary=summary, version=version, parent=parent,
                                   actor=actor, note=note)

    def _candidate(self, detector: str, records: FeatureBatch, origin: str, key: str,
                   tracked: _Tracked) -> NewReferenceVersion:
        data, sha = pack(records)
        summary = {**summarise(records), "anchor_version": tracked.anchor_version,
                   "based_on_version": tracked.version}
        return NewReferenceVersion(source=self.source, detector=detector, origin=origin,
                                   data=data, sha256=sha, n_records=len(records),
                                   summary=summary, incident_key=key)

    def _lineage(self) -> str:
        """Which configured reference this lineage of versions grew from."""
        if self._digest is None:
            self._digest = records_digest(self.initial)
        return self._digest
