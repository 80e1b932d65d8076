"""The two silent failure modes of TF2 MAML, pinned down against closed forms and finite
differences: an inner gradient taken outside the outer tape (silently first-order) and fast
weights that are not watched (None gradients after the first step)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from meta.encoders import EncoderSpec, build_encoder
from meta.learners import FOMAML, MAML, MetaSGD
from meta.learners.maml import inner_adapt, task_query_loss, tile_head


def _quadratic_meta_gradient(a: float, b: float, alpha: float, w0: float, steps: int,
                             first_order: bool) -> float:
    w = tf.Variable(w0, dtype=tf.float64)
    with tf.GradientTape() as outer:
        result = inner_adapt(
            [tf.convert_to_tensor(w)], lambda p: 0.5 * a * p[0] ** 2,
            steps=steps, learning_rates=[alpha], first_order=first_order,
        )
        query_loss = 0.5 * b * result.fast_params[0] ** 2
    assert all(g is not None for step in result.gradients for g in step)
    assert len(result.gradients) == steps
    return float(outer.gradient(query_loss, w))


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_second_order_matches_closed_form_on_a_quadratic(steps: int) -> None:
    a, b, alpha, w0 = 2.0, 3.0, 0.2, 1.5
    shrink = 1.0 - alpha * a
    second = _quadratic_meta_gradient(a, b, alpha, w0, steps, first_order=False)
    first = _quadratic_meta_gradient(a, b, alpha, w0, steps, first_order=True)
    assert second == pytest.approx(b * shrink ** (2 * steps) * w0, rel=1e-12)
    assert first == pytest.approx(b * shrink**steps * w0, rel=1e-12)
    assert abs(second - first) > 0.1  # the two really differ here


def test_disconnected_inner_parameter_raises_instead_of_returning_none() -> None:
    used, unused = tf.constant(1.0), tf.constant(2.0)
    with pytest.raises(RuntimeError, match="None"):
        inner_adapt([used, unused], lambda p: p[0] ** 2, steps=2,
                    learning_rates=[0.1, 0.1], first_order=False)


def _tiny_problem() -> tuple[object, list[tf.Variable], tuple[tf.Tensor, ...]]:
    spec = EncoderSpec(kind="mlp", input_shape=(3,), hidden=(4,), embedding_dim=3)
    encoder = build_encoder(spec)
    rng = np.random.default_rng(0)
    arrays = [a.astype(np.float64) for a in encoder.init_params(seed=1)]
    arrays += [rng.normal(0, 0.3, (3, 1))]
    variables = [tf.Variable(a, dtype=tf.float64) for a in arrays]
    support_x = tf.constant(rng.normal(size=(4, 3)))
    support_onehot = tf.constant(np.eye(2)[[0, 0, 1, 1]])
    query_x = tf.constant(rng.normal(size=(6, 3)))
    query_y = tf.constant([0, 1, 0, 1, 1, 0], dtype=tf.int32)
    return encoder, variables, (support_x, support_onehot, query_x, query_y)


def _meta_loss(encoder: object, params: list[tf.Tensor], data: tuple[tf.Tensor, ...],
               first_order: bool) -> tf.Tensor:
    loss, _ = task_query_loss(
        encoder, tile_head(params, 2), [0.5] * (len(params) + 1), *data,
        steps=2, first_order=first_order,
    )
    return loss


def test_second_order_meta_gradient_matches_finite_differences_on_a_tiny_network() -> None:
    encoder, variables, data = _tiny_problem()
    with tf.GradientTape() as tape:
        loss = _meta_loss(encoder, [tf.convert_to_tensor(v) for v in variables], data, False)
    analytic = tape.gradient(loss, variables)
    with tf.GradientTape() as tape:
        loss = _meta_loss(encoder, [tf.convert_to_tensor(v) for v in variables], data, True)
    first_order = tape.gradient(loss, variables)

    eps = 1e-6
    numeric = []
    base = [v.numpy() for v in variables]
    for i, value in enumerate(base):
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = []
            for sign in (1.0, -1.0):
                params = [tf.constant(b) for b in base]
                bumped = value.copy()
                bumped[index] += sign * eps
                params[i] = tf.constant(bumped)
                shifted.append(float(_meta_loss(encoder, params, data, False)))
            grad[index] = (shifted[0] - shifted[1]) / (2 * eps)
        numeric.append(grad)
    flat = lambda grads: np.concatenate([np.ravel(g) for g in grads])  # noqa: E731
    exact, approx, fo = flat(analytic), flat(numeric), flat(first_order)
    np.testing.assert_allclose(exact, approx, rtol=1e-5, atol=1e-8)
    # First-order MAML is a different (approximate) gradient on the same problem.
    assert np.linalg.norm(fo - approx) / np.linalg.norm(approx) > 1e-2


def _meta_gradients(learner: MAML, batch: tuple[tf.Tensor, ...]) -> list[np.ndarray]:
    """The learner's own vectorised, compiled meta-gradient."""

    @tf.function
    def compute() -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss, _ = learner._batch_loss(*batch, ways=3, training=True)
        return tape.gradient(loss, learner.trainable_variables)

    grads = compute()
    assert all(g is not None for g in grads)
    return [g.numpy() for g in grads]


