"""Evasion attacks against a tiny trained classifier: they fool it, and within their budgets."""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import numpy as np
import pytest
import tensorflow as tf

import meta.attacks
from meta.attacks import (
    AttackResult,
    carlini_wagner_l2,
    constrained_tabular,
    fgsm,
    pgd,
    success_rate,
)
from meta.optim import Adam

D, CLASSES, PER_CLASS = 8, 3, 80
LINF_EPS, L2_EPS = 0.15, 0.5


@dataclass(frozen=True)
class Problem:
    logits_fn: object
    x: np.ndarray  # test records the model gets right, in [0, 1]
    y: np.ndarray


def test_docstring_examples_run() -> None:
    assert doctest.testmod(meta.attacks).failed == 0


def _gaussian_classes(rng: np.random.Generator, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(0).uniform(0.25, 0.75, size=(CLASSES, D))
    y = np.repeat(np.arange(CLASSES), per_class)
    x = np.clip(centres[y] + rng.normal(0.0, 0.07, size=(y.size, D)), 0.0, 1.0)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def problem() -> Problem:
    """A two-layer net trained by 300 Adam steps on three Gaussian classes in [0, 1]^8."""
    rng = np.random.default_rng(1)
    train_x, train_y = _gaussian_classes(rng, 200)
    init = tf.keras.initializers.GlorotUniform(seed=2)
    params = [tf.Variable(init((D, 32))), tf.Variable(tf.zeros(32)),
              tf.Variable(init((32, CLASSES))), tf.Variable(tf.zeros(CLASSES))]

    def logits_fn(x: tf.Tensor) -> tf.Tensor:
        hidden = tf.nn.relu(tf.matmul(x, params[0]) + params[1])
        return tf.matmul(hidden, params[2]) + params[3]

    adam = Adam(params, learning_rate=0.01)
    xs, ys = tf.constant(train_x), tf.constant(train_y)

    @tf.function
    def train_step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=ys, logits=logits_fn(xs)))
        adam.apply(tape.gradient(loss, params))

    for _ in range(300):
        train_step()
    test_x, test_y = _gaussian_classes(rng, PER_CLASS)
    correct = np.argmax(logits_fn(test_x).numpy(), axis=1) == test_y
    assert correct.mean() > 0.95, "the tiny model must classify clean records well"
    return Problem(logits_fn, test_x[correct], test_y[correct])


def _within_box(result: AttackResult, low: float | np.ndarray, high: float | np.ndarray) -> bool:
    return bool(np.all(result.x >= low) and np.all(result.x <= high))


def test_fgsm_fools_the_model_within_its_linf_budget(problem: Problem) -> None:
    result = fgsm(problem.logits_fn, problem.x, problem.y, eps=LINF_EPS, clip_min=0.0,
                  clip_max=1.0)
    assert result.x.dtype == np.float32 and result.x.shape == problem.x.shape
    assert success_rate(result) > 0.5
    assert np.all(result.linf <= LINF_EPS + 1e-5)
    assert _within_box(result, 0.0, 1.0)


def test_pgd_linf_matches_fgsm_and_respects_budget_and_per_feature_box(problem: Problem) -> None:
    low = np.zeros(D, dtype=np.float32)
    high = np.full(D, 1.0, dtype=np.float32)
    high[0] = max(0.8, float(problem.x[:, 0].max()))  # a per-feature box, tighter on feature 0
    result = pgd(problem.logits_fn, problem.x, problem.y, eps=LINF_EPS, norm="linf", steps=20,
                 clip_min=low, clip_max=high)
    baseline = fgsm(problem.logits_fn, problem.x, problem.y, eps=LINF_EPS, clip_min=low,
                    clip_max=high)
    # The model is nearly linear, where FGSM's single step is already close to optimal.
    assert success_rate(result) > 0.8
    assert success_rate(result) >= success_rate(baseline) - 0.05
    assert np.all(result.linf <= LINF_EPS + 1e-5)
    assert _within_box(result, low, high)


