"""The alert classifier the live agent serves: a meta-learner adapted to a labelled support set.

The agent does not serve a bare learner. It serves the learner *adapted* to everything it has
been told: the labelled reference records and every analyst label accepted since. That support
set is the model's memory; :class:`AlertModel` answers three questions about each record:

* which enrolled class it looks like (``predicted``, ``confidence``);
* how unlike every labelled record it is (``novelty``), and how surprising that is for the
  predicted class (``novelty_p``, a conformal p-value: the share of that class's calibration
  records that are at least as far from their own nearest labelled record), so "new kind of
  record" has a false-alarm rate a person can set;
* which labelled records are closest (``nearest``), so an analyst sees why.

Memory-style learners (``memory``, and ``knn``, the non-meta-learned nearest-neighbour
baseline on the encoded features) classify by the nearest support record in their key space:
on the NSL-KDD novel-attack stream the meta-learned memory keys beat raw nearest neighbours on
both attack recall and novel-type naming (docs/BENCHMARKS.md), and a nearest-record rule keeps
multi-modal attack types whole. Prototype and gradient learners (``protonet``, ``maml``,
``fomaml``, ``metasgd``) classify with their own adapted head and use the distance to the
nearest class representative as novelty.

Calibration scores are computed without letting a record vote for itself: leave-one-out for
memory-style learners (exact and incremental as labels arrive), K-fold cross-fitting for the
others. Classes with fewer than ``min_class_calibration`` scores use the pooled scores of
every class, so a class enrolled from five analyst labels is judged on a sample big enough to
mean something. Five labels cannot give a tail, but they do give a scale: for memory-style
learners, an attack class whose labelled records lie further apart than the pooled scores'
typical gap is judged on the pooled scores stretched by that ratio (its *spread*). Without it,
of the later records predicted as an NSL-KDD attack type learnt from five labels, one in
fourteen was reported ``novel`` instead of named (docs/bench/fewshot.md). The stretch can
never silence an alarm: a record predicted as an attack class raises one whatever its
novelty. The benign class is never stretched.

A reference class with fewer than ``min_reference_records_to_name`` records (a rare label the
reference file happens to hold once or twice) still raises alarms, but it names nothing: a
record predicted as it is ``unnamed`` and reported as novel, nearest that class. One record
says little about its type, and whatever the embedding places far from every other class
lands nearest it: on the KDDTest+ stream such classes named 629 records over two training
seeds, 4 of them right (the one `spy` record named 285 processtable attacks). A label from
an analyst lifts the rule for its class: it is evidence about this stream, and naming a new
type from one label is what the analyst loop is for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MEMORY_STYLE = ("memory", "knn")
LIVE_ALGORITHMS = ("memory", "knn", "protonet", "maml", "fomaml", "metasgd")
_CHUNK = 2048  # rows of the query x support distance matrix computed at once
SPREAD_MIN_RECORDS = 3  # records a small class needs before its own spread is measured
NAME_MIN_REFERENCE_RECORDS = 3  # reference records a class needs before it names records


@dataclass(frozen=True)
class SupportSet:
    """Labelled records the model is adapted to, with where each came from.

    ``x`` is the encoded model input; ``numeric``/``categorical`` the same records in raw units
    (explanations speak in them); ``origin`` names each record's provenance, such as
    ``"reference:812"`` or ``"label:45"``, so an explanation can point at it.
    """

    x: np.ndarray
    y: np.ndarray
    origin: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray

    def __post_init__(self) -> None:
        x = np.ascontiguousarray(self.x, dtype=np.float32)
        n = x.shape[0]
        y = np.asarray(self.y).astype(str)
        origin = np.asarray(self.origin).astype(str)
        numeric = _rows(np.asarray(self.numeric, dtype=np.float64), n)
        categorical = _rows(np.asarray(self.categorical, dtype=np.int32), n)
        if x.ndim != 2 or y.shape != (n,) or origin.shape != (n,):
            raise ValueError(
                f"a support set needs x [n, d] with one label and one origin per row, got x "
                f"{x.shape}, y {y.shape}, origin {origin.shape}."
            )
        for name, value in (("x", x), ("y", y), ("origin", origin), ("numeric", numeric),
                            ("categorical", categorical)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.y.tolist())))

    def take(self, index: np.ndarray | Sequence[int]) -> SupportSet:
        index = np.asarray(index)
        return SupportSet(self.x[index], self.y[index], self.origin[index],
                          self.numeric[index], self.categorical[index])

    def extend(self, other: SupportSet) -> SupportSet:
        """This support set followed by ``other``'s records."""
        if other.x.shape[1] != self.x.shape[1]:
            raise ValueError(
                f"cannot extend a support set of width {self.x.shape[1]} with records of "
                f"width {other.x.shape[1]}."
            )
        return SupportSet(
            np.concatenate([self.x, other.x]), np.concatenate([self.y, other.y]),
            np.concatenate([self.origin, other.origin]),
            np.concatenate([self.numeric, other.numeric]),
            np.concatenate([self.categorical, other.categorical]),
        )

    def counts(self) -> dict[str, int]:
        labels, counts = np.unique(self.y, return_counts=True)
        return {str(label): int(count) for label, count in zip(labels, counts, strict=True)}


