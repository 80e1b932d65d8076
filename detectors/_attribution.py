"""Per-feature attribution for multivariate drift tests, in the units an analyst knows.

A multivariate test (MMD, a classifier two-sample test) answers one question for the whole
window, so it has no per-feature p-values to sort. What it has instead is a *contribution* per
feature: how much of its statistic goes away when that feature alone is knocked out (replaced
by draws from the reference, which keeps the feature's reference marginal and breaks its ties
to every other feature). A knock-out sees a feature whose marginal moved and a feature whose
relation to another one changed alike, which is what names the two features of a pure
correlation change that no marginal test can see.

This module holds what both multivariate detectors share around that number:

* :class:`RawDesign`, the feature space they work in: numeric columns centred on the
  reference's median, divided by its robust scale and squashed by a signed ``log1p`` (so one
  ``src_bytes`` of 10⁹ does not swamp forty other features), and categorical codes one-hot
  (the unknown bucket included). Every column belongs to one named feature.
* :class:`ReferenceProfile`, the reference's means, spreads, category shares and numeric
  correlations, to say how each feature moved.
* :class:`FeatureAttribution`, one feature's share of a report (a
  :class:`~detectors.base.FeatureResult`), and :func:`attribute`, which turns contributions
  into the report's ``features`` and ``top_features``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detectors._feature_tests import CategoryShift
from detectors.base import FeatureBatch

__all__ = [
    "MIN_SHARE",
    "CorrelationShift",
    "FeatureAttribution",
    "RawDesign",
    "ReferenceProfile",
    "attribute",
    "attribution_rows",
    "nearest_on_other_features",
    "per_feature_distances",
]

# A feature is named as drifted when its knock-out removes at least this share of the total.
MIN_SHARE = 0.05
# A one-hot column weighs 1/sqrt(2), so two records in different categories of one feature are
# as far apart (squared distance 1) as two numeric values one robust unit apart.
_ONE_HOT = math.sqrt(0.5)
_CATEGORY_SHIFTS_REPORTED = 3
_CORRELATION_NAMED = 0.5  # smallest change of a correlation coefficient worth describing
# Knock-outs compare up to 300 reference records with up to 100 window records, feature by
# feature; wide schemas get fewer so that one [reference, window, feature] array stays small.
_ATTRIBUTION_REFERENCE, _ATTRIBUTION_WINDOW, _ATTRIBUTION_ELEMENTS = 300, 100, 1 << 22


@dataclass(frozen=True)
class RawDesign:
    """The reference-scaled feature space both multivariate detectors test in.

    ``center`` and ``scale`` are per numeric feature: the reference's median, and its
    interquartile range / 1.349 (the standard deviation of a normal sample), falling back to
    the mean absolute deviation from the median for the zero-inflated counts security data is
    full of, and to 1 for a constant. ``vocab_sizes`` are the categorical vocabularies' sizes;
    each categorical feature takes ``size + 1`` one-hot columns, the unknown bucket last.
    """

    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    vocab_sizes: tuple[int, ...]
    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, reference: FeatureBatch) -> RawDesign:
        numeric = reference.numeric
        center = np.median(numeric, axis=0) if numeric.size else np.zeros(numeric.shape[1])
        if numeric.size:
            q75, q25 = np.percentile(numeric, [75, 25], axis=0)
            scale = (q75 - q25) / 1.349
            deviation = np.abs(numeric - center).mean(axis=0)
            scale = np.where(scale > 0, scale, deviation)
        else:
            scale = np.ones(numeric.shape[1])
        scale = np.where(scale > 0, scale, 1.0)
        return cls(reference.numeric_names, reference.categorical_names,
                   tuple(len(v) for v in reference.categorical_vocab),
                   np.asarray(center, np.float64), np.asarray(scale, np.float64))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.numeric_names + self.categorical_names

    @property
    def n_columns(self) -> int:
        return len(self.numeric_names) + sum(size + 1 for size in self.vocab_sizes)

    @property
    def column_feature(self) -> np.ndarray:
        """``[n_columns]``: the index (in :attr:`feature_names`) each design column belongs to."""
        n_numeric = len(self.numeric_names)
        owners = [np.arange(n_numeric)]
        owners += [np.full(size + 1, n_numeric + j) for j, size in enumerate(self.vocab_sizes)]
        return np.concatenate(owners).astype(np.int64)

    def numeric_part(self, numeric: np.ndarray) -> np.ndarray:
        """Numeric columns robust-scaled and squashed: ``sign(u) * log1p(|u|)``."""
        scaled = (np.asarray(numeric, np.float64) - self.center) / self.scale
        return np.sign(scaled) * np.log1p(np.abs(scaled))

    def transform(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """``[n, n_columns]`` float64 design rows."""
        parts = [self.numeric_part(numeric)]
        for j, size in enumerate(self.vocab_sizes):
            one_hot = np.zeros((categorical.shape[0], size + 1))
            one_hot[np.arange(categorical.shape[0]), categorical[:, j]] = _ONE_HOT
            parts.append(one_hot)
        return np.concatenate(parts, axis=1)

    def to_state(self) -> dict[str, np.ndarray]:
        return {"center": self.center, "scale": self.scale,
                "vocab_sizes": np.asarray(self.vocab_sizes, np.int64)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], numeric_names: tuple[str, ...],
                   categorical_names: tuple[str, ...]) -> RawDesign:
        return cls(numeric_names, categorical_names,
                   tuple(int(v) for v in np.asarray(state["vocab_sizes"]).tolist()),
                   np.asarray(state["center"], np.float64), np.asarray(state["scale"], np.float64))


@dataclass(frozen=True)
class ReferenceProfile:
    """What each feature looked like in the reference, to describe how the window moved.

    Means and standard deviations are in raw units; ``shares`` holds, per categorical feature,
    each code's share (unknown bucket last); ``correlation`` is the Pearson correlation of the
    numeric features in the design space (robust-scaled and squashed, so one extreme record
    cannot make or break it), 0 where a feature is constant.
    """

    mean: np.ndarray
    std: np.ndarray
    shares: tuple[np.ndarray, ...]
    correlation: np.ndarray

    @classmethod
    def of(cls, reference: FeatureBatch, design: RawDesign) -> ReferenceProfile:
        shares = tuple(np.bincount(reference.categorical[:, j], minlength=size + 1)
                       / max(len(reference), 1) for j, size in enumerate(design.vocab_sizes))
        return cls(reference.numeric.mean(axis=0), reference.numeric.std(axis=0), shares,
                   _correlation(design.numeric_part(reference.numeric)))

    def to_state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "correlation": self.correlation,
                "shares": np.concatenate(self.shares) if self.shares else np.zeros(0)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], design: RawDesign) -> ReferenceProfile:
        bounds = np.cumsum([0] + [size + 1 for size in design.vocab_sizes]).tolist()
        flat = np.asarray(state["shares"], np.float64)
        return cls(np.asarray(state["mean"], np.float64), np.asarray(state["std"], np.float64),
                   tuple(flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)),
                   np.asarray(state["correlation"], np.float64))


def _correlation(columns: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix with 0 (not NaN) wherever a column is constant."""
    if columns.shape[0] < 2 or columns.shape[1] == 0:
        return np.zeros((columns.shape[1], columns.shape[1]))
    centred = columns - columns.mean(axis=0)
    norms = np.sqrt((centred * centred).sum(axis=0))
    safe = np.where(norms > 1e-12, norms, np.inf)
    return (centred.T @ centred) / np.outer(safe, safe)


