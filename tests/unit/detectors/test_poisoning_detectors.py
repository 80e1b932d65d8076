"""Spectral signatures and activation clustering: calibrated on clean data, planted records found.

The stream is a few Gaussian classes in 20 dimensions; a backdoor takes records of one class,
adds a fixed trigger offset on three features and relabels them to the target class.
"""

from __future__ import annotations

import doctest
import json
from typing import Any

import numpy as np
import pytest

import detectors.activation_clustering
import detectors.spectral_signature
from detectors import FeatureBatch
from detectors.activation_clustering import ActivationClusteringDetector
from detectors.checks import ServedModel
from detectors.spectral_signature import SpectralSignatureDetector

DETECTORS = (SpectralSignatureDetector, ActivationClusteringDetector)
CLASSES = ("benign", "scan", "flood")
DIMENSIONS = 20
TARGET, SOURCE = "benign", "flood"
TRIGGER = np.zeros(DIMENSIONS)
TRIGGER[:3] = 4.0
_MEANS = np.random.default_rng(99).normal(0.0, 1.0, (len(CLASSES), DIMENSIONS)) * 2.5

# The conformance suite runs on both classes in tests/contract (they are registered).


@pytest.mark.parametrize("module", [detectors.spectral_signature,
                                    detectors.activation_clustering])
