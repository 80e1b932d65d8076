"""Baselines a few-shot learner has to beat on the same episodes.

- 1-nearest-neighbour and nearest-centroid on whatever features they are given (the raw
  encoded features, or a pretrained embedding computed once for the whole set);
- "pretrain a plain classifier on the training classes, then prototypes / a linear head on its
  features": supervised pretraining is competitive with meta-learning in the literature
  (learn2learn, Dhillon et al.), so a meta-learner that does not beat it has not earned its cost.
- two that fit each episode's support set alone and weigh features by how the support set
  varies: 1-NN under an L1 distance with every feature divided by its range over the support
  set (a feature the support records share is ignored), and extremely randomised trees. On the
  NSL-KDD novel attacks both beat every meta-learner (docs/bench/fewshot.md): a novel attack
  type differs from the others in a few features, and which ones changes from episode to
  episode.

All methods follow the harness protocol ``adapt(support_x, support_y) -> model.predict_proba``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

logger = logging.getLogger(__name__)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (len(a), len(b)), clipped at 0 against round-off."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    d = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class ClassScores:
    """A fitted few-shot classifier whose probabilities are a softmax over per-class scores."""

    score_fn: Callable[[np.ndarray], np.ndarray]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.score_fn(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.score_fn(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.score_fn(x), axis=1)


class NearestNeighbour:
    """Class score = minus the squared distance to the class's nearest support record."""

    name = "1-NN"

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        ways = int(support_y.max()) + 1
        support = support_x.reshape(len(support_x), -1)
        onehot = support_y[None, :] == np.arange(ways)[:, None]  # (ways, n_support)

        def scores(x: np.ndarray) -> np.ndarray:
            d = squared_distances(x, support)  # (n, n_support)
            masked = np.where(onehot[None, :, :], d[:, None, :], np.inf)
            return -masked.min(axis=2)

        return ClassScores(scores)


class NearestCentroid:
    """Class score = minus the squared distance to the class mean (a prototype)."""

    name = "nearest centroid"

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        ways = int(support_y.max()) + 1
        support = support_x.reshape(len(support_x), -1).astype(np.float64)
        onehot = (support_y[:, None] == np.arange(ways)[None, :]).astype(np.float64)
        centroids = (onehot.T @ support) / onehot.sum(0)[:, None]
        return ClassScores(lambda x: -squared_distances(x, centroids))


class LinearHead:
    """Multinomial logistic regression on L2-normalised features, fitted per support set.

    The objective is scikit-learn's (summed cross-entropy + ||W||^2 / 2C, bias unpenalised),
    minimised with L-BFGS directly: fitting 600 tiny support sets through scikit-learn's
    input validation costs minutes, the bare optimisation milliseconds.
    """

    name = "linear head"

    def __init__(self, c: float = 10.0, max_iter: int = 200) -> None:
        if c <= 0:
            raise ValueError("c must be positive.")
        if max_iter < 1:
            raise ValueError("max_iter must be at least 1.")
        self.c = c
        self.max_iter = max_iter

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        features = self._normalise(support_x)
        n, dim = features.shape
        ways = int(support_y.max()) + 1
        onehot = np.eye(ways)[support_y]

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            weights = theta[: dim * ways].reshape(dim, ways)
            bias = theta[dim * ways :]
            logits = features @ weights + bias
            logits -= logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
            log_proba = logits - log_norm
            loss = -(onehot * log_proba).sum() + (weights**2).sum() / (2.0 * self.c)
            residual = np.exp(log_proba) - onehot
            grad_w = features.T @ residual + weights / self.c
            return float(loss), np.concatenate([grad_w.ravel(), residual.sum(axis=0)])

        solution = minimize(
            objective,
            np.zeros(dim * ways + ways),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter},
        )
        weights = solution.x[: dim * ways].reshape(dim, ways)
        bias = solution.x[dim * ways :]
        return ClassScores(lambda x: self._normalise(x) @ weights + bias)


class RangeScaledNearestNeighbour:
    """Class score = minus the L1 distance to the class's nearest support record, each feature
    divided by its range over the support set.

    The range is the episode's own: a feature on which the support records agree carries no
    information about which of them a query is nearest, and is left out, while a feature that
    varies only a little among them still counts in full. Globally z-scored features with an
    L2 distance let a few wide features decide instead.
    """

    name = "1-NN, L1 on support-range-scaled features"

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        ways = int(support_y.max()) + 1
        support = support_x.reshape(len(support_x), -1).astype(np.float64)
        span = support.max(axis=0) - support.min(axis=0)
        varies = span > 1e-12
        scale = 1.0 / span[varies]
        scaled = support[:, varies] * scale
        onehot = support_y[None, :] == np.arange(ways)[:, None]  # (ways, n_support)

        def scores(x: np.ndarray) -> np.ndarray:
            queries = x.reshape(len(x), -1)[:, varies].astype(np.float64) * scale
            out = np.empty((len(queries), ways))
            for start in range(0, len(queries), 256):  # (256, n_support, d) at most at once
                block = queries[start : start + 256]
                distance = np.abs(block[:, None, :] - scaled[None, :, :]).sum(axis=2)
                masked = np.where(onehot[None, :, :], distance[:, None, :], np.inf)
                out[start : start + 256] = -masked.min(axis=2)
            return out

        return ClassScores(scores)


