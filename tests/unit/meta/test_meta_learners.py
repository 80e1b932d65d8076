"""One suite over every learner: the contract of meta/learners/base.py as a user observes it."""

from __future__ import annotations

import numpy as np
import pytest
from meta_testdata import ALGORITHMS, TrainedLearner, make_blobs

from meta.encoders import EncoderSpec
from meta.episodes import EpisodeSampler
from meta.learners import Adapted, MetaLearner, ProtoNet, build_learner
from meta.learners.maml import FOMAML, MAML, MetaSGD
from meta.learners.protonet import robust_prototypes


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_adapted_shapes_probabilities_and_labels(
    trained_learners: dict[str, TrainedLearner], algorithm: str
) -> None:
    item = trained_learners[algorithm]
    learner = item.learner
    assert isinstance(learner, MetaLearner) and learner.algorithm == algorithm
    blobs = item.blobs
    pick = np.concatenate([np.flatnonzero(blobs.y == c)[:3] for c in ("class_01", "class_04")])
    adapted = learner.adapt(blobs.x[pick], blobs.y[pick])
    assert isinstance(adapted, Adapted)
    assert adapted.classes == ("class_01", "class_04")
    queries = blobs.x[:17]
    proba = adapted.predict_proba(queries)
    assert proba.shape == (17, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(adapted.predict(queries)) <= {"class_01", "class_04"}
    assert adapted.unknown_score(queries).shape == (17,)
    assert learner.embed(queries).shape == (17, 16)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_short_meta_training_lowers_the_loss(
    trained_learners: dict[str, TrainedLearner], algorithm: str
) -> None:
    history = trained_learners[algorithm].history
    assert history.steps_run == 40 and history.episodes_run == 160
    losses = np.asarray(history.train_loss)
    assert np.all(np.isfinite(losses))
    assert losses[-8:].mean() < losses[:8].mean()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_adaptation_classifies_well_separated_classes(
    trained_learners: dict[str, TrainedLearner], algorithm: str
) -> None:
    learner = trained_learners[algorithm].learner
    blobs = make_blobs(classes=5, per_class=20, dim=12, spread=6.0, seed=11)
    sampler = EpisodeSampler(blobs.x, blobs.y, ways=5, shots=5, queries=10, seed=2)
    accuracy = np.mean([
        np.mean(learner.adapt(e.support_x, e.support_y).predict(e.query_x) == e.query_y)
        for e in (sampler.sample() for _ in range(5))
    ])
    assert accuracy >= 0.97


def test_protonet_is_near_perfect_on_separated_classes_with_a_random_encoder() -> None:
    blobs = make_blobs(classes=8, per_class=25, dim=16, spread=8.0, seed=3)
    learner = ProtoNet(EncoderSpec(kind="mlp", input_shape=(16,), hidden=(32,), embedding_dim=16))
    sampler = EpisodeSampler(blobs.x, blobs.y, ways=5, shots=5, queries=15, seed=0)
    correct = [
        learner.adapt(e.support_x, e.support_y).predict(e.query_x) == e.query_y
        for e in (sampler.sample() for _ in range(20))
    ]
    assert np.mean(correct) >= 0.99


def test_robust_prototypes_survive_one_large_outlier_where_the_mean_does_not() -> None:
    rng = np.random.default_rng(4)
    ways, shots, dim = 5, 5, 32
    centres = rng.normal(0, 3.0, (ways, dim))
    labels = np.repeat(np.arange(ways), shots)
    support = centres[labels] + rng.normal(0, 1.0, (labels.size, dim))
    support[0] = centres[0] + 60.0 * rng.normal(0, 1.0, dim)  # one poisoned support record
    query_labels = np.repeat(np.arange(ways), 40)
    queries = centres[query_labels] + rng.normal(0, 1.0, (query_labels.size, dim))

    def accuracy(kind: str) -> float:
        prototypes = robust_prototypes(support, labels, ways, kind)  # type: ignore[arg-type]
        d2 = ((queries[:, None, :] - prototypes[None]) ** 2).sum(-1)
        return float(np.mean(d2.argmin(1) == query_labels))

    assert accuracy("mean") < 0.85
    assert accuracy("median") > 0.98
    assert accuracy("trimmed") > 0.98


def test_protonet_median_prototype_is_used_by_adapt() -> None:
    spec = EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,), embedding_dim=4)
    mean = ProtoNet(spec, prototype="mean")
    median = ProtoNet(spec, prototype="median")
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    embedded = mean.embed(x).astype(np.float64)
    np.testing.assert_allclose(median.adapt(x, y).prototypes[0], np.median(embedded[:3], axis=0),
                               rtol=1e-6)
    np.testing.assert_allclose(mean.adapt(x, y).prototypes[0], embedded[:3].mean(axis=0),
                               rtol=1e-6)


