"""The task-batched meta-batch path of MAML / FOMAML / Meta-SGD, pinned to the single-task one.

Every check compares the batched path (fast weights ``[T, ...]`` through
``Encoder.forward_tasks``) with what the per-record ``forward`` and the single-task
``task_query_loss`` give task by task: the encoder outputs and their first and second
derivatives, the meta-loss and its meta-gradient, the absence of a ``while_loop`` over tasks
in the compiled step, and the agreement of the validation path (``evaluate_batch``) with
``adapt()`` on the same episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import tensorflow as tf

from meta.encoders import Encoder, EncoderSpec, build_encoder
from meta.episodes import EpisodeBatch, EpisodeSampler
from meta.learners import FOMAML, MAML, GradientMetaLearner, MetaSGD
from meta.learners.maml import adapt_meta_batch, task_batched_logits, task_query_loss, tile_head

WAYS, SHOTS, QUERIES, TASKS = 3, 2, 3, 4

SPECS = {
    "mlp": EncoderSpec(kind="mlp", input_shape=(6,), hidden=(8, 5), embedding_dim=4),
    "conv4": EncoderSpec(kind="conv4", input_shape=(12, 12, 1), filters=4, conv_blocks=2),
}
LEARNERS: dict[str, type[GradientMetaLearner]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "metasgd": MetaSGD,
}
WHILE_OPS = {"While", "StatelessWhile"}


# -- helpers -------------------------------------------------------------------------------
def _perturbed_params(encoder: Encoder, seed: int) -> list[np.ndarray]:
    """Initial weights with every tensor moved, so biases and norm scales differ per task."""
    rng = np.random.default_rng(seed)
    return [
        (p + rng.normal(0.0, 0.2, p.shape)).astype(np.float32)
        for p in encoder.init_params(seed=seed)
    ]


def _episode_batch(spec: EncoderSpec, tasks: int = TASKS, seed: int = 0) -> EpisodeBatch:
    """Episodes of classes that differ in their mean input, so adaptation has signal."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (tasks, WAYS, *spec.input_shape))

    def records(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(WAYS), per_class)
        noise = rng.normal(0.0, 0.7, (tasks, labels.size, *spec.input_shape))
        return (centres[:, labels] + noise).astype(np.float32), np.tile(labels, (tasks, 1))

    support_x, support_y = records(SHOTS)
    query_x, query_y = records(QUERIES)
    classes = tuple(tuple(range(WAYS)) for _ in range(tasks))
    return EpisodeBatch(
        support_x, support_y.astype(np.int32), query_x, query_y.astype(np.int32), classes
    )


def _batch_tensors(batch: EpisodeBatch) -> tuple[tf.Tensor, ...]:
    return (
        tf.constant(batch.support_x),
        tf.constant(batch.support_y),
        tf.constant(batch.query_x),
        tf.constant(batch.query_y),
    )


def _learner(algorithm: str, kind: str, **hyper: object) -> GradientMetaLearner:
    """A learner whose head is non-zero (so the encoder adapts from the first inner step) and,
    for Meta-SGD, whose per-weight step sizes really differ from one weight to the next."""
    options = {"inner_steps": 2, "inner_lr": 0.3, "seed": 2, "device": "cpu", **hyper}
    learner = LEARNERS[algorithm](SPECS[kind], **options)
    rng = np.random.default_rng(7)
    for name, variable in learner._variables.items():
        if name == "head/kernel":
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))
        elif name.startswith("inner_lr/"):
            variable.assign(rng.uniform(0.05, 0.4, variable.shape).astype(np.float32))
    return learner


def _start(learner: GradientMetaLearner) -> tuple[list[tf.Tensor], list[tf.Tensor | float]]:
    params = tile_head([tf.convert_to_tensor(p) for p in learner._meta_params()], WAYS)
    rates = [
        tf.convert_to_tensor(r) if isinstance(r, tf.Variable) else r
        for r in learner._learning_rates(WAYS)
    ]
    return params, rates


