"""Gradient-based meta-learning: MAML, first-order MAML and Meta-SGD in one implementation.

The three differ only in the inner loop: MAML differentiates through it (second order), FOMAML
treats inner gradients as constants (``tf.stop_gradient``), Meta-SGD learns one inner step size
per weight. TensorFlow makes two mistakes silent here, so :func:`inner_adapt` guards both:
the inner ``gradient()`` call must run while the caller's outer tape is recording (otherwise the
result is first-order without any error), and the fast weights are tensors that every inner
tape must ``watch`` (otherwise the second step's gradient is ``None``).

The classifier head is a single meta-learned column tiled to N classes (the "zeroing" /
UNICORN-MAML idea): episode labels are random permutations, so a per-position head learns
nothing useful, and one shared column makes the learner valid for any way count at adaptation.

A meta-batch of ``T`` tasks is adapted at once (:func:`adapt_meta_batch`): the fast
weights carry a leading task axis ``[T, ...]`` and go through the encoder's ``forward_tasks``,
so each inner step is one batched forward and backward pass. Mapping the single-task path
with ``tf.vectorized_map`` instead cannot vectorise a convolution's weight gradient: on Conv-4
it falls back to a ``while_loop`` over tasks, and second order ran at half the speed.

The inner loss is the *sum* of the per-task mean support losses: task ``t``'s term is the only
one that depends on its fast weights, so the gradient for task ``t`` is exactly its single-task
gradient, and one ``tape.gradient`` call serves every task. The guards above still hold:
:func:`adapt_meta_batch` runs :func:`inner_adapt`. The single-task :func:`task_query_loss`
stays as the reference the batched path is tested against, and ``adapt`` still runs the
single-task path. Shapes are fixed per sampler so each compiled step traces once.

Example
-------
>>> from meta.encoders import EncoderSpec
>>> learner = MAML(EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,), embedding_dim=4))
>>> x = np.eye(4, dtype=np.float32)
>>> learner.adapt(x, np.array([0, 0, 1, 1])).predict_proba(x).shape
(4, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from meta.encoders import Encoder, EncoderSpec
from meta.learners.base import (
    AdaptedClassifier,
    EpisodicLearner,
    encode_support_labels,
    nearest_squared_distance,
)

Tensors = Sequence[tf.Tensor]


@dataclass(frozen=True)
class InnerLoopResult:
    """Fast weights after the inner loop, and every inner gradient (for inspection and tests)."""

    fast_params: tuple[tf.Tensor, ...]
    gradients: tuple[tuple[tf.Tensor, ...], ...]
    support_losses: tuple[tf.Tensor, ...]


def inner_adapt(
    params: Tensors,
    support_loss: Callable[[list[tf.Tensor]], tf.Tensor],
    *,
    steps: int,
    learning_rates: Sequence[tf.Tensor | float],
    first_order: bool,
) -> InnerLoopResult:
    """Run ``steps`` gradient steps on ``support_loss`` starting from ``params``.

    Call inside the outer ``tf.GradientTape`` for a second-order meta-gradient. Raises
    ``RuntimeError`` if an inner gradient is ``None`` rather than letting a disconnected weight
    silently stop adapting.
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}.")
    fast = list(params)
    gradients: list[tuple[tf.Tensor, ...]] = []
    losses: list[tf.Tensor] = []
    for step in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss = support_loss(fast)
        grads = tape.gradient(loss, fast)
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing:
            raise RuntimeError(
                f"inner-loop gradient is None at step {step} for parameters {missing}; the "
                "support loss does not depend on them."
            )
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        fast = [w - lr * g for w, lr, g in zip(fast, learning_rates, grads, strict=True)]
        gradients.append(tuple(grads))
        losses.append(loss)
    return InnerLoopResult(tuple(fast), tuple(gradients), tuple(losses))


def tile_head(params: Tensors, ways: int | tf.Tensor) -> list[tf.Tensor]:
    """Fast-weight start: encoder weights, the shared head column tiled to N, a zero bias.

    A shared bias would be meaningless (softmax ignores a common shift), so the per-class
    bias starts at zero and only the inner loop moves it.
    """
    *encoder, head_kernel = params
    return [*encoder, tf.tile(head_kernel, [1, ways]), tf.zeros([ways], head_kernel.dtype)]


