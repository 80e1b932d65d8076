"""Multivariate window drift by a classifier two-sample test: can a model tell the window apart?

If the window is drawn like the reference, no classifier can tell the two apart better than
chance on records it did not train on; if it can, something moved, and what the classifier
relies on says what. The model is deliberately small and written here in numpy: ridge
regression of the label (window or reference) on the reference-scaled features of
:class:`~detectors._attribution.RawDesign` plus the pairwise products of their leading principal
components, so that a change in how features go together (a correlation that flips) is as
visible to it as a shifted mean.

The statistic is the cross-validated AUC of the out-of-fold scores. Its p-value is not the
Mann–Whitney normal approximation, which cross-validation breaks: duplicated records (common in
security data) let each fold's model recognise the held-out copies of its training records, so
folds are not independent and the approximation raises false alarms. Instead the labels are
permuted within each fold and the whole cross-validation is redone for every permutation; ridge
predictions are linear in the labels, so all permutations cost a few matrix products, and the
p-value is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from detectors._attribution import (
    RawDesign,
    attribution_rows,
    nearest_on_other_features,
    per_feature_distances,
)
from detectors._multivariate import (
    MultivariateDriftReport,
    MultivariateWindowConfig,
    MultivariateWindowDetector,
    TestOutcome,
    is_int,
)
from detectors._permutation import permutation_batches, sequential_p_value
from detectors.base import FeatureBatch, params_repr

__all__ = ["ClassifierDriftConfig", "ClassifierDriftDetector", "MultivariateDriftReport"]


class ClassifierDriftConfig(MultivariateWindowConfig):
    """``detectors:`` entry of ``type: classifier_drift``."""

    type: Literal["classifier_drift"] = "classifier_drift"
    n_reference: int = Field(default=500, ge=10)
    folds: int = Field(default=5, ge=2)
    ridge: float = Field(default=100.0, gt=0)
    interactions: int = Field(default=8, ge=0)


@dataclass(frozen=True)
class _Features:
    """The model's inputs: standardised design columns, then principal-component products."""

    mean: np.ndarray
    std: np.ndarray
    n_numeric: int
    components: np.ndarray  # [n_numeric, k]: loadings scaled to unit variance on the reference

    @classmethod
    def fit(cls, design_rows: np.ndarray, n_numeric: int, interactions: int) -> _Features:
        mean, std = design_rows.mean(axis=0), design_rows.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        numeric = (design_rows[:, :n_numeric] - mean[:n_numeric]) / std[:n_numeric]
        k = min(interactions, n_numeric, design_rows.shape[0] - 1)
        components = np.zeros((n_numeric, 0))
        if k > 0:
            _, singular, vt = np.linalg.svd(numeric, full_matrices=False)
            keep = singular[:k] > 1e-9 * max(float(singular[0]), 1e-300)
            components = vt[:k][keep].T / (singular[:k][keep] / np.sqrt(numeric.shape[0]))
        return cls(mean, std, n_numeric, components)

    def __call__(self, design_rows: np.ndarray) -> np.ndarray:
        scaled = (design_rows - self.mean) / self.std
        k = self.components.shape[1]
        if k == 0:
            return scaled
        projected = scaled[..., :self.n_numeric] @ self.components
        upper = np.triu_indices(k)
        products = projected[..., :, None] * projected[..., None, :]
        return np.concatenate([scaled, products[..., upper[0], upper[1]]], axis=-1)


