"""The configured detectors of one source, built from ``detectors:`` and run family by family.

The pipeline knows no detector class by name: every enabled entry is built through
:data:`detectors.DETECTOR_TYPES` (``from_config`` with the reference batch and, for detectors
that need it, the live model), and each family is driven by its contract:

* window detectors get every record (including records re-read after a restart to rebuild
  their windows) and report windows;
* record detectors score only the records not committed before (a restart re-reads some
  records for window state only; their verdicts were committed already);
* labelled-data detectors see every record that carries a label (their sliding window needs
  the re-read ones too), and their verdicts on fresh records count.

Each source gets its own set, so windows never mix two streams.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.config import AgentConfig
from detectors import build_detector
from detectors.base import (
    DetectorContext,
    DriftReport,
    FeatureBatch,
    ModelHandle,
    TensorLayout,
    Verdict,
)

log = logging.getLogger(__name__)

#: the most records of a time window a restart can rebuild (and spans can name)
MAX_TIME_WINDOW_RECORDS = 200_000


def window_records_bound(detector: Any) -> int:
    """Most records a restart may re-read for a detector: its window (and, for an online
    detector, the records up to its next scheduled report), or the time-window bound."""
    window = getattr(detector, "window", 0) or 0
    if not isinstance(window, int):
        return MAX_TIME_WINDOW_RECORDS
    return window + int(getattr(detector, "report_every", 0) or 0)


def window_bounds(report: DriftReport) -> tuple[int, int]:
    """Stream positions ``[first, last)`` of a report's window (counted from 0).

    Time-window reports name their first and last record (their report falls on the record
    that closed the window, after it); a count window is the ``n_window`` records up to its
    report.
    """
    last = int(getattr(report, "last_record", 0) or 0)
    if last:
        return int(report.first_record) - 1, last  # type: ignore[attr-defined]
    return report.records_seen - report.n_window, report.records_seen


# Records per chunk for a detector whose step is not a count (time windows): windows shorter
# than this may be tested against the reference as it was at the chunk's start.
_UNTIMED_CHUNK = 32


@dataclass(frozen=True)
class Judgement:
    """One record or labelled-data detector's verdict on the fresh records of a batch."""

    detector: Any
    verdict: Verdict  # one entry per fresh row
    rows: np.ndarray  # the fresh rows of the batch's features the verdict is about


class DetectorSet:
    """Window, record and labelled-data detectors of one source."""

    def __init__(self, config: AgentConfig, reference: FeatureBatch,
                 model: ModelHandle | None, tensors: tuple[TensorLayout, ...] = ()) -> None:
        context = DetectorContext(reference=reference, model=model, tensors=tensors)
        self.windows: list[Any] = []
        self.records: list[Any] = []
        self.labelled: list[Any] = []
        for entry in config.enabled_detectors():
            detector = build_detector(entry, context)
            {"window": self.windows, "record": self.records,
             "labelled": self.labelled}[detector.family].append(detector)

    @property
    def all(self) -> list[Any]:
        return [*self.windows, *self.records, *self.labelled]

    @property
    def needs_embeddings(self) -> bool:
        return any(getattr(d, "uses_embeddings", False) for d in (*self.records, *self.labelled))

    @property
    def stateful(self) -> bool:
        """Whether a restart has records to re-read for some detector's state."""
        return bool(self.windows or [d for d in self.labelled if getattr(d, "window", 0)])

    def buffer_size(self, batch_size: int) -> int:
        """Recent records to remember: enough to name every window and rebuild any state.

        A time window (``window: 5m``) holds however many records its span brings; it is
        remembered up to :data:`MAX_TIME_WINDOW_RECORDS`, past which a restart rebuilds only
        that many of its most recent records.
        """
        spans = [window_records_bound(d) for d in (*self.windows, *self.labelled)]
        return max([0, *spans]) + batch_size

    def records_to_replay(self) -> int:
        """Recent records a restarted agent must feed again (the most any detector needs)."""
        return max([0, *(d.records_to_replay() for d in (*self.windows, *self.labelled))])

    def feed_windows(self, features: FeatureBatch,
                     on_report: Callable[[Any, int, DriftReport], None] | None = None,
                     ) -> list[tuple[Any, int, DriftReport]]:
        """(detector, records it had seen before this batch, report) per window reported.

        With ``on_report`` (a reference that moves between windows), each detector is fed in
        chunks that end on multiples of its step, counted from the start of the stream, and
        ``on_report`` runs after each chunk's reports: a window is then tested against the
        reference every earlier window left, however the stream was cut into batches.
        """
        out: list[tuple[Any, int, DriftReport]] = []
        for detector in self.windows:
            before = detector.records_seen
            if on_report is None:
                out.extend((detector, before, report) for report in detector.update(features))
                continue
            step = getattr(detector, "step", None)
            chunk = step if isinstance(step, int) and step > 0 else _UNTIMED_CHUNK
            start = 0
            while start < len(features):
                stop = min(len(features), start + chunk - detector.records_seen % chunk)
                for report in detector.update(features.take(slice(start, stop))):
                    out.append((detector, before, report))
                    on_report(detector, before, report)
                start = stop
        return out

    def judge(self, features: FeatureBatch, fresh: np.ndarray) -> list[Judgement]:
        """Verdicts of the record and labelled-data detectors on the fresh rows."""
        judgements = []
        fresh_batch = features.take(fresh)
        for detector in self.records:
            if fresh.size:
                judgements.append(Judgement(detector, detector.score(fresh_batch), fresh))
        for detector in self.labelled:
            if features.labels is None or len(features) == 0:
                continue
            verdict = detector.inspect(features)  # re-read rows too: they rebuild its window
            judgements.append(Judgement(detector, _take(verdict, fresh), fresh))
        return judgements


def _take(verdict: Verdict, rows: np.ndarray) -> Verdict:
    def part(value: np.ndarray | None) -> np.ndarray | None:
        return None if value is None else value[rows]

    return Verdict(detector=verdict.detector, flagged=verdict.flagged[rows],
                   score=verdict.score[rows], p_value=part(verdict.p_value),
                   explanation=verdict.explanation, kind=part(verdict.kind),
                   predicted_class=part(verdict.predicted_class),
                   confidence=part(verdict.confidence))
