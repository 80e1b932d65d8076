"""The classifier detector on the live model: what it names, and what it reports as novel."""

from __future__ import annotations

import numpy as np

from detectors.base import FeatureBatch
from detectors.checks import ServedModel
from detectors.classifier import ClassifierDetector
from meta.live import AlertModel, SupportSet


def _batch(x: np.ndarray) -> FeatureBatch:
    return FeatureBatch(numeric=x, numeric_names=tuple(f"f{i}" for i in range(x.shape[1])),
                        categorical=np.zeros((len(x), 0), dtype=np.int64),
                        categorical_names=(), categorical_vocab=(), encoded=x)


def _support(x: np.ndarray, labels: list[str], origin: str) -> SupportSet:
    return SupportSet(x=x, y=labels, origin=[f"{origin}:{i}" for i in range(len(x))],
                      numeric=x, categorical=np.zeros((len(x), 0)))


def test_records_nearest_a_one_record_reference_class_are_novel_until_it_is_labelled() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(0.0, 1.0, (300, 3))
    scan = rng.normal(8.0, 1.0, (100, 3))
    spy = np.array([[0.0, 30.0, 0.0]])
    reference = _support(np.concatenate([normal, scan, spy]),
                         ["normal"] * 300 + ["scan"] * 100 + ["spy"], "reference")
    model = AlertModel.build("knn", None, reference, benign_class="normal")
    handle = ServedModel(model)
    detector = ClassifierDetector(alpha=0.01, model=handle)
    detector.fit(_batch(reference.x))

    stream = np.concatenate([rng.normal([0.0, 30.0, 0.0], 0.3, (5, 3)),
                             rng.normal(8.0, 1.0, (5, 3))])
    verdict = detector.score(_batch(stream))
    assert verdict.flagged.all()
    assert verdict.kind.tolist() == ["novel"] * 5 + ["attack"] * 5
    assert verdict.predicted_class.tolist() == ["spy"] * 5 + ["scan"] * 5

    handle.model = model.with_records(_support(stream[:1], ["spy"], "label"))
    assert detector.score(_batch(stream[1:5])).kind.tolist() == ["attack"] * 4
