"""Conformal p-values and their combination: how a score becomes a false-alarm rate.

A detector's raw score means nothing on its own; ranked among the same scores of held-out
clean records (the calibration set) it becomes a p-value whose distribution is uniform on
records like them, so flagging ``p <= alpha`` keeps the false-alarm rate at ``alpha`` whatever
the score's scale. Several scores are combined into one decision by one of two rules:

* ``bonferroni``: ``min(1, m * min_j p_j)`` — valid under any dependence, conservative;
* ``fisher``: the Fisher statistic ``-2 Σ log p_j`` ranked, in turn, among the same statistic
  of the calibration records. Scores of one record are strongly dependent (they read the same
  layers), which makes the textbook chi-squared reference wrong; ranking against calibration
  records keeps the rate without any independence assumption. Fisher's rule is strongest when
  many components move a little together;
* ``harmonic``: the harmonic mean of the p-values (Wilson 2019), ranked the same way. It is
  dominated by the smallest p-values, so it is strongest when a few components move a lot and
  the others not at all — the usual pattern when it is not known in advance which layer an
  attack disturbs.

Inside both statistics each component's p-value has an extrapolated tail: a conformal
p-value cannot go below ``1/(n+1)``, so a record ten times farther out than any calibration
record would count no more than the calibration record farthest out, and a single component
that fires hard would drown among the ones that do not. Above the calibration's 90th
percentile the p-value decays exponentially with the mean excess over that percentile as its
scale (a peaks-over-threshold fit). The transform is one fixed function of the score, applied
alike to calibration records and new ones, so the final ranking keeps the rate; per-component
p-values reported to people stay the exact conformal ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Calibration", "CombineRule", "conformal_p_values"]

CombineRule = Literal["fisher", "harmonic", "bonferroni"]


def conformal_p_values(calibration_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(1 + #{calibration >= s}) / (n + 1)`` for every score ``s`` (higher = stranger)."""
    n = calibration_sorted.size
    at_least = n - np.searchsorted(calibration_sorted, scores, side="left")
    return (1.0 + at_least) / (n + 1.0)


_TAIL_QUANTILE = 0.9


@dataclass(frozen=True)
class Calibration:
    """Calibration scores of ``m`` components and the rule that combines their p-values."""

    columns: tuple[np.ndarray, ...]  # per component: calibration scores, sorted
    rule: CombineRule
    combined: np.ndarray  # sorted combination statistic of the calibration records
    tails: tuple[tuple[float, float, float, int], ...] = ()  # threshold, mean excess, Σ, count

    @classmethod
    def fit(cls, scores: np.ndarray, rule: CombineRule) -> Calibration:
        """Calibrate on ``scores`` ``[n, m]`` of held-out clean records."""
        scores = np.asarray(scores, np.float64)
        columns = tuple(np.sort(scores[:, j]) for j in range(scores.shape[1]))
        tails = tuple(_tail(column) for column in columns)
        partial = cls(columns=columns, rule=rule, combined=np.zeros(0), tails=tails)
        statistic = (_statistic(partial._tail_p_values(scores, own=True), rule)
                     if scores.size else np.zeros(scores.shape[0]))
        return cls(columns=columns, rule=rule, combined=np.sort(statistic), tails=tails)

    @property
    def size(self) -> int:
        return int(self.combined.size)

    def component_p_values(self, scores: np.ndarray) -> np.ndarray:
        """``[n, m]`` p-value of every component score."""
        scores = np.asarray(scores, np.float64)
        return np.column_stack([conformal_p_values(column, scores[:, j])
                                for j, column in enumerate(self.columns)])

    def combine(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(combined p-value, combination statistic) per record from component scores."""
        if self.rule == "bonferroni":
            p_values = self.component_p_values(scores)
            m = p_values.shape[1]
            return np.minimum(1.0, m * p_values.min(axis=1)), _statistic(p_values, self.rule)
        statistic = _statistic(self._tail_p_values(scores), self.rule)
        return conformal_p_values(self.combined, statistic), statistic

    def _tail_p_values(self, scores: np.ndarray, *, own: bool = False) -> np.ndarray:
        """Empirical tail share up to the 90th percentile of the calibration scores, an
        exponential tail beyond it. ``own``: the scores are the calibration records' own,
        so each is not counted against itself (it gets what a new record with its score
        would get), which keeps calibration and new records on one scale."""
        scores = np.asarray(scores, np.float64)
        out = np.empty_like(scores)
        for j, (column, (threshold, excess, total, count)) in enumerate(
                zip(self.columns, self.tails, strict=True)):
            n = column.size
            at_least = n - np.searchsorted(column, scores[:, j], side="left") - (1 if own else 0)
            empirical = (1.0 + at_least) / (n + 1.0)
            scale = np.full(scores.shape[0], excess)
            if own and count > 1:
                # A calibration record in the tail is judged by the tail fitted without it,
                # as a new record would be: its own excess must not widen its own tail.
                inside = scores[:, j] > threshold
                scale[inside] = np.maximum(
                    (total - (scores[inside, j] - threshold)) / (count - 1), excess * 1e-9)
            beyond = (1.0 - _TAIL_QUANTILE) * np.exp(-(scores[:, j] - threshold) / scale)
            out[:, j] = np.where(scores[:, j] > threshold, np.minimum(empirical, beyond),
                                 empirical)
        return out


def _tail(column: np.ndarray) -> tuple[float, float, float, int]:
    """Threshold (90th percentile), mean excess over it, and the excesses' sum and count, of
    sorted calibration scores."""
    if column.size == 0:
        return 0.0, 1.0, 0.0, 0
    threshold = float(np.quantile(column, _TAIL_QUANTILE))
    excess = column[column > threshold] - threshold
    scale = float(excess.mean()) if excess.size else 0.0
    spread = float(column[-1] - column[0])
    return (threshold, max(scale, 1e-9 * max(spread, 1.0), 1e-12), float(excess.sum()),
            int(excess.size))


def _statistic(p_values: np.ndarray, rule: CombineRule) -> np.ndarray:
    """Higher = stranger: Fisher's ``-2 Σ log p``, ``-log`` of the harmonic mean p-value, or
    ``-log min p`` for Bonferroni."""
    clipped = np.maximum(np.asarray(p_values, np.float64), 1e-300)
    if rule == "fisher":
        return -2.0 * np.log(clipped).sum(axis=1)
    if rule == "harmonic":
        smallest = clipped.min(axis=1)  # factored out: 1/p overflows far in the tail
        return -np.log(smallest) + np.log((smallest[:, None] / clipped).mean(axis=1))
    return -np.log(clipped.min(axis=1))