@dataclass(frozen=True)
class Classification:
    """The model's answer for a batch, one entry per record."""

    predicted: np.ndarray  # object [n]: class name
    confidence: np.ndarray  # float [n]: probability of the predicted class
    novelty: np.ndarray  # float [n]: distance to the nearest labelled record / class centre
    novelty_p: np.ndarray  # float [n]: conformal p-value of novelty for the predicted class
    nearest: np.ndarray  # int [n]: support index of the nearest labelled record
    nearest_distance: np.ndarray  # float [n]
    # bool [n]: predicted as a reference class too thin to name a record (AlertModel).
    unnamed: np.ndarray
    probabilities: np.ndarray | None = None  # float [n, C], columns AlertModel.probability_classes

    def novel(self, alpha: float) -> np.ndarray:
        """Records to report as a novel kind: calibrated novelty at level ``alpha``, or a
        predicted class that may not name them."""
        return (self.novelty_p <= alpha) | self.unnamed


@dataclass(frozen=True)
class NoveltyCalibration:
    """Per-class calibration scores for the open-set p-value.

    ``spread`` holds, for classes judged on the pooled scores, the factor (> 1) those scores
    are stretched by: how much further apart the class's own labelled records lie than the
    pooled scores' median (see :func:`_class_spread`).
    """

    scores: dict[str, np.ndarray]  # sorted, per class
    pooled: np.ndarray  # sorted, every class together
    min_class_records: int
    spread: dict[str, float] = field(default_factory=dict)

    def judged_on_own(self, label: str) -> bool:
        own = self.scores.get(label)
        return own is not None and own.size >= self.min_class_records

    def reference_scores(self, label: str) -> np.ndarray:
        if self.judged_on_own(label):
            return self.scores[label]
        return self.pooled * self.spread.get(label, 1.0)

    def p_values(self, predicted: np.ndarray, novelty: np.ndarray) -> np.ndarray:
        """``(1 + #{calibration scores >= s}) / (n + 1)`` against the predicted class's scores."""
        p = np.ones(len(novelty), dtype=np.float64)
        predicted = np.asarray(predicted).astype(str)
        for label in np.unique(predicted):
            rows = predicted == label
            if self.judged_on_own(str(label)):
                reference, scaled = self.scores[str(label)], novelty[rows]
            else:  # stretching the pooled scores is shrinking the novelty: no copy per batch
                reference = self.pooled
                scaled = novelty[rows] / self.spread.get(str(label), 1.0)
            if reference.size == 0:
                continue
            at_least = reference.size - np.searchsorted(reference, scaled, side="left")
            p[rows] = (1.0 + at_least) / (reference.size + 1.0)
        return p

    def thresholds(self, alpha: float) -> dict[str, float]:
        """The novelty above which each class's records are flagged at level ``alpha``."""
        out: dict[str, float] = {}
        for label in [*self.scores, "*"]:
            reference = self.pooled if label == "*" else self.reference_scores(label)
            if reference.size == 0:
                continue
            rank = int(np.ceil((reference.size + 1) * (1.0 - alpha)))
            out[label] = float(reference[min(rank, reference.size) - 1])
        return out


