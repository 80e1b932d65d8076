"""Every registered detector passes the same conformance checks (river-style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from detectors import DETECTOR_TYPES, Detector, LabelledDetector, RecordDetector, WindowDetector
from detectors.checks import yield_checks

_PROTOCOLS = {"window": WindowDetector, "record": RecordDetector, "labelled": LabelledDetector}

_CASES = [
    pytest.param(detector_class, check, id=f"{type_name}-{check.__name__}")
    for type_name, detector_class in sorted(DETECTOR_TYPES.items())
    for check in yield_checks(detector_class)
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