def test_unknown_algorithm_names_the_choices() -> None:
    spec = EncoderSpec(kind="mlp", input_shape=(4,))
    with pytest.raises(ValueError, match="protonet"):
        build_learner("reptile", spec)


def test_invalid_hyperparameters_are_refused() -> None:
    spec = EncoderSpec(kind="mlp", input_shape=(4,))
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(spec, inner_lr=0.0)
    with pytest.raises(ValueError, match="prototype"):
        ProtoNet(spec, prototype="mode")  # type: ignore[arg-type]


def test_adapt_needs_two_classes() -> None:
    learner = ProtoNet(EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,), embedding_dim=4))
    with pytest.raises(ValueError, match="two distinct classes"):
        learner.adapt(np.zeros((3, 4), np.float32), np.array(["a", "a", "a"]))


def test_memory_read_is_the_log_attention_mass_per_class_with_thousands_of_slots() -> None:
    """A benign class supported by the agent's reference has thousands of slots: the read is
    still exact (log of the summed attention per class) and builds no [n, slots, N] array."""
    learner = build_learner(
        "memory", EncoderSpec(kind="mlp", input_shape=(6,), hidden=(8,), embedding_dim=4), seed=0
    )
    rng = np.random.default_rng(0)
    support = rng.normal(size=(2010, 6)).astype(np.float32)
    labels = np.r_[np.zeros(2000, np.int64), np.repeat([1, 2], 5)]
    queries = rng.normal(size=(7, 6)).astype(np.float32)
    adapted = learner.adapt(support, labels)
    keys, probe = learner.project(support), learner.project(queries)
    scores = -((probe[:, None, :] - keys[None]) ** 2).sum(-1) / learner.temperature
    expected = np.stack(
        [np.log(np.exp(scores[:, labels == c]).sum(1)) for c in range(3)], axis=1
    )
    assert np.allclose(adapted.logits(queries), expected, atol=1e-9)


@pytest.mark.parametrize("cls", [FOMAML, MetaSGD])
def test_adaptation_settings_change_adaptation_then_restore_it(cls: type) -> None:
    learner = cls(EncoderSpec(kind="mlp", input_shape=(5,), hidden=(8,), embedding_dim=4),
                  seed=1, device="cpu", inner_lr=0.2)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 4)
    x = (rng.normal(size=(12, 5)) + 2.0 * np.eye(3, 5)[y]).astype(np.float32)
    queries = rng.normal(size=(20, 5)).astype(np.float32)
    before = learner.adapt(x, y).predict_proba(queries)
    rates = {k: v.copy() for k, v in learner.state_arrays().items() if k.startswith("inner_lr/")}
    assert bool(rates) == (cls is MetaSGD)
    with learner.adaptation_settings(steps=1, rate_scale=3.0):
        assert learner.eval_inner_steps == 1
        changed = learner.adapt(x, y).predict_proba(queries)
        for name, value in rates.items():
            np.testing.assert_allclose(learner.state_arrays()[name], 3.0 * value, rtol=1e-6)
    assert not np.allclose(changed, before)
    assert learner.eval_inner_steps == 5 and learner.inner_lr == 0.2
    for name, value in rates.items():
        np.testing.assert_array_equal(learner.state_arrays()[name], value)
    np.testing.assert_array_equal(learner.adapt(x, y).predict_proba(queries), before)
    with pytest.raises(ValueError, match="steps"):
        with learner.adaptation_settings(steps=0):
            pass
