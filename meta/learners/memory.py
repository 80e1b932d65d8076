"""A memory-based learner in the spirit of Meta Networks: adapt by writing, predict by reading.

Adaptation writes every support record into an external key–value memory (key = a learned
projection of its embedding, value = its label); a query reads the memory by attention over
keys with a learned temperature, and a class's score is the attention mass on its slots
(computed as a log-sum-exp, so it is exact and stable). Unlike a prototype, the memory keeps
every support record, so multi-modal attack types (one label, several traffic patterns) are
represented by several slots instead of a single averaged point. Everything — encoder,
projection and temperature — is meta-trained episodically.

With ``members > 1`` the learner is an ensemble behind one memory: each member has its own
encoder (started from ``seed + i``), projection and temperature and is trained on its own
loss, and the served key is the members' keys side by side, each divided by the square root
of its temperature. A squared distance between such keys is the sum of the members' scaled
distances, so the read is the one nearest-slot search it always was (the live model's search,
novelty and attacks need no change), and for one slot per class it ranks classes exactly as
averaging the members' log-probabilities would. The ensemble is what `docs/bench/fewshot.md`
measured best; a single model's accuracy on unseen attack types depends on its seed.

Example
-------
>>> from meta.encoders import EncoderSpec
>>> learner = MemoryLearner(EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,), embedding_dim=4))
>>> x = np.eye(4, dtype=np.float32)
>>> learner.adapt(x, np.array(["a", "a", "b", "b"])).predict(x[:1]).shape
(1,)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import tensorflow as tf
from scipy.special import logsumexp

from meta.encoders import Encoder, EncoderSpec, MemberEncoders, build_encoder
from meta.episodes import EpisodeSampler
from meta.learners.base import (
    AdaptedClassifier,
    EpisodicLearner,
    TrainHistory,
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
        members: int = 1,
        **common: Any,
    ) -> None:
        if key_dim is not None and key_dim < 1:
            raise ValueError(f"key_dim must be positive, got {key_dim}.")
        if initial_temperature <= 0:
            raise ValueError(f"initial_temperature must be positive, got {initial_temperature}.")
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}.")
        self.key_dim = key_dim
        self.initial_temperature = initial_temperature
        self.members = members
        super().__init__(encoder_spec, **common)
        spec = tf.TensorSpec([None, *encoder_spec.input_shape], tf.float32)
        self._project_fn = tf.function(self._project_tensor, input_signature=[spec])

    def hyperparameters(self) -> dict[str, Any]:
        # ``members`` is written only for an ensemble, so models saved before it existed (one
        # member, no such key) still load with nothing filled in by default.
        return {
            **super().hyperparameters(),
            "key_dim": self.key_dim,
            "initial_temperature": self.initial_temperature,
            **({"members": self.members} if self.members > 1 else {}),
        }

    def _build_encoder(self, spec: EncoderSpec) -> Encoder:
        return build_encoder(spec, self.members)

    @property
    def _member_dim(self) -> int:
        return self.encoder.output_dim // self.members

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        dim = self._member_dim
        key_dim = self.key_dim or dim
        rng = np.random.default_rng(self.seed + 1)
        # Start near the identity so an untrained memory reads like nearest neighbours.
        projections = [np.eye(dim, key_dim, dtype=np.float32) + rng.normal(
            0.0, 0.01, (dim, key_dim)).astype(np.float32) for _ in range(self.members)]
        log_temperature = np.float32(np.log(self.initial_temperature))
        if self.members == 1:
            return {"memory/projection": projections[0],
                    "memory/log_temperature": np.asarray(log_temperature, np.float32)}
        return {"memory/projection": np.stack(projections),
                "memory/log_temperature": np.full(self.members, log_temperature, np.float32)}

    def _keys_tensor(self, embedded: tf.Tensor) -> tf.Tensor:
        """Memory keys of encoder outputs; an ensemble's members side by side, each scaled."""
        if self.members == 1:
            return tf.matmul(embedded, self._variables["memory/projection"])
        per_member = tf.split(embedded, self.members, axis=-1)
        return tf.concat([self._scaled_key(m, part) for m, part in enumerate(per_member)], -1)

    def _scaled_key(self, member: int, embedded: tf.Tensor) -> tf.Tensor:
        """Member ``member``'s key of its own embedding, divided by the root of its temperature."""
        scale = tf.exp(-0.5 * self._variables["memory/log_temperature"][member])
        return tf.matmul(embedded, self._variables["memory/projection"][member]) * scale

    def _project_tensor(self, x: tf.Tensor) -> tf.Tensor:
        return self._keys_tensor(self.encoder.forward(self._encoder_params(), x))

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
        return self._keys_tensor(tf.convert_to_tensor(embeddings, tf.float32)).numpy()

    @property
    def temperature(self) -> float:
        """The read temperature on squared key distances: the learned one, or 1 for an
        ensemble, whose keys already carry each member's temperature."""
        if self.members > 1:
            return 1.0
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
        if self.members > 1 and training:
            return self._members_loss(support_x, support_y, query_x, query_y, ways)
        keys, queries = embed_episodes(self._project_tensor, support_x, query_x)
        scores = -_squared_distances(queries, keys)  # [T, M, K]
        if self.members == 1:
            scores *= tf.exp(-self._variables["memory/log_temperature"])
        logits = _read(scores, _slot_mask(support_y, ways))
        return query_cross_entropy(logits, query_y), query_accuracy(logits, query_y)

    def _members_loss(self, support_x: tf.Tensor, support_y: tf.Tensor, query_x: tf.Tensor,
                      query_y: tf.Tensor, ways: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Each member learns alone from its own share of the meta-batch, as independent
        training from different seeds would: members that saw the same episodes agree more,
        and an ensemble gains only from where its members disagree."""
        tasks = support_x.shape[0]
        if tasks % self.members:
            raise ValueError(f"{tasks} episodes cannot be dealt out evenly to {self.members} "
                             "members; use a meta-batch that divides evenly per replica.")
        share = tasks // self.members
        losses, accuracies = [], []
        for m in range(self.members):
            part = slice(m * share, (m + 1) * share)
            keys, queries = embed_episodes(functools.partial(self._member_keys, m),
                                           support_x[part], query_x[part])
            logits = _read(-_squared_distances(queries, keys), _slot_mask(support_y[part], ways))
            losses.append(query_cross_entropy(logits, query_y[part]))
            accuracies.append(query_accuracy(logits, query_y[part]))
        return tf.add_n(losses) / self.members, tf.add_n(accuracies) / self.members

    def _member_keys(self, member: int, x: tf.Tensor) -> tf.Tensor:
        """Member ``member``'s scaled keys of ``x``, computed by that member alone."""
        encoder = self.encoder
        assert isinstance(encoder, MemberEncoders)
        return self._scaled_key(
            member, encoder.member.forward(encoder.split(self._encoder_params())[member], x))

    def meta_train(self, train: EpisodeSampler, *, episodes: int, meta_batch: int = 16,
                   val: EpisodeSampler | None = None, val_every: int = 320,
                   **options: Any) -> TrainHistory:
        """Meta-train; an ensemble's ``episodes``, ``meta_batch`` and ``val_every`` count per
        member (each meta-step draws ``members * meta_batch`` episodes and deals them out),
        so its history counts every member's episodes."""
        return super().meta_train(train, episodes=episodes * self.members,
                                  meta_batch=meta_batch * self.members, val=val,
                                  val_every=val_every * self.members, **options)

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> MemoryReader:
        classes, labels = encode_support_labels(support_y)
        keys = self._project(support_x)
        return MemoryReader(classes, keys, labels, self.temperature, self._project)


def _squared_distances(queries: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
    """``[T, M, K]`` squared distances between each task's queries and its keys."""
    return (tf.reduce_sum(tf.square(queries), -1)[..., None]
            - 2.0 * tf.einsum("tmd,tkd->tmk", queries, keys)
            + tf.reduce_sum(tf.square(keys), -1)[:, None, :])


def _slot_mask(support_y: tf.Tensor, ways: int) -> tf.Tensor:
    """``[T, K, N]``: 0 where slot k holds class n, a large negative number elsewhere."""
    return tf.where(tf.one_hot(support_y, ways) > 0, 0.0, _MASKED)


def _read(scores: tf.Tensor, slot_mask: tf.Tensor) -> tf.Tensor:
    """Class logits ``[T, M, N]``: the log-sum-exp of each class's slot scores."""
    return tf.reduce_logsumexp(scores[..., None] + slot_mask[:, None, :, :], axis=2)
