from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from meta.encoders import EncoderSpec, build_encoder
from meta.episodes import EpisodeSampler
from meta.learners import build_learner


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_mlp_layout_and_per_record_independence(norm: str) -> None:
    spec = EncoderSpec(kind="mlp", input_shape=(7,), hidden=(16, 8), embedding_dim=5, norm=norm)
    encoder = build_encoder(spec)
    params = [tf.constant(p) for p in encoder.init_params(seed=0)]
    assert [p.shape.as_list() for p in params] == [list(s) for s in encoder.param_shapes]
    x = np.random.default_rng(0).normal(size=(9, 7)).astype(np.float32)
    batch = encoder.forward(params, x).numpy()
    alone = np.concatenate([encoder.forward(params, x[i : i + 1]).numpy() for i in range(9)])
    assert batch.shape == (9, 5)
    # No batch statistics: a record's embedding does not depend on its neighbours.
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-6)


def test_conv4_maps_28x28_to_64_dimensions_without_batch_statistics() -> None:
    spec = EncoderSpec(kind="conv4", input_shape=(28, 28, 1))
    encoder = build_encoder(spec)
    assert encoder.output_dim == 64
    assert len(encoder.param_names) == 16  # 4 blocks × (kernel, bias, gamma, beta)
    params = [tf.constant(p) for p in encoder.init_params(seed=0)]
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    batch = encoder.forward(params, x).numpy()
    assert batch.shape == (3, 64)
    np.testing.assert_allclose(batch[1:2], encoder.forward(params, x[1:2]).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_init_is_reproducible_and_seed_dependent() -> None:
    encoder = build_encoder(EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,)))
    first, again, other = (encoder.init_params(seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_spec_round_trips_through_a_dict_and_validates() -> None:
    spec = EncoderSpec(kind="conv4", input_shape=(28, 28, 1), filters=32)
    assert EncoderSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="flat input"):
        EncoderSpec(kind="mlp", input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="norm"):
        EncoderSpec(kind="mlp", input_shape=(4,), norm="batch")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["protonet", "fomaml"])
def test_conv4_learners_train_on_small_images(algorithm: str) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 6)
    x = (rng.random((6, 12, 12, 1))[y] + 0.1 * rng.random((36, 12, 12, 1))).astype(np.float32)
    spec = EncoderSpec(kind="conv4", input_shape=(12, 12, 1), filters=8, conv_blocks=2)
    hyper = {"inner_steps": 1} if algorithm == "fomaml" else {}
    learner = build_learner(algorithm, spec, seed=0, device="cpu", **hyper)
    sampler = EpisodeSampler(x, y, ways=3, shots=1, queries=2, seed=0)
    history = learner.meta_train(sampler, episodes=8, meta_batch=2)
    assert np.all(np.isfinite(history.train_loss))
    episode = sampler.sample()
    proba = learner.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
    assert proba.shape == (6, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
