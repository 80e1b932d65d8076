"""The detector contract: what detectors see, what they return, and the errors they raise.

Every detector is fitted on reference data and then judges new data against it. Two families
share this contract:

* window detectors (:class:`WindowDetector`) accumulate records and test whole windows against
  the reference, returning :class:`DriftReport` objects;
* per-record detectors return a :class:`Verdict` per batch, one entry per record.

Results are frozen dataclasses rather than tuples so that they can grow fields without breaking
callers, and every result carries a p-value or a calibrated threshold plus an explanation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CategoryShift",
    "Detector",
    "DriftReport",
    "FeatureBatch",
    "FeatureSchemaError",
    "FeatureTest",
    "NotFittedError",
    "Verdict",
    "WindowDetector",
]


class NotFittedError(RuntimeError):
    """Raised when a detector is used before :meth:`Detector.fit` gave it a reference."""


class FeatureSchemaError(ValueError):
    """Raised when a batch's features do not match the reference the detector was fitted on.

    A detector compares like with like: the same feature names in the same order and, for
    categorical features, the same vocabulary (codes are positions in it). A mismatch usually
    means the encoder was refitted or reconfigured without refitting the detector.
    """


@dataclass(frozen=True)
class FeatureBatch:
    """One batch of encoded records, as every detector sees it.

    Raw-scale columns are kept beside the model input so that explanations can speak in the
    units an analyst knows ("src_bytes mean 120→5400") rather than in scaled model inputs.
    Arrays are converted to the documented dtypes on construction (without copying when they
    already match) and checked for shape, finiteness and code range, so that a detector never
    has to defend against a malformed batch.

    Attributes
    ----------
    numeric
        float64 ``[n, n_numeric]``: raw numeric values, before scaling; finite.
    numeric_names
        One name per numeric column.
    categorical
        int32 ``[n, n_categorical]``: codes ``0..len(vocab)``; code ``len(vocab)`` is the
        unknown bucket (a value the encoder's vocabulary does not hold). Booleans arrive here as
        categorical features with vocabulary ``("false", "true")``.
    categorical_names
        One name per categorical column.
    categorical_vocab
        Per categorical column, the fitted vocabulary (without the unknown bucket).
    encoded
        float32 ``[n, d]``: the model input matrix (``d`` may be 0 when no model is involved).
    """

    numeric: np.ndarray
    numeric_names: tuple[str, ...]
    categorical: np.ndarray
    categorical_names: tuple[str, ...]
    categorical_vocab: tuple[tuple[str, ...], ...]
    encoded: np.ndarray

    def __post_init__(self) -> None:
        numeric = np.asarray(self.numeric, dtype=np.float64)
        categorical = np.asarray(self.categorical, dtype=np.int32)
        encoded = np.asarray(self.encoded, dtype=np.float32)
        numeric_names = tuple(self.numeric_names)
        categorical_names = tuple(self.categorical_names)
        vocab = tuple(tuple(v) for v in self.categorical_vocab)
        for attribute, value in (
            ("numeric", numeric),
            ("numeric_names", numeric_names),
            ("categorical", categorical),
            ("categorical_names", categorical_names),
            ("categorical_vocab", vocab),
            ("encoded", encoded),
        ):
            object.__setattr__(self, attribute, value)
        self._check_shapes()
        self._check_values()

    def _check_shapes(self) -> None:
        for attribute in ("numeric", "categorical", "encoded"):
            array = getattr(self, attribute)
            if array.ndim != 2:
                raise ValueError(f"FeatureBatch.{attribute} must be 2-D, got shape {array.shape}.")
        n = self.numeric.shape[0]
        if self.categorical.shape[0] != n or self.encoded.shape[0] != n:
            raise ValueError(
                "FeatureBatch arrays must have the same number of rows, got "
                f"numeric={n}, categorical={self.categorical.shape[0]}, "
                f"encoded={self.encoded.shape[0]}."
            )
        if self.numeric.shape[1] != len(self.numeric_names):
            raise ValueError(
                f"FeatureBatch.numeric has {self.numeric.shape[1]} columns but "
                f"{len(self.numeric_names)} numeric_names."
            )
        if not (
            self.categorical.shape[1] == len(self.categorical_names) == len(self.categorical_vocab)
        ):
            raise ValueError(
                f"FeatureBatch.categorical has {self.categorical.shape[1]} columns, "
                f"{len(self.categorical_names)} categorical_names and "
                f"{len(self.categorical_vocab)} vocabularies; they must agree."
            )
        names = self.numeric_names + self.categorical_names
        if len(set(names)) != len(names):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(
                f"FeatureBatch feature names must be unique, got duplicates {duplicates}."
            )

    def _check_values(self) -> None:
        finite = np.isfinite(self.numeric)
        if not finite.all():
            column = int(np.flatnonzero(~finite.all(axis=0))[0])
            raise ValueError(
                f"FeatureBatch.numeric column {self.numeric_names[column]!r} holds non-finite "
                "values."
            )
        if self.categorical.size:
            unknown_codes = np.array([len(v) for v in self.categorical_vocab], dtype=np.int64)
            in_range = (self.categorical >= 0) & (self.categorical <= unknown_codes)
            if not in_range.all():
                column = int(np.flatnonzero(~in_range.all(axis=0))[0])
                raise ValueError(
                    f"FeatureBatch.categorical column {self.categorical_names[column]!r} holds "
                    f"codes outside 0..{unknown_codes[column]} (the last is the unknown bucket)."
                )

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Numeric names, then categorical names: the order detectors report features in."""
        return self.numeric_names + self.categorical_names

    def same_schema(self, other: FeatureBatch) -> bool:
        """Whether ``other`` has the same features in the same order, with the same vocabularies."""
        return (
            self.numeric_names == other.numeric_names
            and self.categorical_names == other.categorical_names
            and self.categorical_vocab == other.categorical_vocab
            and self.encoded.shape[1] == other.encoded.shape[1]
        )

    def take(self, index: slice | Sequence[int] | np.ndarray) -> FeatureBatch:
        """Row subset by slice, integer positions or boolean mask."""
        if not isinstance(index, slice):
            index = np.asarray(index)
        return FeatureBatch(
            numeric=self.numeric[index],
            numeric_names=self.numeric_names,
            categorical=self.categorical[index],
            categorical_names=self.categorical_names,
            categorical_vocab=self.categorical_vocab,
            encoded=self.encoded[index],
        )

    @staticmethod
    def concat(batches: Sequence[FeatureBatch]) -> FeatureBatch:
        """Stack batches of one schema row-wise, in order."""
        if not batches:
            raise ValueError("FeatureBatch.concat needs at least one batch.")
        first = batches[0]
        for position, batch in enumerate(batches[1:], start=1):
            if not first.same_schema(batch):
                raise FeatureSchemaError(
                    f"FeatureBatch.concat: batch {position} has a different schema from batch 0."
                )
        return FeatureBatch(
            numeric=np.concatenate([b.numeric for b in batches], axis=0),
            numeric_names=first.numeric_names,
            categorical=np.concatenate([b.categorical for b in batches], axis=0),
            categorical_names=first.categorical_names,
            categorical_vocab=first.categorical_vocab,
            encoded=np.concatenate([b.encoded for b in batches], axis=0),
        )


@dataclass(frozen=True)
class Verdict:
    """One per-record detector's judgement of one batch, one entry per record.

    ``p_value`` is ``None`` for detectors calibrated by threshold rather than by test.
    """

    detector: str
    flagged: np.ndarray
    score: np.ndarray
    p_value: np.ndarray | None
    explanation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        flagged = np.asarray(self.flagged, dtype=bool)
        score = np.asarray(self.score, dtype=np.float64)
        if flagged.shape != score.shape:
            raise ValueError(
                f"Verdict.flagged and Verdict.score must have one shape, got {flagged.shape} "
                f"and {score.shape}."
            )
        object.__setattr__(self, "flagged", flagged)
        object.__setattr__(self, "score", score)
        if self.p_value is not None:
            p_value = np.asarray(self.p_value, dtype=np.float64)
            if p_value.shape != score.shape:
                raise ValueError(
                    f"Verdict.p_value must have the shape of Verdict.score {score.shape}, "
                    f"got {p_value.shape}."
                )
            object.__setattr__(self, "p_value", p_value)


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


@dataclass(frozen=True)
class DriftReport:
    """One window tested against the reference: the verdict and why.

    ``statistic`` is the largest per-feature ``effect_size`` (KS distance or total-variation
    distance, both in ``[0, 1]``), chosen over the raw test statistics because KS distances and
    chi-squared values are not comparable across features. ``p_value`` is the smallest
    multiplicity-adjusted p-value, so ``rejected`` is ``p_value <= alpha``. ``records_seen`` is the
    number of records the detector had received since it was fitted when the window was tested,
    which places the window in the stream.
    """

    detector: str
    n_reference: int
    n_window: int
    alpha: float
    correction: Literal["bh", "bonferroni"]
    statistic: float
    p_value: float
    rejected: bool
    features: tuple[FeatureTest, ...]
    top_features: tuple[str, ...]
    records_seen: int

    def feature(self, name: str) -> FeatureTest:
        """The test of the feature called ``name``."""
        for feature_test in self.features:
            if feature_test.name == name:
                return feature_test
        raise KeyError(f"No feature named {name!r} in this report.")

    def summary(self) -> str:
        """One line naming the drifted features, strongest first, and how they moved."""
        n_features = len(self.features)
        if not self.rejected:
            return (
                f"{self.detector}: no drift in {n_features} features over {self.n_window} records "
                f"(smallest adjusted p={self.p_value:.3g})"
            )
        by_name = {feature_test.name: feature_test for feature_test in self.features}
        movements = ", ".join(by_name[name].describe_movement() for name in self.top_features)
        n_rejected = sum(feature_test.rejected for feature_test in self.features)
        return (
            f"{self.detector}: drift in {n_rejected} of {n_features} features over "
            f"{self.n_window} records (adjusted p={self.p_value:.3g}): {movements}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain ints, floats, strings, lists and dicts only."""
        return {
            "detector": self.detector,
            "n_reference": self.n_reference,
            "n_window": self.n_window,
            "alpha": self.alpha,
            "correction": self.correction,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "rejected": self.rejected,
            "features": [feature_test.to_dict() for feature_test in self.features],
            "top_features": list(self.top_features),
            "records_seen": self.records_seen,
        }


def _percent(share: float) -> str:
    """A share as a percentage, with a decimal for small shares so that 0.4% does not read 0%."""
    return f"{share:.1%}" if 0.0 < share < 0.1 else f"{share:.0%}"


@runtime_checkable
class Detector(Protocol):
    """Anything that learns what normal looks like from a reference batch.

    ``name`` is the configured id; it is also used as a metric label, so it must come from
    configuration, never from data. ``fit`` may be called again to replace the reference; it
    resets whatever the detector accumulated since the previous fit.
    """

    name: str

    def fit(self, reference: FeatureBatch) -> None: ...


@runtime_checkable
class WindowDetector(Detector, Protocol):
    """A detector that tests windows of records against its reference.

    ``update`` appends records and returns one report for every window that became due while
    they were appended (possibly none, possibly several for a large batch). ``test`` tests the
    records currently in the window right away, for timer-driven checks on slow streams, and
    returns ``None`` when the window holds too few records to say anything. Both raise
    :class:`NotFittedError` before ``fit`` and :class:`FeatureSchemaError` for a batch whose
    features differ from the reference's. Neither performs I/O.
    """

    def update(self, batch: FeatureBatch) -> list[DriftReport]: ...

    def test(self) -> DriftReport | None: ...
