"""The contract every meta-learner honours, and the machinery they share.

A meta-learner is trained on many small tasks drawn from known classes (``meta_train``) so that,
given a handful of analyst-labelled records of *new* classes (``adapt``), it classifies further
records of those classes and says when a record belongs to none of them (``Adapted``).

Contract
--------
- ``meta_train(train, episodes=..., ...) -> TrainHistory``: episodic training on an
  :class:`~meta.episodes.EpisodeSampler`; optional validation on held-out classes, early stopping
  on validation accuracy (the best weights are kept) and resumable checkpoints.
- ``adapt(support_x, support_y) -> Adapted``: ``support_y`` may hold any labels; the adapted
  classifier's ``classes`` are the sorted distinct labels, and ``predict_proba`` columns follow
  that order. Adaptation never changes the learner itself.
- ``embed(x) -> [n, D]``: the meta-learned representation (what drift and neighbour-based
  detectors consume).
- ``Adapted.unknown_score(x)``: higher = less like any adapted class; ``calibrate`` turns it into
  ``is_unknown`` at a chosen false-alarm rate (see :mod:`meta.openset`).

Learners hold their weights as named ``tf.Variable``s created under a distribution strategy;
``state_arrays``/``load_state_arrays`` expose them as plain arrays for :mod:`meta.saving`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf

from meta.device import Placement, resolve_device, strategy_for
from meta.encoders import Encoder, EncoderSpec, build_encoder
from meta.episodes import EpisodeBatch, EpisodeSampler
from meta.openset import OpenSetMixin
from meta.optim import Adam

ALGORITHMS = ("protonet", "maml", "fomaml", "metasgd", "memory")


@dataclass(frozen=True)
class TrainProgress:
    """A snapshot handed to the progress callback after every meta-step."""

    step: int
    steps_total: int
    episodes_done: int
    episodes_total: int
    loss: float
    accuracy: float
    val_accuracy: float | None
    best_val_accuracy: float | None
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class TrainHistory:
    """What happened during meta-training; step counts are meta-steps of ``meta_batch`` tasks."""

    algorithm: str
    steps_run: int
    episodes_run: int
    train_loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    val_steps: tuple[int, ...] = ()
    val_loss: tuple[float, ...] = ()
    val_accuracy: tuple[float, ...] = ()
    best_step: int | None = None
    best_val_accuracy: float | None = None
    stopped_early: bool = False
    resumed_from_step: int = 0
    seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Adapted(Protocol):
    classes: tuple[Any, ...]

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def unknown_score(self, x: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class MetaLearner(Protocol):
    algorithm: str

    def meta_train(
        self,
        train: EpisodeSampler,
        *,
        episodes: int,
        meta_batch: int = ...,
        val: EpisodeSampler | None = None,
        val_every: int = ...,
        patience: int = ...,
        checkpoint_dir: Path | None = None,
        progress: Callable[[TrainProgress], None] | None = None,
    ) -> TrainHistory: ...

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> Adapted: ...

    def embed(self, x: np.ndarray) -> np.ndarray: ...


class AdaptedClassifier(OpenSetMixin):
    """Shared ``predict``/``predict_proba`` on top of a subclass's ``logits``."""

    def __init__(self, classes: tuple[Any, ...]) -> None:
        self.classes = classes
        self._calibration = None

    @abstractmethod
    def logits(self, x: np.ndarray) -> np.ndarray:
        ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = self.logits(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes)[np.argmax(self.logits(x), axis=1)]

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, unknown_score)`` together; subclasses override it with one forward pass."""
        return self.logits(x), self.unknown_score(x)


def encode_support_labels(support_y: np.ndarray) -> tuple[tuple[Any, ...], np.ndarray]:
    """Map arbitrary support labels to sorted classes and int32 indices into them."""
    labels, index = np.unique(np.asarray(support_y), return_inverse=True)
    if labels.size < 2:
        raise ValueError("a support set needs at least two distinct classes.")
    classes = tuple(label.item() if isinstance(label, np.generic) else label for label in labels)
    return classes, index.astype(np.int32).ravel()


def nearest_squared_distance(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance from each row of ``x`` to every centre, ``[n, m]``."""
    cross = x @ centres.T
    d2 = (x * x).sum(axis=1, keepdims=True) - 2.0 * cross + (centres * centres).sum(axis=1)
    return np.maximum(d2, 0.0)