def test_pgd_l2_fools_the_model_within_its_l2_ball(problem: Problem) -> None:
    result = pgd(problem.logits_fn, problem.x, problem.y, eps=L2_EPS, norm="l2", steps=20,
                 clip_min=0.0, clip_max=1.0)
    assert success_rate(result) > 0.8
    assert np.all(result.l2 <= L2_EPS + 1e-4)
    assert _within_box(result, 0.0, 1.0)
    # The reported norms are those of the returned array.
    delta = (result.x - problem.x).astype(np.float64)
    np.testing.assert_allclose(result.l2, np.linalg.norm(delta, axis=1), rtol=1e-6)
    np.testing.assert_allclose(result.linf, np.abs(delta).max(axis=1), rtol=1e-6)


def test_success_is_judged_on_the_returned_array(problem: Problem) -> None:
    result = pgd(problem.logits_fn, problem.x, problem.y, eps=LINF_EPS, steps=10,
                 clip_min=0.0, clip_max=1.0)
    predicted = np.argmax(problem.logits_fn(result.x).numpy(), axis=1)
    np.testing.assert_array_equal(result.success, predicted != problem.y)


def test_targeted_pgd_reaches_the_target_class(problem: Problem) -> None:
    target = (problem.y + 1) % CLASSES
    result = pgd(problem.logits_fn, problem.x, problem.y, eps=0.3, steps=30, target=target,
                 clip_min=0.0, clip_max=1.0)
    predicted = np.argmax(problem.logits_fn(result.x).numpy(), axis=1)
    np.testing.assert_array_equal(result.success, predicted == target)
    assert success_rate(result) > 0.6


def test_carlini_wagner_needs_less_l2_than_pgd(problem: Problem) -> None:
    cw = carlini_wagner_l2(problem.logits_fn, problem.x, problem.y, c=1.0, steps=60, lr=0.05,
                           binary_search_steps=3, clip_min=0.0, clip_max=1.0)
    strong = pgd(problem.logits_fn, problem.x, problem.y, eps=L2_EPS, norm="l2", steps=20,
                 clip_min=0.0, clip_max=1.0)
    assert success_rate(cw) > 0.8
    assert cw.l2[cw.success].mean() < strong.l2[strong.success].mean()
    assert _within_box(cw, 0.0, 1.0)


def test_carlini_wagner_returns_the_original_where_it_fails(problem: Problem) -> None:
    result = carlini_wagner_l2(problem.logits_fn, problem.x, problem.y, c=1e-3, steps=3,
                               lr=0.001, clip_min=0.0, clip_max=1.0)
    assert (~result.success).sum() > 0
    np.testing.assert_array_equal(result.x[~result.success], problem.x[~result.success])
    assert np.all(result.l2[~result.success] == 0.0)


