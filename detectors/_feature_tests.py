"""What a per-feature window test reports: the test's outcome and how the feature moved.

Shared by every window detector that explains itself feature by feature, so an analyst reads
one vocabulary ("src_bytes mean 120→5400", "service: http 60%→30%") whichever test ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detectors._chi2 import ChiSquaredResult

__all__ = ["CategoryShift", "FeatureTest", "categorical_feature_test"]

_CATEGORY_SHIFTS_REPORTED = 3


@dataclass(frozen=True)
class CategoryShift:
    """How the share of one known category moved between the reference and the window."""

    category: str
    reference_fraction: float
    window_fraction: float

    @property
    def change(self) -> float:
        """Window share minus reference share (positive: more frequent now)."""
        return self.window_fraction - self.reference_fraction

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "reference_fraction": self.reference_fraction,
            "window_fraction": self.window_fraction,
        }


@dataclass(frozen=True)
class FeatureTest:
    """The outcome of one feature's two-sample test, with how the feature moved.

    ``effect_size`` puts numeric and categorical features on one scale in ``[0, 1]``: the KS
    distance for numeric features and the total-variation distance between the category shares
    for categorical ones (the two coincide for a binary feature). It ranks features when their
    p-values are equally extreme.

    Numeric features fill ``reference_mean``, ``window_mean``, ``reference_std`` and
    ``window_std``; categorical features fill ``new_categories`` (window records in the unknown
    bucket), ``new_category_fraction`` and ``reference_new_category_fraction`` (the same share
    in the reference, usually 0) and ``category_shifts`` (the known categories whose share moved
    most, largest move first). The fields of the other kind are ``None`` or empty.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    adjusted_p_value: float
    rejected: bool
    effect_size: float
    degrees_of_freedom: int | None = None
    reference_mean: float | None = None
    window_mean: float | None = None
    reference_std: float | None = None
    window_std: float | None = None
    new_categories: int | None = None
    new_category_fraction: float | None = None
    reference_new_category_fraction: float | None = None
    category_shifts: tuple[CategoryShift, ...] = ()

    def describe_movement(self) -> str:
        """A few words on how the feature moved, for one-line summaries."""
        if self.kind == "numeric":
            return self._describe_numeric_movement()
        return self._describe_categorical_movement()

    def _describe_numeric_movement(self) -> str:
        ref_mean, win_mean = self.reference_mean or 0.0, self.window_mean or 0.0
        ref_std, win_std = self.reference_std or 0.0, self.window_std or 0.0
        scale = max(ref_std, win_std, 1e-12)
        standardised_mean_move = abs(win_mean - ref_mean) / scale
        std_move = abs(math.log((win_std + 1e-12) / (ref_std + 1e-12)))
        if std_move > standardised_mean_move:
            return f"{self.name} std {ref_std:.4g}→{win_std:.4g}"
        return f"{self.name} mean {ref_mean:.4g}→{win_mean:.4g}"

    def _describe_categorical_movement(self) -> str:
        unseen_share = self.new_category_fraction or 0.0
        reference_unseen_share = self.reference_new_category_fraction or 0.0
        unseen_move = unseen_share - reference_unseen_share
        if reference_unseen_share > 0.0:
            unseen = (
                f"unseen categories {_percent(reference_unseen_share)}→{_percent(unseen_share)}"
            )
        else:
            unseen = f"{_percent(unseen_share)} unseen categories"
        top_shift = self.category_shifts[0] if self.category_shifts else None
        if top_shift is None or abs(unseen_move) >= abs(top_shift.change):
            return f"{self.name}: {unseen}"
        moved = (
            f"{top_shift.category} {_percent(top_shift.reference_fraction)}"
            f"→{_percent(top_shift.window_fraction)}"
        )
        if unseen_share >= 0.01 and unseen_move > 0.0:
            return f"{self.name}: {moved}, {unseen}"
        return f"{self.name}: {moved}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "adjusted_p_value": self.adjusted_p_value,
            "rejected": self.rejected,
            "effect_size": self.effect_size,
            "degrees_of_freedom": self.degrees_of_freedom,
            "reference_mean": self.reference_mean,
            "window_mean": self.window_mean,
            "reference_std": self.reference_std,
            "window_std": self.window_std,
            "new_categories": self.new_categories,
            "new_category_fraction": self.new_category_fraction,
            "reference_new_category_fraction": self.reference_new_category_fraction,
            "category_shifts": [shift.to_dict() for shift in self.category_shifts],
        }



def _percent(share: float) -> str:
    """A share as a percentage, with a decimal for small shares so that 0.4% does not read 0%."""
    return f"{share:.1%}" if 0.0 < share < 0.1 else f"{share:.0%}"


def categorical_feature_test(
    *,
    name: str,
    vocab: tuple[str, ...],
    reference_counts: np.ndarray,
    window_counts: np.ndarray,
    chi2: ChiSquaredResult,
    adjusted_p_value: float,
    rejected: bool,
    effect_size: float,
) -> FeatureTest:
    n_reference, n_window = int(reference_counts.sum()), int(window_counts.sum())
    reference_share = reference_counts / max(n_reference, 1)
    window_share = window_counts / max(n_window, 1)
    known_change = np.abs(window_share[:-1] - reference_share[:-1])
    most_moved = np.argsort(-known_change, kind="stable")[:_CATEGORY_SHIFTS_REPORTED]
    shifts = tuple(
        CategoryShift(
            category=vocab[i],
            reference_fraction=float(reference_share[i]),
            window_fraction=float(window_share[i]),
        )
        for i in most_moved
        if known_change[i] > 0.0
    )
    return FeatureTest(
        name=name,
        kind="categorical",
        test="chi2",
        statistic=chi2.statistic,
        p_value=chi2.p_value,
        adjusted_p_value=adjusted_p_value,
        rejected=rejected,
        effect_size=effect_size,
        degrees_of_freedom=chi2.degrees_of_freedom,
        new_categories=int(window_counts[-1]),
        new_category_fraction=float(window_share[-1]),
        reference_new_category_fraction=float(reference_share[-1]),
        category_shifts=shifts,
    )
