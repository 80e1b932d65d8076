"""Multivariate window drift by the maximum mean discrepancy (MMD) with a Gaussian kernel.

Per-feature tests (:mod:`detectors.feature_drift`) miss what changes *between* features: two
counters that rose together and now move against each other, a service that used to come with
one flag and now comes with another. The MMD compares whole records: it is the distance between
the reference's and the window's mean embeddings in a Gaussian kernel's feature space, zero
only when the two distributions agree. Its p-value comes from a permutation test on the pooled
records (exact at any window size, see :mod:`detectors._kernels`), and the report blames
features by how much of the MMD² each one carries (:mod:`detectors._attribution`), so a
correlation change is named by the two features involved.

The kernel's bandwidth follows the median heuristic on the reference, scaled by
``bandwidth_scale``; it is fixed when the reference is set and recorded in every report. The
defaults were chosen on NSL-KDD training records only (windows richer in attacks than the
reference against windows drawn like it): half the plain heuristic's bandwidth (a narrower
kernel sees the many small clusters of near-identical attack records), the whole 2,000-record
reference, and 1,000 permutations, because with 200 a window whose p-value lies just below
``alpha = 0.01`` is rejected only when at most one permutation reaches it, which lost a fifth
of the detections on those windows at 30 records; the sequential test
(:mod:`detectors._permutation`) spends the extra permutations only on windows near or past
the threshold.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from detectors._attribution import RawDesign, attribution_rows
from detectors._kernels import (
    FeatureMapMMD,
    KnockoutMMD,
    QuadraticMMD,
    median_bandwidth,
)
from detectors._multivariate import (
    MultivariateDriftReport,
    MultivariateWindowConfig,
    MultivariateWindowDetector,
    TestOutcome,
    is_int,
)
from detectors.base import FeatureBatch, params_repr

__all__ = ["MMDDriftConfig", "MMDDriftDetector", "MultivariateDriftReport"]

FeatureSpace = Literal["raw", "encoded", "embeddings"]
Estimator = Literal["quadratic", "linear", "rff"]
FEATURE_SPACES: tuple[FeatureSpace, ...] = ("raw", "encoded", "embeddings")
ESTIMATORS: tuple[Estimator, ...] = ("quadratic", "linear", "rff")

# Above this many reference records the quadratic estimator's kernel block (n² entries) is
# too large to keep; the feature-map estimators have no such limit.
_QUADRATIC_REFERENCE_LIMIT = 20_000


class MMDDriftConfig(MultivariateWindowConfig):
    """``detectors:`` entry of ``type: mmd_drift``."""

    type: Literal["mmd_drift"] = "mmd_drift"
    features: FeatureSpace = "raw"
    estimator: Estimator = "quadratic"
    n_reference: int = Field(default=2000, ge=10)
    bandwidth_scale: float = Field(default=0.5, gt=0)
    n_features: int = Field(default=512, ge=1)


class MMDDriftDetector(MultivariateWindowDetector):
    """Tests windows of records jointly against the reference by a kernel two-sample test.

    Records arrive through :meth:`update` into a window of the last ``window`` records; a report
    comes when the window first fills and then every ``step`` records (:meth:`test` tests the
    window as it is). Each report's p-value is a permutation p-value of the MMD² between the
    window and ``n_reference`` reference records (a seeded sample of a larger reference), so on
    a stationary stream at most a fraction ``alpha`` of windows raise a false alarm.

    Parameters
    ----------
    name
        Configured id, used in reports and as a metric label.
    window, step, alpha, top_k, min_window
        As for :class:`~detectors.feature_drift.FeatureDriftDetector` (count windows only).
    features
        The space records are compared in: ``"raw"`` (numeric features robust-scaled by the
        reference and squashed, categorical features one-hot with the unknown bucket; see
        :class:`~detectors._attribution.RawDesign`), ``"encoded"`` (``FeatureBatch.encoded``,
        the model input) or ``"embeddings"`` (the live model's ``FeatureBatch.embeddings``;
        sets ``uses_embeddings``). Features are blamed in raw units whichever is chosen.
    estimator
        ``"quadratic"``: the exact unbiased MMD² (the reference block of the kernel matrix is
        kept, ``n_reference²`` entries). ``"linear"``: the kernel mean embeddings compared at
        ``n_features`` reference landmarks, and ``"rff"``: ``n_features`` random Fourier
        features; both cost time and memory linear in ``n_reference``, for large references.
    n_reference
        Reference records the test uses.
    permutations
        Permutations of the p-value; at least ``1/alpha - 1`` so that it can reach ``alpha``.
    bandwidth_scale
        Multiplies the median-heuristic bandwidth (``sqrt(median squared distance / 2)``).
    n_features
        Landmarks (``"linear"``) or random features (``"rff"``).
    seed
        Seeds the reference sample, the permutations and the random features.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors import FeatureBatch
    >>> from detectors.mmd_drift import MMDDriftDetector
    >>> rng = np.random.default_rng(7)
    >>> def traffic(correlation, n):
    ...     cov = [[1.0, correlation], [correlation, 1.0]]
    ...     return FeatureBatch(
    ...         numeric=rng.multivariate_normal([0, 0], cov, n),
    ...         numeric_names=("sent", "received"), categorical=np.zeros((n, 0)),
    ...         categorical_names=(), categorical_vocab=(), encoded=np.zeros((n, 0)))
    >>> detector = MMDDriftDetector(window=300, n_reference=1000)
    >>> detector.fit(traffic(0.8, 2000))
    >>> [report.rejected for report in detector.update(traffic(0.8, 600))]
    [False, False]
    >>> report = detector.update(traffic(-0.8, 300))[0]
    >>> report.rejected, sorted(report.top_features)
    (True, ['received', 'sent'])
    >>> report.feature("sent").describe_movement()
    'sent correlation with received 0.78→-0.82'
    """

    Config: ClassVar[type[MMDDriftConfig]] = MMDDriftConfig
    _test_name: ClassVar[str] = "mmd"

    def __init__(self, name: str = "mmd_drift", *, window: int = 1000, step: int | None = None,
                 alpha: float = 0.01, top_k: int = 5, min_window: int = 100,
                 features: FeatureSpace = "raw", estimator: Estimator = "quadratic",
                 n_reference: int = 2000, permutations: int = 1000, bandwidth_scale: float = 0.5,
                 n_features: int = 512, seed: int = 0) -> None:
        super().__init__(name, window=window, step=step, alpha=alpha, top_k=top_k,
                         min_window=min_window, n_reference=n_reference,
                         permutations=permutations, seed=seed)
        if features not in FEATURE_SPACES:
            raise ValueError(f"features must be one of {list(FEATURE_SPACES)}, got {features!r}.")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}.")
        if (isinstance(bandwidth_scale, bool) or not isinstance(bandwidth_scale, int | float)
                or not 0.0 < bandwidth_scale < np.inf):
            raise ValueError(f"bandwidth_scale must be a positive number, got "
                             f"{bandwidth_scale!r}.")
        if estimator == "quadratic" and is_int(n_reference) and (
                n_reference > _QUADRATIC_REFERENCE_LIMIT):
            raise ValueError(
                f"estimator='quadratic' keeps n_reference² kernel entries; above "
                f"{_QUADRATIC_REFERENCE_LIMIT} reference records (got {n_reference}) use "
                "estimator='rff' or 'linear'.")
        if not is_int(n_features) or n_features < 1:
            raise ValueError(f"n_features must be a positive integer, got {n_features!r}.")
        self.features: FeatureSpace = features
        self.estimator: Estimator = estimator
        self.bandwidth_scale = float(bandwidth_scale)
        self.n_features = int(n_features)
        self.uses_embeddings = features == "embeddings"
        self._tester: QuadraticMMD | FeatureMapMMD | None = None
        self._knockout: KnockoutMMD | None = None
        self._sample: dict[str, np.ndarray] = {}

    # -- configuration ---------------------------------------------------------------------

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        """Constructor arguments the conformance suite builds instances from."""
        return [
            {"name": "mmd_drift", "window": 300, "min_window": 50, "n_reference": 1000},
            {"name": "mmd_drift_rff", "window": 250, "step": 125, "min_window": 50,
             "estimator": "rff", "n_features": 256, "permutations": 300, "top_k": 3},
            {"name": "mmd_drift_linear", "window": 300, "min_window": 50,
             "estimator": "linear", "n_features": 200, "bandwidth_scale": 0.5},
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
            {"alpha": "0.01"},
            {"top_k": 0},
            {"window": 50, "min_window": 100},
            {"min_window": 1},
            {"features": "pixels"},
            {"estimator": "cubic"},
            {"n_reference": 5},
            {"n_reference": 50_000},
            {"permutations": 50},
            {"bandwidth_scale": 0.0},
            {"bandwidth_scale": float("nan")},
            {"n_features": 0},
            {"seed": -1},
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with (step resolved)."""
        return {
            "name": self.name, "window": self.window, "step": self.step, "alpha": self.alpha,
            "top_k": self.top_k, "min_window": self.min_window, "features": self.features,
            "estimator": self.estimator, "n_reference": self.n_reference,
            "permutations": self.permutations, "bandwidth_scale": self.bandwidth_scale,
            "n_features": self.n_features, "seed": self.seed,
        }

    def __repr__(self) -> str:
        return params_repr(self)

    @property
    def bandwidth(self) -> float:
        """The Gaussian kernel's bandwidth in the test space, fixed when the reference was set."""
        self._require_fitted()
        assert self._tester is not None
        return self._tester.bandwidth

    # -- the test ----------------------------------------------------------------------------

    def _vectors(self, batch: FeatureBatch) -> np.ndarray | None:
        if self.features == "raw":
            return None
        if self.features == "encoded":
            if batch.encoded.shape[1] == 0:
                raise ValueError(f"{self.name}: features='encoded' needs the model input in "
                                 "FeatureBatch.encoded, but the batch has no encoded column; "
                                 "use features='raw'.")
            return batch.encoded
        if batch.embeddings is None:
            raise ValueError(f"{self.name}: features='embeddings' needs the live model's "
                             "embeddings in the batch; load a model or use features='raw'.")
        return batch.embeddings

    def _vectors_name(self) -> str:
        return "encoded columns" if self.features == "encoded" else "embeddings"

    def _test_rows(self, design: RawDesign, numeric: np.ndarray, categorical: np.ndarray,
                   vectors: np.ndarray | None) -> np.ndarray:
        if vectors is not None:
            return np.asarray(vectors, np.float64)
        return design.transform(numeric, categorical)

    def _install(self, sample: FeatureBatch, design: RawDesign) -> None:
        vectors = self._vectors(sample)
        self._sample = {"numeric": sample.numeric, "categorical": sample.categorical,
                        "vectors": np.zeros((0, 0)) if vectors is None else vectors}
        rows = self._test_rows(design, sample.numeric, sample.categorical, vectors)
        bandwidth = median_bandwidth(rows, self.bandwidth_scale)
        self._build(design, rows, bandwidth)

    def _build(self, design: RawDesign, rows: np.ndarray, bandwidth: float) -> None:
        if self.estimator == "quadratic":
            self._tester = QuadraticMMD(rows, bandwidth, permutations=self.permutations,
                                        seed=self.seed)
        else:
            self._tester = FeatureMapMMD(rows, bandwidth, kind=self.estimator,
                                         n_features=self.n_features,
                                         permutations=self.permutations, seed=self.seed)
        self._tester.plan(self.window)
        count, _ = attribution_rows(rows.shape[0], 2, len(design.feature_names))
        numeric = design.numeric_part(self._sample["numeric"][:count])
        codes = self._sample["categorical"][:count]
        raw_bandwidth = bandwidth
        if self.features != "raw":
            raw_rows = design.transform(self._sample["numeric"], self._sample["categorical"])
            raw_bandwidth = median_bandwidth(raw_rows, self.bandwidth_scale)
        self._knockout = KnockoutMMD(numeric, codes, raw_bandwidth)

    def _run_test(self, numeric: np.ndarray, categorical: np.ndarray,
                  vectors: np.ndarray | None) -> TestOutcome:
        assert self._tester is not None and self._design is not None
        rows = self._test_rows(self._design, numeric, categorical, vectors)
        statistic, p_value = self._tester.test(rows, self.alpha)
        return TestOutcome(statistic=statistic, p_value=p_value, bandwidth=self._tester.bandwidth)

    def _contributions(self, numeric: np.ndarray, categorical: np.ndarray,
                       vectors: np.ndarray | None) -> np.ndarray:
        assert self._knockout is not None and self._design is not None
        _, rows = attribution_rows(self._n_reference_used, numeric.shape[0],
                                   len(self._design.feature_names))
        return self._knockout.contributions(self._design.numeric_part(numeric[rows]),
                                            categorical[rows])

    def _method(self) -> str:
        return f"{self.estimator} on {self.features} features"

    def _fitted_state(self) -> dict[str, np.ndarray]:
        assert self._tester is not None
        return {**self._sample, "bandwidth": np.asarray(self._tester.bandwidth)}

    def _load_fitted(self, state: dict[str, np.ndarray]) -> None:
        assert self._design is not None
        self._sample = {"numeric": np.asarray(state["numeric"], np.float64),
                        "categorical": np.asarray(state["categorical"], np.int32),
                        "vectors": np.asarray(state["vectors"], np.float32)}
        vectors = self._sample["vectors"] if self.features != "raw" else None
        rows = self._test_rows(self._design, self._sample["numeric"],
                               self._sample["categorical"], vectors)
        self._build(self._design, rows, float(state["bandwidth"]))
