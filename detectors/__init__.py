"""What judges records: distribution shift, suspicious labels, and the live model's verdicts.

Every detector is fitted on reference data and calibrated to a false-alarm rate; the contract
is in :mod:`detectors.base`. :data:`DETECTOR_TYPES` maps each configuration ``type:`` to its
class (each class carries its own ``Config`` model and builds itself with ``from_config``), and
the conformance suite in :mod:`detectors.checks` runs over every entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from detectors.activation_clustering import (
    ActivationClusteringConfig,
    ActivationClusteringDetector,
)
from detectors.adversarial import AdversarialConfig, AdversarialDetector
from detectors.base import (
    Detector,
    DetectorConfig,
    DetectorContext,
    DriftReport,
    FeatureBatch,
    FeatureResult,
    FeatureSchemaError,
    LabelledDetector,
    ModelHandle,
    NotFittedError,
    RecordDetector,
    Verdict,
    WindowDetector,
)
from detectors.classifier import ClassifierConfig, ClassifierDetector
from detectors.classifier_drift import ClassifierDriftConfig, ClassifierDriftDetector
from detectors.feature_drift import (
    CategoryShift,
    FeatureDriftConfig,
    FeatureDriftDetector,
    FeatureTest,
)
from detectors.label_consistency import LabelConsistencyConfig, LabelConsistencyDetector
from detectors.mmd_drift import MMDDriftConfig, MMDDriftDetector
from detectors.online_drift import OnlineDriftConfig, OnlineDriftDetector
from detectors.spectral_signature import SpectralSignatureConfig, SpectralSignatureDetector

__all__ = [
    "DETECTOR_TYPES",
    "ActivationClusteringConfig",
    "ActivationClusteringDetector",
    "AdversarialConfig",
    "AdversarialDetector",
    "CategoryShift",
    "ClassifierConfig",
    "ClassifierDetector",
    "ClassifierDriftConfig",
    "ClassifierDriftDetector",
    "Detector",
    "DetectorConfig",
    "DetectorContext",
    "DriftReport",
    "FeatureBatch",
    "FeatureDriftConfig",
    "FeatureDriftDetector",
    "FeatureResult",
    "FeatureSchemaError",
    "FeatureTest",
    "LabelConsistencyConfig",
    "LabelConsistencyDetector",
    "LabelledDetector",
    "MMDDriftConfig",
    "MMDDriftDetector",
    "ModelHandle",
    "NotFittedError",
    "OnlineDriftConfig",
    "OnlineDriftDetector",
    "RecordDetector",
    "SpectralSignatureConfig",
    "SpectralSignatureDetector",
    "Verdict",
    "WindowDetector",
    "build_detector",
]

DETECTOR_TYPES: Mapping[str, Any] = MappingProxyType(
    {
        "feature_drift": FeatureDriftDetector,
        "online_drift": OnlineDriftDetector,
        "mmd_drift": MMDDriftDetector,
        "classifier_drift": ClassifierDriftDetector,
        "classifier": ClassifierDetector,
        "label_consistency": LabelConsistencyDetector,
        "adversarial": AdversarialDetector,
        "spectral_signature": SpectralSignatureDetector,
        "activation_clustering": ActivationClusteringDetector,
    }
)


def build_detector(config: DetectorConfig, context: DetectorContext) -> Any:
    """The detector a ``detectors:`` entry describes, built and fitted."""
    try:
        detector_class = DETECTOR_TYPES[config.type]
    except KeyError:
        raise ValueError(
            f"unknown detector type {config.type!r}; use one of {sorted(DETECTOR_TYPES)}."
        ) from None
    return detector_class.from_config(config, context)
