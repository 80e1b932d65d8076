"""Every registered detector passes the same conformance checks (river-style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from detectors import (
    DETECTOR_TYPES,
    Detector,
    FeatureBatch,
    LabelledDetector,
    RecordDetector,
    WindowDetector,
)
from detectors.checks import ServedModel, yield_checks

_PROTOCOLS = {"window": WindowDetector, "record": RecordDetector, "labelled": LabelledDetector}



def _served_model(algorithm: str) -> Callable[[FeatureBatch], ServedModel]:
    """Handles around a real served model (meta.live)."""

    def factory(reference: FeatureBatch) -> ServedModel:
        from meta.live import AlertModel, SupportSet

        learner = None
        if algorithm != "knn":
            from meta.encoders import EncoderSpec
            from meta.learners import build_learner

            spec = EncoderSpec(kind="mlp", input_shape=(reference.encoded.shape[1],),
                               hidden=(32,), embedding_dim=16)
            learner = build_learner(algorithm, spec, seed=0, device="cpu")
        assert reference.labels is not None
        support = SupportSet(x=reference.encoded, y=reference.labels,
                             origin=[f"reference:{i}" for i in range(len(reference))],
                             numeric=reference.numeric, categorical=reference.categorical)
        return ServedModel(AlertModel.build(algorithm, learner, support, benign_class="normal"))

    return factory


# Detectors that need the live model run the suite three times: with the suite's own numpy
# model, and with the served model class itself (knn, and an untrained memory learner).
_CASES = [
    pytest.param(detector_class, check, id=f"{type_name}-{model}-{check.__name__}")
    for type_name, detector_class in sorted(DETECTOR_TYPES.items())
    for model, factory in (
        [("checks", None), ("served-knn", _served_model("knn")),
         ("served-memory", _served_model("memory"))]
        if getattr(detector_class, "requires_model", False) else [("-", None)])
    for check in yield_checks(detector_class, model_factory=factory)
]


def test_registry_is_not_empty() -> None:
    assert "feature_drift" in DETECTOR_TYPES


@pytest.mark.parametrize("type_name", sorted(DETECTOR_TYPES))
def test_registered_detectors_follow_the_protocol(type_name: str) -> None:
    detector_class = DETECTOR_TYPES[type_name]
    detector = detector_class(**detector_class.example_params()[0])
    assert isinstance(detector, Detector)
    assert isinstance(detector, _PROTOCOLS[detector_class.family])
    assert issubclass(detector_class.Config, object) and callable(detector_class.from_config)


@pytest.mark.parametrize(("detector_class", "check"), _CASES)
def test_conformance(detector_class: type[Any], check: Callable[[type[Any]], None]) -> None:
    check(detector_class)