class AlertModel:
    """A learner adapted to a support set, with calibrated novelty; what the pipeline serves.

    Parameters
    ----------
    algorithm
        One of :data:`LIVE_ALGORITHMS`; ``knn`` needs no learner.
    learner
        The meta-trained learner (``None`` for ``knn``).
    support
        The labelled records the model is adapted to.
    benign_class
        The class that raises no alert (e.g. ``normal``).
    min_class_calibration
        Calibration scores a class needs before it is judged on its own scores; a class with
        fewer than ``1/alpha - 1`` scores could never reach a p-value of ``alpha`` on them, so
        keep it at least that (100 for a 1% false-alarm rate).
    folds
        Cross-fitting folds for learners without an exact leave-one-out score.
    min_reference_records_to_name
        Records a class of ``support`` needs to name the records predicted as it; below that
        they are ``unnamed`` (reported novel) until an analyst label of the class is enrolled.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(6, 1, (40, 3))])
    >>> y = np.array(["normal"] * 200 + ["scan"] * 40)
    >>> support = SupportSet(x, y, [f"reference:{i}" for i in range(240)], x, np.zeros((240, 0)))
    >>> model = AlertModel.build("knn", None, support, benign_class="normal")
    >>> out = model.classify(np.array([[0.1, 0.0, -0.2], [6.2, 5.8, 6.1], [30.0, 30.0, 30.0]]))
    >>> out.predicted.tolist(), [bool(p <= 0.05) for p in out.novelty_p]
    (['normal', 'scan', 'scan'], [False, False, True])
    """

    def __init__(self, algorithm: str, learner: Any, support: SupportSet, *, benign_class: str,
                 keys: np.ndarray, calibration: NoveltyCalibration, adapted: Any = None,
                 loo_novelty: np.ndarray | None = None, temperature: float = 1.0,
                 unnamed_classes: frozenset[str] = frozenset()) -> None:
        self.algorithm = algorithm
        self.learner = learner
        self.support = support
        self.benign_class = benign_class
        self.classes: tuple[str, ...] = support.classes
        self.calibration = calibration
        self.unnamed_classes = unnamed_classes
        self.version = ""
        self._keys = keys
        self._adapted = adapted
        self._loo_novelty = loo_novelty
        self._spacing: np.ndarray | None = None
        self._temperature = temperature
        # Keys grouped by class, so the nearest record of every class is one reduceat over
        # contiguous columns (no gathered copy of the distance matrix per batch).
        order = np.argsort(self.support.y, kind="stable")
        labels = self.support.y[order]
        self._class_order = order
        self._class_position = np.empty_like(order)
        self._class_position[order] = np.arange(order.size)
        self._grouped_keys = np.ascontiguousarray(keys[order])
        self._grouped_search = _search_matrix(self._grouped_keys)
        self._class_starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        self._class_names = labels[self._class_starts]
        # Column order of Classification.probabilities.
        self.probability_classes: tuple[str, ...] = tuple(
            str(c) for c in (self._class_names if adapted is None else adapted.classes))
        self.evaluations: dict[str, Any] = {}  # canary figures, cached by the caller

    # --- construction --------------------------------------------------------------------

    @classmethod
    def build(cls, algorithm: str, learner: Any, support: SupportSet, *, benign_class: str,
              min_class_calibration: int = 100, folds: int = 5, seed: int = 0,
              min_reference_records_to_name: int = NAME_MIN_REFERENCE_RECORDS) -> AlertModel:
        """Adapt ``learner`` to ``support`` and calibrate novelty without self-votes."""
        _check_algorithm(algorithm, learner)
        if len(support.classes) < 2:
            raise ValueError(
                f"the support set needs at least two classes to classify, got {support.classes}."
            )
        if benign_class not in support.classes:
            raise ValueError(
                f"the benign class {benign_class!r} has no labelled record in the support set "
                f"(classes: {', '.join(support.classes)})."
            )
        unnamed = frozenset(label for label, n in support.counts().items()
                            if n < min_reference_records_to_name and label != benign_class)
        keys = _representation(algorithm, learner, support.x)
        if algorithm in MEMORY_STYLE:
            loo = _leave_one_out_distance(keys)
            calibration = _calibration_from(support.y, loo, min_class_calibration,
                                            keys=keys, benign_class=benign_class)
            return cls(algorithm, learner, support, benign_class=benign_class, keys=keys,
                       calibration=calibration, loo_novelty=loo,
                       temperature=_temperature(algorithm, learner, loo),
                       unnamed_classes=unnamed)
        adapted = learner.adapt(support.x, support.y)
        scores = _cross_fitted_novelty(learner, support, folds=folds, seed=seed)
        calibration = _calibration_from(support.y, scores, min_class_calibration)
        return cls(algorithm, learner, support, benign_class=benign_class, keys=keys,
                   calibration=calibration, adapted=adapted, unnamed_classes=unnamed)

    def with_records(self, extra: SupportSet, *, min_class_calibration: int | None = None
                     ) -> AlertModel:
        """A new model whose support also holds ``extra`` (this model is left unchanged).

        Memory-style learners update their leave-one-out scores incrementally (only the new
        records and the old records whose nearest neighbour is now a new one change), so
        enrolling a few labels costs a few distance rows, not a full rebuild. The others adapt
        once on the new support and keep the calibration they were built with.
        """
        minimum = min_class_calibration or self.calibration.min_class_records
        support = self.support.extend(extra)
        # The records enrolled here are analyst labels: their classes may name records.
        unnamed = self.unnamed_classes - set(extra.y.astype(str).tolist())
        if self.algorithm not in MEMORY_STYLE or self._loo_novelty is None:
            # Prototype and gradient learners adapt again on the whole support set; the
            # calibration scores, cross-fitted on the reference when the first version was
            # built, are kept: a few labels cannot estimate a class's spread anyway, so a
            # class enrolled from labels is judged on the pooled scores.
            adapted = self.learner.adapt(support.x, support.y)
            # The representation is the meta-trained encoder's, which adapting leaves alone:
            # only the new records need embedding.
            new_keys = _representation(self.algorithm, self.learner, extra.x)
            keys = np.concatenate([self._keys, new_keys])
            calibration = NoveltyCalibration(scores=self.calibration.scores,
                                             pooled=self.calibration.pooled,
                                             min_class_records=minimum)
            model = AlertModel(self.algorithm, self.learner, support,
                               benign_class=self.benign_class, keys=keys,
                               calibration=calibration, adapted=adapted,
                               temperature=self._temperature, unnamed_classes=unnamed)
            if self._spacing is not None:
                model._spacing = _extended_spacing(self._keys, self._spacing, new_keys)
            return model
        new_keys = _representation(self.algorithm, self.learner, extra.x)
        keys = np.concatenate([self._keys, new_keys])
        loo = _extended_spacing(self._keys, self._loo_novelty, new_keys)
        calibration = _calibration_from(support.y, loo, minimum, keys=keys,
                                        benign_class=self.benign_class)
        return AlertModel(self.algorithm, self.learner, support, benign_class=self.benign_class,
                          keys=keys, calibration=calibration, loo_novelty=loo,
                          temperature=self._temperature, unnamed_classes=unnamed)

    # --- serving -------------------------------------------------------------------------

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The representation neighbours are searched in (shared with other detectors)."""
        return _representation(self.algorithm, self.learner, x, adapted=self._adapted)

    def classify(self, x: np.ndarray, embeddings: np.ndarray | None = None, *,
                 exclude: np.ndarray | None = None) -> Classification:
        """Predicted class, confidence and calibrated novelty of every row of ``x``.

        ``embeddings`` (from :meth:`embed`) saves recomputing them; ``exclude`` names, per row,
        one support record to ignore (``-1`` for none), for leave-one-out checks of records
        that are themselves in the support set.
        """
        keys = self.embed(x) if embeddings is None else np.asarray(embeddings, np.float32)
        n = keys.shape[0]
        nearest = np.zeros(n, dtype=np.int64)
        nearest_distance = np.zeros(n, dtype=np.float64)
        per_class = np.zeros((n, len(self._class_names)), dtype=np.float64)
        for start in range(0, n, _CHUNK):
            rows = slice(start, start + _CHUNK)
            # Closeness a.b - |b|^2/2: the larger, the nearer (|a - b|^2 = |a|^2 - 2 closeness,
            # and |a|^2 is the same along a row), in one product with no pass over the matrix
            # to form distances: those passes cost more than the product itself.
            closeness = _closeness(keys[rows], self._grouped_search)
            if exclude is not None:
                own = np.asarray(exclude[rows])
                hit = own >= 0
                closeness[np.flatnonzero(hit), self._class_position[own[hit]]] = -np.inf
            grouped = closeness.argmax(axis=1)
            nearest[rows] = self._class_order[grouped]
            nearest_distance[rows] = _exact_distance(keys[rows], self._grouped_keys[grouped])
            best = np.maximum.reduceat(closeness, self._class_starts, axis=1).astype(np.float64)
            squared_norm = np.einsum("ij,ij->i", keys[rows], keys[rows], dtype=np.float64)
            per_class[rows] = np.maximum(squared_norm[:, None] - 2.0 * best, 0.0)
        per_class = np.sqrt(per_class)
        if self.algorithm in MEMORY_STYLE:
            predicted = self.support.y[nearest].astype(object)
            novelty = nearest_distance
            # The memory learner's read is a softmax over squared distances with its learned
            # temperature; the knn baseline uses plain distances over a typical neighbour gap.
            gap = per_class**2 if self.algorithm == "memory" else per_class
            logits = -gap / self._temperature
            logits -= logits.max(axis=1, keepdims=True)
            weights = np.exp(logits)
            proba = weights / weights.sum(axis=1, keepdims=True)
            confidence = proba.max(axis=1)
        else:
            logits, unknown = self._adapted.scores(x)  # one forward pass for both
            logits = np.asarray(logits, np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            proba = np.exp(logits)
            proba /= proba.sum(axis=1, keepdims=True)
            classes = np.asarray(self._adapted.classes, dtype=object)
            predicted = classes[proba.argmax(axis=1)]
            confidence = proba.max(axis=1)
            novelty = np.sqrt(np.maximum(np.asarray(unknown, np.float64), 0.0))
        novelty_p = self.calibration.p_values(predicted, novelty)
        unnamed = (np.isin(predicted.astype(str), sorted(self.unnamed_classes))
                   if self.unnamed_classes else np.zeros(n, dtype=bool))
        return Classification(predicted=predicted, confidence=confidence, novelty=novelty,
                              novelty_p=novelty_p, nearest=nearest,
                              nearest_distance=nearest_distance, unnamed=unnamed,
                              probabilities=proba)

    # --- what detectors of adversarial inputs and attacks look at -------------------------

    def layers(self, x: np.ndarray) -> list[np.ndarray]:
        """Every encoder block's output (``[n, width]``), then :meth:`embed`'s representation.

        An input crafted to move the last layer where a class lives usually leaves earlier
        layers looking unlike that class; detectors compare records layer by layer.
        """
        x = np.asarray(x, dtype=np.float32)
        if self.algorithm == "knn":
            return [np.ascontiguousarray(x)]
        outputs = [np.asarray(layer, np.float32) for layer in self.learner.layers(x)]
        if self.algorithm == "memory":
            outputs.append(np.asarray(self.learner.keys_of(outputs[-1]), np.float32))
        return outputs

    def class_probabilities(self, x: np.ndarray) -> np.ndarray:
        """``[n, C]`` class probabilities, columns in :attr:`probability_classes` order.

        Learners with an adapted head answer from the head alone (feature squeezing asks
        three times per batch: no novelty or nearest-record search is needed for that);
        memory-style learners read the support set either way.
        """
        if self._adapted is not None:
            return np.asarray(self._adapted.predict_proba(np.asarray(x, np.float32)),
                              np.float64)
        out = self.classify(x)
        assert out.probabilities is not None
        return out.probabilities

    def logits_function(self) -> Callable[[Any], Any]:
        """A TensorFlow function from encoded records to class logits, for gradient attacks.

        Columns follow :attr:`probability_classes`. Prototype learners score a class by the
        negative squared distance to its prototype, as they classify; memory-style learners by
        the soft-minimum (log-sum-exp) of the negative squared distances to the class's support
        keys at a temperature sharp enough to pick the nearest one, the differentiable form of
        their nearest-record rule. Gradient learners adapt their head per support set and
        expose no single differentiable path here.
        """
        import tensorflow as tf

        if self.algorithm not in ("protonet", *MEMORY_STYLE):
            raise ValueError(f"gradient attacks target embedding learners (protonet, memory, "
                             f"knn), not {self.algorithm}.")
        if self.algorithm == "protonet":
            centres = tf.constant(np.asarray(self._adapted.prototypes, np.float32))

            def logits(x: tf.Tensor) -> tf.Tensor:
                embedded = self.learner.encoder.forward(self.learner.encoder_params(), x)
                return -_tf_squared_distances(embedded, centres)

            return logits
        keys = tf.constant(self._grouped_keys.astype(np.float32))
        starts = self._class_starts
        bounds = list(zip(starts, [*starts[1:], keys.shape[0]], strict=True))
        # Sharp enough that the soft minimum picks the nearest record, as classify does: a
        # tenth of the typical squared gap between neighbouring support records.
        spacing = np.asarray(self.neighbour_spacing, np.float64)
        temperature = max(float(np.median(spacing[spacing > 0] ** 2)) / 10.0
                          if (spacing > 0).any() else 1.0, 1e-12)

        def memory_logits(x: tf.Tensor) -> tf.Tensor:
            if self.algorithm == "knn":
                represented = tf.reshape(tf.cast(x, tf.float32), [-1, keys.shape[1]])
            else:
                represented = self.learner.project_tensor(x)
            scores = -_tf_squared_distances(represented, keys) / temperature
            return tf.stack([tf.reduce_logsumexp(scores[:, a:b], axis=1) for a, b in bounds],
                            axis=1)

        return memory_logits

    def neighbours(self, embeddings: np.ndarray, k: int, *,
                   exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Support indices ``[n, k]`` of the ``k`` nearest labelled records, and distances."""
        keys = np.asarray(embeddings, np.float32)
        k = max(1, min(k, len(self.support)))
        index = np.zeros((keys.shape[0], k), dtype=np.int64)
        distance_out = np.zeros((keys.shape[0], k), dtype=np.float64)
        for start in range(0, keys.shape[0], _CHUNK):
            rows = slice(start, start + _CHUNK)
            distance = _distances(keys[rows], self._keys)
            if exclude is not None:
                own = np.asarray(exclude[rows])
                hit = own >= 0
                distance[np.flatnonzero(hit), own[hit]] = np.inf
            part = np.argpartition(distance, k - 1, axis=1)[:, :k]
            chosen = np.take_along_axis(distance, part, axis=1)
            order = np.argsort(chosen, axis=1, kind="stable")
            index[rows] = np.take_along_axis(part, order, axis=1)
            distance_out[rows] = np.take_along_axis(chosen, order, axis=1)
        return index, distance_out

    @property
    def support_keys(self) -> np.ndarray:
        return self._keys

    @property
    def neighbour_spacing(self) -> np.ndarray:
        """Each support record's distance to its nearest other one, in the key space."""
        if self._loo_novelty is not None:  # memory-style: the calibration scores already are
            return self._loo_novelty
        if self._spacing is None:
            self._spacing = _leave_one_out_distance(self._keys)
        return self._spacing

    def describe(self) -> dict[str, Any]:
        """What the registry and ``models show`` report about this model."""
        return {
            "algorithm": self.algorithm,
            "benign_class": self.benign_class,
            "classes": list(self.classes),
            "support_records": len(self.support),
            "support_by_class": self.support.counts(),
            "calibration_records": int(self.calibration.pooled.size),
            "unnamed_classes": sorted(self.unnamed_classes),
        }