def _looped_meta_gradients(learner: MAML, batch: tuple[tf.Tensor, ...]) -> list[np.ndarray]:
    """Reference: one task at a time, eagerly, straight from task_query_loss."""
    tasks = int(batch[0].shape[0])
    with tf.GradientTape() as tape:
        params = tile_head([tf.convert_to_tensor(p) for p in learner._meta_params()], 3)
        rates = [tf.convert_to_tensor(r) if isinstance(r, tf.Variable) else r
                 for r in learner._learning_rates(3)]
        losses = [
            task_query_loss(learner.encoder, params, rates, batch[0][t], tf.one_hot(batch[1][t], 3),
                            batch[2][t], batch[3][t], steps=learner.inner_steps,
                            first_order=learner.first_order)[0]
            for t in range(tasks)
        ]
        loss = tf.add_n(losses) / tasks
    return [g.numpy() for g in tape.gradient(loss, learner.trainable_variables)]


def _toy_batch(tasks: int = 4) -> tuple[tf.Tensor, ...]:
    rng = np.random.default_rng(5)
    return (
        tf.constant(rng.normal(size=(tasks, 6, 5)), tf.float32),
        tf.constant(np.tile(np.repeat(np.arange(3), 2), (tasks, 1)), tf.int32),
        tf.constant(rng.normal(size=(tasks, 9, 5)), tf.float32),
        tf.constant(np.tile(np.repeat(np.arange(3), 3), (tasks, 1)), tf.int32),
    )


def _small_spec() -> EncoderSpec:
    return EncoderSpec(kind="mlp", input_shape=(5,), hidden=(8,), embedding_dim=4)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [MAML, MetaSGD])
def test_vectorised_meta_batch_equals_the_mean_of_per_task_gradients(cls: type[MAML]) -> None:
    learner = cls(_small_spec(), inner_steps=2, inner_lr=0.3, seed=2, device="cpu")
    batch = _toy_batch()
    together = _meta_gradients(learner, batch)
    looped = _looped_meta_gradients(learner, batch)
    for grad, reference in zip(together, looped, strict=True):
        np.testing.assert_allclose(grad, reference, rtol=1e-4, atol=1e-6)
    # With several inner steps every weight, encoder included, receives a meta-gradient.
    assert all(np.any(g != 0) for g in together)


def test_maml_and_fomaml_meta_gradients_differ_from_the_same_start() -> None:
    batch = _toy_batch()
    maml = _looped_meta_gradients(MAML(_small_spec(), inner_steps=3, inner_lr=0.3, seed=2), batch)
    fomaml = _looped_meta_gradients(
        FOMAML(_small_spec(), inner_steps=3, inner_lr=0.3, seed=2), batch
    )
    flat = lambda grads: np.concatenate([np.ravel(g) for g in grads])  # noqa: E731
    relative = np.linalg.norm(flat(maml) - flat(fomaml)) / np.linalg.norm(flat(maml))
    assert relative > 1e-2
