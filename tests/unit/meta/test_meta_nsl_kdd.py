"""Meta-training on the bundled NSL-KDD sample helps on attack types it never saw, and the
adapted classifier flags records of a class outside its support set as unknown."""

from __future__ import annotations

import numpy as np
import pytest
from meta_testdata import LabelledSample

from meta.encoders import EncoderSpec
from meta.episodes import EpisodeSampler
from meta.learners import ProtoNet
from meta.openset import auroc

# Attack types of the sample's stream file that never occur in its reference file and have at
# least 15 records (the sampler checks the counts).
NOVEL = ("apache2", "httptunnel", "mailbomb", "mscan", "processtable", "saint",
         "snmpgetattack", "snmpguess")
EVAL_EPISODES = 60


def _novel_sampler(sample: LabelledSample) -> EpisodeSampler:
    return EpisodeSampler(sample.stream_x, sample.stream_y, ways=5, shots=5, queries=10,
                          seed=123, classes=NOVEL)


def _accuracy(learner: ProtoNet, sample: LabelledSample) -> float:
    sampler = _novel_sampler(sample)
    scores = []
    for _ in range(EVAL_EPISODES):
        episode = sampler.sample()
        adapted = learner.adapt(episode.support_x, episode.support_y)
        scores.append(np.mean(adapted.predict(episode.query_x) == episode.query_y))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def untrained_and_trained(nsl_sample: LabelledSample) -> tuple[float, ProtoNet, object]:
    spec = EncoderSpec(kind="mlp", input_shape=(nsl_sample.train_x.shape[1],), hidden=(64,),
                       embedding_dim=32)
    learner = ProtoNet(spec, seed=0, device="cpu")
    untrained = _accuracy(learner, nsl_sample)
    train = EpisodeSampler(nsl_sample.train_x, nsl_sample.train_y, ways=5, shots=5, queries=10,
                           seed=0)
    history = learner.meta_train(train, episodes=320, meta_batch=8)
    return untrained, learner, history


def test_sample_has_the_expected_novel_classes(nsl_sample: LabelledSample) -> None:
    sampler = _novel_sampler(nsl_sample)
    assert sampler.classes == NOVEL
    assert not set(NOVEL) & set(nsl_sample.train_y)


def test_meta_training_beats_the_untrained_encoder_on_unseen_attack_types(
    untrained_and_trained: tuple[float, ProtoNet, object], nsl_sample: LabelledSample
) -> None:
    untrained, learner, history = untrained_and_trained
    trained = _accuracy(learner, nsl_sample)
    # Measured: about 0.83 untrained vs 0.87 trained on these 60 episodes.
    assert trained >= untrained + 0.02, (untrained, trained)
    assert set(learner.seen_classes).isdisjoint(NOVEL)


def test_unknown_scores_separate_a_class_outside_the_support_set(
    untrained_and_trained: tuple[float, ProtoNet, object], nsl_sample: LabelledSample
) -> None:
    _, learner, _ = untrained_and_trained
    sampler = _novel_sampler(nsl_sample)
    areas, false_alarms, detections = [], [], []
    for _ in range(20):
        episode = sampler.sample()
        adapted = learner.adapt(episode.support_x, episode.support_y)
        held_out = [c for c in NOVEL if c not in episode.classes]
        unknown_x = nsl_sample.stream_x[np.isin(nsl_sample.stream_y, held_out)]
        half = episode.query_x.shape[0] // 2
        order = np.random.default_rng(0).permutation(episode.query_x.shape[0])
        calibration, fresh = episode.query_x[order[:half]], episode.query_x[order[half:]]
        areas.append(auroc(adapted.unknown_score(fresh), adapted.unknown_score(unknown_x)))
        adapted.calibrate(calibration, false_alarm_rate=0.1)
        false_alarms.append(np.mean(adapted.is_unknown(fresh)))
        detections.append(np.mean(adapted.is_unknown(unknown_x)))
    # Measured: mean AUROC about 0.85 over episodes.
    assert np.mean(areas) > 0.75
    assert np.mean(false_alarms) < 0.25
    assert np.mean(detections) > np.mean(false_alarms) + 0.2