def support_digest(support: SupportSet) -> str:
    """sha256 of a support set's labels and provenance (what identifies it exactly).

    Feature values are computed (by the encoder, in floating point) and may differ in the last
    bit between machines, so they are left out; the records they come from are named by
    ``origin``, whose content the caller hashes separately.
    """
    digest = hashlib.sha256()
    for label, origin in zip(support.y.tolist(), support.origin.tolist(), strict=True):
        digest.update(f"{origin}\t{label}\n".encode())
    return digest.hexdigest()


def version_digest(parts: dict[str, Any]) -> str:
    """sha256 of a version's defining inputs, as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


# --- helpers ------------------------------------------------------------------------------


def _rows(array: np.ndarray, n: int) -> np.ndarray:
    """``array`` as ``n`` rows (a 2-D array is kept as it is, even with no rows)."""
    return array if array.ndim == 2 else array.reshape(n, -1)


def _check_algorithm(algorithm: str, learner: Any) -> None:
    if algorithm not in LIVE_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {list(LIVE_ALGORITHMS)}, got {algorithm!r}.")
    if algorithm == "knn" and learner is not None:
        raise ValueError("the knn model uses the encoded features directly; pass learner=None.")
    if algorithm != "knn" and learner is None:
        raise ValueError(f"the {algorithm} model needs its meta-trained learner.")
    if learner is not None and getattr(learner, "algorithm", algorithm) != algorithm:
        raise ValueError(
            f"the learner is a {learner.algorithm} learner, not {algorithm}; load the model "
            "that was trained for this algorithm."
        )


def _representation(algorithm: str, learner: Any, x: np.ndarray, *, adapted: Any = None
                    ) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if algorithm == "knn":
        return np.ascontiguousarray(x)
    if algorithm == "memory":
        return np.asarray(learner.project(x), dtype=np.float32)
    return np.asarray(learner.embed(x), dtype=np.float32)


def _tf_squared_distances(a: Any, b: Any) -> Any:
    import tensorflow as tf

    return (tf.reduce_sum(tf.square(a), axis=1)[:, None] - 2.0 * tf.matmul(a, b, transpose_b=True)
            + tf.reduce_sum(tf.square(b), axis=1)[None, :])


def _search_matrix(keys: np.ndarray) -> np.ndarray:
    """``[d + 1, m]``: the keys' columns with ``-|key|^2 / 2`` below, for `_closeness`."""
    keys = np.asarray(keys, np.float32)
    half_norms = -0.5 * np.einsum("ij,ij->i", keys, keys, dtype=np.float64)
    return np.ascontiguousarray(np.vstack([keys.T, half_norms.astype(np.float32)[None, :]]))


