"""Chi-squared homogeneity test of two count vectors, sparse categories pooled first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ChiSquaredResult", "pooled_chi2"]

# Cochran's rule: the chi-squared approximation needs expected counts of at least 5 per cell.
_MIN_EXPECTED_COUNT = 5.0


@dataclass(frozen=True)
class ChiSquaredResult:
    """A chi-squared homogeneity test after pooling; ``degrees_of_freedom`` 0 means untestable."""

    statistic: float
    p_value: float
    degrees_of_freedom: int


def pooled_chi2(reference_counts: np.ndarray, window_counts: np.ndarray) -> ChiSquaredResult:
    """Chi-squared homogeneity test of two count vectors, with sparse categories pooled.

    A category whose expected count (under homogeneity) is below 5 in either sample is pooled
    into one "other" bin, so that a handful of records of a rare or never-seen category cannot
    produce a huge statistic on its own and the test keeps its size. If "other" is itself still
    sparse it joins the smallest regular bin.

    The unknown bucket is a category like any other here. Unseen values that are frequent in
    the window (from about ``5 * (n1 + n2) / n2`` records: 45 in a window of 1000 against a
    reference of 8000) keep their own bin and, with a reference count of 0, dominate the
    statistic; fewer are pooled with the rare categories, whose bin they still inflate.
    """
    reference_counts = np.asarray(reference_counts, dtype=np.float64)
    window_counts = np.asarray(window_counts, dtype=np.float64)
    n_reference, n_window = reference_counts.sum(), window_counts.sum()
    if n_reference == 0 or n_window == 0:
        return ChiSquaredResult(statistic=0.0, p_value=1.0, degrees_of_freedom=0)
    totals = reference_counts + window_counts
    smaller_row_share = min(n_reference, n_window) / (n_reference + n_window)
    sparse = (totals > 0) & (totals * smaller_row_share < _MIN_EXPECTED_COUNT)
    dense = (totals > 0) & ~sparse
    bins_reference = list(reference_counts[dense])
    bins_window = list(window_counts[dense])
    other_reference, other_window = reference_counts[sparse].sum(), window_counts[sparse].sum()
    if other_reference + other_window > 0:
        other_is_sparse = (other_reference + other_window) * smaller_row_share < _MIN_EXPECTED_COUNT
        if other_is_sparse and bins_reference:
            smallest = int(np.argmin(np.add(bins_reference, bins_window)))
            bins_reference[smallest] += other_reference
            bins_window[smallest] += other_window
        else:
            bins_reference.append(other_reference)
            bins_window.append(other_window)
    if len(bins_reference) < 2:
        return ChiSquaredResult(statistic=0.0, p_value=1.0, degrees_of_freedom=0)
    observed = np.array([bins_reference, bins_window])
    expected = np.outer([n_reference, n_window], observed.sum(axis=0)) / (n_reference + n_window)
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    degrees_of_freedom = observed.shape[1] - 1
    from scipy import special  # imported when first needed: config loading stays light

    p_value = float(special.chdtrc(degrees_of_freedom, statistic))
    return ChiSquaredResult(
        statistic=statistic, p_value=p_value, degrees_of_freedom=degrees_of_freedom
    )
