"""A memory-based learner in the spirit of Meta Networks: adapt by writing, predict by reading.

Adaptation writes every support record into an external key–value memory (key = a learned
projection of its embedding, value = its label); a query reads the memory by attention over
keys with a learned temperature, and a class's score is the attention mass on its slots
(computed as a log-sum-exp, so it is exact and stable). Unlike a prototype, the memory keeps
every support record, so multi-modal attack types (one label, several traffic patterns) are
represented by several slots instead of a single averaged point. Everything — encoder,
projection and temperature — is meta-trained episodically.

Example
-------
>>> from meta.encoders import EncoderSpec
>>> learner = MemoryLearner(EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,), embedding_dim=4))
>>> x = np.eye(4, dtype=np.float32)
>>> learner.adapt(x, np.array(["a", "a", "b", "b"])).predict(x[:1]).shape
(1,)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from scipy.special import logsumexp

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

_MASKED = -1e9


class MemoryReader(AdaptedClassifier):
    """Attention read over a support memory; unknown score = distance to the nearest key."""

    def __init__(
        self,
        classes: tuple[Any, ...],
        keys: np.ndarray,
        slot_labels: np.ndarray,
        temperature: float,
        project: Any,
    ) -> None:
        super().__init__(classes)
        self.keys = keys
        self.temperature = temperature
        # Slot indices per class: the read is one log-sum-exp per class over its own slots,
        # so memory stays [n, slots] however many slots a class has (a benign class supported
        # by thousands of reference records included).
        self._class_slots = [np.flatnonzero(slot_labels == c) for c in range(len(classes))]
        self._project = project

    def _distances(self, x: np.ndarray) -> np.ndarray:
        return nearest_squared_distance(self._project(x), self.keys)

    def logits(self, x: np.ndarray) -> np.ndarray:
        scores = -self._distances(x) / self.temperature  # [n, slots]
        logits = np.full((len(scores), len(self._class_slots)), _MASKED)
        for c, slots in enumerate(self._class_slots):
            if len(slots):
                logits[:, c] = logsumexp(scores[:, slots], axis=1)
        return logits

    def unknown_score(self, x: np.ndarray) -> np.ndarray:
        return self._distances(x).min(axis=1)


class MemoryLearner(EpisodicLearner):
    algorithm = "memory"

    def __init__(
        self,
        encoder_spec: EncoderSpec,
        *,
        key_dim: int | None = None,
        initial_temperature: float = 1.0,
        **common: Any,
    ) -> None:
        if key_dim is not None and key_dim < 1:
            raise ValueError(f"key_dim must be positive, got {key_dim}.")
        if initial_temperature <= 0:
            raise ValueError(f"initial_temperature must be positive, got {initial_temperature}.")
        self.key_dim = key_dim
        self.initial_temperature = initial_temperature
        super().__init__(encoder_spec, **common)
        spec = tf.TensorSpec([None, *encoder_spec.input_shape], tf.float32)
        self._project_fn = tf.function(self._project_tensor, input_signature=[spec])

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "key_dim": self.key_dim,
            "initial_temperature": self.initial_temperature,
        }

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        dim = self.encoder.output_dim
        key_dim = self.key_dim or dim
        rng = np.random.default_rng(self.seed + 1)
        # Start near the identity so an untrained memory reads like nearest neighbours.
        projection = np.eye(dim, key_dim, dtype=np.float32) + rng.normal(
            0.0, 0.01, (dim, key_dim)
        ).astype(np.float32)
        return {
            "memory/projection": projection,
            "memory/log_temperature": np.asarray(np.log(self.initial_temperature), np.float32),
        }

    def _project_tensor(self, x: tf.Tensor) -> tf.Tensor:
        embedded = self.encoder.forward(self._encoder_params(), x)
        return tf.matmul(embedded, self._variables["memory/projection"])

    def _project(self, x: np.ndarray) -> np.ndarray:
        projected = self._project_fn(self._inputs(x))
        return projected.numpy().astype(np.float64)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Memory keys of ``x``: the space the reader compares records in."""
        return self._project(x)

    def project_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """:meth:`project` on a tensor, differentiable (gradient attacks go through it)."""
        return self._project_tensor(x)

    def keys_of(self, embeddings: np.ndarray) -> np.ndarray:
        """Memory keys of already computed encoder embeddings (no second forward pass)."""
        return np.asarray(embeddings, np.float32) @ self._variables["memory/projection"].numpy()

    @property
    def temperature(self) -> float:
        """The learned read temperature (on squared distances)."""
        return float(np.exp(self._variables["memory/log_temperature"].numpy()))

    def _batch_loss(
        self,
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        query_x: tf.Tensor,
        query_y: tf.Tensor,
        ways: int,
        training: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        keys, queries = embed_episodes(self._project_tensor, support_x, query_x)
        distances = (
            tf.reduce_sum(tf.square(queries), -1)[..., None]
            - 2.0 * tf.einsum("tmd,tkd->tmk", queries, keys)
            + tf.reduce_sum(tf.square(keys), -1)[:, None, :]
        )
        scores = -distances * tf.exp(-self._variables["memory/log_temperature"])  # [T, M, K]
        slot_mask = tf.where(tf.one_hot(support_y, ways) > 0, 0.0, _MASKED)  # [T, K, N]
        logits = tf.reduce_logsumexp(scores[..., None] + slot_mask[:, None, :, :], axis=2)
        return query_cross_entropy(logits, query_y), query_accuracy(logits, query_y)

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> MemoryReader:
        classes, labels = encode_support_labels(support_y)
        keys = self._project(support_x)
        temperature = float(np.exp(self._variables["memory/log_temperature"].numpy()))
        return MemoryReader(classes, keys, labels, temperature, self._project)