def tile_rates(rates: Sequence[tf.Tensor], ways: int | tf.Tensor) -> list[tf.Tensor]:
    """Meta-SGD step sizes laid out like :func:`tile_head`'s fast weights."""
    *encoder, kernel_rate, bias_rate = rates
    return [*encoder, tf.tile(kernel_rate, [1, ways]), tf.tile(bias_rate, [ways])]


def head_logits(encoder: Encoder, params: Tensors, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(logits, embedding) of ``x`` under encoder weights ``params[:-2]`` and a tiled head."""
    embedding = encoder.forward(params[:-2], x)
    return tf.matmul(embedding, params[-2]) + params[-1], embedding


def task_batched_logits(encoder: Encoder, params: Tensors, x: tf.Tensor) -> tf.Tensor:
    """Logits ``[T, n, N]`` of ``x`` ``[T, n, ...]`` under per-task fast weights ``[T, ...]``."""
    embedding = encoder.forward_tasks(params[:-2], x)
    return tf.matmul(embedding, params[-2]) + params[-1][:, tf.newaxis, :]


def support_cross_entropy(logits: tf.Tensor, onehot: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy over the support records (the last-but-one axis), per task."""
    return tf.reduce_mean(
        tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits), axis=-1
    )


def query_loss_and_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean query cross-entropy and accuracy over the last-but-one axis, per task."""
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1
    )
    predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, labels), logits.dtype), axis=-1)
    return loss, accuracy


def task_query_loss(
    encoder: Encoder,
    params: Tensors,
    learning_rates: Sequence[tf.Tensor | float],
    support_x: tf.Tensor,
    support_onehot: tf.Tensor,
    query_x: tf.Tensor,
    query_y: tf.Tensor,
    *,
    steps: int,
    first_order: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One task's query loss and accuracy after adapting on its support set.

    ``params`` and ``learning_rates`` must already be tiled to the task's way count. This is
    the reference that :func:`meta_batch_query_losses` is tested against.
    """

    def support_loss(fast: list[tf.Tensor]) -> tf.Tensor:
        return support_cross_entropy(head_logits(encoder, fast, support_x)[0], support_onehot)

    result = inner_adapt(
        params, support_loss, steps=steps, learning_rates=learning_rates, first_order=first_order
    )
    logits, _ = head_logits(encoder, result.fast_params, query_x)
    return query_loss_and_accuracy(logits, query_y)


def adapt_meta_batch(
    encoder: Encoder,
    params: Tensors,
    learning_rates: Sequence[tf.Tensor | float],
    support_x: tf.Tensor,
    support_onehot: tf.Tensor,
    *,
    steps: int,
    first_order: bool,
) -> InnerLoopResult:
    """The inner loop for ``T`` tasks at once; fast weights come back as ``[T, ...]``.

    ``params`` is the shared starting point (tiled to the way count, no task axis) and every
    task starts from its own copy. ``learning_rates`` are shared by all tasks and broadcast over
    the task axis. Task ``t``'s fast weights equal :func:`inner_adapt` on task ``t`` alone. Call
    inside the outer tape for a second-order meta-gradient, as for :func:`inner_adapt`.
    """
    tasks = support_x.shape[0] if support_x.shape[0] is not None else tf.shape(support_x)[0]
    start = [tf.tile(p[tf.newaxis], [tasks, *[1] * p.shape.rank]) for p in params]

    def support_loss(fast: list[tf.Tensor]) -> tf.Tensor:
        # A sum of per-task means, not a mean over tasks: d(sum)/d fast[t] is exactly task t's
        # single-task gradient, so the inner step does not shrink with T.
        logits = task_batched_logits(encoder, fast, support_x)
        return tf.reduce_sum(support_cross_entropy(logits, support_onehot))

    return inner_adapt(
        start, support_loss, steps=steps, learning_rates=learning_rates, first_order=first_order
    )


