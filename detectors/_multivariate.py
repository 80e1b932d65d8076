"""What the multivariate window detectors share: the window, the schedule, state and the report.

:class:`MMDDriftDetector <detectors.mmd_drift.MMDDriftDetector>` and
:class:`ClassifierDriftDetector <detectors.classifier_drift.ClassifierDriftDetector>` differ only
in the test they run on a window; everything around it is here, in
:class:`MultivariateWindowDetector`: a ring buffer of the last ``window`` records, a report every
``step`` records, ``records_to_replay`` for a restart, ``set_reference`` for a reference that
moves, and a state without pickle. A subclass supplies four hooks (``_install``,
``_run_test``, ``_contributions`` and the state pair ``_fitted_state``/``_load_fitted``).

One subtlety: both tests are permutation tests, whose random permutations index records by
position. The window is therefore always handed to the test in arrival order (the ring buffer
rotated back), so that the same records give the same p-value however the stream was cut into
batches.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from detectors._attribution import RawDesign, ReferenceProfile, attribute
from detectors.base import (
    DetectorConfig,
    DetectorContext,
    DriftReport,
    FeatureBatch,
    FeatureSchemaError,
    NotFittedError,
)

__all__ = [
    "MultivariateWindowConfig",
    "MultivariateDriftReport",
    "MultivariateWindowDetector",
    "TestOutcome",
    "is_int",
]

logger = logging.getLogger(__name__)

_STATE_FORMAT_VERSION = 1


class MultivariateWindowConfig(DetectorConfig):
    """The ``detectors:`` fields every multivariate window test shares."""

    window: int = Field(default=1000, ge=2)
    step: int | None = Field(default=None, ge=1)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    top_k: int = Field(default=5, gt=0)
    min_window: int = Field(default=100, ge=2)
    permutations: int = Field(default=1000, ge=1)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _min_window_fits(self) -> MultivariateWindowConfig:
        # The default applies up to the window; a min_window given explicitly must fit.
        if "min_window" in self.model_fields_set and self.min_window > self.window:
            raise ValueError(f"min_window ({self.min_window}) must not exceed window "
                             f"({self.window})")
        return self


@dataclass(frozen=True)
class MultivariateDriftReport(DriftReport):
    """A window tested jointly over all features: one p-value, and which features it blames.

    ``statistic`` is the test's own (MMD², or the cross-validated AUC of a classifier telling
    window from reference); ``p_value`` is a permutation p-value, so ``correction`` is nominal
    (``"bonferroni"`` over one test changes nothing). ``features`` are
    :class:`~detectors._attribution.FeatureAttribution` objects. ``test`` names the test,
    ``method`` its variant (estimator or model), ``permutations`` the permutations its p-value
    was computed from; ``bandwidth`` (MMD) is the Gaussian kernel's, fixed when the reference
    was set; ``auc`` (classifier) repeats the statistic under its usual name.
    """

    test: str = ""
    method: str = ""
    permutations: int = 0
    bandwidth: float | None = None
    auc: float | None = None

    def summary(self) -> str:
        """One line: the verdict and, for drift, the blamed features and how they moved."""
        head = f"{self.detector}: {{}} over {self.n_window} records ({self.test} " \
               f"p={self.p_value:.3g})"
        if not self.rejected:
            return head.format("no drift")
        by_name = {feature.name: feature for feature in self.features}
        movements, pairs = [], set()
        for name in self.top_features:
            feature, text = by_name[name], by_name[name].describe_movement()
            correlation = getattr(feature, "correlation", None)
            if correlation is not None and text.startswith(f"{name} correlation with "):
                pair = frozenset((name, correlation.partner))
                if pair in pairs:  # "a correlation with b" already said it
                    continue
                pairs.add(pair)
            movements.append(text)
        return head.format("drift") + f": {', '.join(movements) or 'no single feature stands out'}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "test": self.test, "method": self.method,
                "permutations": self.permutations, "bandwidth": self.bandwidth, "auc": self.auc}


@dataclass(frozen=True)
class TestOutcome:
    """What a subclass's test returns for one window."""

    statistic: float
    p_value: float
    bandwidth: float | None = None
    auc: float | None = None