def _closeness(a: np.ndarray, search: np.ndarray) -> np.ndarray:
    """``a . b - |b|^2 / 2`` for every row of ``a`` and key ``b`` of `_search_matrix` (float32)."""
    a = np.asarray(a, np.float32)
    augmented = np.empty((a.shape[0], a.shape[1] + 1), dtype=np.float32)
    augmented[:, :-1] = a
    augmented[:, -1] = 1.0
    return augmented @ search


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[len(a), len(b)]`` (float32, clipped at 0)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    squared = a @ b.T
    squared *= -2.0
    squared += (a * a).sum(axis=1)[:, None]
    squared += (b * b).sum(axis=1)[None, :]
    return np.maximum(squared, 0.0, out=squared)


def _exact_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise distance of paired rows, computed directly in float64.

    The matrix form above finds the nearest row fast, but its float32 rounding depends on the
    shape of the product (how the batch was cut) and is largest for near-zero distances; the
    distance that becomes a novelty score is recomputed here, so a record's score does not
    depend on its batch.
    """
    difference = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.sqrt((difference * difference).sum(axis=1))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[len(a), len(b)]``."""
    return np.sqrt(_squared_distances(a, b)).astype(np.float64)


def _leave_one_out_distance(keys: np.ndarray) -> np.ndarray:
    """Each row's distance to its nearest other row."""
    out = np.empty(keys.shape[0], dtype=np.float64)
    for start in range(0, keys.shape[0], _CHUNK):
        stop = min(start + _CHUNK, keys.shape[0])
        squared = _squared_distances(keys[start:stop], keys)
        squared[np.arange(stop - start), np.arange(start, stop)] = np.inf
        out[start:stop] = _exact_distance(keys[start:stop], keys[squared.argmin(axis=1)])
    return out