def meta_batch_query_losses(
    encoder: Encoder,
    params: Tensors,
    learning_rates: Sequence[tf.Tensor | float],
    support_x: tf.Tensor,
    support_onehot: tf.Tensor,
    query_x: tf.Tensor,
    query_y: tf.Tensor,
    *,
    steps: int,
    first_order: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-task query losses and accuracies ``[T]`` after :func:`adapt_meta_batch`; task
    ``t``'s pair equals :func:`task_query_loss` on task ``t`` alone."""
    result = adapt_meta_batch(
        encoder,
        params,
        learning_rates,
        support_x,
        support_onehot,
        steps=steps,
        first_order=first_order,
    )
    logits = task_batched_logits(encoder, result.fast_params, query_x)
    return query_loss_and_accuracy(logits, query_y)


class AdaptedNetwork(AdaptedClassifier):
    """A network with task-specific fast weights.

    The unknown score is the squared distance, in the adapted embedding, to the nearest
    support-class centroid: the head alone is over-confident far from the support data.
    """

    def __init__(
        self,
        classes: tuple[Any, ...],
        fast_params: list[tf.Tensor],
        centroids: np.ndarray,
        forward: Callable[[list[tf.Tensor], tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    ) -> None:
        super().__init__(classes)
        self.fast_params = fast_params
        self.centroids = centroids
        self._forward = forward

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = self._forward(self.fast_params, tf.convert_to_tensor(x, tf.float32))
        return logits.numpy(), embedding.numpy().astype(np.float64)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._run(np.asarray(x, np.float32))[0]

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The records' embedding under this task's fast weights (the inner loop moves the
        encoder too, not only the head)."""
        return self._run(np.asarray(x, np.float32))[1]

    def unknown_score(self, x: np.ndarray) -> np.ndarray:
        _, embedding = self._run(np.asarray(x, np.float32))
        return nearest_squared_distance(embedding, self.centroids).min(axis=1)

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = self._run(np.asarray(x, np.float32))
        return logits, nearest_squared_distance(embedding, self.centroids).min(axis=1)


class GradientMetaLearner(EpisodicLearner):
    """Shared implementation; the subclasses below only fix the algorithm's switches."""

    algorithm = "maml"
    first_order_default = False
    learn_inner_lr = False

    def __init__(
        self,
        encoder_spec: EncoderSpec,
        *,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        eval_inner_steps: int | None = None,
        first_order: bool | None = None,
        **common: Any,
    ) -> None:
        if inner_lr <= 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr}.")
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {inner_steps}.")
        if eval_inner_steps is not None and eval_inner_steps < 1:
            raise ValueError(f"eval_inner_steps must be at least 1, got {eval_inner_steps}.")
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps if eval_inner_steps is not None else inner_steps
        self.first_order = self.first_order_default if first_order is None else first_order
        super().__init__(encoder_spec, **common)
        self._adapt_fn = self._compile_adapt()
        self._forward_fn = self._compile_forward()

    @contextmanager
    def adaptation_settings(self, steps: int, rate_scale: float = 1.0) -> Iterator[None]:
        """Adapt with ``steps`` inner steps at ``rate_scale`` times the rates, then restore.

        For studies of the adaptation step alone (meta-training is not involved): the
        compiled adaptation is rebuilt with the new settings, and Meta-SGD's learned rates,
        which are variables, are scaled in place and put back.
        """
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}.")
        saved_steps, saved_rate = self.eval_inner_steps, self.inner_lr
        learned = [v for name, v in self._variables.items() if name.startswith("inner_lr/")]
        saved_learned = [v.numpy() for v in learned]
        self.eval_inner_steps, self.inner_lr = steps, saved_rate * rate_scale
        for variable, value in zip(learned, saved_learned, strict=True):
            variable.assign(value * rate_scale)
        self._adapt_fn = self._compile_adapt()
        try:
            yield
        finally:
            self.eval_inner_steps, self.inner_lr = saved_steps, saved_rate
            for variable, value in zip(learned, saved_learned, strict=True):
                variable.assign(value)
            self._adapt_fn = self._compile_adapt()

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "eval_inner_steps": self.eval_inner_steps,
            "first_order": self.first_order,
        }

    def _head_shapes(self) -> list[tuple[int, ...]]:
        return [(self.encoder.output_dim, 1), (1,)]

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"head/kernel": np.zeros((self.encoder.output_dim, 1), np.float32)}
        if self.learn_inner_lr:
            shapes = [*self.encoder.param_shapes, *self._head_shapes()]
            names = [*self.encoder.param_names, "head/kernel", "head/bias"]
            for name, shape in zip(names, shapes, strict=True):
                arrays[f"inner_lr/{name}"] = np.full(shape, self.inner_lr, np.float32)
        return arrays

    def _meta_params(self) -> list[tf.Tensor]:
        return [*self._encoder_params(), self._variables["head/kernel"]]

    def _learning_rates(self, ways: int | tf.Tensor) -> list[tf.Tensor | float]:
        names = [*self.encoder.param_names, "head/kernel", "head/bias"]
        if not self.learn_inner_lr:
            return [self.inner_lr] * len(names)
        return tile_rates([self._variables[f"inner_lr/{n}"] for n in names], ways)

    def _batch_loss(
        self,
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        query_x: tf.Tensor,
        query_y: tf.Tensor,
        ways: int,
        training: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean query loss and accuracy over the meta-batch, every task adapted at once.

        Evaluation is first order (no meta-gradient is taken) with ``eval_inner_steps``,
        exactly what :meth:`adapt` does for one episode.
        """
        params = tile_head([tf.convert_to_tensor(p) for p in self._meta_params()], ways)
        rates = [
            tf.convert_to_tensor(r) if isinstance(r, tf.Variable) else r
            for r in self._learning_rates(ways)
        ]
        losses, accuracies = meta_batch_query_losses(
            self.encoder,
            params,
            rates,
            support_x,
            tf.one_hot(support_y, ways),
            query_x,
            query_y,
            steps=self.inner_steps if training else self.eval_inner_steps,
            first_order=self.first_order or not training,
        )
        return tf.reduce_mean(losses), tf.reduce_mean(accuracies)

    def _compile_adapt(self) -> Any:
        x_spec = tf.TensorSpec([None, *self.encoder_spec.input_shape], tf.float32)
        y_spec = tf.TensorSpec([None, None], tf.float32)

        def adapt_fast(support_x: tf.Tensor, support_onehot: tf.Tensor) -> list[tf.Tensor]:
            ways = tf.shape(support_onehot)[1]
            params = tile_head([tf.convert_to_tensor(p) for p in self._meta_params()], ways)
            rates = [
                tf.convert_to_tensor(r) if isinstance(r, tf.Variable) else r
                for r in self._learning_rates(ways)
            ]

            def support_loss(fast: list[tf.Tensor]) -> tf.Tensor:
                logits, _ = head_logits(self.encoder, fast, support_x)
                return support_cross_entropy(logits, support_onehot)

            result = inner_adapt(
                params,
                support_loss,
                steps=self.eval_inner_steps,
                learning_rates=rates,
                first_order=True,
            )
            return list(result.fast_params)

        return tf.function(adapt_fast, input_signature=[x_spec, y_spec])

    def _compile_forward(self) -> Any:
        shapes = [*self.encoder.param_shapes, (self.encoder.output_dim, None), (None,)]
        param_specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
        x_spec = tf.TensorSpec([None, *self.encoder_spec.input_shape], tf.float32)

        def forward(params: list[tf.Tensor], x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return head_logits(self.encoder, params, x)

        return tf.function(forward, input_signature=[param_specs, x_spec])

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> AdaptedNetwork:
        classes, labels = encode_support_labels(support_y)
        support = tf.convert_to_tensor(np.asarray(support_x, np.float32))
        onehot = np.eye(len(classes), dtype=np.float32)[labels]
        fast = self._adapt_fn(support, tf.convert_to_tensor(onehot))
        _, embedding = self._forward_fn(fast, support)
        embedding = embedding.numpy().astype(np.float64)
        centroids = (onehot.T.astype(np.float64) @ embedding) / onehot.sum(axis=0)[:, None]
        return AdaptedNetwork(classes, list(fast), centroids, self._forward_fn)


class MAML(GradientMetaLearner):
    """Second-order MAML (Finn et al. 2017): differentiates through every inner step."""

    algorithm = "maml"
    first_order_default = False


class FOMAML(GradientMetaLearner):
    """First-order MAML: inner gradients are constants; cheaper, sometimes as accurate."""

    algorithm = "fomaml"
    first_order_default = True


class MetaSGD(GradientMetaLearner):
    """Meta-SGD (Li et al. 2017): a learned inner step size per weight, second order."""

    algorithm = "metasgd"
    first_order_default = False
    learn_inner_lr = True