def test_adaptive_pgd_lowers_the_extra_penalty(problem: Problem) -> None:
    """A stand-in detector score (the mean feature value) that the adaptive attacker keeps low."""

    def detector_score(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(x, axis=1)

    kwargs = dict(eps=LINF_EPS, steps=20, clip_min=0.0, clip_max=1.0, seed=4)
    plain = pgd(problem.logits_fn, problem.x, problem.y, **kwargs)
    adaptive = pgd(problem.logits_fn, problem.x, problem.y, extra_loss=detector_score,
                   extra_weight=5.0, **kwargs)
    assert adaptive.x.mean(axis=1).mean() < plain.x.mean(axis=1).mean() - 0.02
    assert np.all(adaptive.linf <= LINF_EPS + 1e-5)


def test_same_seed_same_result_and_other_seed_other_start(problem: Problem) -> None:
    kwargs = dict(eps=L2_EPS, norm="l2", steps=5, clip_min=0.0, clip_max=1.0, batch_size=50)
    first = pgd(problem.logits_fn, problem.x, problem.y, seed=7, **kwargs)
    again = pgd(problem.logits_fn, problem.x, problem.y, seed=7, **kwargs)
    other = pgd(problem.logits_fn, problem.x, problem.y, seed=8, **kwargs)
    np.testing.assert_array_equal(first.x, again.x)
    assert not np.array_equal(first.x, other.x)


def test_progress_reports_each_batch(problem: Problem) -> None:
    calls: list[tuple[int, int]] = []
    x, y = problem.x[:40], problem.y[:40]
    fgsm(problem.logits_fn, x, y, eps=0.1, clip_min=0.0, clip_max=1.0, batch_size=16,
         progress=lambda done, total: calls.append((done, total)))
    assert calls == [(16, 40), (32, 40), (40, 40)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0.0}, "eps must be positive"),
        ({"eps": -0.1}, "eps must be positive"),
        ({"norm": "l1"}, r"norm must be one of \['linf', 'l2'\]"),
        ({"steps": 0}, "steps must be positive"),
        ({"clip_min": 1.0, "clip_max": 0.0}, "clip_min must not exceed clip_max"),
        ({"clip_min": np.zeros(3)}, "clip_min must be a scalar or broadcastable"),
        ({"clip_max": 0.5}, "outside"),
    ],
)
def test_bad_arguments_are_rejected(problem: Problem, kwargs: dict, message: str) -> None:
    call = {"eps": 0.1, "norm": "linf", "clip_min": 0.0, "clip_max": 1.0, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        pgd(problem.logits_fn, problem.x, problem.y, **call)


def test_label_mismatches_are_rejected(problem: Problem) -> None:
    with pytest.raises(ValueError, match="one label per record"):
        fgsm(problem.logits_fn, problem.x, problem.y[:-1], eps=0.1, clip_min=0.0, clip_max=1.0)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        fgsm(problem.logits_fn, problem.x, problem.y + 5, eps=0.1, clip_min=0.0, clip_max=1.0)
    with pytest.raises(ValueError, match="integer class indices"):
        fgsm(problem.logits_fn, problem.x, problem.y.astype(float), eps=0.1, clip_min=0.0,
             clip_max=1.0)
    with pytest.raises(ValueError, match="kappa"):
        carlini_wagner_l2(problem.logits_fn, problem.x, problem.y, kappa=-1.0, clip_min=0.0,
                          clip_max=1.0)


def test_success_rate_of_an_empty_result_is_an_error() -> None:
    empty = AttackResult(np.zeros((0, 2), np.float32), np.zeros(0, bool), np.zeros(0),
                         np.zeros(0))
    with pytest.raises(ValueError, match="no records"):
        success_rate(empty)


# --------------------------------------------------------------------------- tabular attack

# Columns: 0-2 continuous, 3 integer (a count), 4-6 a one-hot category, 7-8 immutable.
TAB_D = 9
MUTABLE = np.array([True, True, True, True, True, True, True, False, False])
INTEGER = np.array([False, False, False, True, False, False, False, False, False])
GROUP = [4, 5, 6]
LOWER = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -5.0, -5.0], dtype=np.float32)
UPPER = np.array([1.0, 1.0, 1.0, 10.0, 1.0, 1.0, 1.0, 5.0, 5.0], dtype=np.float32)


@pytest.fixture(scope="module")
def tabular() -> tuple[object, np.ndarray, np.ndarray]:
    """A fixed linear model over mixed-type records, labelled by its own predictions."""
    rng = np.random.default_rng(5)
    n = 120
    x = np.zeros((n, TAB_D), dtype=np.float32)
    x[:, :3] = rng.uniform(0.2, 0.8, size=(n, 3))
    x[:, 3] = rng.integers(2, 9, size=n)
    x[np.arange(n), 4 + rng.integers(0, 3, size=n)] = 1.0
    x[:, 7:] = rng.uniform(-1.0, 1.0, size=(n, 2))
    weights = tf.constant(rng.normal(size=(TAB_D, 2)).astype(np.float32))
    weights = weights * tf.constant([[3.0]] * 3 + [[0.3]] + [[1.0]] * 5)

    def logits_fn(batch: tf.Tensor) -> tf.Tensor:
        return tf.matmul(batch, weights)

    y = np.argmax(logits_fn(x).numpy(), axis=1)
    return logits_fn, x, y