def extra_trees(x: np.ndarray, y: np.ndarray, *, trees: int = 100, seed: int = 0,
                jobs: int = 1) -> Any:
    """Extremely randomised trees (scikit-learn) grown in full on ``x``, ``y``."""
    from sklearn.ensemble import ExtraTreesClassifier

    forest = ExtraTreesClassifier(n_estimators=trees, random_state=seed, n_jobs=jobs)
    return forest.fit(x.reshape(len(x), -1), y)


class ExtraTrees:
    """Extremely randomised trees (scikit-learn) fitted on the support set alone.

    Each split draws, for a random subset of features, a threshold at random within the node's
    range of the feature and keeps the best of them, so the trees weigh features by how the
    support records spread on them, as :class:`RangeScaledNearestNeighbour` does, and average
    over many random feature subsets.
    Scores are log-probabilities (vote shares floored at ``1e-6``), so the base-rate attack
    score is a log-odds like the others'.
    """

    name = "extra trees"

    def __init__(self, trees: int = 100, seed: int = 0) -> None:
        if trees < 1:
            raise ValueError("trees must be at least 1.")
        self.trees = trees
        self.seed = seed

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        ways = int(support_y.max()) + 1
        forest = extra_trees(support_x, support_y, trees=self.trees, seed=self.seed)
        columns = forest.classes_.astype(np.int64)

        def scores(x: np.ndarray) -> np.ndarray:
            proba = np.zeros((len(x), ways))
            proba[:, columns] = forest.predict_proba(x.reshape(len(x), -1))
            return np.log(np.maximum(proba, 1e-6))

        return ClassScores(scores)


# --------------------------------------------------------------------------- pretraining


def tabular_backbone(input_dim: int, widths: tuple[int, ...] = (256, 128, 64)) -> object:
    """MLP with LayerNorm (never batch statistics: the monitor classifies one record at a time)."""
    import keras

    inputs = keras.Input((input_dim,))
    h = inputs
    for i, width in enumerate(widths):
        h = keras.layers.Dense(width)(h)
        if i < len(widths) - 1:
            h = keras.layers.LayerNormalization()(h)
            h = keras.layers.ReLU()(h)
    return keras.Model(inputs, h, name="tabular_backbone")


def conv4_backbone(image_shape: tuple[int, int, int], filters: int = 64) -> object:
    """The Conv-4 of MAML / ProtoNets with LayerNorm in place of BatchNorm; 64-d output at 28x28."""
    import keras

    inputs = keras.Input(image_shape)
    h = inputs
    for _ in range(4):
        h = keras.layers.Conv2D(filters, 3, padding="same")(h)
        h = keras.layers.LayerNormalization(axis=(1, 2, 3))(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.MaxPooling2D(2, padding="same")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, h, name="conv4_backbone")


@dataclass(frozen=True)
class PretrainResult:
    """The embedding of the best epoch, chosen by few-shot accuracy on validation classes."""

    embed: Callable[[np.ndarray], np.ndarray]
    best_epoch: int
    validation_accuracy: tuple[float, ...]


def pretrain_classifier(
    backbone: object,
    train_x: np.ndarray,
    train_y: np.ndarray,
    *,
    epochs: int,
    validate: Callable[[Callable[[np.ndarray], np.ndarray]], float] | None = None,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    balance_classes: bool = True,
) -> PretrainResult:
    """Train backbone + softmax head on the training classes; keep the best-validating epoch.

    ``balance_classes`` weights the loss by inverse class frequency: NSL-KDD is 53% normal and
    33% neptune, and an unweighted classifier learns little about the small attack types whose
    structure is what transfers to new ones.
    """
    import keras

    if epochs < 1:
        raise ValueError("epochs must be at least 1.")
    keras.utils.set_random_seed(seed)
    n_classes = int(train_y.max()) + 1
    model = keras.Sequential([backbone, keras.layers.ReLU(), keras.layers.Dense(n_classes)])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    weights = None
    if balance_classes:
        counts = np.bincount(train_y, minlength=n_classes).astype(np.float64)
        weights = {i: float(len(train_y) / (n_classes * max(c, 1.0))) for i, c in enumerate(counts)}

    def embed(x: np.ndarray) -> np.ndarray:
        # A direct call: Model.predict costs ~0.5 s of setup per call, per episode.
        chunks = [
            np.asarray(backbone(x[i : i + 1024], training=False)) for i in range(0, len(x), 1024)
        ]
        return np.concatenate(chunks).astype(np.float32)

    history: list[float] = []
    best_weights = backbone.get_weights()
    best_epoch = 0
    for epoch in range(1, epochs + 1):
        model.fit(
            train_x,
            train_y,
            batch_size=batch_size,
            epochs=1,
            verbose=0,
            class_weight=weights,
            shuffle=True,
        )
        if validate is None:
            best_weights, best_epoch = backbone.get_weights(), epoch
            continue
        score = validate(embed)
        history.append(score)
        logger.info("  pretrain epoch %d: validation few-shot accuracy %.3f", epoch, score)
        if score >= max(history):
            best_weights, best_epoch = backbone.get_weights(), epoch
    backbone.set_weights(best_weights)
    return PretrainResult(embed, best_epoch, tuple(history))
