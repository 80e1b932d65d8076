"""Adversarial inputs: records crafted to be misclassified, caught where they look unlike data.

An evasion attack moves a record across the model's decision boundary with a perturbation
small in input space. What it cannot easily do is make the record look like clean data of its
new class *everywhere* in the network, so this detector reads the live model's layers
(:meth:`AlertModel.layers`) and measures several kinds of strangeness, each with its own
published track record:

* ``feature_tails`` — how extreme each input feature's value is against the clean
  reference (a two-sided empirical p-value per feature, summed as ``-log p``): the input-level
  scan that subset-scanning detectors build on. A perturbation spread thinly over many
  features that are nearly constant in clean data (an image's background) shows here first;
* ``mahalanobis`` — per layer, the distance to the nearest class under class-conditional
  Gaussians with a shared, shrunk covariance (Lee et al. 2018), one component per layer
  (layer 0 is the encoded input itself, then every block of the network);
* ``knn`` — distance to the ``neighbours``-th nearest clean record in the model's
  representation (deep k-NN; Papernot & McDaniel 2018);
* ``lid`` — local intrinsic dimensionality estimated from those neighbour distances
  (maximum-likelihood estimator; Ma et al. 2018): adversarial regions are higher-dimensional;
* ``margin`` — how close the two nearest class centres are (ratio of the distances): records
  pushed to a boundary sit between prototypes;
* ``squeeze`` — for tensor (image) features only: the change in the model's class
  probabilities when the image is squeezed by bit-depth reduction and by median smoothing
  (Xu et al. 2018); clean images barely move, adversarial perturbations are wiped out.

None of them is trained on adversarial examples, so none learns one attack's fingerprint.
Every component is calibrated on held-out clean reference records into a conformal p-value,
and the components are combined into one p-value per record (:mod:`detectors._conformal`:
Fisher's rule by default, the harmonic mean of the p-values, or Bonferroni), so
``alpha`` is the false-alarm rate on clean records.

Calibration depends on the model version: the first batch a new version judges fits and
calibrates the components again (one forward pass over the reference). The calibration
records are the reference rows the model was never trained on when the model handle names
them (``held_out_rows``: a record the model was trained on looks cleaner than a new one);
otherwise a seeded random half of the reference.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from detectors._conformal import Calibration, CombineRule
from detectors._distances import distances
from detectors.base import (
    DetectorConfig,
    DetectorContext,
    FeatureBatch,
    ModelHandle,
    NotFittedError,
    TensorLayout,
    Verdict,
    params_repr,
    require_schema,
)

__all__ = ["METHODS", "AdversarialConfig", "AdversarialDetector"]

logger = logging.getLogger(__name__)

Method = Literal["feature_tails", "mahalanobis", "knn", "lid", "margin", "squeeze"]
METHODS: tuple[str, ...] = ("feature_tails", "mahalanobis", "knn", "lid", "margin", "squeeze")
KIND = "adversarial"
_CHUNK = 2048


class AdversarialConfig(DetectorConfig):
    """``detectors:`` entry of ``type: adversarial`` (needs ``model.enabled: true``)."""

    type: Literal["adversarial"] = "adversarial"
    alpha: float = Field(default=0.01, gt=0, lt=1)
    methods: tuple[Method, ...] | None = None  # None: every method that applies to the schema
    combine: Literal["fisher", "harmonic", "bonferroni"] = "fisher"
    neighbours: int = Field(default=20, ge=2, le=200)
    max_fit: int = Field(default=5000, ge=50, le=100_000)
    max_calibration: int = Field(default=5000, ge=20, le=100_000)
    shrinkage: float = Field(default=0.01, ge=0, le=1)
    squeeze_bits: int = Field(default=1, ge=1, le=8)
    squeeze_median: int = Field(default=2, ge=2, le=5)
    explain_neighbours: int = Field(default=3, ge=1, le=20)
    seed: int = 0


@dataclass(frozen=True)
class _Gaussians:
    """Class means and the whitening of the shared covariance, in one layer."""

    means: np.ndarray  # [C, d], whitened
    whitening: np.ndarray  # [d, d]

    def score(self, z: np.ndarray) -> np.ndarray:
        white = np.asarray(z, np.float64) @ self.whitening
        squared = ((white * white).sum(1)[:, None] - 2.0 * white @ self.means.T
                   + (self.means * self.means).sum(1)[None, :])
        return np.maximum(squared.min(axis=1), 0.0)


@dataclass(frozen=True)
class _Fitted:
    """Everything fitted for one model version."""

    version: str
    components: tuple[tuple[str, int], ...]  # (method, layer) per calibrated score column
    gaussians: dict[int, _Gaussians]
    inputs: np.ndarray  # [n_fit, d]: the fitting records' encoded features, sorted per column
    fit_rows: np.ndarray  # reference rows the neighbours are searched among
    fit_keys: np.ndarray  # [n_fit, D]: their last-layer representation
    fit_classes: np.ndarray  # object [n_fit]: the model's class for each
    centres: np.ndarray  # [C, D]: class centres in the last layer
    class_names: np.ndarray  # object [C]
    calibration: Calibration


class AdversarialDetector:
    """Flags records that look crafted to fool the live model, at false-alarm rate ``alpha``.

    Parameters
    ----------
    name
        Configured id.
    alpha
        False-alarm rate on clean records, in (0, 1).
    methods
        Components to run (see the module docstring); ``None`` runs every one that applies
        (``squeeze`` only with a tensor feature). Naming ``squeeze`` without a tensor feature
        is an error, not a silent omission.
    combine
        ``fisher`` (default), ``harmonic`` or ``bonferroni``: how component p-values become
        one (see :mod:`detectors._conformal`). Fisher's rule pools every component, so its
        false-alarm rate varies least from one calibration set to the next; the other two
        lean on each component's extreme tail, which a calibration set of a thousand records
        pins down only roughly (docs/BENCHMARKS.md measures both).
    neighbours
        ``k`` of the k-NN distance and of the LID estimate.
    max_fit, max_calibration
        Reference records the components are fitted on / calibrated on (seeded samples).
    shrinkage
        Weight of the scaled identity in the shared covariance (keeps it invertible).
    squeeze_bits, squeeze_median
        Bit depth and median-filter width of feature squeezing.
    explain_neighbours
        Nearest clean reference records named in an explanation.
    model
        The live model's handle; tensors: where the tensor features sit in encoded rows.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.base import FeatureBatch
    >>> from detectors.checks import NearestLabelModel, synthetic_labelled_batch
    >>> rng = np.random.default_rng(0)
    >>> reference = synthetic_labelled_batch(rng, 1000)
    >>> detector = AdversarialDetector(alpha=0.01, model=NearestLabelModel(reference))
    >>> detector.fit(reference)
    >>> far = synthetic_labelled_batch(rng, 20, far=30.0)
    >>> bool(detector.score(far).flagged.all())
    True
    """

    family: ClassVar[Literal["record"]] = "record"
    kind: ClassVar[str] = KIND
    uses_embeddings: ClassVar[bool] = False  # it reads every layer in one pass of its own
    requires_model: ClassVar[bool] = True
    Config: ClassVar[type[AdversarialConfig]] = AdversarialConfig

    def __init__(self, name: str = "adversarial", *, alpha: float = 0.01,
                 methods: Sequence[str] | None = None, combine: CombineRule = "fisher",
                 neighbours: int = 20, max_fit: int = 5000, max_calibration: int = 5000,
                 shrinkage: float = 0.01, squeeze_bits: int = 1, squeeze_median: int = 2,
                 explain_neighbours: int = 3, seed: int = 0, model: ModelHandle | None = None,
                 tensors: Sequence[TensorLayout] = ()) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string.")
        if isinstance(alpha, bool) or not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}.")
        if combine not in ("fisher", "harmonic", "bonferroni"):
            raise ValueError(f"combine must be 'fisher', 'harmonic' or 'bonferroni', got "
                             f"{combine!r}.")
        if methods is not None:
            methods = tuple(methods)
            unknown = [m for m in methods if m not in METHODS]
            if not methods or unknown or len(set(methods)) != len(methods):
                raise ValueError(f"methods must be distinct names from {list(METHODS)}, got "
                                 f"{list(methods)!r}.")
        for label, value, low in (("neighbours", neighbours, 2), ("max_fit", max_fit, 50),
                                  ("max_calibration", max_calibration, 20),
                                  ("squeeze_bits", squeeze_bits, 1),
                                  ("squeeze_median", squeeze_median, 2),
                                  ("explain_neighbours", explain_neighbours, 1),
                                  ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer of at least {low}, got {value!r}.")
        if squeeze_bits > 8:
            raise ValueError(f"squeeze_bits must be at most 8, got {squeeze_bits}.")
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, float) or not (
                0.0 <= shrinkage <= 1.0):
            raise ValueError(f"shrinkage must be a float in [0, 1], got {shrinkage!r}.")
        self.name = name
        self.alpha = alpha
        self.methods = methods
        self.combine = combine
        self.neighbours = neighbours
        self.max_fit = max_fit
        self.max_calibration = max_calibration
        self.shrinkage = shrinkage
        self.squeeze_bits = squeeze_bits
        self.squeeze_median = squeeze_median
        self.explain_neighbours = explain_neighbours
        self.seed = seed
        self.model = model
        self.tensors = tuple(tensors)
        if methods is not None and "squeeze" in methods and not self.tensors:
            raise ValueError("method 'squeeze' needs a tensor (image) feature in the schema; "
                             "remove it from `methods`.")
        self._reference: np.ndarray | None = None
        self._schema: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._split: tuple[np.ndarray, np.ndarray] | None = None
        self._fitted: _Fitted | None = None

    @classmethod
    def from_config(cls, config: AdversarialConfig, context: DetectorContext
                    ) -> AdversarialDetector:
        if context.model is None:
            raise ValueError(
                f"detector {config.resolved_name()!r} (type adversarial) needs the live model; "
                "set `model.enabled: true`.")
        detector = cls(config.resolved_name(), alpha=config.alpha, methods=config.methods,
                       combine=config.combine, neighbours=config.neighbours,
                       max_fit=config.max_fit, max_calibration=config.max_calibration,
                       shrinkage=config.shrinkage, squeeze_bits=config.squeeze_bits,
                       squeeze_median=config.squeeze_median,
                       explain_neighbours=config.explain_neighbours, seed=config.seed,
                       model=context.model, tensors=context.tensors)
        detector.fit(context.reference)
        return detector

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        return [{"name": "adversarial", "alpha": 0.01},
                {"name": "adversarial_bonferroni", "alpha": 0.05, "combine": "bonferroni",
                 "methods": ("mahalanobis", "knn"), "neighbours": 10}]

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        return [{"name": ""}, {"alpha": 0.0}, {"alpha": "0.01"}, {"combine": "max"},
                {"methods": ()}, {"methods": ("knn", "knn")}, {"methods": ("entropy",)},
                {"methods": ("squeeze",)}, {"neighbours": 1}, {"shrinkage": 2.0},
                {"squeeze_bits": 9}]

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "methods": self.methods,
                "combine": self.combine, "neighbours": self.neighbours,
                "max_fit": self.max_fit, "max_calibration": self.max_calibration,
                "shrinkage": self.shrinkage, "squeeze_bits": self.squeeze_bits,
                "squeeze_median": self.squeeze_median,
                "explain_neighbours": self.explain_neighbours, "seed": self.seed}

    def __repr__(self) -> str:
        return params_repr(self)

    @property
    def is_fitted(self) -> bool:
        return self._reference is not None

    @property
    def active_methods(self) -> tuple[str, ...]:
        if self.methods is not None:
            return self.methods
        return tuple(m for m in METHODS if m != "squeeze" or self.tensors)

    # --- the record-detector protocol ----------------------------------------------------------

    def fit(self, reference: FeatureBatch) -> None:
        """Split the reference into fitting and calibration records (model-independent)."""
        n = len(reference)
        minimum = int(np.ceil(1.0 / self.alpha))  # the smallest p-value must reach alpha
        held_out = np.asarray(getattr(self.model, "held_out_rows", np.zeros(0)), np.int64)
        held_out = held_out[(held_out >= 0) & (held_out < n)]
        rng = np.random.default_rng(self.seed)
        if held_out.size >= minimum:
            calibration = held_out
            fitting = np.setdiff1d(np.arange(n), held_out)
        else:
            order = rng.permutation(n)
            half = n // 2
            calibration, fitting = np.sort(order[:half]), np.sort(order[half:])
        calibration = _sample(calibration, self.max_calibration, rng)
        fitting = _sample(fitting, self.max_fit, rng)
        if calibration.size < minimum or fitting.size <= self.neighbours:
            raise ValueError(
                f"{self.name}: the reference is too small to calibrate alpha={self.alpha}: it "
                f"needs at least {minimum} calibration and {self.neighbours + 1} fitting "
                f"records, got {calibration.size} and {fitting.size}.")
        self._reference = np.array(reference.encoded, dtype=np.float32, copy=True)
        self._schema = (reference.numeric_names, reference.categorical_names)
        self._split = (fitting, calibration)
        self._fitted = None

    def score(self, batch: FeatureBatch) -> Verdict:
        """Combined p-value of every record against clean calibration records."""
        self._check(batch)
        n = len(batch)
        model = self._current_model()
        if model is None or n == 0:
            return Verdict(detector=self.name, flagged=np.zeros(n, bool), score=np.zeros(n),
                           p_value=np.ones(n), kind=np.full(n, "", dtype=object),
                           predicted_class=np.full(n, None, dtype=object),
                           explanation={"model_version": None})
        fitted = self._fitted_for(model)
        scores, predicted = self._component_scores(model, fitted, batch.encoded)
        p_value, statistic = fitted.calibration.combine(scores)
        flagged = p_value <= self.alpha
        return Verdict(detector=self.name, flagged=flagged, score=statistic, p_value=p_value,
                       kind=np.where(flagged, KIND, "").astype(object),
                       predicted_class=predicted,
                       explanation={"model_version": str(model.version), "alpha": self.alpha,
                                    "combine": self.combine,
                                    "components": [_component_name(c)
                                                   for c in fitted.components]})

    def explain(self, batch: FeatureBatch, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Which components fired (their p-values) and the nearest clean reference records."""
        self._check(batch)
        rows = np.asarray(indices, dtype=np.int64)
        model = self._current_model()
        if model is None or rows.size == 0:
            return [{} for _ in rows]
        fitted = self._fitted_for(model)
        encoded = batch.encoded[rows]
        layers = _layers(model, encoded)
        scores, predicted = self._component_scores(model, fitted, encoded, layers=layers)
        p_values = fitted.calibration.component_p_values(scores)
        combined, _ = fitted.calibration.combine(scores)
        distance = distances(layers[-1], fitted.fit_keys)
        k = min(self.explain_neighbours, fitted.fit_keys.shape[0])
        nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
        out = []
        for i in range(rows.size):
            order = np.argsort(p_values[i], kind="stable")
            components: list[dict[str, Any]] = [
                {"method": fitted.components[j][0], "layer": fitted.components[j][1],
                 "score": round(float(scores[i, j]), 6),
                 "p_value": round(float(p_values[i, j]), 6)} for j in order]
            fired = {fitted.components[j][0] for j in order if p_values[i, j] <= self.alpha}
            out.append({
                "predicted_class": None if predicted[i] is None else str(predicted[i]),
                "p_value": round(float(combined[i]), 6),
                "combine": self.combine,
                "fired": sorted(fired),
                "components": components,
                "nearest_clean": [
                    {"origin": f"reference:{int(fitted.fit_rows[j])}",
                     "class": str(fitted.fit_classes[j]),
                     "distance": round(float(distance[i, j]), 4)}
                    for j in nearest[i]],
            })
        return out

    # --- fitting per model version -------------------------------------------------------------

    def _current_model(self) -> Any:
        return None if self.model is None else self.model.current()

    def _check(self, batch: FeatureBatch) -> None:
        require_schema(self.name, self._schema, batch)

    def _fitted_for(self, model: Any) -> _Fitted:
        version = str(getattr(model, "version", ""))
        if self._fitted is not None and self._fitted.version == version:
            return self._fitted
        if self._reference is None or self._split is None:
            raise NotFittedError(f"{self.name} is not fitted: call fit(reference) first.")
        fitting, calibration = self._split
        layers = _layers(model, self._reference[fitting])
        classes = _predicted_classes(model, self._reference[fitting], layers[-1])
        components: list[tuple[str, int]] = []
        gaussians: dict[int, _Gaussians] = {}
        for method in self.active_methods:
            if method == "mahalanobis":
                for layer, values in enumerate(layers):
                    gaussians[layer] = _fit_gaussians(values, classes, self.shrinkage)
                    components.append(("mahalanobis", layer))
            elif method == "squeeze":
                components.append(("squeeze", -1))
            elif method == "feature_tails":
                components.append(("feature_tails", 0))
            else:
                components.append((method, len(layers) - 1))
        names, centres = _class_centres(layers[-1], classes)
        partial = _Fitted(version=version, components=tuple(components), gaussians=gaussians,
                          inputs=np.sort(self._reference[fitting].astype(np.float64), axis=0),
                          fit_rows=fitting, fit_keys=np.asarray(layers[-1], np.float32),
                          fit_classes=classes, centres=centres, class_names=names,
                          calibration=Calibration.fit(np.zeros((0, len(components))),
                                                      self.combine))
        scores, _ = self._component_scores(model, partial, self._reference[calibration])
        fitted = dataclasses.replace(partial,
                                     calibration=Calibration.fit(scores, self.combine))
        logger.info("%s: calibrated %d components on %d held-out records for model version %s",
                    self.name, len(components), calibration.size, version or "-")
        self._fitted = fitted
        return fitted

    # --- the scores ----------------------------------------------------------------------------

    def _component_scores(self, model: Any, fitted: _Fitted, encoded: np.ndarray, *,
                          layers: list[np.ndarray] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """``[n, m]`` component scores (higher = stranger) and each record's nearest class."""
        if layers is None:
            layers = _layers(model, encoded)
        last = layers[-1]
        centre_distance = distances(last, fitted.centres)
        predicted = fitted.class_names[centre_distance.argmin(axis=1)]
        knn: np.ndarray | None = None
        columns = []
        for method, layer in fitted.components:
            if method == "mahalanobis":
                columns.append(fitted.gaussians[layer].score(layers[layer]))
            elif method == "feature_tails":
                columns.append(_feature_tails(fitted.inputs, encoded))
            elif method in ("knn", "lid"):
                if knn is None:
                    knn = _nearest_distances(last, fitted.fit_keys, self.neighbours)
                columns.append(knn[:, -1] if method == "knn" else _lid(knn))
            elif method == "margin":
                columns.append(_margin(centre_distance))
            else:
                columns.append(self._squeeze_change(model, encoded))
        scores = (np.column_stack(columns) if columns
                  else np.zeros((len(encoded), 0)))
        return scores, predicted.astype(object)

    def _squeeze_change(self, model: Any, encoded: np.ndarray) -> np.ndarray:
        """Largest L1 change of the class probabilities under either squeezer."""
        from scipy import ndimage  # imported when first needed: config loading stays light

        base = np.asarray(model.class_probabilities(encoded), np.float64)
        levels = 2 ** self.squeeze_bits - 1
        reduced, smoothed = np.asarray(encoded), np.asarray(encoded)
        for layout in self.tensors:
            span = max(layout.high - layout.low, 1e-12)
            unit = (layout.raw(encoded) - layout.low) / span
            bits = np.round(np.clip(unit, 0.0, 1.0) * levels) / levels
            window = (1, self.squeeze_median, self.squeeze_median) + (1,) * (unit.ndim - 3)
            median = ndimage.median_filter(unit, size=window, mode="reflect")
            reduced = layout.encode(reduced, bits * span + layout.low)
            smoothed = layout.encode(smoothed, median * span + layout.low)
        change = [np.abs(np.asarray(model.class_probabilities(x), np.float64) - base).sum(1)
                  for x in (reduced, smoothed)]
        return np.maximum(change[0], change[1])


# --- numerics ----------------------------------------------------------------------------------


def _component_name(component: tuple[str, int]) -> str:
    method, layer = component
    return f"{method}@{layer}" if method == "mahalanobis" else method


def _sample(rows: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, cap, replace=False)) if rows.size > cap else rows