def test_docstring_examples_run(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


# --- a synthetic labelled stream --------------------------------------------------------------


def labelled(x: np.ndarray, y: np.ndarray, embeddings: np.ndarray | None = None
             ) -> FeatureBatch:
    return FeatureBatch(numeric=x, numeric_names=tuple(f"f{i}" for i in range(x.shape[1])),
                        categorical=np.zeros((len(x), 0)), categorical_names=(),
                        categorical_vocab=(), encoded=x, labels=y, embeddings=embeddings)


def clean_records(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    codes = rng.integers(0, len(CLASSES), n)
    x = _MEANS[codes] + rng.normal(0.0, 1.0, (n, DIMENSIONS))
    return x, np.array(CLASSES, dtype=object)[codes]


def backdoored(rng: np.random.Generator, n: int, share: float
               ) -> tuple[FeatureBatch, np.ndarray]:
    """``share`` of the target class's records replaced by triggered source-class records."""
    x, y = clean_records(rng, n)
    target = np.flatnonzero(y == TARGET)
    planted = np.zeros(n, dtype=bool)
    planted[rng.choice(target, int(round(share * target.size)), replace=False)] = True
    source = _MEANS[CLASSES.index(SOURCE)] + rng.normal(0.0, 1.0, (int(planted.sum()),
                                                                    DIMENSIONS))
    x[planted] = source + TRIGGER
    return labelled(x, y), planted


def run(detector: Any, stream: FeatureBatch, batch_size: int = 250) -> np.ndarray:
    flags = [detector.inspect(stream.take(slice(start, start + batch_size))).flagged
             for start in range(0, len(stream), batch_size)]
    return np.concatenate(flags)


def fitted(detector_class: type[Any], seed: int = 0, **params: Any) -> Any:
    detector = detector_class(**params)
    detector.fit(labelled(*clean_records(np.random.default_rng(seed), 3000)))
    return detector


@pytest.mark.parametrize("detector_class", DETECTORS)
def test_clean_stream_is_flagged_at_most_at_alpha(detector_class: type[Any]) -> None:
    detector = fitted(detector_class, alpha=0.01)
    stream = labelled(*clean_records(np.random.default_rng(1), 6000))
    flagged = run(detector, stream)
    assert flagged.mean() <= 0.01 + 0.005


@pytest.mark.parametrize("share", [0.05, 0.10])
@pytest.mark.parametrize("detector_class", DETECTORS)
def test_backdoor_is_found_with_recall_and_precision(detector_class: type[Any],
                                                     share: float) -> None:
    detector = fitted(detector_class)
    stream, planted = backdoored(np.random.default_rng(2), 6000, share)
    flagged = run(detector, stream)
    recall = flagged[planted].mean()
    precision = planted[flagged].mean()
    assert recall >= 0.9, f"recall {recall:.2f}"
    assert precision >= 0.9, f"precision {precision:.2f}"


@pytest.mark.parametrize("detector_class", DETECTORS)
def test_flagged_records_are_explained(detector_class: type[Any]) -> None:
    detector = fitted(detector_class)
    stream, planted = backdoored(np.random.default_rng(3), 1500, 0.1)
    verdicts = [detector.inspect(stream.take(slice(s, s + 500))) for s in (0, 500, 1000)]
    last = verdicts[-1]
    assert set(last.predicted_class.tolist()) <= set(CLASSES)
    flagged = np.flatnonzero(last.flagged)
    assert flagged.size and all(last.kind[flagged] == "poisoning")
    explanations = detector.explain(stream.take(slice(1000, 1500)), flagged[:3].tolist())
    json.dumps(explanations, allow_nan=False)
    json.dumps(dict(last.explanation), allow_nan=False)
    for entry in explanations:
        assert entry["label"] == TARGET and entry["method"] == detector.method
        assert entry["p_value"] <= detector.alpha and entry["in_suspect_group"]
        assert entry["nearest_other_class"] == SOURCE  # the trigger hides the source class


@pytest.mark.parametrize("detector_class", DETECTORS)
def test_restart_replays_enough_records(detector_class: type[Any]) -> None:
    stream, _ = backdoored(np.random.default_rng(4), 4000, 0.1)
    head, tail = stream.take(slice(0, 2730)), stream.take(slice(2730, 4000))
    params = {"window": 1000, "stride": 150}
    original = fitted(detector_class, **params)
    run(original, head, batch_size=300)
    replay = original.records_to_replay()
    assert 0 < replay <= params["window"] + 2 * params["stride"]
    restarted = fitted(detector_class, **params)
    run(restarted, head.take(slice(len(head) - replay, len(head))), batch_size=111)
    first, second = run(original, tail, 200), run(restarted, tail, 97)
    assert first.any()
    assert np.array_equal(first, second)


class _Model:
    def __init__(self, weights: np.ndarray, version: str) -> None:
        self.weights, self.version, self.embedded = weights, version, 0

    def embed(self, x: np.ndarray) -> np.ndarray:
        self.embedded += len(x)
        return np.asarray(x, np.float64) @ self.weights


@pytest.mark.parametrize("detector_class", DETECTORS)
def test_embeddings_are_the_representation_and_a_new_version_recalibrates(
        detector_class: type[Any]) -> None:
    rng = np.random.default_rng(5)
    first = _Model(rng.normal(size=(DIMENSIONS, 12)), "v1")
    second = _Model(rng.normal(size=(DIMENSIONS, 12)), "v2")
    reference = labelled(*clean_records(np.random.default_rng(0), 3000))
    stream, _ = backdoored(rng, 3000, 0.1)
    head, tail = stream.take(slice(0, 1600)), stream.take(slice(1600, 3000))
    handle = ServedModel(first)
    detector = detector_class(model=handle, window=800, stride=100)
    detector.fit(reference)
    detector.inspect(head.with_embeddings(first.embed(head.encoded)))
    assert first.embedded == len(reference) + len(head)  # the reference, embedded once
    handle.model = second
    verdict = detector.inspect(tail.with_embeddings(second.embed(tail.encoded)))
    assert second.embedded == len(reference) + 800 + len(tail)  # reference and window again

    # The same as a detector that always saw the second version's representation.
    def as_encoded(batch: FeatureBatch) -> FeatureBatch:
        return labelled(second.embed(batch.encoded), batch.labels)

    baseline = detector_class(window=800, stride=100)
    baseline.fit(as_encoded(reference))
    baseline.inspect(as_encoded(head))
    expected = baseline.inspect(as_encoded(tail))
    assert verdict.flagged.any()
    assert np.array_equal(verdict.flagged, expected.flagged)
    assert np.allclose(verdict.p_value, expected.p_value)


@pytest.mark.parametrize("detector_class", DETECTORS)
def test_a_label_missing_from_the_reference_is_left_alone(detector_class: type[Any]) -> None:
    detector = fitted(detector_class)
    x, y = clean_records(np.random.default_rng(6), 300)
    y[:50] = "never_seen"
    verdict = detector.inspect(labelled(x, y))
    assert not verdict.flagged[:50].any() and (verdict.p_value[:50] == 1.0).all()


@pytest.mark.parametrize("detector_class", DETECTORS)
def test_the_clean_null_comes_from_rows_the_model_never_saw(detector_class: type[Any]) -> None:
    class HeldOut:
        held_out_rows = np.arange(0, 3000, 3)

        def current(self) -> None:
            return None

    detector = detector_class(model=HeldOut())
    detector.fit(labelled(*clean_records(np.random.default_rng(7), 3000)))
    assert len(detector._reference_encoded) == 1000
