"""Open-set ("none of the known classes") scoring for adapted few-shot classifiers.

Every N-way classifier assigns each record to one of N classes, even a record of an attack type
no analyst has labelled yet. A monitor must instead say "unknown". Each adapted learner exposes a
raw unknown score (distance to the nearest class representative in its embedding space, higher
= more unknown); this module turns it into a decision by calibrating a threshold on held-out
records of the *known* classes so that the false-alarm rate on them matches a configured target.

Example
-------
>>> import numpy as np
>>> known = np.arange(100, dtype=float)
>>> round(threshold_for_false_alarm_rate(known, 0.05), 1)
95.0
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnknownCalibration:
    """The calibrated operating point of an open-set decision."""

    threshold: float
    false_alarm_rate: float
    calibration_records: int
    observed_false_alarm_rate: float


def threshold_for_false_alarm_rate(known_scores: np.ndarray, false_alarm_rate: float) -> float:
    """Smallest threshold whose exceedance rate on ``known_scores`` is at most the target.

    Uses the conformal order statistic ``ceil((n + 1)(1 - rate))`` so the guarantee holds for a
    fresh record from the same distribution, not just on the calibration sample; when the sample
    is too small to support the rate, the largest score is used (and a stricter rate results).
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must lie in (0, 1), got {false_alarm_rate}.")
    scores = np.sort(np.asarray(known_scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise ValueError("cannot calibrate an unknown threshold on zero known records.")
    rank = int(np.ceil((scores.size + 1) * (1.0 - false_alarm_rate)))
    return float(scores[min(rank, scores.size) - 1])


def calibrate_unknown(known_scores: np.ndarray, false_alarm_rate: float) -> UnknownCalibration:
    threshold = threshold_for_false_alarm_rate(known_scores, false_alarm_rate)
    scores = np.asarray(known_scores, dtype=np.float64).ravel()
    return UnknownCalibration(
        threshold=threshold,
        false_alarm_rate=false_alarm_rate,
        calibration_records=int(scores.size),
        observed_false_alarm_rate=float(np.mean(scores > threshold)),
    )


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Probability that an unknown record outscores a known one (ties count one half)."""
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    if known.size == 0 or unknown.size == 0:
        raise ValueError("auroc needs at least one known and one unknown score.")
    combined = np.concatenate([known, unknown])
    order = np.argsort(combined, kind="mergesort")
    ranks = np.empty(combined.size, dtype=np.float64)
    sorted_scores = combined[order]
    # Average ranks over ties, vectorised via the first/last position of each distinct value.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    rank_sum = ranks[known.size :].sum()
    return float((rank_sum - unknown.size * (unknown.size + 1) / 2.0) / (known.size * unknown.size))


class OpenSetMixin(ABC):
    """``calibrate``/``is_unknown`` for any object with an ``unknown_score(x)`` method."""

    _calibration: UnknownCalibration | None = None

    @abstractmethod
    def unknown_score(self, x: np.ndarray) -> np.ndarray:
        ...

    @property
    def calibration(self) -> UnknownCalibration | None:
        return self._calibration

    def calibrate(
        self, known_x: np.ndarray, *, false_alarm_rate: float = 0.01
    ) -> UnknownCalibration:
        """Set the unknown threshold from held-out records of the adapted (known) classes."""
        self._calibration = calibrate_unknown(self.unknown_score(known_x), false_alarm_rate)
        return self._calibration

    def is_unknown(self, x: np.ndarray) -> np.ndarray:
        if self._calibration is None:
            raise RuntimeError(
                "is_unknown needs a threshold: call calibrate(known_x, false_alarm_rate=...) first."
            )
        return self.unknown_score(x) > self._calibration.threshold