def is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class MultivariateWindowDetector(ABC):
    """Count windows of records tested against a reference by a subclass's joint test.

    Hyperparameters shared by the subclasses: ``window`` (records per test, at least 2),
    ``step`` (records between scheduled tests, default ``window``), ``alpha``, ``top_k``,
    ``min_window`` (fewest records :meth:`test` tests), ``n_reference`` (reference records the
    test uses, a seeded uniform sample of a larger reference), ``permutations`` and ``seed``.
    """

    kind: ClassVar[str] = "drift"
    family: ClassVar[Literal["window"]] = "window"
    _test_name: ClassVar[str] = ""

    def __init__(self, name: str, *, window: int, step: int | None, alpha: float, top_k: int,
                 min_window: int, n_reference: int, permutations: int, seed: int) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}.")
        if not is_int(window) or window < 2:
            raise ValueError(f"window must be an integer of at least 2 records, got {window!r}.")
        if step is not None and (not is_int(step) or step < 1):
            raise ValueError(f"step must be a positive integer, got {step!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}.")
        if not is_int(top_k) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        if not is_int(min_window) or not 2 <= min_window <= window:
            raise ValueError(f"min_window must be an integer from 2 to window ({window!r}), got "
                             f"{min_window!r}.")
        if not is_int(n_reference) or n_reference < 10:
            raise ValueError(f"n_reference must be an integer of at least 10, got "
                             f"{n_reference!r}.")
        if not is_int(permutations) or permutations < 1:
            raise ValueError(f"permutations must be a positive integer, got {permutations!r}.")
        if 1.0 / (1.0 + permutations) > alpha:
            raise ValueError(
                f"{permutations} permutations cannot give a p-value as small as alpha={alpha}; "
                f"use at least {int(np.ceil(1.0 / alpha)) - 1} permutations.")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        self.name = name
        self.window = int(window)
        self.step = self.window if step is None else int(step)
        self.alpha = float(alpha)
        self.top_k = int(top_k)
        self.min_window = int(min_window)
        self.n_reference = int(n_reference)
        self.permutations = int(permutations)
        self.seed = int(seed)
        self.uses_embeddings = False
        self._lock = threading.RLock()
        self._schema: tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]] | None
        self._schema = None
        self._design: RawDesign | None = None
        self._profile: ReferenceProfile | None = None
        self._n_reference_used = 0
        self._reset_window(0, 0, 0)

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

    # -- the window-detector protocol --------------------------------------------------------

    def fit(self, reference: FeatureBatch) -> None:
        """Set the reference and start afresh: an empty window, schedule and counters."""
        self._check_reference(reference)
        with self._lock:
            self._schema = (reference.numeric_names, reference.categorical_names,
                            reference.categorical_vocab)
            self._set_reference(reference)
            vectors = self._vectors(reference)
            self._reset_window(len(reference.numeric_names), len(reference.categorical_names),
                               0 if vectors is None else vectors.shape[1])
        logger.info("%s fitted on %d reference records (%d used by the test)", self.name,
                    len(reference), self._n_reference_used)

    def set_reference(self, reference: FeatureBatch) -> None:
        """Replace the reference, keeping the window, the schedule and every counter.

        For a reference that moves (rolling, or an analyst's approved window): the records
        already in the window are tested against the new reference when their window is due.
        """
        self._check_reference(reference)
        with self._lock:
            self._require_fitted()
            assert self._schema is not None
            if (reference.numeric_names, reference.categorical_names,
                    reference.categorical_vocab) != self._schema:
                raise FeatureSchemaError(
                    f"{self.name}: the new reference's features differ from the fitted ones; "
                    "call fit(reference) to change the features (it restarts the window).")
            vectors = self._vectors(reference)
            if (0 if vectors is None else vectors.shape[1]) != self._window_vectors.shape[1]:
                raise FeatureSchemaError(f"{self.name}: the new reference's "
                                         f"{self._vectors_name()} have another width; call "
                                         "fit(reference) instead.")
            self._set_reference(reference)
        logger.info("%s tests against a new reference of %d records", self.name, len(reference))

    def update(self, batch: FeatureBatch) -> list[DriftReport]:
        """Append ``batch`` to the window; one report per window that became due meanwhile."""
        with self._lock:
            self._check_batch(batch)
            vectors = self._vectors(batch)
            reports: list[DriftReport] = []
            start, n = 0, len(batch)
            while start < n:
                take = min(n - start, self._next_report_at - self._records_seen)
                chunk = slice(start, start + take)
                self._append(batch.numeric[chunk], batch.categorical[chunk],
                             None if vectors is None else vectors[chunk])
                start += take
                self._records_seen += take
                if self._records_seen == self._next_report_at:
                    reports.append(self._test_current_window())
                    self._next_report_at += self.step
            return reports

    def test(self) -> DriftReport | None:
        """Test the window as it is now; ``None`` if it holds fewer than ``min_window`` records.

        Does not move the schedule of :meth:`update`'s reports.
        """
        with self._lock:
            self._require_fitted()
            if self._fill < self.min_window:
                return None
            return self._test_current_window()

    def records_to_replay(self) -> int:
        """Recent records the next scheduled window will hold (re-fed after a restart)."""
        with self._lock:
            first_of_next_window = max(0, self._next_report_at - self.window)
            return max(0, self._records_seen - first_of_next_window)

    # -- persistence without pickle ------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume, as a flat mapping of numpy arrays (``numpy.savez``)."""
        with self._lock:
            self._require_fitted()
            assert self._schema is not None and self._design is not None
            assert self._profile is not None
            numeric_names, categorical_names, vocab = self._schema
            state: dict[str, np.ndarray] = {
                "format_version": np.asarray(_STATE_FORMAT_VERSION),
                "schema.numeric_names": np.array(numeric_names, dtype=np.str_),
                "schema.categorical_names": np.array(categorical_names, dtype=np.str_),
                "schema.vocab": np.array([c for v in vocab for c in v], dtype=np.str_),
                "window.numeric": self._window_numeric.copy(),
                "window.categorical": self._window_categorical.copy(),
                "window.vectors": self._window_vectors.copy(),
                "window.write_position": np.asarray(self._write_position),
                "window.fill": np.asarray(self._fill),
                "stream.records_seen": np.asarray(self._records_seen),
                "stream.next_report_at": np.asarray(self._next_report_at),
                "stream.windows_tested": np.asarray(self._windows_tested),
                "reference.n": np.asarray(self._n_reference_used),
            }
            for key, value in self.get_params().items():
                if key != "name":
                    state[f"params.{key}"] = np.asarray(value)
            for prefix, part in (("design", self._design.to_state()),
                                 ("profile", self._profile.to_state()),
                                 ("test", self._fitted_state())):
                state.update({f"{prefix}.{key}": np.array(value) for key, value in part.items()})
            return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Resume from :meth:`state_dict`; the hyperparameters (but not the name) must match."""
        if int(state["format_version"]) != _STATE_FORMAT_VERSION:
            raise ValueError(f"Unsupported state format {int(state['format_version'])}; this "
                             f"version reads format {_STATE_FORMAT_VERSION}.")
        current = {key: value for key, value in self.get_params().items() if key != "name"}
        saved = {key: state[f"params.{key}"].item() for key in current
                 if f"params.{key}" in state}
        if saved != current:
            raise ValueError(f"The state was saved with parameters {saved}, not {current}.")

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {key[len(prefix) + 1:]: value for key, value in state.items()
                    if key.startswith(prefix + ".")}

        def names(key: str) -> tuple[str, ...]:
            return tuple(str(n) for n in np.asarray(state[key]).tolist())

        numeric_names, categorical_names = (names("schema.numeric_names"),
                                            names("schema.categorical_names"))
        with self._lock:
            self._design = RawDesign.from_state(part("design"), numeric_names, categorical_names)
            flat = names("schema.vocab")
            bounds = np.cumsum([0] + [s for s in self._design.vocab_sizes]).tolist()
            vocab = tuple(flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
            self._schema = (numeric_names, categorical_names, vocab)
            self._profile = ReferenceProfile.from_state(part("profile"), self._design)
            self._n_reference_used = int(state["reference.n"])
            self._load_fitted(part("test"))
            self._window_numeric = np.array(state["window.numeric"], dtype=np.float64)
            self._window_categorical = np.array(state["window.categorical"], dtype=np.int32)
            self._window_vectors = np.array(state["window.vectors"], dtype=np.float32)
            self._write_position = int(state["window.write_position"])
            self._fill = int(state["window.fill"])
            self._records_seen = int(state["stream.records_seen"])
            self._next_report_at = int(state["stream.next_report_at"])
            self._windows_tested = int(state["stream.windows_tested"])

    @classmethod
    def from_config(cls, config: MultivariateWindowConfig, context: DetectorContext) -> Any:
        """Build from a ``detectors:`` entry and fit on the context's reference.

        Every field of a subclass's config is a constructor argument of the same name.
        """
        params = config.model_dump(exclude={"type", "name", "enabled"})
        params["min_window"] = min(params["min_window"], params["window"])
        detector = cls(config.resolved_name(), **params)
        detector.fit(context.reference)
        return detector

    # -- hooks for subclasses ----------------------------------------------------------------

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with."""

    def _vectors(self, batch: FeatureBatch) -> np.ndarray | None:
        """Rows of the test space other than the raw features (encoded, embeddings), if any."""
        return None

    def _vectors_name(self) -> str:
        return "vectors"

    @abstractmethod
    def _install(self, sample: FeatureBatch, design: RawDesign) -> None:
        """Build the test from ``sample`` (at most ``n_reference`` reference records)."""

    @abstractmethod
    def _run_test(self, numeric: np.ndarray, categorical: np.ndarray,
                  vectors: np.ndarray | None) -> TestOutcome:
        """The joint test of one window (rows of the raw features and of the vectors)."""

    @abstractmethod
    def _contributions(self, numeric: np.ndarray, categorical: np.ndarray,
                       vectors: np.ndarray | None) -> np.ndarray:
        """One knock-out contribution per feature of the design, for a rejected window."""

    def _method(self) -> str:
        return ""

    @abstractmethod
    def _fitted_state(self) -> dict[str, np.ndarray]:
        """The fitted test as plain arrays (for ``state_dict``)."""

    @abstractmethod
    def _load_fitted(self, state: dict[str, np.ndarray]) -> None:
        """Rebuild the fitted test from :meth:`_fitted_state`'s arrays."""

    # -- internals ---------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if self._schema is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit(reference) first.")

    def _check_reference(self, reference: FeatureBatch) -> None:
        if len(reference) < 10:
            raise ValueError(f"{self.name}: the reference must hold at least 10 records, got "
                             f"{len(reference)}.")
        if not reference.feature_names:
            raise ValueError("The reference batch has no numeric or categorical feature to test.")

    def _check_batch(self, batch: FeatureBatch) -> None:
        self._require_fitted()
        if (batch.numeric_names, batch.categorical_names, batch.categorical_vocab) != self._schema:
            raise FeatureSchemaError(
                f"{self.name}: the batch's features differ from the reference's; refit the "
                "detector after changing the encoder.")
        vectors = self._vectors(batch)
        if vectors is not None and vectors.shape[1] != self._window_vectors.shape[1]:
            raise FeatureSchemaError(
                f"{self.name}: the batch's {self._vectors_name()} have {vectors.shape[1]} "
                f"columns, the reference's {self._window_vectors.shape[1]}; refit the detector "
                "after changing the encoder or the model.")

    def _set_reference(self, reference: FeatureBatch) -> None:
        design = RawDesign.fit(reference)
        rows = np.arange(len(reference))
        if len(reference) > self.n_reference:
            rng = np.random.default_rng([self.seed, len(reference)])
            rows = np.sort(rng.choice(len(reference), self.n_reference, replace=False))
        sample = reference.take(rows)
        self._install(sample, design)
        self._design = design
        self._profile = ReferenceProfile.of(reference, design)
        self._n_reference_used = len(sample)

    def _reset_window(self, n_numeric: int, n_categorical: int, n_vectors: int) -> None:
        self._records_seen = 0
        self._windows_tested = 0
        self._write_position = 0
        self._fill = 0
        self._next_report_at = self.window
        self._window_numeric = np.zeros((self.window, n_numeric))
        self._window_categorical = np.zeros((self.window, n_categorical), dtype=np.int32)
        self._window_vectors = np.zeros((self.window if n_vectors else 0, n_vectors),
                                        dtype=np.float32)

    def _append(self, numeric: np.ndarray, categorical: np.ndarray,
                vectors: np.ndarray | None) -> None:
        """Write rows into the ring buffer; only the last ``window`` rows of a chunk matter."""
        n = numeric.shape[0]
        if n >= self.window:
            rows = np.arange(self.window)
            numeric, categorical = numeric[-self.window:], categorical[-self.window:]
            vectors = None if vectors is None else vectors[-self.window:]
            self._write_position = 0
        else:
            rows = (self._write_position + np.arange(n)) % self.window
            self._write_position = (self._write_position + n) % self.window
        self._window_numeric[rows] = numeric
        self._window_categorical[rows] = categorical
        if vectors is not None and self._window_vectors.size:
            self._window_vectors[rows] = vectors
        self._fill = min(self.window, self._fill + n)

    def _in_arrival_order(self, buffer: np.ndarray) -> np.ndarray:
        if self._fill < self.window:
            return buffer[:self._fill]
        return np.roll(buffer, -self._write_position, axis=0)

    def _test_current_window(self) -> MultivariateDriftReport:
        assert self._design is not None and self._profile is not None
        assert self._schema is not None
        numeric = self._in_arrival_order(self._window_numeric)
        categorical = self._in_arrival_order(self._window_categorical)
        vectors = (self._in_arrival_order(self._window_vectors)
                   if self._window_vectors.shape[1] else None)
        outcome = self._run_test(numeric, categorical, vectors)
        p_value = float(min(max(outcome.p_value, 0.0), 1.0))
        rejected = p_value <= self.alpha
        contributions = (self._contributions(numeric, categorical, vectors) if rejected
                         else np.zeros(len(self._design.feature_names)))
        features, top = attribute(contributions, design=self._design, profile=self._profile,
                                  vocab=self._schema[2], numeric=numeric,
                                  categorical=categorical, window_rejected=rejected,
                                  p_value=p_value, top_k=self.top_k)
        self._windows_tested += 1
        logger.debug("%s tested %d records at record %d: rejected=%s p=%.3g", self.name,
                     numeric.shape[0], self._records_seen, rejected, p_value)
        return MultivariateDriftReport(
            detector=self.name, n_reference=self._n_reference_used,
            n_window=int(numeric.shape[0]), alpha=self.alpha, correction="bonferroni",
            statistic=float(outcome.statistic), p_value=p_value, rejected=rejected,
            features=features, top_features=top, records_seen=self._records_seen,
            test=self._test_name, method=self._method(), permutations=self.permutations,
            bandwidth=outcome.bandwidth, auc=outcome.auc)