def _batched_meta_step(
    learner: GradientMetaLearner, batch: tuple[tf.Tensor, ...]
) -> tuple[float, float, list[np.ndarray]]:
    """The learner's own compiled meta-batch loss, accuracy and meta-gradient."""

    @tf.function
    def compute() -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        with tf.GradientTape() as tape:
            loss, accuracy = learner._batch_loss(*batch, ways=WAYS, training=True)
        return loss, accuracy, tape.gradient(loss, learner.trainable_variables)

    loss, accuracy, grads = compute()
    assert all(g is not None for g in grads)
    return float(loss), float(accuracy), [g.numpy() for g in grads]


def _looped_meta_step(
    learner: GradientMetaLearner, batch: tuple[tf.Tensor, ...]
) -> tuple[float, float, list[np.ndarray]]:
    """Reference: one task at a time, eagerly, through the per-record forward."""
    tasks = int(batch[0].shape[0])
    with tf.GradientTape() as tape:
        params, rates = _start(learner)
        results = [
            task_query_loss(
                learner.encoder,
                params,
                rates,
                batch[0][t],
                tf.one_hot(batch[1][t], WAYS),
                batch[2][t],
                batch[3][t],
                steps=learner.inner_steps,
                first_order=learner.first_order,
            )
            for t in range(tasks)
        ]
        loss = tf.add_n([loss for loss, _ in results]) / tasks
    accuracy = float(np.mean([float(accuracy) for _, accuracy in results]))
    grads = tape.gradient(loss, learner.trainable_variables)
    return float(loss), accuracy, [g.numpy() for g in grads]


def _op_types(concrete: tf.types.experimental.ConcreteFunction) -> set[str]:
    """Every op type of a traced function, nested functions (gradients, branches) included."""
    graph_def = concrete.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def _close(
    actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4, scale: float | None = None
) -> None:
    """float32 tolerance, with an absolute part scaled to ``scale`` (default: the tensor's
    largest value): the batched convolution sums in a different order."""
    scale = float(np.max(np.abs(expected))) if scale is None else scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-3))


# -- (a) the encoders' task-batched forward --------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        SPECS["mlp"],
        EncoderSpec(kind="mlp", input_shape=(6,), hidden=(8,), embedding_dim=4, norm="none"),
        SPECS["conv4"],
        EncoderSpec(kind="conv4", input_shape=(12, 12, 2), filters=4, conv_blocks=3, norm="none"),
        EncoderSpec(kind="conv4", input_shape=(7, 7, 1), filters=3, conv_blocks=4),
    ],
    ids=["mlp", "mlp-no-norm", "conv4", "conv4-no-norm-3-blocks", "conv4-odd-size"],
)
def test_task_batched_forward_equals_the_per_record_forward_task_by_task(
    spec: EncoderSpec,
) -> None:
    encoder = build_encoder(spec)
    per_task = [_perturbed_params(encoder, seed) for seed in range(3)]
    stacked = [tf.constant(np.stack(weights)) for weights in zip(*per_task, strict=True)]
    x = np.random.default_rng(1).normal(size=(3, 5, *spec.input_shape)).astype(np.float32)

    together = encoder.forward_tasks(stacked, x).numpy()

    assert together.shape == (3, 5, encoder.output_dim)
    for t, weights in enumerate(per_task):
        _close(together[t], encoder.forward(weights, x[t]).numpy(), rtol=1e-5)


