"""What judges records: distribution shift, adversarial inputs, poisoning, novelty.

Every detector is fitted on reference data and calibrated to a false-alarm rate; the contract
is in :mod:`detectors.base`. :data:`DETECTOR_TYPES` maps each configuration ``type:`` to its
class, and the conformance suite in :mod:`detectors._testing` runs over every entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from detectors.base import (
    CategoryShift,
    Detector,
    DriftReport,
    FeatureBatch,
    FeatureSchemaError,
    FeatureTest,
    NotFittedError,
    Verdict,
    WindowDetector,
)
from detectors.feature_drift import FeatureDriftDetector

__all__ = [
    "DETECTOR_TYPES",
    "CategoryShift",
    "Detector",
    "DriftReport",
    "FeatureBatch",
    "FeatureDriftDetector",
    "FeatureSchemaError",
    "FeatureTest",
    "NotFittedError",
    "Verdict",
    "WindowDetector",
]

DETECTOR_TYPES: Mapping[str, type[Detector]] = MappingProxyType(
    {"feature_drift": FeatureDriftDetector}
)