def _extended_spacing(keys: np.ndarray, spacing: np.ndarray, new_keys: np.ndarray
                      ) -> np.ndarray:
    """Leave-one-out distances after appending ``new_keys``, updating only what changes."""
    if len(new_keys) == 0:
        return spacing
    closer = _exact_distance(keys, new_keys[_squared_distances(keys, new_keys).argmin(axis=1)])
    everything = np.concatenate([keys, new_keys])
    rows = _squared_distances(new_keys, everything)
    rows[np.arange(len(new_keys)), len(keys) + np.arange(len(new_keys))] = np.inf
    own = _exact_distance(new_keys, everything[rows.argmin(axis=1)])
    return np.concatenate([np.minimum(spacing, closer), own])


def _calibration_from(labels: np.ndarray, scores: np.ndarray, minimum: int, *,
                      keys: np.ndarray | None = None, benign_class: str = ""
                      ) -> NoveltyCalibration:
    """Per-class and pooled calibration scores; with ``keys`` (memory-style learners, whose
    scores are leave-one-out distances between those keys) also the small classes' spread."""
    names, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    finite = np.isfinite(scores)
    per_class = {str(name): np.sort(scores[(index == i) & finite])
                 for i, name in enumerate(names)}
    pooled = np.sort(scores[finite])
    spread = {} if keys is None else _class_spread(
        names, index, counts, keys, pooled, minimum, benign_class)
    return NoveltyCalibration(scores=per_class, pooled=pooled, min_class_records=minimum,
                              spread=spread)


