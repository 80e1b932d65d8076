"""Prototypical networks (Snell et al. 2017) with robust prototypes for poisoned labels.

A class is its prototype in a meta-learned embedding and a record belongs to the nearest one
(squared Euclidean distance). Adaptation is a single forward pass, which is why this is the
default learner of a monitor that must adapt within milliseconds of an analyst's labels.

Analyst labels are where mislabelled or poisoned records enter, and one large outlier drags a
mean prototype anywhere; the ``"median"`` (coordinate-wise) and ``"trimmed"`` (mean after
dropping the support records farthest from the median) prototypes resist that. Meta-training
always uses mean prototypes (one-hot einsum over every task at once); the robust estimators
apply at adaptation, where untrusted labels arrive.

Example
-------
>>> from meta.encoders import EncoderSpec
>>> learner = ProtoNet(EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,), embedding_dim=4))
>>> x = np.eye(4, dtype=np.float32)
>>> learner.adapt(x, np.array(["a", "a", "b", "b"])).predict_proba(x).shape
(4, 2)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import tensorflow as tf

from meta.encoders import EncoderSpec
from meta.learners.base import (
    AdaptedClassifier,
    EpisodicLearner,
    embed_episodes,
    encode_support_labels,
    nearest_squared_distance,
    query_accuracy,
    query_cross_entropy,
)

PrototypeKind = Literal["mean", "median", "trimmed"]


def robust_prototypes(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    kind: PrototypeKind,
    trim_fraction: float = 0.2,
) -> np.ndarray:
    """Per-class prototypes ``[n_classes, D]`` from support embeddings and int labels."""
    if kind == "mean":
        onehot = np.eye(n_classes, dtype=np.float64)[labels]
        return (onehot.T @ embeddings) / onehot.sum(axis=0)[:, None]
    prototypes = np.empty((n_classes, embeddings.shape[1]), dtype=np.float64)
    for c in range(n_classes):  # n_classes is the episode's way count, not a record count
        members = embeddings[labels == c]
        median = np.median(members, axis=0)
        if kind == "median" or members.shape[0] < 3:
            prototypes[c] = median
            continue
        drop = max(1, int(round(trim_fraction * members.shape[0])))
        distance = ((members - median) ** 2).sum(axis=1)
        keep = np.argsort(distance, kind="stable")[: members.shape[0] - drop]
        prototypes[c] = members[keep].mean(axis=0)
    return prototypes


class PrototypeClassifier(AdaptedClassifier):
    """Nearest-prototype classifier; unknown score = squared distance to the nearest one."""

    def __init__(
        self,
        classes: tuple[Any, ...],
        prototypes: np.ndarray,
        embed: Any,
    ) -> None:
        super().__init__(classes)
        self.prototypes = prototypes
        self._embed = embed

    def _distances(self, x: np.ndarray) -> np.ndarray:
        return nearest_squared_distance(self._embed(x).astype(np.float64), self.prototypes)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return -self._distances(x)

    def unknown_score(self, x: np.ndarray) -> np.ndarray:
        return self._distances(x).min(axis=1)

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        distances = self._distances(x)
        return -distances, distances.min(axis=1)


class ProtoNet(EpisodicLearner):
    algorithm = "protonet"

    def __init__(
        self,
        encoder_spec: EncoderSpec,
        *,
        prototype: PrototypeKind = "mean",
        trim_fraction: float = 0.2,
        **common: Any,
    ) -> None:
        if prototype not in ("mean", "median", "trimmed"):
            raise ValueError(
                f"prototype must be one of ['mean', 'median', 'trimmed'], got {prototype!r}."
            )
        if not 0.0 < trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must lie in (0, 0.5), got {trim_fraction}.")
        self.prototype = prototype
        self.trim_fraction = trim_fraction
        super().__init__(encoder_spec, **common)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "prototype": self.prototype,
            "trim_fraction": self.trim_fraction,
        }

    def _batch_loss(
        self,
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        query_x: tf.Tensor,
        query_y: tf.Tensor,
        ways: int,
        training: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        support, query = embed_episodes(
            lambda flat: self.encoder.forward(self._encoder_params(), flat), support_x, query_x
        )
        logits = -prototype_distances(support, support_y, query, ways)
        return query_cross_entropy(logits, query_y), query_accuracy(logits, query_y)

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> PrototypeClassifier:
        classes, labels = encode_support_labels(support_y)
        embeddings = self.embed(support_x).astype(np.float64)
        prototypes = robust_prototypes(
            embeddings, labels, len(classes), self.prototype, self.trim_fraction
        )
        return PrototypeClassifier(classes, prototypes, self.embed)


def prototype_distances(
    support: tf.Tensor, support_y: tf.Tensor, query: tf.Tensor, ways: int
) -> tf.Tensor:
    """Squared distances ``[T, M, N]`` from queries to mean prototypes of every task at once."""
    onehot = tf.one_hot(support_y, ways, dtype=support.dtype)
    counts = tf.reduce_sum(onehot, axis=1)[..., None]
    prototypes = tf.einsum("tkn,tkd->tnd", onehot, support) / tf.maximum(counts, 1.0)
    cross = tf.einsum("tmd,tnd->tmn", query, prototypes)
    return (
        tf.reduce_sum(tf.square(query), axis=-1)[..., None]
        - 2.0 * cross
        + tf.reduce_sum(tf.square(prototypes), axis=-1)[:, None, :]
    )