@dataclass(frozen=True)
class CorrelationShift:
    """How a numeric feature's correlation with another drifted feature changed."""

    partner: str
    reference: float
    window: float

    def to_dict(self) -> dict[str, Any]:
        return {"partner": self.partner, "reference": self.reference, "window": self.window}


@dataclass(frozen=True)
class FeatureAttribution:
    """One feature's share of a multivariate drift test, with how the feature moved.

    ``contribution`` is how much of the test's statistic goes away when this feature alone is
    knocked out (in the statistic's units: MMD², or a classifier's decision score; negative
    when the knock-out made the window look *less* like the reference; 0 in a window that was
    not rejected, where nothing is attributed); ``share`` is its part of all positive
    contributions. ``p_value`` is the joint test's (a multivariate test has no per-feature
    p-value). ``rejected`` marks the features a drifted window is blamed on: at least
    :data:`MIN_SHARE` of the contributions, or half the largest one. Numeric features fill the
    ``*_mean``/``*_std`` fields (raw units) and, when the feature's correlation with another
    blamed feature changed, ``correlation``; categorical features fill the category fields.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    contribution: float
    share: float
    rejected: bool
    p_value: float
    reference_mean: float | None = None
    window_mean: float | None = None
    reference_std: float | None = None
    window_std: float | None = None
    correlation: CorrelationShift | None = None
    new_category_fraction: float | None = None
    reference_new_category_fraction: float | None = None
    category_shifts: tuple[CategoryShift, ...] = ()

    def describe_movement(self) -> str:
        """A few words on how the feature moved, for one-line summaries."""
        if self.kind == "numeric":
            return self._describe_numeric()
        return self._describe_categorical()

    def _describe_numeric(self) -> str:
        ref_mean, win_mean = self.reference_mean or 0.0, self.window_mean or 0.0
        ref_std, win_std = self.reference_std or 0.0, self.window_std or 0.0
        mean_move = abs(win_mean - ref_mean) / max(ref_std, win_std, 1e-12)
        std_move = abs(math.log((win_std + 1e-12) / (ref_std + 1e-12)))
        shift = self.correlation
        if shift is not None and abs(shift.window - shift.reference) > max(mean_move, std_move):
            return (f"{self.name} correlation with {shift.partner} "
                    f"{shift.reference:.2f}→{shift.window:.2f}")
        if std_move > mean_move:
            return f"{self.name} std {ref_std:.4g}→{win_std:.4g}"
        return f"{self.name} mean {ref_mean:.4g}→{win_mean:.4g}"

    def _describe_categorical(self) -> str:
        unseen, reference_unseen = (self.new_category_fraction or 0.0,
                                    self.reference_new_category_fraction or 0.0)
        top = self.category_shifts[0] if self.category_shifts else None
        if top is None or abs(unseen - reference_unseen) >= abs(top.change):
            return f"{self.name}: unseen categories {_percent(reference_unseen)}→{_percent(unseen)}"
        return (f"{self.name}: {top.category} {_percent(top.reference_fraction)}"
                f"→{_percent(top.window_fraction)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "contribution": self.contribution,
            "share": self.share,
            "rejected": self.rejected,
            "p_value": self.p_value,
            "reference_mean": self.reference_mean,
            "window_mean": self.window_mean,
            "reference_std": self.reference_std,
            "window_std": self.window_std,
            "correlation": None if self.correlation is None else self.correlation.to_dict(),
            "new_category_fraction": self.new_category_fraction,
            "reference_new_category_fraction": self.reference_new_category_fraction,
            "category_shifts": [shift.to_dict() for shift in self.category_shifts],
        }


def _percent(share: float) -> str:
    return f"{share:.1%}" if 0.0 < share < 0.1 else f"{share:.0%}"


def attribute(contributions: np.ndarray, *, design: RawDesign, profile: ReferenceProfile,
              vocab: Sequence[Sequence[str]], numeric: np.ndarray, categorical: np.ndarray,
              window_rejected: bool, p_value: float, top_k: int
              ) -> tuple[tuple[FeatureAttribution, ...], tuple[str, ...]]:
    """The report's ``features`` (schema order) and ``top_features`` (largest share first).

    ``contributions`` holds one number per feature of ``design.feature_names``; ``numeric`` and
    ``categorical`` are the window's raw columns. Features are blamed only in a rejected window.
    """
    contributions = np.nan_to_num(np.asarray(contributions, np.float64), nan=0.0)
    positive = np.maximum(contributions, 0.0)
    total = float(positive.sum())
    shares = positive / total if total > 0.0 else np.zeros_like(positive)
    # A broad shift spreads the contributions thin: the features carrying at least half the
    # largest one are blamed too, so a drifted window always names what moved most.
    leading = positive >= 0.5 * positive.max() if total > 0.0 else np.zeros_like(positive, bool)
    blamed = ((shares >= MIN_SHARE) | leading) & (positive > 0.0) & window_rejected
    n_numeric = len(design.numeric_names)
    correlations = _correlation_shifts(design, profile, numeric, blamed[:n_numeric])
    features: list[FeatureAttribution] = []
    for j, name in enumerate(design.numeric_names):
        column = numeric[:, j]
        features.append(FeatureAttribution(
            name=name, kind="numeric", contribution=float(contributions[j]),
            share=float(shares[j]), rejected=bool(blamed[j]), p_value=p_value,
            reference_mean=float(profile.mean[j]), window_mean=float(column.mean()),
            reference_std=float(profile.std[j]), window_std=float(column.std()),
            correlation=correlations.get(j)))
    for j, name in enumerate(design.categorical_names):
        position = n_numeric + j
        reference_share = profile.shares[j]
        window_share = np.bincount(categorical[:, j], minlength=reference_share.size) / max(
            categorical.shape[0], 1)
        moved = np.abs(window_share[:-1] - reference_share[:-1])
        order = np.argsort(-moved, kind="stable")[:_CATEGORY_SHIFTS_REPORTED]
        features.append(FeatureAttribution(
            name=name, kind="categorical", contribution=float(contributions[position]),
            share=float(shares[position]), rejected=bool(blamed[position]), p_value=p_value,
            new_category_fraction=float(window_share[-1]),
            reference_new_category_fraction=float(reference_share[-1]),
            category_shifts=tuple(
                CategoryShift(str(vocab[j][i]), float(reference_share[i]),
                              float(window_share[i]))
                for i in order if moved[i] > 0.0)))
    ranking = np.lexsort((np.arange(contributions.size), -contributions))
    top = tuple(features[i].name for i in ranking if blamed[i])[:top_k]
    return tuple(features), top


def _correlation_shifts(design: RawDesign, profile: ReferenceProfile, numeric: np.ndarray,
                        blamed: np.ndarray) -> dict[int, CorrelationShift]:
    """For each blamed numeric feature, the blamed partner whose correlation moved most."""
    candidates = np.flatnonzero(blamed)
    if candidates.size < 2 or numeric.shape[0] < 3:
        return {}
    window = _correlation(design.numeric_part(numeric)[:, candidates])
    reference = profile.correlation[np.ix_(candidates, candidates)]
    change = np.abs(window - reference)
    np.fill_diagonal(change, -1.0)
    shifts: dict[int, CorrelationShift] = {}
    for row, j in enumerate(candidates.tolist()):
        partner = int(np.argmax(change[row]))
        if change[row, partner] >= _CORRELATION_NAMED:
            shifts[j] = CorrelationShift(design.numeric_names[candidates[partner]],
                                         float(reference[row, partner]),
                                         float(window[row, partner]))
    return shifts


def per_feature_distances(a_numeric: np.ndarray, a_codes: np.ndarray, b_numeric: np.ndarray,
                          b_codes: np.ndarray) -> np.ndarray:
    """``float32 [len(a), len(b), F]``: squared design distance per feature.

    Numeric inputs are :meth:`RawDesign.numeric_part` columns; a categorical feature adds 1
    where the codes differ (its two one-hot columns of weight ``1/sqrt(2)``), so the sum over
    the last axis is the squared distance between design rows.
    """
    numeric = np.square(np.asarray(a_numeric, np.float32)[:, None, :]
                        - np.asarray(b_numeric, np.float32)[None, :, :], dtype=np.float32)
    categorical = (a_codes[:, None, :] != b_codes[None, :, :]).astype(np.float32)
    return np.concatenate([numeric, categorical], axis=2)


def nearest_on_other_features(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each window record and feature, the reference record nearest on the other features.

    ``distances`` is :func:`per_feature_distances` of reference rows against window rows
    (``[n, m, F]``). Returns ``(nearest [m, F], others [n, m, F])``: the index of that
    reference record, and the squared distances without each feature. Knocking feature ``j``
    out of window record ``l`` gives it the value of reference record ``nearest[l, j]``: a draw
    from the reference given the rest of the record, so the knocked-out record is one the
    reference could hold.
    """
    others = np.maximum(distances.sum(axis=-1, keepdims=True) - distances, 0.0)
    return np.argmin(others, axis=0), others


def attribution_rows(n_reference: int, n_window: int, n_features: int
                     ) -> tuple[int, np.ndarray]:
    """How many reference records (the first ones of a random sample) and which window records
    (evenly spaced) a knock-out attribution looks at, for ``n_features`` features."""
    reference = min(n_reference, _ATTRIBUTION_REFERENCE,
                    max(10, int(np.sqrt(_ATTRIBUTION_ELEMENTS / max(n_features, 1)))))
    window = min(_ATTRIBUTION_WINDOW,
                 max(2, _ATTRIBUTION_ELEMENTS // max(reference * n_features, 1)))
    return reference, np.unique(np.linspace(0, n_window - 1, window).astype(np.int64))