class ClassifierDriftDetector(MultivariateWindowDetector):
    """Tests windows by how well a small classifier tells them from the reference.

    Window mechanics, ``set_reference`` and the state are those of
    :class:`~detectors.mmd_drift.MMDDriftDetector`. Each test pools the window with
    ``n_reference`` reference records (a seeded sample), splits both into ``folds`` folds,
    fits a ridge classifier on all folds but one and scores the held-out one; the statistic is
    the AUC of the held-out scores, the p-value the share of within-fold label permutations
    that reach it (exact; see the module docstring). Features are blamed by how much the
    final model's mean score on the window falls when each is knocked out.

    Parameters
    ----------
    name, window, step, alpha, top_k, min_window, n_reference, permutations, seed
        As for :class:`~detectors.mmd_drift.MMDDriftDetector`.
    folds
        Cross-validation folds (fewer when the window has fewer records).
    ridge
        L2 penalty of the ridge classifier, on standardised features.
    interactions
        Leading principal components of the numeric features whose pairwise products (and
        squares) join the model's inputs, so that it sees how features go together; 0 for a
        purely linear model.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors import FeatureBatch
    >>> from detectors.classifier_drift import ClassifierDriftDetector
    >>> rng = np.random.default_rng(7)
    >>> def logins(failed_rate, n):
    ...     return FeatureBatch(
    ...         numeric=rng.poisson(failed_rate, (n, 1)).astype(float),
    ...         numeric_names=("failed_logins",), categorical=np.zeros((n, 0)),
    ...         categorical_names=(), categorical_vocab=(), encoded=np.zeros((n, 0)))
    >>> detector = ClassifierDriftDetector(window=200)
    >>> detector.fit(logins(1.0, 2000))
    >>> [report.rejected for report in detector.update(logins(1.0, 400))]
    [False, False]
    >>> report = detector.update(logins(3.0, 200))[0]
    >>> report.rejected, report.top_features, report.auc > 0.8
    (True, ('failed_logins',), True)
    """

    Config: ClassVar[type[ClassifierDriftConfig]] = ClassifierDriftConfig
    _test_name: ClassVar[str] = "classifier"

    def __init__(self, name: str = "classifier_drift", *, window: int = 1000,
                 step: int | None = None, alpha: float = 0.01, top_k: int = 5,
                 min_window: int = 100, n_reference: int = 500, permutations: int = 1000,
                 folds: int = 5, ridge: float = 100.0, interactions: int = 8,
                 seed: int = 0) -> None:
        super().__init__(name, window=window, step=step, alpha=alpha, top_k=top_k,
                         min_window=min_window, n_reference=n_reference,
                         permutations=permutations, seed=seed)
        if not is_int(folds) or not 2 <= folds <= 20:
            raise ValueError(f"folds must be an integer from 2 to 20, got {folds!r}.")
        if (isinstance(ridge, bool) or not isinstance(ridge, int | float)
                or not 0.0 < ridge < np.inf):
            raise ValueError(f"ridge must be a positive number, got {ridge!r}.")
        if not is_int(interactions) or interactions < 0:
            raise ValueError(f"interactions must be a non-negative integer, got "
                             f"{interactions!r}.")
        self.folds = int(folds)
        self.ridge = float(ridge)
        self.interactions = int(interactions)
        self._features: _Features | None = None
        self._sample: dict[str, np.ndarray] = {}
        self._reference_inputs = np.zeros((0, 0))
        self._reference_folds = np.zeros(0, np.int64)
        self._labellings: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- configuration ---------------------------------------------------------------------

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        """Constructor arguments the conformance suite builds instances from."""
        return [
            {"name": "classifier_drift", "window": 300, "min_window": 50},
            {"name": "classifier_drift_linear", "window": 250, "step": 125, "min_window": 50,
             "folds": 3, "interactions": 0, "ridge": 10.0, "n_reference": 400,
             "permutations": 300, "top_k": 3},
        ]

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        """Constructor arguments that must be rejected with a ValueError."""
        return [
            {"name": ""},
            {"window": 1},
            {"step": 0},
            {"alpha": 1.0},
            {"top_k": 0},
            {"window": 50, "min_window": 100},
            {"n_reference": 5},
            {"permutations": 10},
            {"folds": 1},
            {"folds": 2.5},
            {"ridge": 0.0},
            {"ridge": "1"},
            {"interactions": -1},
            {"seed": 1.5},
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with (step resolved)."""
        return {
            "name": self.name, "window": self.window, "step": self.step, "alpha": self.alpha,
            "top_k": self.top_k, "min_window": self.min_window,
            "n_reference": self.n_reference, "permutations": self.permutations,
            "folds": self.folds, "ridge": self.ridge, "interactions": self.interactions,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        return params_repr(self)

    # -- the test ----------------------------------------------------------------------------

    def _install(self, sample: FeatureBatch, design: RawDesign) -> None:
        self._sample = {"numeric": sample.numeric, "categorical": sample.categorical}
        self._build(design)

    def _build(self, design: RawDesign) -> None:
        rows = design.transform(self._sample["numeric"], self._sample["categorical"])
        self._features = _Features.fit(rows, len(design.numeric_names), self.interactions)
        self._reference_inputs = self._features(rows)
        n = rows.shape[0]
        rng = np.random.default_rng([self.seed, n])
        self._reference_folds = rng.permutation(np.arange(n) % self.folds)
        self._labellings = {}
        self._labelling(self.window)

    def _labelling(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Folds of the window's records, and ``[1 + P, N]`` labels: observed, then permuted.

        Each permutation shuffles the labels within every fold, so each fold keeps its number
        of window records (the observed folds are stratified).
        """
        if m not in self._labellings:
            k = min(self.folds, m)
            rng = np.random.default_rng([self.seed, self._reference_folds.size, m])
            window_folds = rng.permutation(np.arange(m) % k)
            folds = np.concatenate([np.minimum(self._reference_folds, k - 1), window_folds])
            labels = np.zeros((self.permutations + 1, folds.size), dtype=bool)
            labels[0, self._reference_folds.size:] = True
            for fold in range(k):
                members = np.flatnonzero(folds == fold)
                count = int(np.count_nonzero(window_folds == fold))
                keys = rng.random((self.permutations, members.size))
                chosen = np.argpartition(keys, count - 1, axis=1)[:, :count] if count else (
                    np.zeros((self.permutations, 0), np.int64))
                labels[np.arange(1, self.permutations + 1)[:, None], members[chosen]] = True
            if len(self._labellings) >= 4:
                self._labellings.pop(next(iter(self._labellings)))
            self._labellings[m] = (folds, labels)
        return self._labellings[m]

    def _run_test(self, numeric: np.ndarray, categorical: np.ndarray,
                  vectors: np.ndarray | None) -> TestOutcome:
        assert self._features is not None and self._design is not None
        inputs = np.concatenate([self._reference_inputs,
                                 self._features(self._design.transform(numeric, categorical))])
        folds, labels = self._labelling(numeric.shape[0])
        smoothers = [self._held_out_smoother(inputs, folds == fold)
                     for fold in range(int(folds.max()) + 1)]
        batches = permutation_batches(labels.shape[0])
        pairs = sum(float(np.count_nonzero(labels[0, held_out])
                          * np.count_nonzero(~labels[0, held_out]))
                    for held_out, _ in smoothers)

        def aucs(batch: int) -> np.ndarray:
            batch_labels = labels[batches[batch]].T.astype(np.float64)  # [N, B]
            u = np.zeros(batch_labels.shape[1])
            for held_out, smoother in smoothers:
                training = batch_labels[~held_out]
                scores = smoother @ (training - training.mean(axis=0))
                u += _mann_whitney_u(scores, batch_labels[held_out])
            return u / max(pairs, 1.0)

        auc, p_value = sequential_p_value(aucs, len(batches), self.permutations, self.alpha)
        return TestOutcome(statistic=auc, p_value=p_value, auc=auc)

    def _held_out_smoother(self, inputs: np.ndarray, held_out: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        """``(held_out, L)`` with held-out ridge scores ``L @ (y_train - mean)`` for any labels."""
        training = inputs[~held_out]
        centre = training.mean(axis=0)
        centred = training - centre
        gram = centred.T @ centred + self.ridge * np.eye(inputs.shape[1])
        # One small inverse and two products: a solve with every training row as a right-hand
        # side is several times slower in LAPACK for these shapes.
        return held_out, ((inputs[held_out] - centre) @ np.linalg.inv(gram)) @ centred.T

    def _contributions(self, numeric: np.ndarray, categorical: np.ndarray,
                       vectors: np.ndarray | None) -> np.ndarray:
        assert self._features is not None and self._design is not None
        design, features = self._design, self._features
        inputs = np.concatenate([self._reference_inputs,
                                 features(design.transform(numeric, categorical))])
        labels = np.zeros(inputs.shape[0])
        labels[self._reference_inputs.shape[0]:] = 1.0
        centre = inputs.mean(axis=0)
        centred = inputs - centre
        weights = np.linalg.solve(centred.T @ centred + self.ridge * np.eye(inputs.shape[1]),
                                  centred.T @ (labels - labels.mean()))
        count, rows = attribution_rows(self._sample["numeric"].shape[0], numeric.shape[0],
                                       len(design.feature_names))
        reference_numeric = self._sample["numeric"][:count]
        reference_codes = self._sample["categorical"][:count]
        window_design = design.transform(numeric[rows], categorical[rows])
        reference_design = design.transform(reference_numeric, reference_codes)
        nearest, _ = nearest_on_other_features(per_feature_distances(
            design.numeric_part(reference_numeric), reference_codes,
            design.numeric_part(numeric[rows]), categorical[rows]))
        owner = design.column_feature
        knocked = np.repeat(window_design[None], owner.max() + 1, axis=0)  # [F, m, columns]
        for j in range(knocked.shape[0]):
            columns = owner == j
            knocked[j][:, columns] = reference_design[nearest[:, j]][:, columns]
        score = float(((features(window_design) - centre) @ weights).mean())
        knocked_scores = ((features(knocked) - centre) @ weights).mean(axis=1)
        return np.asarray(score - knocked_scores, np.float64)

    def _method(self) -> str:
        return (f"ridge classifier, {self.folds}-fold, {self.interactions} interaction "
                "components")

    def _fitted_state(self) -> dict[str, np.ndarray]:
        return dict(self._sample)

    def _load_fitted(self, state: dict[str, np.ndarray]) -> None:
        assert self._design is not None
        self._sample = {"numeric": np.asarray(state["numeric"], np.float64),
                        "categorical": np.asarray(state["categorical"], np.int32)}
        self._build(self._design)


def _mann_whitney_u(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per column, the Mann–Whitney U of the positive rows' scores (ties count one half)."""
    n = scores.shape[0]
    order = np.argsort(scores, axis=0, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=0)
    positions = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64)[:, None], scores.shape)
    starts = np.ones(scores.shape, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(scores.shape, dtype=bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, positions, 0.0), axis=0)
    last = np.minimum.accumulate(np.where(ends, positions, float(n))[::-1], axis=0)[::-1]
    ranks = np.empty_like(scores)
    np.put_along_axis(ranks, order, (first + last) / 2.0, axis=0)
    count = positive.sum(axis=0)
    return (ranks * positive).sum(axis=0) - count * (count + 1.0) / 2.0