def _layers(model: Any, encoded: np.ndarray) -> list[np.ndarray]:
    """The encoded input, then the model's layers (the last is its representation).

    The input counts as layer 0: a network with per-record normalisation maps a record with
    one absurd value to a bounded, ordinary-looking pattern, so only the input shows it.
    """
    layers = getattr(model, "layers", None)
    outputs = [np.asarray(v, np.float64).reshape(len(encoded), -1)
               for v in (layers(encoded) if layers is not None else [model.embed(encoded)])]
    if len(outputs) == 1 and outputs[0].shape == encoded.shape:
        return outputs  # the model reads the input directly (nearest-record models)
    return [np.asarray(encoded, np.float64), *outputs]


def _predicted_classes(model: Any, x: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The model's class for each record: the live model's answer, or a plain classifier's
    arg-max (a model with ``class_probabilities`` and ``probability_classes`` only)."""
    classify = getattr(model, "classify", None)
    if classify is not None:
        return np.asarray(classify(x, last).predicted, dtype=object)
    names = np.asarray(getattr(model, "probability_classes", None) or model.classes, dtype=object)
    return names[np.asarray(model.class_probabilities(x)).argmax(axis=1)]


def _fit_gaussians(values: np.ndarray, classes: np.ndarray, shrinkage: float) -> _Gaussians:
    """Class means and whitening of the pooled within-class covariance, shrunk to identity."""
    names = np.unique(classes.astype(str))
    labels = classes.astype(str)
    means = np.stack([values[labels == c].mean(axis=0) for c in names])
    centred = values - means[np.searchsorted(names, labels)]
    d = values.shape[1]
    covariance = centred.T @ centred / max(len(values) - len(names), 1)
    scale = max(float(np.trace(covariance)) / d, 1e-12)
    covariance = (1.0 - shrinkage) * covariance + (shrinkage * scale + 1e-9 * scale) * np.eye(d)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    whitening = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-12 * scale))[None, :]
    return _Gaussians(means=means @ whitening, whitening=whitening)


def _class_centres(keys: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names = np.unique(classes.astype(str))
    labels = classes.astype(str)
    centres = np.stack([keys[labels == c].mean(axis=0) for c in names])
    return names.astype(object), centres


def _nearest_distances(query: np.ndarray, memory: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]`` sorted distances to the ``k`` nearest memory rows.

    The search runs on float32 squared distances (one SGEMM per chunk, the hot spot of the
    detector); the ``k`` chosen are then measured exactly in float64.
    """
    k = min(k, memory.shape[0])
    query64 = np.asarray(query, np.float64)
    memory64 = np.asarray(memory, np.float64)
    query32, memory32 = query64.astype(np.float32), memory64.astype(np.float32)
    memory_norms = (memory32 * memory32).sum(1)
    out = np.empty((query64.shape[0], k))
    for start in range(0, query64.shape[0], _CHUNK):
        rows = slice(start, start + _CHUNK)
        q = query32[rows]
        squared = memory_norms[None, :] - 2.0 * (q @ memory32.T)  # + |q|², constant per row
        chosen = np.argpartition(squared, k - 1, axis=1)[:, :k]
        difference = query64[rows][:, None, :] - memory64[chosen]
        out[rows] = np.sort(np.sqrt((difference * difference).sum(axis=2)), axis=1)
    return out


def _lid(distances: np.ndarray) -> np.ndarray:
    """Maximum-likelihood LID from sorted neighbour distances; 0 on top of known records."""
    farthest = distances[:, -1:]
    usable = farthest[:, 0] > 1e-12
    ratio = np.where(usable[:, None], np.maximum(distances, 1e-12) / np.where(
        usable[:, None], farthest, 1.0), 1.0)
    mean_log = np.log(ratio[:, :-1]).mean(axis=1) if distances.shape[1] > 1 else np.zeros(
        len(distances))
    with np.errstate(divide="ignore"):
        lid = np.where(mean_log < 0, -1.0 / np.minimum(mean_log, -1e-12), 0.0)
    return np.where(usable, lid, 0.0)


def _feature_tails(sorted_reference: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Σ_f -log p_f``: per feature, the two-sided share of reference values at least as
    extreme as the record's (counting the record), capped at 1.

    Beyond the reference's range the share cannot fall below ``2/(n+1)``, which would make a
    value forty spreads out count no more than one just past the edge; there ``-log p_f`` keeps
    growing by the distance past the edge in units of the feature's spread (the median spread
    of the features that vary, for one that never varies in the reference: a faint change
    to an always-blank pixel is already counted by its share, and must not swamp it).
    """
    n = sorted_reference.shape[0]
    x = np.asarray(x, np.float64)
    spread = sorted_reference.std(axis=0)
    positive = spread[spread > 0]
    spread = np.where(spread > 0, spread, float(np.median(positive)) if positive.size else 1.0)
    total = np.zeros(x.shape[0])
    for j in range(x.shape[1]):
        column = sorted_reference[:, j]
        below = np.searchsorted(column, x[:, j], side="right")  # reference values <= x
        above = n - np.searchsorted(column, x[:, j], side="left")  # reference values >= x
        p = np.minimum(1.0, 2.0 * (1.0 + np.minimum(below, above)) / (n + 1.0))
        outside = np.maximum(column[0] - x[:, j], x[:, j] - column[-1])
        total += -np.log(p) + np.maximum(outside, 0.0) / spread[j]
    return total


def _margin(centre_distance: np.ndarray) -> np.ndarray:
    """Nearest over second-nearest centre distance: 1 on the boundary, 0 on a centre."""
    if centre_distance.shape[1] < 2:
        return np.zeros(centre_distance.shape[0])
    two = np.partition(centre_distance, 1, axis=1)[:, :2]
    return two[:, 0] / np.maximum(two[:, 1], 1e-12)