def _class_spread(names: np.ndarray, index: np.ndarray, counts: np.ndarray, keys: np.ndarray,
                  pooled: np.ndarray, minimum: int, benign_class: str) -> dict[str, float]:
    """How much further apart each small attack class's records lie than the pooled scores.

    A memory-style learner's novelty is the distance to the nearest labelled record, and a
    class's later records are that far from its nearest *own* labelled record when they are
    named. With only a few labels (fewer than ``minimum``) that distance is typically larger
    than for the reference's dense classes, which dominate the pooled scores. The spread is
    the median distance from each of the class's records to its nearest classmate over the
    median pooled score, kept only above 1: a compact class is judged as strictly as the pooled
    scores say, never more. A class needs :data:`SPREAD_MIN_RECORDS` records: two give a single
    distance, and on the KDDTest+ stream the two-record reference class ``multihop`` then named
    four more records of other types. The benign class is left out: loosening it would silence
    alarms, where stretching an attack class only moves records from a ``novel`` incident to a
    named one. ``names``, ``index`` and ``counts`` are ``np.unique`` of the labels.
    """
    typical = float(np.median(pooled)) if pooled.size else 0.0
    if typical <= 0.0:
        return {}
    spread: dict[str, float] = {}
    for label in np.flatnonzero((counts >= SPREAD_MIN_RECORDS) & (counts < minimum)):
        if str(names[label]) == benign_class:
            continue
        rows = np.flatnonzero(index == label)
        ratio = float(np.median(_leave_one_out_distance(keys[rows]))) / typical
        if ratio > 1.0:
            spread[str(names[label])] = ratio
    return spread


def _temperature(algorithm: str, learner: Any, loo: np.ndarray) -> float:
    """Softmax temperature of the confidence: the memory's learned one, else a typical gap."""
    if algorithm == "memory":
        return float(max(learner.temperature, 1e-12))
    finite = loo[np.isfinite(loo) & (loo > 0)]
    return float(np.median(finite)) if finite.size else 1.0


def _cross_fitted_novelty(learner: Any, support: SupportSet, *, folds: int, seed: int
                          ) -> np.ndarray:
    """Each record's novelty under a model adapted without its fold (NaN where impossible)."""
    scores = np.full(len(support), np.nan)
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(support), dtype=np.int64)
    for label in np.unique(support.y):
        rows = np.flatnonzero(support.y == label)
        assignment[rows] = rng.permutation(len(rows)) % folds
    for fold in range(folds):
        held = assignment == fold
        kept = ~held
        if len(np.unique(support.y[kept])) < 2 or not held.any():
            continue
        adapted = learner.adapt(support.x[kept], support.y[kept])
        unknown = np.asarray(adapted.unknown_score(support.x[held]), dtype=np.float64)
        scores[held] = np.sqrt(np.maximum(unknown, 0.0))
    return scores
