"""What attacks and adversarial-input detectors read from the served model.

The layers, the class probabilities and the differentiable logits must describe the model that
classifies: an attack crafted on ``logits_function`` has to fool ``classify``, and the detector
fitted on the model's layers has to catch it while keeping its false-alarm rate on clean
records. The model is meta-trained in the test (a few seconds on a CPU).
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.training import TrainingPlan, train_learner
from detectors.adversarial import AdversarialDetector
from detectors.base import FeatureBatch
from detectors.checks import ServedModel, false_alarm_budget
from meta import attacks
from meta.encoders import EncoderSpec
from meta.learners import build_learner
from meta.live import AlertModel, SupportSet

CLASSES = ("normal", "scan", "flood", "probe", "smurf", "teardrop")


def _records(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(42).normal(0.0, 3.0, (len(CLASSES), 12))
    y = rng.integers(0, len(CLASSES), n)
    return (centres[y] + rng.normal(0.0, 1.0, (n, 12))).astype(np.float32), y


def _support(x: np.ndarray, y: np.ndarray) -> SupportSet:
    return SupportSet(x=x, y=np.array(CLASSES)[y], origin=[f"reference:{i}" for i in range(len(y))],
                      numeric=x, categorical=np.zeros((len(y), 0)))


def _batch(x: np.ndarray) -> FeatureBatch:
    return FeatureBatch(numeric=np.zeros((len(x), 0)), numeric_names=(),
                        categorical=np.zeros((len(x), 0)), categorical_names=(),
                        categorical_vocab=(), encoded=x)


@pytest.fixture(scope="module")
def protonet() -> AlertModel:
    rng = np.random.default_rng(0)
    x, y = _records(rng, 1200)
    plan = TrainingPlan(algorithm="protonet", episodes=200, ways=3, shots=5, queries=10,
                        meta_batch=4, val_classes=2, hidden=(32,), embedding_dim=8,
                        device="cpu", val_every=25)
    trained = train_learner(x, np.array(CLASSES)[y], plan)
    model = AlertModel.build("protonet", trained.learner, _support(x, y), benign_class="normal")
    model.version = "test"
    return model


@pytest.mark.parametrize("algorithm", ["protonet", "memory", "knn"])
def test_layers_end_with_the_representation_and_probabilities_match_classify(
        algorithm: str) -> None:
    rng = np.random.default_rng(1)
    x, y = _records(rng, 300)
    learner = None
    if algorithm != "knn":
        spec = EncoderSpec(kind="mlp", input_shape=(12,), hidden=(16, 8), embedding_dim=4)
        learner = build_learner(algorithm, spec, seed=0, device="cpu")
    model = AlertModel.build(algorithm, learner, _support(x, y), benign_class="normal")
    layers = model.layers(x[:20])
    assert np.allclose(layers[-1], model.embed(x[:20]), atol=1e-5)
    if algorithm != "knn":
        assert [layer.shape[1] for layer in layers[:2]] == [16, 8]
    out = model.classify(x[:20])
    probabilities = model.class_probabilities(x[:20])
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    named = np.array(model.probability_classes)[probabilities.argmax(axis=1)]
    assert (named == out.predicted.astype(str)).all()
    logits = model.logits_function()(x[:20]).numpy()
    assert (np.array(model.probability_classes)[logits.argmax(axis=1)]
            == out.predicted.astype(str)).mean() >= 0.95


def test_gradient_learners_have_no_differentiable_path() -> None:
    spec = EncoderSpec(kind="mlp", input_shape=(12,), hidden=(8,), embedding_dim=4)
    x, y = _records(np.random.default_rng(2), 60)
    model = AlertModel.build("maml", build_learner("maml", spec, seed=0, device="cpu"),
                             _support(x, y), benign_class="normal")
    with pytest.raises(ValueError, match="embedding learners"):
        model.logits_function()


def test_pgd_on_the_served_model_is_caught_and_clean_records_are_not(
        protonet: AlertModel) -> None:
    rng = np.random.default_rng(3)
    reference, _ = _records(rng, 2000)
    detector = AdversarialDetector(alpha=0.01, model=ServedModel(protonet))
    detector.fit(_batch(reference))
    clean, y = _records(rng, 3000)
    flagged = int(detector.score(_batch(clean)).flagged.sum())
    assert flagged <= false_alarm_budget(len(clean), 0.01) + 3 * np.sqrt(0.01 / 1000) * 3000

    classes = list(protonet.probability_classes)
    victims, truth = clean[:300], np.array([classes.index(CLASSES[v]) for v in y[:300]])
    right = np.array(protonet.probability_classes)[
        protonet.class_probabilities(victims).argmax(1)] == np.array(CLASSES)[y[:300]]
    result = attacks.pgd(protonet.logits_function(), victims, truth, eps=3.0, norm="linf",
                         steps=20, clip_min=-20.0, clip_max=20.0)
    fooled = result.success & right
    served = protonet.classify(result.x[fooled]).predicted.astype(str)
    assert fooled.mean() > 0.8
    assert (served != np.array(CLASSES)[y[:300]][fooled]).mean() > 0.9  # fools classify too
    caught = detector.score(_batch(result.x[fooled])).flagged.mean()
    assert caught >= 0.9, f"only {caught:.0%} of the PGD records flagged"