class EpisodicLearner(ABC):
    """Weights, optimizer, distribution strategy and compiled steps shared by all learners.

    Subclasses define ``algorithm``, their extra weights (``_extra_arrays``), their
    hyperparameters, the batched episode loss (``_batch_loss``) and ``adapt``.
    """

    algorithm = "base"

    def __init__(
        self,
        encoder_spec: EncoderSpec,
        *,
        seed: int = 0,
        meta_lr: float = 1e-3,
        grad_clip: float = 10.0,
        device: str = "auto",
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        if meta_lr <= 0:
            raise ValueError(f"meta_lr must be positive, got {meta_lr}.")
        if grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive, got {grad_clip}.")
        self.encoder_spec = encoder_spec
        self.encoder: Encoder = self._build_encoder(encoder_spec)
        self.seed = seed
        self.meta_lr = meta_lr
        self.grad_clip = grad_clip
        self.device = device
        self.placement: Placement = resolve_device(device)
        self.strategy = strategy if strategy is not None else strategy_for(self.placement)
        self.seen_classes: tuple[Any, ...] = ()
        self.metrics: dict[str, Any] = {}
        arrays = self._initial_arrays()
        with self.strategy.scope():
            self._variables: dict[str, tf.Variable] = {
                name: tf.Variable(value, name=name.replace("/", "_"), trainable=True)
                for name, value in arrays.items()
            }
            self._optimizer = Adam(list(self._variables.values()), learning_rate=meta_lr)
        self._steps: dict[tuple[str, int], Any] = {}
        input_spec = tf.TensorSpec([None, *encoder_spec.input_shape], tf.float32)
        self._embed_fn = tf.function(self._embed_tensor, input_signature=[input_spec])
        self._layers_fn = tf.function(
            lambda x: self.encoder.forward_layers(self._encoder_params(), x),
            input_signature=[input_spec])

    # -- what subclasses provide -------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "meta_lr": self.meta_lr,
            "grad_clip": self.grad_clip,
            "device": self.device,
        }

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _build_encoder(self, spec: EncoderSpec) -> Encoder:
        return build_encoder(spec)

    @abstractmethod
    def _batch_loss(
        self,
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        query_x: tf.Tensor,
        query_y: tf.Tensor,
        ways: int,
        training: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean query loss and accuracy over a ``[T, ...]`` batch of episodes."""

    @abstractmethod
    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> AdaptedClassifier:
        ...

    # -- shared behaviour --------------------------------------------------------------------
    def _initial_arrays(self) -> dict[str, np.ndarray]:
        encoder_arrays = self.encoder.init_params(self.seed)
        arrays = {
            f"encoder/{name}": value
            for name, value in zip(self.encoder.param_names, encoder_arrays, strict=True)
        }
        arrays.update(self._extra_arrays())
        return arrays

    def _encoder_params(self) -> list[tf.Tensor]:
        return [self._variables[f"encoder/{name}"] for name in self.encoder.param_names]

    def encoder_params(self) -> list[tf.Tensor]:
        """The encoder's weights, for differentiating through it (attacks, detectors)."""
        return self._encoder_params()

    def _embed_tensor(self, x: tf.Tensor) -> tf.Tensor:
        return self.encoder.forward(self._encoder_params(), x)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self._embed_fn(self._inputs(x)).numpy()

    def layers(self, x: np.ndarray) -> list[np.ndarray]:
        """Every encoder block's output, then the embedding (see ``Encoder.forward_layers``)."""
        return [layer.numpy() for layer in self._layers_fn(self._inputs(x))]

    def _inputs(self, x: np.ndarray) -> tf.Tensor:
        """Records as the encoder's input shape (flat encoded tensor features are reshaped)."""
        return tf.convert_to_tensor(
            np.asarray(x, np.float32).reshape(-1, *self.encoder_spec.input_shape))

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return list(self._variables.values())

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: var.numpy() for name, var in self._variables.items()}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        missing = sorted(set(self._variables) - set(arrays))
        unexpected = sorted(set(arrays) - set(self._variables))
        if missing or unexpected:
            raise ValueError(
                f"weights do not match this {self.algorithm} learner: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
        for name, var in self._variables.items():
            value = np.asarray(arrays[name])
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(
                    f"weight {name!r} has shape {value.shape}, expected {tuple(var.shape)}."
                )
            var.assign(value)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self._optimizer.state_arrays()

    def load_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._optimizer.load_state_arrays(dict(state))

    def train_step(self, batch: EpisodeBatch) -> tuple[float, float]:
        """One meta-update on a batch of episodes; returns (query loss, query accuracy)."""
        ways = _ways_of(batch)
        replicas = self.strategy.num_replicas_in_sync
        if batch.tasks % replicas:
            raise ValueError(
                f"meta_batch ({batch.tasks}) must be a multiple of the {replicas} replicas."
            )
        step = self._compiled("train", ways)
        loss, accuracy = step(*_batch_tensors(batch))
        return float(loss), float(accuracy)

    def evaluate_batch(self, batch: EpisodeBatch) -> tuple[float, float]:
        """Query loss and accuracy after adaptation, without updating any weight."""
        step = self._compiled("eval", _ways_of(batch))
        loss, accuracy = step(*_batch_tensors(batch))
        return float(loss), float(accuracy)

    def meta_train(
        self,
        train: EpisodeSampler,
        *,
        episodes: int,
        meta_batch: int = 16,
        val: EpisodeSampler | None = None,
        val_every: int = 320,
        patience: int = 10,
        checkpoint_dir: Path | None = None,
        progress: Callable[[TrainProgress], None] | None = None,
        val_tasks: int = 64,
    ) -> TrainHistory:
        from meta.training import run_meta_training

        return run_meta_training(
            self,
            train,
            episodes=episodes,
            meta_batch=meta_batch,
            val=val,
            val_every=val_every,
            patience=patience,
            checkpoint_dir=checkpoint_dir,
            progress=progress,
            val_tasks=val_tasks,
        )

    def warmup(self, ways: int, shots: int) -> None:
        """Trace the adaptation path for a support shape so the first real adapt is fast."""
        feature_shape = self.encoder_spec.input_shape
        support_x = np.zeros((ways * shots, *feature_shape), np.float32)
        support_y = np.repeat(np.arange(ways), shots)
        adapted = self.adapt(support_x, support_y)
        adapted.predict_proba(support_x[:1])
        adapted.unknown_score(support_x[:1])

    def _compiled(self, kind: str, ways: int) -> Any:
        key = (kind, ways)
        if key not in self._steps:

            def train(
                sx: tf.Tensor, sy: tf.Tensor, qx: tf.Tensor, qy: tf.Tensor
            ) -> tuple[tf.Tensor, tf.Tensor]:
                return self._distributed_train(sx, sy, qx, qy, ways=ways)

            def evaluate(
                sx: tf.Tensor, sy: tf.Tensor, qx: tf.Tensor, qy: tf.Tensor
            ) -> tuple[tf.Tensor, tf.Tensor]:
                return self._batch_loss(sx, sy, qx, qy, ways=ways, training=False)

            self._steps[key] = tf.function(train if kind == "train" else evaluate)
        return self._steps[key]

    def _distributed_train(
        self,
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        query_x: tf.Tensor,
        query_y: tf.Tensor,
        *,
        ways: int,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        variables = self.trainable_variables
        replicas = self.strategy.num_replicas_in_sync

        def replica_step(*batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
            if replicas > 1:
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                batch = tuple(_replica_slice(t, replica, replicas) for t in batch)
            sx, sy, qx, qy = batch
            with tf.GradientTape() as tape:
                loss, accuracy = self._batch_loss(sx, sy, qx, qy, ways=ways, training=True)
            gradients = tape.gradient(loss, variables)
            unconnected = [
                name
                for name, g in zip(self._variables, gradients, strict=True)
                if g is None
            ]
            if unconnected:
                raise RuntimeError(
                    f"{self.algorithm}: meta-gradient is None for {unconnected[:5]}; the loss "
                    "does not depend on these weights."
                )
            return loss, accuracy, gradients

        loss, accuracy, gradients = self.strategy.run(
            replica_step, args=(support_x, support_y, query_x, query_y)
        )
        mean = tf.distribute.ReduceOp.MEAN
        loss = self.strategy.reduce(mean, loss, axis=None)
        accuracy = self.strategy.reduce(mean, accuracy, axis=None)
        gradients = [self.strategy.reduce(mean, g, axis=None) for g in gradients]
        gradients, _ = tf.clip_by_global_norm(gradients, self.grad_clip)
        self._optimizer.apply(gradients)
        return loss, accuracy


def embed_episodes(
    forward: Callable[[tf.Tensor], tf.Tensor], support_x: tf.Tensor, query_x: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Support ``[T, K, d]`` and query ``[T, M, d]`` embeddings from one pass of ``forward``.

    Every record of every task goes through the encoder in a single batch: one large matmul
    chain instead of 2·T small ones.
    """
    tasks, n_support = support_x.shape[0], support_x.shape[1]
    n_query = query_x.shape[1]
    feature_shape = support_x.shape[2:]
    flat = tf.concat(
        [
            tf.reshape(support_x, [tasks * n_support, *feature_shape]),
            tf.reshape(query_x, [tasks * n_query, *feature_shape]),
        ],
        axis=0,
    )
    embedded = forward(flat)
    dim = embedded.shape[-1]
    support = tf.reshape(embedded[: tasks * n_support], [tasks, n_support, dim])
    query = tf.reshape(embedded[tasks * n_support :], [tasks, n_query, dim])
    return support, query


def query_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))


def query_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def _ways_of(batch: EpisodeBatch) -> int:
    return len(batch.classes[0])


def _batch_tensors(batch: EpisodeBatch) -> tuple[tf.Tensor, ...]:
    return (
        tf.convert_to_tensor(batch.support_x, tf.float32),
        tf.convert_to_tensor(batch.support_y, tf.int32),
        tf.convert_to_tensor(batch.query_x, tf.float32),
        tf.convert_to_tensor(batch.query_y, tf.int32),
    )


def _replica_slice(t: tf.Tensor, replica: Any, replicas: int) -> tf.Tensor:
    """This replica's contiguous share of the task axis, keeping static shapes."""
    per_replica = t.shape[0] // replicas
    grouped = tf.reshape(t, [replicas, per_replica, *t.shape[1:]])
    return tf.gather(grouped, replica)