def test_conv4_task_batched_forward_accepts_flat_records_like_the_per_record_forward() -> None:
    encoder = build_encoder(SPECS["conv4"])
    stacked = [tf.constant(np.stack([p, p])) for p in _perturbed_params(encoder, 0)]
    images = np.random.default_rng(2).random((2, 4, 12, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(
        encoder.forward_tasks(stacked, images.reshape(2, 4, -1)).numpy(),
        encoder.forward_tasks(stacked, images).numpy(),
    )


@pytest.mark.parametrize("kind", ["mlp", "conv4"])
def test_task_batched_forward_has_the_per_record_first_and_second_derivatives(kind: str) -> None:
    """The batched convolution carries its own gradient (image patches and their adjoint);
    first and second derivatives, w.r.t. weights and inputs, match the reference forward."""
    spec = SPECS[kind]
    encoder = build_encoder(spec)
    per_task = [
        [tf.constant(p, tf.float64) for p in _perturbed_params(encoder, s)] for s in range(2)
    ]
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 3, *spec.input_shape)))

    def derivatives(
        forward: Callable[[list[tf.Tensor], tf.Tensor], tf.Tensor],
        params: list[tf.Tensor],
        inputs: tf.Tensor,
    ) -> list[tf.Tensor]:
        """Gradients of a loss, then gradients of the gradients' squared norm."""
        with tf.GradientTape() as outer:
            outer.watch([*params, inputs])
            with tf.GradientTape() as inner:
                inner.watch([*params, inputs])
                loss = tf.reduce_sum(tf.sin(forward(params, inputs)))
            first = inner.gradient(loss, [*params, inputs])
            penalty = tf.add_n([tf.reduce_sum(g**2) for g in first])
        return [*first, *outer.gradient(penalty, [*params, inputs])]

    stacked = [tf.stack(weights) for weights in zip(*per_task, strict=True)]
    together = derivatives(encoder.forward_tasks, stacked, x)
    alone = [derivatives(encoder.forward, per_task[t], x[t]) for t in range(2)]
    # Tasks are independent, so the batched derivatives are the per-task ones stacked.
    for i, grad in enumerate(together):
        reference = np.stack([task[i].numpy() for task in alone])
        np.testing.assert_allclose(grad.numpy(), reference, rtol=1e-9, atol=1e-10)


# -- (b) meta-loss and meta-gradient --------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "conv4"])
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd"])
def test_batched_meta_loss_and_gradient_equal_the_per_task_loop(algorithm: str, kind: str) -> None:
    learner = _learner(algorithm, kind)
    batch = _batch_tensors(_episode_batch(SPECS[kind]))

    loss, accuracy, grads = _batched_meta_step(learner, batch)
    ref_loss, ref_accuracy, ref_grads = _looped_meta_step(learner, batch)

    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert accuracy == pytest.approx(ref_accuracy, abs=1e-6)
    # The shared head column's meta-gradient is ~0 (a softmax gradient sums to zero over the
    # tiled classes), so the absolute tolerance is scaled to the whole meta-gradient.
    scale = max(float(np.max(np.abs(g))) for g in ref_grads)
    assert scale > 0
    for grad, reference in zip(grads, ref_grads, strict=True):
        _close(grad, reference, scale=scale)


def test_inner_gradient_of_each_task_is_its_single_task_gradient() -> None:
    """The batched inner loss sums per-task means, so T does not scale the inner step."""
    learner = _learner("fomaml", "mlp", inner_steps=1)
    batch = _episode_batch(SPECS["mlp"])
    params, rates = _start(learner)
    onehot = tf.one_hot(batch.support_y, WAYS)
    together = adapt_meta_batch(
        learner.encoder, params, rates, batch.support_x, onehot, steps=1, first_order=True
    )
    for t in range(TASKS):
        alone = adapt_meta_batch(
            learner.encoder,
            params,
            rates,
            batch.support_x[t : t + 1],
            onehot[t : t + 1],
            steps=1,
            first_order=True,
        )
        for grad, single in zip(together.gradients[0], alone.gradients[0], strict=True):
            _close(grad[t].numpy(), single[0].numpy(), rtol=1e-5)


