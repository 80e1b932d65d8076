"""The memory learner as an ensemble (``members > 1``): independent members behind one read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from meta_testdata import make_blobs

from meta.encoders import EncoderSpec, MemberEncoders, build_encoder
from meta.episodes import EpisodeSampler
from meta.learners import build_learner
from meta.learners.memory import MemoryLearner
from meta.saving import load_model, save_learner

SPEC = EncoderSpec(kind="mlp", input_shape=(6,), hidden=(16,), embedding_dim=8)


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    blobs = make_blobs(classes=8, per_class=30, dim=6, spread=3.0, seed=4)
    return blobs.x, blobs.y


def _single_like(ensemble: MemoryLearner, member: int) -> MemoryLearner:
    """A one-member learner holding exactly ``member``'s weights."""
    single = build_learner("memory", SPEC, seed=0, device="cpu")
    arrays = ensemble.state_arrays()
    prefix = f"encoder/member_{member}/"
    single.load_state_arrays({
        **{f"encoder/{name[len(prefix):]}": value for name, value in arrays.items()
           if name.startswith(prefix)},
        "memory/projection": arrays["memory/projection"][member],
        "memory/log_temperature": arrays["memory/log_temperature"][member],
    })
    return single


def test_member_encoders_are_independent_copies_side_by_side() -> None:
    encoders = MemberEncoders(SPEC, 3)
    one = build_encoder(SPEC)
    params = encoders.init_params(seed=5)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    for i, member in enumerate(encoders.split(params)):
        # Member i starts where a lone encoder seeded seed + i would.
        for got, want in zip(member, one.init_params(5 + i), strict=True):
            np.testing.assert_array_equal(got, want)
    expected = np.concatenate([one.forward(p, x).numpy() for p in encoders.split(params)], 1)
    np.testing.assert_allclose(encoders.forward(params, x).numpy(), expected, atol=1e-5)
    layers = encoders.forward_layers(params, x)
    assert [t.shape[1] for t in layers] == [48, 24]
    tasks = [np.stack([p, p]) for p in params]
    np.testing.assert_allclose(
        encoders.forward_tasks(tasks, np.stack([x, x])).numpy()[1], expected, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 members"):
        MemberEncoders(SPEC, 1)


def test_ensemble_key_distance_is_the_sum_of_member_distances_over_temperature() -> None:
    x, _ = _blobs()
    ensemble = build_learner("memory", SPEC, seed=0, device="cpu", members=3)
    # Different temperatures per member, so the scaling is visible.
    ensemble.load_state_arrays({**ensemble.state_arrays(), "memory/log_temperature":
                                np.log(np.array([0.5, 1.0, 4.0], np.float32))})
    assert ensemble.temperature == 1.0
    keys = ensemble.project(x[:10])
    members = [_single_like(ensemble, m) for m in range(3)]
    expected = sum(
        ((m.project(x[:10])[:, None] - m.project(x[10:15])[None]) ** 2).sum(-1) / m.temperature
        for m in members)
    got = ((keys[:, None] - ensemble.project(x[10:15])[None]) ** 2).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # keys_of on the concatenated last layer is the same projection without a second pass.
    np.testing.assert_allclose(ensemble.keys_of(ensemble.layers(x[:10])[-1]), keys, rtol=1e-5)


def test_each_member_learns_alone_from_its_own_share_of_the_meta_batch() -> None:
    """Member m's training loss is what it would get alone on the m-th share of the tasks:
    independent members on their own episodes, not one wide model. Validation scores the
    served read over every member's keys."""
    x, y = _blobs()
    ensemble = build_learner("memory", SPEC, seed=0, device="cpu", members=2)
    batch = EpisodeSampler(x, y, ways=4, shots=2, queries=5, seed=3).sample_batch(8)
    tensors = [tf.convert_to_tensor(a) for a in (batch.support_x, batch.support_y,
                                                  batch.query_x, batch.query_y)]
    tensors[1], tensors[3] = tf.cast(tensors[1], tf.int32), tf.cast(tensors[3], tf.int32)
    loss, _ = ensemble._batch_loss(*tensors, ways=4, training=True)
    alone = [float(_single_like(ensemble, m)._batch_loss(
        *(t[4 * m:4 * (m + 1)] for t in tensors), ways=4, training=True)[0]) for m in range(2)]
    assert float(loss) == pytest.approx(np.mean(alone), rel=1e-5)
    served, _ = ensemble._batch_loss(*tensors, ways=4, training=False)
    assert float(served) != pytest.approx(float(loss), rel=1e-3)


def test_ensemble_budgets_count_per_member() -> None:
    x, y = _blobs()
    ensemble = build_learner("memory", SPEC, seed=0, device="cpu", members=3)
    history = ensemble.meta_train(EpisodeSampler(x, y, ways=4, shots=2, queries=5, seed=1),
                                  episodes=32, meta_batch=4)
    assert history.steps_run == 8 and history.episodes_run == 96


def test_ensemble_trains_adapts_and_survives_a_save(tmp_path: Path) -> None:
    x, y = _blobs()
    ensemble = build_learner("memory", SPEC, seed=0, meta_lr=3e-3, device="cpu", members=3)
    history = ensemble.meta_train(EpisodeSampler(x, y, ways=4, shots=2, queries=5, seed=1),
                                  episodes=160, meta_batch=4)
    assert np.mean(history.train_loss[-8:]) < np.mean(history.train_loss[:8])
    support = np.concatenate([np.flatnonzero(y == c)[:2] for c in np.unique(y)])
    queries = np.setdiff1d(np.arange(len(y)), support)
    adapted = ensemble.adapt(x[support], y[support])
    assert np.mean(adapted.predict(x[queries]) == y[queries]) >= 0.9
    digest = save_learner(ensemble, tmp_path, description={})
    loaded = load_model(tmp_path, expected_sha256=digest)
    assert loaded.model["hyperparameters"]["members"] == 3
    np.testing.assert_allclose(loaded.learner.project(x[:5]), ensemble.project(x[:5]),
                               rtol=1e-6)


def test_a_single_memory_model_keeps_its_old_weights_and_hyperparameters() -> None:
    """Models saved before ensembles existed (no ``members`` key) must still load as they were."""
    single = build_learner("memory", SPEC, seed=0, device="cpu")
    assert "members" not in single.hyperparameters()
    arrays = single.state_arrays()
    assert arrays["memory/projection"].shape == (8, 8)
    assert arrays["memory/log_temperature"].shape == ()
    assert all(not name.startswith("encoder/member_") for name in arrays)
    with pytest.raises(ValueError, match="members must be at least 1"):
        build_learner("memory", SPEC, members=0)


def test_gradient_attacks_see_the_ensemble_keys() -> None:
    x, _ = _blobs()
    ensemble = build_learner("memory", SPEC, seed=0, device="cpu", members=2)
    tensor = tf.convert_to_tensor(x[:3])
    np.testing.assert_allclose(ensemble.project_tensor(tensor).numpy(), ensemble.project(x[:3]),
                               rtol=1e-5)
