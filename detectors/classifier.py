"""The live model as a record detector: every record classified, attacks named, new kinds flagged.

The model itself (a meta-learner adapted to the labelled support set, :mod:`meta.live`) lives
outside ``detectors`` — this package never imports TensorFlow — and reaches the detector
through a :class:`~detectors.base.ModelHandle`. The pipeline pins one model version per
batch, so a hot swap never splits a batch between two versions.

For each record the model gives a predicted class with its confidence, a novelty score (how
far the record is from every labelled record) and that score's conformal p-value against the
predicted class's calibration records. The detector turns that into two kinds of finding:

* ``novel``: the p-value is at most ``alpha``, the configured false-alarm rate on records like
  the labelled ones — a kind of record nobody has labelled yet;
* ``attack``: otherwise, when the predicted class is not the benign class.

Explanations name the nearest labelled records (where they came from, their labels) and the
features that most separate the record from the nearest labelled record of its predicted class,
in raw units, ranked by how far apart the two values sit in the reference distribution.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import Field

from detectors.base import (
    DetectorConfig,
    DetectorContext,
    FeatureBatch,
    ModelHandle,
    Verdict,
    params_repr,
    require_schema,
)

__all__ = ["AlertModelLike", "ClassifierConfig", "ClassifierDetector"]

logger = logging.getLogger(__name__)

KIND_ATTACK = "attack"
KIND_NOVEL = "novel"


class ClassificationLike(Protocol):
    predicted: np.ndarray
    confidence: np.ndarray
    novelty: np.ndarray
    novelty_p: np.ndarray
    nearest: np.ndarray

    def novel(self, alpha: float) -> np.ndarray: ...


class SupportLike(Protocol):
    y: np.ndarray
    origin: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray


class AlertModelLike(Protocol):
    """What the detector needs of the live model (``meta.live.AlertModel`` honours it)."""

    version: str
    benign_class: str
    classes: tuple[str, ...]
    support: SupportLike

    def embed(self, x: np.ndarray) -> np.ndarray: ...

    def classify(self, x: np.ndarray, embeddings: np.ndarray | None = None) -> Any: ...

    def neighbours(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class ClassifierConfig(DetectorConfig):
    """``detectors:`` entry of ``type: classifier``."""

    type: Literal["classifier"] = "classifier"
    alpha: float | None = Field(default=None, gt=0, lt=1)  # None: the model's configured rate
    neighbours: int = Field(default=3, gt=0, le=50)
    top_features: int = Field(default=3, gt=0, le=20)


class ClassifierDetector:
    """Names what each record is with the live model, and flags the kinds it has not seen.

    Parameters
    ----------
    name
        Configured id (incidents, metric labels).
    alpha
        False-alarm rate of ``novel`` findings on records like the labelled ones, in (0, 1).
    neighbours
        Nearest labelled records named in an explanation.
    top_features
        Separating features named in an explanation.
    model
        Where the current model comes from; without one (or while it holds no model) no
        record is flagged.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.base import FeatureBatch
    >>> class Fixed:  # a stand-in with the live model's interface
    ...     version, benign_class, classes = "1", "normal", ("normal", "scan")
    ...     novel_false_alarm_rate = 0.01
    ...     def current(self): return self
    ...     def embed(self, x): return x
    ...     def classify(self, x, embeddings=None):
    ...         class Out: pass
    ...         out = Out()
    ...         out.predicted = np.where(x[:, 0] > 3, "scan", "normal").astype(object)
    ...         out.confidence = np.ones(len(x)); out.novelty = np.abs(x[:, 0])
    ...         out.novelty_p = np.where(out.novelty > 10, 0.001, 0.5)
    ...         out.nearest = np.zeros(len(x), int)
    ...         out.novel = lambda alpha: out.novelty_p <= alpha
    ...         return out
    >>> batch = FeatureBatch(numeric=[[0.0], [5.0], [20.0]], numeric_names=("bytes",),
    ...                      categorical=np.zeros((3, 0)), categorical_names=(),
    ...                      categorical_vocab=(), encoded=[[0.0], [5.0], [20.0]])
    >>> detector = ClassifierDetector(alpha=0.01, model=Fixed())
    >>> detector.fit(batch)
    >>> verdict = detector.score(batch)
    >>> verdict.flagged.tolist(), verdict.kind.tolist()
    ([False, True, True], ['', 'attack', 'novel'])
    """

    family: ClassVar[Literal["record"]] = "record"
    kind: ClassVar[str] = KIND_ATTACK
    uses_embeddings: ClassVar[bool] = True
    requires_model: ClassVar[bool] = True
    Config: ClassVar[type[ClassifierConfig]] = ClassifierConfig

    def __init__(self, name: str = "classifier", *, alpha: float = 0.01, neighbours: int = 3,
                 top_features: int = 3, model: ModelHandle | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string.")
        if isinstance(alpha, bool) or not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}.")
        for label, value in (("neighbours", neighbours), ("top_features", top_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}.")
        self.name = name
        self.alpha = alpha
        self.neighbours = neighbours
        self.top_features = top_features
        self.model = model
        self._numeric_reference: np.ndarray | None = None  # sorted, per column
        self._schema: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._vocab: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def from_config(cls, config: ClassifierConfig, context: DetectorContext) -> ClassifierDetector:
        if context.model is None:
            raise ValueError(
                f"detector {config.resolved_name()!r} (type classifier) needs the live model; "
                "set `model.enabled: true`."
            )
        alpha = config.alpha if config.alpha is not None else context.model.novel_false_alarm_rate
        detector = cls(config.resolved_name(), alpha=alpha, neighbours=config.neighbours,
                       top_features=config.top_features, model=context.model)
        detector.fit(context.reference)
        return detector

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        return [{"name": "classifier", "alpha": 0.01},
                {"name": "classifier_strict", "alpha": 0.05, "neighbours": 5, "top_features": 2}]

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        return [{"name": ""}, {"alpha": 0.0}, {"alpha": 1.0}, {"alpha": "0.01"},
                {"neighbours": 0}, {"top_features": 2.5}]

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "neighbours": self.neighbours,
                "top_features": self.top_features}

    def __repr__(self) -> str:
        return params_repr(self)

    @property
    def is_fitted(self) -> bool:
        return self._schema is not None

    # --- the record-detector protocol ----------------------------------------------------------

    def fit(self, reference: FeatureBatch) -> None:
        """Remember the reference's feature distributions (explanations rank features by them)."""
        if len(reference) == 0:
            raise ValueError("The reference batch must hold at least one record.")
        self._numeric_reference = np.sort(reference.numeric, axis=0)
        self._schema = (reference.numeric_names, reference.categorical_names)
        self._vocab = reference.categorical_vocab

    def score(self, batch: FeatureBatch) -> Verdict:
        """Classify every record with the model version serving now."""
        self._check(batch)
        n = len(batch)
        model = self._current_model()
        if model is None or n == 0:
            return Verdict(detector=self.name, flagged=np.zeros(n, bool), score=np.zeros(n),
                           p_value=np.ones(n), explanation={"model_version": None},
                           kind=np.full(n, "", dtype=object),
                           predicted_class=np.full(n, None, dtype=object),
                           confidence=np.zeros(n))
        embeddings = batch.embeddings if batch.embeddings is not None else model.embed(
            batch.encoded)
        out = model.classify(batch.encoded, embeddings)
        predicted = np.asarray(out.predicted, dtype=object)
        novel = np.asarray(out.novel(self.alpha), dtype=bool)
        attack = ~novel & (predicted != model.benign_class)
        kind = np.where(novel, KIND_NOVEL, np.where(attack, KIND_ATTACK, "")).astype(object)
        return Verdict(detector=self.name, flagged=novel | attack, score=out.novelty,
                       p_value=out.novelty_p, kind=kind, predicted_class=predicted,
                       confidence=out.confidence,
                       explanation={"model_version": model.version, "alpha": self.alpha})

    def explain(self, batch: FeatureBatch, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Nearest labelled records and separating features, for the records at ``indices``."""
        self._check(batch)
        model = self._current_model()
        rows = np.asarray(indices, dtype=np.int64)
        if model is None or rows.size == 0:
            return [{} for _ in rows]
        sub = batch.take(rows)
        embeddings = sub.embeddings if sub.embeddings is not None else model.embed(sub.encoded)
        predicted = np.asarray(model.classify(sub.encoded, embeddings).predicted, dtype=object)
        index, distance = model.neighbours(embeddings, max(self.neighbours, 10))
        support = model.support
        out = []
        for i in range(rows.size):
            labels = support.y[index[i]]
            same = np.flatnonzero(labels == predicted[i])
            compared = int(index[i, same[0]] if same.size else index[i, 0])
            out.append({
                "predicted_class": str(predicted[i]),
                "nearest": [
                    {"origin": str(support.origin[j]), "label": str(support.y[j]),
                     "distance": round(float(d), 4)}
                    for j, d in zip(index[i, : self.neighbours], distance[i, : self.neighbours],
                                    strict=True)
                ],
                "compared_with": {"origin": str(support.origin[compared]),
                                  "label": str(support.y[compared])},
                "separating_features": self._separating(sub, i, support, compared),
            })
        return out

    # --- helpers -------------------------------------------------------------------------------

    def _current_model(self) -> AlertModelLike | None:
        return None if self.model is None else self.model.current()

    def _check(self, batch: FeatureBatch) -> None:
        require_schema(self.name, self._schema, batch)

    def _separating(self, batch: FeatureBatch, row: int, support: SupportLike,
                    compared: int) -> list[dict[str, Any]]:
        """Features ranked by how far apart the record and the labelled record sit."""
        assert self._numeric_reference is not None
        ranked: list[tuple[float, dict[str, Any]]] = []
        reference = self._numeric_reference
        n_ref = max(reference.shape[0], 1)
        value = batch.numeric[row]
        other = support.numeric[compared] if support.numeric.size else np.full_like(value, np.nan)
        for j, name in enumerate(batch.numeric_names):
            if not np.isfinite(other[j]):
                continue
            quantiles = np.searchsorted(reference[:, j], [value[j], other[j]], side="right")
            gap = abs(float(quantiles[0] - quantiles[1])) / n_ref
            if value[j] != other[j]:
                ranked.append((gap, {"feature": name, "value": float(value[j]),
                                     "nearest": float(other[j])}))
        codes = batch.categorical[row]
        other_codes = support.categorical[compared] if support.categorical.size else codes
        for j, name in enumerate(batch.categorical_names):
            if codes[j] != other_codes[j]:
                ranked.append((1.0, {"feature": name, "value": self._decode(j, codes[j]),
                                     "nearest": self._decode(j, other_codes[j])}))
        ranked.sort(key=lambda item: -item[0])
        return [item for _, item in ranked[: self.top_features]]

    def _decode(self, column: int, code: int) -> str:
        vocab = self._vocab[column]
        return vocab[code] if 0 <= code < len(vocab) else "<unseen>"
