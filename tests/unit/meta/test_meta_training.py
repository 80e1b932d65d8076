"""The episodic training loop: validation, early stopping, progress and exact resumption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from meta_testdata import make_blobs

from meta.encoders import EncoderSpec
from meta.episodes import EpisodeSampler
from meta.learners import ProtoNet, TrainProgress
from meta.training import CHECKPOINT_FILE, CheckpointMismatchError

SPEC = EncoderSpec(kind="mlp", input_shape=(12,), hidden=(16,), embedding_dim=8)


def _samplers() -> tuple[EpisodeSampler, EpisodeSampler]:
    blobs = make_blobs(classes=12, per_class=20, dim=12, spread=1.0, seed=0)
    train_classes = [f"class_{i:02d}" for i in range(8)]
    val_classes = [f"class_{i:02d}" for i in range(8, 12)]
    train = EpisodeSampler(blobs.x, blobs.y, ways=3, shots=2, queries=3, seed=1,
                           classes=train_classes)
    val = EpisodeSampler(blobs.x, blobs.y, ways=3, shots=2, queries=3, seed=2,
                         classes=val_classes)
    return train, val


def test_validation_progress_and_best_weights() -> None:
    train, val = _samplers()
    seen: list[TrainProgress] = []
    learner = ProtoNet(SPEC, seed=0, device="cpu")
    history = learner.meta_train(train, episodes=80, meta_batch=4, val=val, val_every=20,
                                 patience=100, progress=seen.append, val_tasks=8)
    assert [p.step for p in seen] == list(range(1, 21))
    assert seen[-1].eta_s == 0.0 and seen[-1].episodes_total == 80
    assert history.val_steps == (5, 10, 15, 20)
    assert history.best_val_accuracy == max(history.val_accuracy)
    assert history.best_step == history.val_steps[int(np.argmax(history.val_accuracy))]
    assert set(learner.seen_classes) == set(train.classes) | set(val.classes)


def test_early_stopping_after_patience_checks_without_improvement() -> None:
    train, val = _samplers()
    learner = ProtoNet(SPEC, seed=0, meta_lr=1e-9, device="cpu")  # effectively frozen
    history = learner.meta_train(train, episodes=400, meta_batch=4, val=val, val_every=4,
                                 patience=3, val_tasks=8)
    assert history.stopped_early
    assert history.steps_run == 4  # first check sets the best, three more fail to beat it
    assert history.best_step == 1


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    # Without validation the result is the final weights, so the runs must agree exactly.
    train, _ = _samplers()
    straight = ProtoNet(SPEC, seed=0, device="cpu")
    straight.meta_train(train, episodes=48, meta_batch=4, val_every=16)

    train, _ = _samplers()
    first = ProtoNet(SPEC, seed=0, device="cpu")
    first.meta_train(train, episodes=24, meta_batch=4, val_every=16, checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_FILE).exists()
    train, _ = _samplers()
    second = ProtoNet(SPEC, seed=0, device="cpu")
    history = second.meta_train(train, episodes=48, meta_batch=4, val_every=16,
                                checkpoint_dir=tmp_path)
    assert history.resumed_from_step == 6
    assert history.steps_run == 12 and len(history.train_loss) == 12
    for name, value in straight.state_arrays().items():
        np.testing.assert_allclose(second.state_arrays()[name], value, rtol=1e-5, atol=1e-6)


def test_resumed_run_keeps_its_validation_history(tmp_path: Path) -> None:
    train, val = _samplers()
    ProtoNet(SPEC, seed=0, device="cpu").meta_train(
        train, episodes=32, meta_batch=4, val=val, val_every=16, checkpoint_dir=tmp_path,
        val_tasks=8)
    train, val = _samplers()
    history = ProtoNet(SPEC, seed=0, device="cpu").meta_train(
        train, episodes=64, meta_batch=4, val=val, val_every=16, checkpoint_dir=tmp_path,
        val_tasks=8)
    assert history.resumed_from_step == 8
    assert history.val_steps == (4, 8, 12, 16)


def test_checkpoint_from_another_configuration_is_refused(tmp_path: Path) -> None:
    train, _ = _samplers()
    ProtoNet(SPEC, seed=0, device="cpu").meta_train(train, episodes=8, meta_batch=4,
                                                    checkpoint_dir=tmp_path)
    train, _ = _samplers()
    other = ProtoNet(SPEC, seed=0, prototype="median", device="cpu")
    with pytest.raises(CheckpointMismatchError, match="hyperparameters"):
        other.meta_train(train, episodes=8, meta_batch=4, checkpoint_dir=tmp_path)


def test_meta_batch_larger_than_episodes_is_refused() -> None:
    train, _ = _samplers()
    with pytest.raises(ValueError, match="meta_batch"):
        ProtoNet(SPEC, device="cpu").meta_train(train, episodes=2, meta_batch=4)