def _attack_tabular(tabular: tuple[object, np.ndarray, np.ndarray], **kwargs: object
                    ) -> AttackResult:
    logits_fn, x, y = tabular
    call = {"mutable": MUTABLE, "lower": LOWER, "upper": UPPER, "integer": INTEGER,
            "onehot_groups": [GROUP], "eps": 0.2, "steps": 20, "seed": 0, **kwargs}
    return constrained_tabular(logits_fn, x, y, **call)


def test_constrained_attack_keeps_records_valid(tabular: tuple) -> None:
    _, x, _ = tabular
    eps = 1.5  # above 1, so the integer count can move too
    result = _attack_tabular(tabular, eps=eps)
    assert success_rate(result) > 0.5
    np.testing.assert_array_equal(result.x[:, ~MUTABLE], x[:, ~MUTABLE])
    continuous = MUTABLE & ~np.isin(np.arange(TAB_D), GROUP)
    assert np.all(np.abs(result.x - x)[:, continuous] <= eps + 1e-5)
    assert np.all(result.x[:, continuous] >= LOWER[continuous])
    assert np.all(result.x[:, continuous] <= UPPER[continuous])
    np.testing.assert_array_equal(result.x[:, 3], np.round(result.x[:, 3]))
    assert (result.x[:, 3] != x[:, 3]).any()
    group = result.x[:, GROUP]
    assert np.isin(group, (0.0, 1.0)).all() and np.all(group.sum(axis=1) == 1.0)
    assert (np.argmax(group, axis=1) != np.argmax(x[:, GROUP], axis=1)).any()
    assert "lost_to_rounding" in result.details
    predicted = np.argmax(tabular[0](result.x).numpy(), axis=1)
    np.testing.assert_array_equal(result.success, predicted != tabular[2])


def test_constrained_attack_without_mutable_group_leaves_it_alone(tabular: tuple) -> None:
    _, x, _ = tabular
    mutable = MUTABLE.copy()
    mutable[GROUP] = False
    result = _attack_tabular(tabular, mutable=mutable)
    np.testing.assert_array_equal(result.x[:, ~mutable], x[:, ~mutable])
    assert np.all(result.linf <= 0.2 + 1e-5)  # eps < 1: the integer count cannot move either
    np.testing.assert_array_equal(result.x[:, 3], x[:, 3])


def test_constrained_attack_is_deterministic(tabular: tuple) -> None:
    np.testing.assert_array_equal(_attack_tabular(tabular, seed=3).x,
                                  _attack_tabular(tabular, seed=3).x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0.0}, "eps must be positive"),
        ({"mutable": MUTABLE[:-1]}, "one entry per feature"),
        ({"onehot_groups": [[4, 5]]}, "not one-hot"),
        ({"mutable": np.isin(np.arange(TAB_D), [0, 4])}, "partly mutable"),
        ({"onehot_groups": [[4, 5, 6], [6, 7]]}, "shares a column"),
        ({"upper": np.full(TAB_D, 0.5, np.float32)}, "outside"),
    ],
)
def test_constrained_attack_rejects_bad_arguments(tabular: tuple, kwargs: dict,
                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _attack_tabular(tabular, **kwargs)


def test_constrained_attack_rejects_fractional_integer_features(tabular: tuple) -> None:
    logits_fn, x, y = tabular
    fractional = x.copy()
    fractional[0, 3] = 2.5
    with pytest.raises(ValueError, match="non-integer"):
        constrained_tabular(logits_fn, fractional, y, mutable=MUTABLE, lower=LOWER,
                            upper=UPPER, integer=INTEGER, onehot_groups=[GROUP], eps=0.2)
