"""Label consistency in the live model's embedding: where classes that raw features mix are
apart, re-embedded when the model version changes, calibrated on rows the model never saw."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import FeatureBatch
from detectors.label_consistency import LabelConsistencyDetector


def _batch(x: np.ndarray, y: np.ndarray) -> FeatureBatch:
    return FeatureBatch(numeric=np.zeros((len(x), 0)), numeric_names=(),
                        categorical=np.zeros((len(x), 0)), categorical_names=(),
                        categorical_vocab=(), encoded=x, labels=np.asarray(y, dtype=object))


class _Radius:
    """Embeds a record as its distance from the origin in its first two features: the classes
    below are two rings there, hidden among noisy features, which no neighbourhood in all the
    raw features separates but one number does."""

    def __init__(self) -> None:
        self.version = "1"
        self.calls = 0
        self.held_out_rows = np.zeros(0, dtype=np.int64)

    def current(self) -> _Radius:
        return self

    def embed(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.linalg.norm(np.asarray(x)[:, :2], axis=1, keepdims=True).astype(np.float32)


def _rings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    inner = rng.random(n) < 0.5
    radius = np.where(inner, 1.0, 1.6) + rng.normal(0, 0.05, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.column_stack([radius * np.cos(angle), radius * np.sin(angle),
                         rng.normal(0, 3.0, (n, 6))]).astype(np.float32)  # noise dims
    return x, np.where(inner, "inner", "outer")


def test_flips_invisible_in_raw_features_are_caught_in_the_embedding() -> None:
    rng = np.random.default_rng(0)
    x, y = _rings(rng, 2000)
    stream_x, stream_y = _rings(rng, 1000)
    flipped = rng.random(1000) < 0.1
    noisy = np.where(flipped, np.where(stream_y == "inner", "outer", "inner"), stream_y)
    found = {}
    for representation in ("encoded", "embeddings"):
        detector = LabelConsistencyDetector(alpha=0.01, window=0,
                                            representation=representation,  # type: ignore[arg-type]
                                            model=_Radius())
        detector.fit(_batch(x, y))
        verdict = detector.inspect(_batch(stream_x, noisy))
        found[representation] = (verdict.flagged[flipped].mean(),
                                 verdict.flagged[~flipped].mean())
    assert found["embeddings"][0] >= 0.9 and found["embeddings"][1] <= 0.02
    assert found["encoded"][0] < 0.5  # the raw features cannot tell the rings apart


def test_a_new_model_version_re_embeds_reference_and_window() -> None:
    rng = np.random.default_rng(1)
    x, y = _rings(rng, 500)
    model = _Radius()
    detector = LabelConsistencyDetector(alpha=0.05, window=100, representation="embeddings",
                                        model=model)
    detector.fit(_batch(x, y))
    stream_x, stream_y = _rings(rng, 60)
    detector.inspect(_batch(stream_x, stream_y))
    calls = model.calls
    detector.inspect(_batch(stream_x, stream_y))
    assert model.calls == calls + 1  # only the batch
    model.version = "2"
    detector.inspect(_batch(stream_x, stream_y))
    assert model.calls == calls + 4  # reference, window, batch


def test_calibrates_on_the_rows_the_model_never_saw() -> None:
    rng = np.random.default_rng(2)
    x, y = _rings(rng, 600)
    model = _Radius()
    model.held_out_rows = np.arange(0, 600, 3)
    detector = LabelConsistencyDetector(alpha=0.05, window=0, representation="embeddings",
                                        model=model)
    detector.fit(_batch(x, y))
    assert detector._calibration.size == 200


def test_an_unknown_representation_is_refused() -> None:
    with pytest.raises(ValueError, match="representation must be"):
        LabelConsistencyDetector(representation="pixels")  # type: ignore[arg-type]
