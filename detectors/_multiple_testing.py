"""Multiplicity corrections for testing many features at once.

A window detector tests every feature separately, so without a correction a stationary stream
with 40 features would raise an alarm in roughly ``40 * alpha`` of its windows. Adjusted
p-values are returned (rather than a rejection mask) so that reports can show how close each
feature came to the threshold.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["CORRECTIONS", "Correction", "adjust_p_values", "benjamini_hochberg", "bonferroni"]

Correction = Literal["bh", "bonferroni"]
CORRECTIONS: tuple[Correction, ...] = ("bh", "bonferroni")


def bonferroni(p_values: np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted p-values: ``min(1, m * p)``.

    Controls the family-wise error rate under any dependence between the features, at the cost
    of power when many features are tested.
    """
    p = _as_p_values(p_values)
    return np.minimum(p * p.size, 1.0)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (step-up, false discovery rate).

    The adjusted value of the ``i``-th smallest p-value is ``min_{k >= i} m * p_(k) / k``, capped
    at 1, so that rejecting every feature with adjusted p <= alpha is the BH procedure at level
    alpha. When no feature has drifted, "any rejection" happens with probability at most alpha
    for independent or positively dependent features, which is what a per-window alarm needs.
    """
    p = _as_p_values(p_values)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    step_up = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(step_up, 1.0)
    return adjusted


def adjust_p_values(p_values: np.ndarray, correction: Correction) -> np.ndarray:
    """Adjust ``p_values`` with the named correction (one of :data:`CORRECTIONS`)."""
    if correction == "bh":
        return benjamini_hochberg(p_values)
    if correction == "bonferroni":
        return bonferroni(p_values)
    raise ValueError(f"correction must be one of {list(CORRECTIONS)}, got {correction!r}.")


def _as_p_values(p_values: np.ndarray) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be a 1-D array, got shape {p.shape}.")
    if p.size and (np.isnan(p).any() or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("p-values must lie in [0, 1].")
    return p