# -- (c) no while_loop over tasks -----------------------------------------------------------
def test_the_while_loop_check_sees_the_old_vectorized_map_fallback() -> None:
    """The op-type check below is not vacuous: vectorising a convolution's weight gradient
    over tasks with ``tf.vectorized_map`` (the path this replaced) traces a ``While``."""
    kernel = tf.random.normal([3, 3, 1, 2])

    def weight_gradient(images: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            loss = tf.reduce_sum(tf.nn.conv2d(images, kernel, 1, "SAME") ** 2)
        return tape.gradient(loss, kernel)

    old = tf.function(lambda x: tf.vectorized_map(weight_gradient, x, fallback_to_while_loop=True))
    assert _op_types(old.get_concrete_function(tf.zeros([2, 3, 6, 6, 1]))) & WHILE_OPS


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd"])
def test_conv4_train_and_eval_steps_trace_without_a_while_loop(algorithm: str) -> None:
    learner = _learner(algorithm, "conv4")
    batch = _batch_tensors(_episode_batch(SPECS["conv4"]))
    for kind in ("train", "eval"):
        step = learner._compiled(kind, WAYS)
        types = _op_types(step.get_concrete_function(*batch))
        assert not types & WHILE_OPS, f"{kind} step of {algorithm} loops: {types & WHILE_OPS}"
        assert not {t for t in types if t.startswith("Conv2D")}  # all convolutions batched
        assert "BatchMatMulV2" in types


# -- (d) validation (evaluate_batch) and adapt() agree ---------------------------------------
def _adapt_each(
    learner: GradientMetaLearner, batch: EpisodeBatch
) -> tuple[list[Sequence[tf.Tensor]], np.ndarray, np.ndarray, np.ndarray]:
    """adapt() episode by episode: fast weights, query logits, per-task loss and accuracy."""
    fast, logits, losses, accuracies = [], [], [], []
    for t in range(batch.tasks):
        adapted = learner.adapt(batch.support_x[t], batch.support_y[t])
        assert adapted.classes == tuple(range(WAYS))  # episode labels map onto themselves
        task_logits = adapted.logits(batch.query_x[t])
        losses.append(
            float(
                tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=batch.query_y[t], logits=task_logits
                    )
                )
            )
        )
        accuracies.append(float(np.mean(adapted.predict(batch.query_x[t]) == batch.query_y[t])))
        fast.append(adapted.fast_params)
        logits.append(task_logits)
    return fast, np.stack(logits), np.array(losses), np.array(accuracies)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "conv4"])
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd"])
def test_evaluate_batch_and_adapt_agree_on_the_same_episodes(algorithm: str, kind: str) -> None:
    # Different train and eval step counts: validation must use the eval count, as adapt does.
    learner = _learner(algorithm, kind, inner_steps=1, eval_inner_steps=3)
    spec = SPECS[kind]
    learner.train_step(_episode_batch(spec, seed=1))
    batch = _episode_batch(spec, seed=2)

    fast, logits, losses, accuracies = _adapt_each(learner, batch)
    loss, accuracy = learner.evaluate_batch(batch)

    assert loss == pytest.approx(losses.mean(), rel=1e-5)
    assert accuracy == pytest.approx(accuracies.mean(), abs=1e-6)
    params, rates = _start(learner)
    batched = adapt_meta_batch(
        learner.encoder,
        params,
        rates,
        batch.support_x,
        tf.one_hot(batch.support_y, WAYS),
        steps=3,
        first_order=True,
    )
    batched_logits = task_batched_logits(
        learner.encoder, batched.fast_params, batch.query_x
    ).numpy()
    for t in range(batch.tasks):
        for together, alone in zip(batched.fast_params, fast[t], strict=True):
            _close(together[t].numpy(), alone.numpy())
    _close(batched_logits, logits)
    np.testing.assert_array_equal(batched_logits.argmax(-1), logits.argmax(-1))


def test_adapted_predictions_do_not_depend_on_the_query_batch() -> None:
    """adapt()'s predictions for a query are the same alone or among others (per-record norm)."""
    learner = _learner("fomaml", "conv4")
    episode = _episode_batch(SPECS["conv4"], tasks=1)
    adapted = learner.adapt(episode.support_x[0], episode.support_y[0])
    queries = episode.query_x[0]
    together = adapted.logits(queries)
    alone = np.concatenate([adapted.logits(queries[i : i + 1]) for i in range(len(queries))])
    _close(together, alone, rtol=1e-5)


def test_episode_sampler_batches_feed_the_batched_path() -> None:
    """Sampled batches (not only hand-made ones) go through evaluate_batch end to end."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(6), 5)
    x = (rng.normal(0.0, 2.0, (6, 6))[y] + rng.normal(0.0, 1.0, (30, 6))).astype(np.float32)
    sampler = EpisodeSampler(x, y, ways=WAYS, shots=SHOTS, queries=QUERIES, seed=0)
    learner = _learner("fomaml", "mlp")
    batch = sampler.sample_batch(TASKS)
    _, _, losses, accuracies = _adapt_each(learner, batch)
    loss, accuracy = learner.evaluate_batch(batch)
    assert loss == pytest.approx(losses.mean(), rel=1e-5)
    assert accuracy == pytest.approx(accuracies.mean(), abs=1e-6)
