"""Windowed univariate feature drift: each feature's window distribution against its reference.

Numeric features get a two-sample Kolmogorov–Smirnov test, categorical features a chi-squared
test of homogeneity, and the per-feature p-values are adjusted for testing many features at
once. The reference is summarised once at ``fit`` (distinct sorted values with cumulative
counts, category counts), so a window test never touches the reference records again.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from detectors._chi2 import ChiSquaredResult, pooled_chi2
from detectors._ks import ks_p_value
from detectors._multiple_testing import CORRECTIONS, Correction, adjust_p_values
from detectors.base import (
    DetectorConfig,
    DetectorContext,
    DriftReport,
    FeatureBatch,
    FeatureSchemaError,
    NotFittedError,
    params_repr,
)

__all__ = [
    "CategoryShift",
    "ChiSquaredResult",
    "FeatureDriftConfig",
    "FeatureDriftDetector",
    "FeatureTest",
    "ks_p_value",
    "pooled_chi2",
]

logger = logging.getLogger(__name__)

_STATE_FORMAT_VERSION = 1
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



@dataclass(frozen=True)
class _NumericReference:
    """Per numeric feature: distinct sorted reference values and how many records lie at or below.

    Flat arrays with ``offsets`` (feature ``j`` owns ``[offsets[j], offsets[j + 1])``) let the
    window test gather ECDF values for every feature in one vectorised step. Each feature's run
    starts with a ``-inf`` sentinel counting 0 records, so every search lands on a valid entry.
    Distinct values keep the binary searches short for the heavily tied features security data
    is full of.
    """

    values: np.ndarray  # float64, -inf then the distinct sorted values, per feature, concatenated
    count_upto: np.ndarray  # int64, reference records <= value
    count_below: np.ndarray  # int64, reference records < value
    offsets: np.ndarray  # int64 [n_features + 1]
    n: int
    mean: np.ndarray
    std: np.ndarray
    _feature_values: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounds = self.offsets.tolist()
        views = tuple(self.values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        object.__setattr__(self, "_feature_values", views)

    @classmethod
    def summarise(cls, numeric: np.ndarray) -> _NumericReference:
        n, n_features = numeric.shape
        columns = np.sort(numeric.T, axis=1)
        columns = np.concatenate([np.full((n_features, 1), -np.inf), columns], axis=1)
        is_last_of_run = np.ones_like(columns, dtype=bool)
        is_last_of_run[:, :-1] = columns[:, 1:] != columns[:, :-1]
        is_first_of_run = np.ones_like(columns, dtype=bool)
        is_first_of_run[:, 1:] = is_last_of_run[:, :-1]
        # Position p in a padded row is record p - 1 of the sorted column.
        positions = np.broadcast_to(np.arange(n + 1, dtype=np.int64), columns.shape)
        per_feature = is_last_of_run.sum(axis=1)
        offsets = np.concatenate([[0], np.cumsum(per_feature)]).astype(np.int64)
        return cls(
            values=columns[is_last_of_run],
            count_upto=positions[is_last_of_run],
            count_below=np.maximum(positions[is_first_of_run] - 1, 0),
            offsets=offsets,
            n=int(n),
            mean=numeric.mean(axis=0) if n_features else np.zeros(0),
            std=numeric.std(axis=0) if n_features else np.zeros(0),
        )

    @property
    def n_features(self) -> int:
        return int(self.offsets.size - 1)

    def ks_statistics(self, window: np.ndarray) -> np.ndarray:
        """KS distance of each window column from its reference column.

        Both ECDFs are step functions, and between two consecutive window values the window
        ECDF is flat while the reference ECDF only rises, so the largest gap is found at a window
        value or just below one. Evaluating both ECDFs there (on and just below) needs one
        binary search per window value instead of a merge of both samples.
        """
        m = window.shape[0]
        columns = np.sort(window.T, axis=1)
        nearest = np.empty(columns.shape, dtype=np.int64)
        for j, (values, start) in enumerate(
            zip(self._feature_values, self.offsets.tolist()[:-1], strict=True)
        ):
            nearest[j] = np.searchsorted(values, columns[j], side="right") + (start - 1)
        ref_upto = self.count_upto[nearest]
        ref_below = np.where(self.values[nearest] == columns, self.count_below[nearest], ref_upto)
        win_below, win_upto = _run_bounds(columns)
        gap_at = np.abs(ref_upto / self.n - win_upto / m)
        gap_below = np.abs(ref_below / self.n - win_below / m)
        return np.maximum(gap_at.max(axis=1), gap_below.max(axis=1))

    def to_state(self) -> dict[str, np.ndarray]:
        return {
            "values": self.values,
            "count_upto": self.count_upto,
            "count_below": self.count_below,
            "offsets": self.offsets,
            "n": np.asarray(self.n),
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> _NumericReference:
        return cls(
            values=np.asarray(state["values"], dtype=np.float64),
            count_upto=np.asarray(state["count_upto"], dtype=np.int64),
            count_below=np.asarray(state["count_below"], dtype=np.int64),
            offsets=np.asarray(state["offsets"], dtype=np.int64),
            n=int(state["n"]),
            mean=np.asarray(state["mean"], dtype=np.float64),
            std=np.asarray(state["std"], dtype=np.float64),
        )


def _run_bounds(sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of row-sorted data: how many row entries are below it, and at or below it."""
    m = sorted_rows.shape[1]
    positions = np.broadcast_to(np.arange(m, dtype=np.int64), sorted_rows.shape)
    starts_run = np.ones(sorted_rows.shape, dtype=bool)
    starts_run[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    ends_run = np.ones(sorted_rows.shape, dtype=bool)
    ends_run[:, :-1] = starts_run[:, 1:]
    below = np.maximum.accumulate(np.where(starts_run, positions, 0), axis=1)
    upto = np.minimum.accumulate(np.where(ends_run, positions + 1, m)[:, ::-1], axis=1)[:, ::-1]
    return below, upto


@dataclass(frozen=True)
class _CategoricalReference:
    """Per categorical feature: reference counts of each code, unknown bucket last."""

    counts: np.ndarray  # int64, per feature len(vocab) + 1 counts, concatenated
    offsets: np.ndarray  # int64 [n_features + 1]
    n: int

    @classmethod
    def summarise(
        cls, codes: np.ndarray, vocab: tuple[tuple[str, ...], ...]
    ) -> _CategoricalReference:
        offsets = np.concatenate([[0], np.cumsum([len(v) + 1 for v in vocab])]).astype(np.int64)
        return cls(counts=_count_codes(codes, offsets), offsets=offsets, n=int(codes.shape[0]))

    def feature_counts(self, j: int) -> np.ndarray:
        return self.counts[self.offsets[j] : self.offsets[j + 1]]

    def to_state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "offsets": self.offsets, "n": np.asarray(self.n)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> _CategoricalReference:
        return cls(
            counts=np.asarray(state["counts"], dtype=np.int64),
            offsets=np.asarray(state["offsets"], dtype=np.int64),
            n=int(state["n"]),
        )


def _count_codes(codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Counts of every code of every feature in one bincount, by shifting each column's codes."""
    shifted = codes.astype(np.int64) + offsets[:-1]
    return np.bincount(shifted.ravel(), minlength=int(offsets[-1])).astype(np.int64)


@dataclass(frozen=True)
class _Schema:
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    categorical_vocab: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, batch: FeatureBatch) -> _Schema:
        return cls(batch.numeric_names, batch.categorical_names, batch.categorical_vocab)

    def matches(self, batch: FeatureBatch) -> bool:
        return (
            self.numeric_names == batch.numeric_names
            and self.categorical_names == batch.categorical_names
            and self.categorical_vocab == batch.categorical_vocab
        )

    def to_state(self) -> dict[str, np.ndarray]:
        return {
            "numeric_names": np.array(self.numeric_names, dtype=np.str_),
            "categorical_names": np.array(self.categorical_names, dtype=np.str_),
            "vocab_sizes": np.array([len(v) for v in self.categorical_vocab], dtype=np.int64),
            "vocab": np.array([c for v in self.categorical_vocab for c in v], dtype=np.str_),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> _Schema:
        sizes = np.asarray(state["vocab_sizes"], dtype=np.int64)
        flat = [str(c) for c in np.asarray(state["vocab"]).tolist()]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        vocab = tuple(tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        return cls(
            numeric_names=tuple(str(n) for n in np.asarray(state["numeric_names"]).tolist()),
            categorical_names=tuple(
                str(n) for n in np.asarray(state["categorical_names"]).tolist()
            ),
            categorical_vocab=vocab,
        )


class FeatureDriftConfig(DetectorConfig):
    """``detectors:`` entry of ``type: feature_drift`` (the defaults are the agent's)."""

    type: Literal["feature_drift"] = "feature_drift"
    window: int = Field(default=1000, gt=1)
    step: int | None = Field(default=None, gt=0)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    correction: Literal["bh", "bonferroni"] = "bh"
    top_k: int = Field(default=5, gt=0)
    min_window: int = Field(default=100, gt=0)
    # Effect-size floor (KS distance for numeric features, total-variation distance for
    # categorical ones, both in [0, 1]): globally, and per feature by name.
    min_effect: float = Field(default=0.0, ge=0, le=1)
    min_effect_by_feature: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _min_window_fits(self) -> FeatureDriftConfig:
        if self.min_window > self.window:
            raise ValueError(f"min_window ({self.min_window}) must not exceed window "
                             f"({self.window})")
        return self


class FeatureDriftDetector:
    """Tests each feature of a sliding window against the reference, corrected for multiplicity.

    Records arrive through :meth:`update` and are kept in a window of the last ``window``
    records. The first report comes when the window first fills, then one every ``step``
    records (``step < window``: overlapping windows; ``step > window``: records between windows
    are only counted). :meth:`test` tests the window as it is, for a timer on a slow stream.

    Each numeric feature gets a two-sample Kolmogorov–Smirnov test; each categorical feature a
    chi-squared homogeneity test over its categories and the unknown bucket, with sparse
    categories pooled. The per-feature p-values are adjusted by Benjamini–Hochberg (``"bh"``) or
    Bonferroni, and the window is flagged when any adjusted p-value is at most ``alpha``: on a
    stationary stream of independent (or positively dependent) features at most a fraction
    ``alpha`` of windows raise a false alarm. Windows that overlap share records, so their
    alarms are correlated.

    Parameters
    ----------
    name
        Configured id, used in reports and as a metric label.
    window
        Records per tested window (at least 2).
    step
        New records between two scheduled reports; defaults to ``window`` (disjoint windows).
    alpha
        Per-window false-alarm level, in ``(0, 1)``.
    correction
        ``"bh"`` (Benjamini–Hochberg, default) or ``"bonferroni"``.
    top_k
        How many drifted features a report names in ``top_features``.
    min_window
        Fewest records :meth:`test` will test (at most ``window``).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors import FeatureBatch, FeatureDriftDetector
    >>> rng = np.random.default_rng(7)
    >>> def latency_batch(mean, n):
    ...     return FeatureBatch(
    ...         numeric=rng.normal(mean, 1.0, size=(n, 1)), numeric_names=("latency",),
    ...         categorical=np.zeros((n, 0)), categorical_names=(), categorical_vocab=(),
    ...         encoded=np.zeros((n, 0)))
    >>> detector = FeatureDriftDetector(window=500)
    >>> detector.fit(latency_batch(0.0, 5000))
    >>> [report.rejected for report in detector.update(latency_batch(0.0, 1000))]
    [False, False]
    >>> report = detector.update(latency_batch(0.5, 500))[0]
    >>> report.rejected, report.top_features
    (True, ('latency',))
    >>> report.feature("latency").describe_movement(), report.p_value < 1e-10
    ('latency mean -0.01911→0.4679', True)
    """

    kind: ClassVar[str] = "drift"
    family: ClassVar[Literal["window"]] = "window"
    Config: ClassVar[type[FeatureDriftConfig]] = FeatureDriftConfig

    def __init__(
        self,
        name: str = "feature_drift",
        *,
        window: int = 1000,
        step: int | None = None,
        alpha: float = 0.01,
        correction: Correction = "bh",
        top_k: int = 5,
        min_window: int = 100,
        min_effect: float = 0.0,
        min_effect_by_feature: dict[str, float] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}.")
        if not _is_int(window) or window < 2:
            raise ValueError(f"window must be an integer of at least 2, got {window!r}.")
        if step is not None and (not _is_int(step) or step < 1):
            raise ValueError(f"step must be a positive integer or None, got {step!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}.")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {list(CORRECTIONS)}, got {correction!r}.")
        if not _is_int(top_k) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        if not _is_int(min_window) or min_window < 1:
            raise ValueError(f"min_window must be a positive integer, got {min_window!r}.")
        if min_window > window:
            raise ValueError(
                f"min_window must not exceed window (got min_window={min_window}, "
                f"window={window}); lower min_window as well."
            )
        floors = {"min_effect": min_effect, **(min_effect_by_feature or {})}
        for label, floor in floors.items():
            if isinstance(floor, bool) or not isinstance(floor, int | float) or not (
                    0.0 <= floor <= 1.0):
                raise ValueError(f"effect floors are numbers in [0, 1] (KS or total-variation "
                                 f"distance), got {label}={floor!r}.")
        self.name = name
        self.min_effect = float(min_effect)
        self.min_effect_by_feature = {str(k): float(v)
                                      for k, v in (min_effect_by_feature or {}).items()}
        self.window = int(window)
        self.step = int(step) if step is not None else int(window)
        self.alpha = float(alpha)
        self.correction: Correction = correction
        self.top_k = int(top_k)
        self.min_window = int(min_window)
        self._lock = threading.RLock()
        self._schema: _Schema | None = None
        self._numeric_reference: _NumericReference | None = None
        self._categorical_reference: _CategoricalReference | None = None
        self._window_numeric = np.zeros((0, 0))
        self._window_categorical = np.zeros((0, 0), dtype=np.int32)
        self._write_position = 0
        self._fill = 0
        self._records_seen = 0
        self._next_report_at = self.window
        self._windows_tested = 0

    # -- configuration ---------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: FeatureDriftConfig, context: DetectorContext
                    ) -> FeatureDriftDetector:
        """Build from a ``detectors:`` entry and fit on the context's reference."""
        detector = cls(config.resolved_name(), window=config.window, step=config.step,
                       alpha=config.alpha, correction=config.correction, top_k=config.top_k,
                       min_window=min(config.min_window, config.window),
                       min_effect=config.min_effect,
                       min_effect_by_feature=dict(config.min_effect_by_feature))
        detector.fit(context.reference)
        return detector

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        """Constructor arguments the conformance suite builds instances from."""
        return [
            {"name": "feature_drift", "window": 400, "alpha": 0.01},
            {
                "name": "feature_drift_bonferroni",
                "window": 300,
                "step": 150,
                "alpha": 0.01,
                "correction": "bonferroni",
                "top_k": 3,
                "min_window": 50,
            },
            {"name": "feature_drift_floor", "window": 400, "min_effect": 0.1,
             "min_effect_by_feature": {"score": 0.2}},
        ]

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        """Constructor arguments that must be rejected with a ValueError."""
        return [
            {"name": ""},
            {"window": 1},
            {"window": 10.5},
            {"step": 0},
            {"alpha": 0.0},
            {"alpha": 1.0},
            {"alpha": "0.01"},
            {"correction": "holm"},
            {"top_k": 0},
            {"min_window": 0},
            {"window": 50, "min_window": 100},
            {"min_effect": 1.5},
            {"min_effect": -0.1},
            {"min_effect_by_feature": {"score": "big"}},
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with (step resolved)."""
        return {
            "name": self.name,
            "window": self.window,
            "step": self.step,
            "alpha": self.alpha,
            "correction": self.correction,
            "top_k": self.top_k,
            "min_window": self.min_window,
            "min_effect": self.min_effect,
            "min_effect_by_feature": dict(self.min_effect_by_feature),
        }

    def __repr__(self) -> str:
        return params_repr(self)

    # -- state exposed read-only -------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self._schema is not None

    @property
    def window_fill(self) -> int:
        """Records currently in the window (at most ``window``)."""
        return self._fill

    @property
    def windows_tested(self) -> int:
        """Windows tested since the last fit, by :meth:`update` and :meth:`test` together."""
        return self._windows_tested

    @property
    def records_seen(self) -> int:
        """Records received through :meth:`update` since the last fit."""
        return self._records_seen

    @property
    def n_reference(self) -> int:
        self._require_fitted()
        assert self._numeric_reference is not None
        return self._numeric_reference.n

    # -- the detector protocol ---------------------------------------------------------------

    def fit(self, reference: FeatureBatch) -> None:
        """Summarise ``reference`` and start a fresh, empty window."""
        if len(reference) == 0:
            raise ValueError("The reference batch must hold at least one record.")
        if not reference.feature_names:
            raise ValueError("The reference batch has no numeric or categorical feature to test.")
        with self._lock:
            self._schema = _Schema.of(reference)
            self._numeric_reference = _NumericReference.summarise(reference.numeric)
            self._categorical_reference = _CategoricalReference.summarise(
                reference.categorical, reference.categorical_vocab
            )
            self._reset_window(len(reference.numeric_names), len(reference.categorical_names))
        logger.info(
            "%s fitted on %d reference records (%d numeric, %d categorical features)",
            self.name,
            len(reference),
            len(reference.numeric_names),
            len(reference.categorical_names),
        )

    def update(self, batch: FeatureBatch) -> list[DriftReport]:
        """Append ``batch`` to the window; one report per window that became due meanwhile."""
        with self._lock:
            self._check_batch(batch)
            reports: list[DriftReport] = []
            start, n = 0, len(batch)
            while start < n:
                take = min(n - start, self._next_report_at - self._records_seen)
                self._append(
                    batch.numeric[start : start + take], batch.categorical[start : start + take]
                )
                start += take
                self._records_seen += take
                if self._records_seen == self._next_report_at:
                    reports.append(self._test_current_window())
                    self._next_report_at += self.step
            return reports

    def records_to_replay(self) -> int:
        """Recent records the next scheduled window will hold (re-fed after a restart).

        The next report falls when ``records_seen`` reaches the next multiple of the schedule
        (window, then every step); its window starts ``window`` records before that. Records
        from there to now are what a fresh detector must see again to report identically.
        """
        with self._lock:
            first_of_next_window = max(0, self._next_report_at - self.window)
            return max(0, self._records_seen - first_of_next_window)

    def test(self) -> DriftReport | None:
        """Test the window as it is now; ``None`` if it holds fewer than ``min_window`` records.

        Does not move the schedule of :meth:`update`'s reports.
        """
        with self._lock:
            self._require_fitted()
            if self._fill < self.min_window:
                return None
            return self._test_current_window()

    # -- persistence without pickle ------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume, as a flat mapping of numpy arrays.

        Suitable for ``numpy.savez`` and ``numpy.load(..., allow_pickle=False)``.
        """
        with self._lock:
            self._require_fitted()
            assert self._schema is not None
            assert self._numeric_reference is not None
            assert self._categorical_reference is not None
            state: dict[str, np.ndarray] = {
                "format_version": np.asarray(_STATE_FORMAT_VERSION),
                "window.numeric": self._window_numeric.copy(),
                "window.categorical": self._window_categorical.copy(),
                "window.write_position": np.asarray(self._write_position),
                "window.fill": np.asarray(self._fill),
                "stream.records_seen": np.asarray(self._records_seen),
                "stream.next_report_at": np.asarray(self._next_report_at),
                "stream.windows_tested": np.asarray(self._windows_tested),
            }
            for key, value in self.get_params().items():
                if key != "name":
                    state[f"params.{key}"] = np.asarray(_param_state(value))
            for prefix, part in (
                ("schema", self._schema.to_state()),
                ("numeric_reference", self._numeric_reference.to_state()),
                ("categorical_reference", self._categorical_reference.to_state()),
            ):
                state.update({f"{prefix}.{key}": value.copy() for key, value in part.items()})
            return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Resume from :meth:`state_dict`; the hyperparameters (but not the name) must match."""
        if int(state["format_version"]) != _STATE_FORMAT_VERSION:
            raise ValueError(
                f"Unsupported state format {int(state['format_version'])}; "
                f"this version reads format {_STATE_FORMAT_VERSION}."
            )
        current = {key: _param_state(value) for key, value in self.get_params().items()
                   if key != "name"}
        # A state saved before a parameter existed was saved with its default.
        saved = {key: state[f"params.{key}"].item() if f"params.{key}" in state
                 else current[key] for key in current}
        if saved != current:
            raise ValueError(f"The state was saved with parameters {saved}, not {current}.")

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {
                key[len(prefix) + 1 :]: value
                for key, value in state.items()
                if key.startswith(prefix + ".")
            }

        with self._lock:
            self._schema = _Schema.from_state(part("schema"))
            self._numeric_reference = _NumericReference.from_state(part("numeric_reference"))
            self._categorical_reference = _CategoricalReference.from_state(
                part("categorical_reference")
            )
            self._window_numeric = np.array(state["window.numeric"], dtype=np.float64)
            self._window_categorical = np.array(state["window.categorical"], dtype=np.int32)
            self._write_position = int(state["window.write_position"])
            self._fill = int(state["window.fill"])
            self._records_seen = int(state["stream.records_seen"])
            self._next_report_at = int(state["stream.next_report_at"])
            self._windows_tested = int(state["stream.windows_tested"])

    # -- internals ---------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if self._schema is None:
            raise NotFittedError(f"{self!r} is not fitted; call fit(reference) first.")

    def _check_batch(self, batch: FeatureBatch) -> None:
        self._require_fitted()
        assert self._schema is not None
        if not self._schema.matches(batch):
            raise FeatureSchemaError(
                f"{self.name}: the batch's features differ from the reference's "
                f"(numeric {batch.numeric_names} vs {self._schema.numeric_names}, categorical "
                f"{batch.categorical_names} vs {self._schema.categorical_names}, or their "
                "vocabularies); refit the detector after changing the encoder."
            )

    def _reset_window(self, n_numeric: int, n_categorical: int) -> None:
        self._window_numeric = np.zeros((self.window, n_numeric), dtype=np.float64)
        self._window_categorical = np.zeros((self.window, n_categorical), dtype=np.int32)
        self._write_position = 0
        self._fill = 0
        self._records_seen = 0
        self._next_report_at = self.window
        self._windows_tested = 0

    def _append(self, numeric: np.ndarray, categorical: np.ndarray) -> None:
        """Write rows into the ring buffer; only the last ``window`` rows of a long chunk matter."""
        n = numeric.shape[0]
        if n >= self.window:
            self._window_numeric[:] = numeric[-self.window :]
            self._window_categorical[:] = categorical[-self.window :]
            self._write_position = 0
            self._fill = self.window
            return
        rows = (self._write_position + np.arange(n)) % self.window
        self._window_numeric[rows] = numeric
        self._window_categorical[rows] = categorical
        self._write_position = (self._write_position + n) % self.window
        self._fill = min(self.window, self._fill + n)

    def _test_current_window(self) -> DriftReport:
        # Before the ring wraps the records occupy [0, fill); after, the whole buffer. Order
        # does not matter to either test.
        report = self._test_window(
            self._window_numeric[: self._fill], self._window_categorical[: self._fill]
        )
        self._windows_tested += 1
        logger.debug(
            "%s tested %d records at record %d: rejected=%s p=%.3g",
            self.name,
            report.n_window,
            report.records_seen,
            report.rejected,
            report.p_value,
        )
        return report

    def _test_window(self, numeric: np.ndarray, categorical: np.ndarray) -> DriftReport:
        assert self._schema is not None
        assert self._numeric_reference is not None
        assert self._categorical_reference is not None
        numeric_reference, categorical_reference = (
            self._numeric_reference,
            self._categorical_reference,
        )
        n_window = numeric.shape[0]
        ks_statistics = numeric_reference.ks_statistics(numeric)
        ks_p_values = ks_p_value(ks_statistics, numeric_reference.n, n_window)
        window_counts = _count_codes(categorical, categorical_reference.offsets)
        chi2_results: list[ChiSquaredResult] = []
        total_variation: list[float] = []
        for j in range(len(self._schema.categorical_names)):
            start, stop = categorical_reference.offsets[j], categorical_reference.offsets[j + 1]
            reference_counts = categorical_reference.feature_counts(j)
            chi2_results.append(pooled_chi2(reference_counts, window_counts[start:stop]))
            total_variation.append(
                0.5
                * float(
                    np.abs(
                        reference_counts / categorical_reference.n
                        - window_counts[start:stop] / n_window
                    ).sum()
                )
            )
        p_values = np.concatenate([ks_p_values, [result.p_value for result in chi2_results]])
        adjusted = adjust_p_values(p_values, self.correction)
        effect_sizes = np.concatenate([ks_statistics, total_variation])
        # Practical significance: a feature counts only when it moved at least its effect
        # floor, so a real but tiny shift on a large window pages nobody.
        names = (*self._schema.numeric_names, *self._schema.categorical_names)
        floors = np.array([self.min_effect_by_feature.get(name, self.min_effect)
                           for name in names])
        large_enough = effect_sizes >= floors
        rejected = (adjusted <= self.alpha) & large_enough

        features: list[FeatureTest] = []
        window_mean = numeric.mean(axis=0) if n_window else np.zeros(ks_statistics.size)
        window_std = numeric.std(axis=0) if n_window else np.zeros(ks_statistics.size)
        for j, name in enumerate(self._schema.numeric_names):
            features.append(
                FeatureTest(
                    name=name,
                    kind="numeric",
                    test="ks",
                    statistic=float(ks_statistics[j]),
                    p_value=float(ks_p_values[j]),
                    adjusted_p_value=float(adjusted[j]),
                    rejected=bool(rejected[j]),
                    effect_size=float(effect_sizes[j]),
                    reference_mean=float(numeric_reference.mean[j]),
                    window_mean=float(window_mean[j]),
                    reference_std=float(numeric_reference.std[j]),
                    window_std=float(window_std[j]),
                )
            )
        n_numeric = len(self._schema.numeric_names)
        for j, name in enumerate(self._schema.categorical_names):
            position = n_numeric + j
            start, stop = categorical_reference.offsets[j], categorical_reference.offsets[j + 1]
            features.append(
                _categorical_feature_test(
                    name=name,
                    vocab=self._schema.categorical_vocab[j],
                    reference_counts=categorical_reference.feature_counts(j),
                    window_counts=window_counts[start:stop],
                    chi2=chi2_results[j],
                    adjusted_p_value=float(adjusted[position]),
                    rejected=bool(rejected[position]),
                    effect_size=float(effect_sizes[position]),
                )
            )
        # Strongest first: smallest adjusted p, then smallest raw p, then largest effect (p-values
        # of a strong shift underflow to 0 together, and the effect size still separates them).
        order = np.lexsort((-effect_sizes, p_values, adjusted))
        top_features = tuple(features[i].name for i in order if rejected[i])[: self.top_k]
        return DriftReport(
            detector=self.name,
            n_reference=numeric_reference.n,
            n_window=int(n_window),
            alpha=self.alpha,
            correction=self.correction,
            statistic=float(effect_sizes.max()),
            p_value=float(adjusted[large_enough].min()) if large_enough.any() else 1.0,
            rejected=bool(rejected.any()),
            features=tuple(features),
            top_features=top_features,
            records_seen=self._records_seen,
        )


def _categorical_feature_test(
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


def _param_state(value: Any) -> Any:
    """A hyperparameter as a state array can hold it (mappings as canonical JSON text)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
