"""Data the multivariate drift tests share: two features whose correlation can flip while
every marginal stays as it was, and the attribution a report gives a feature."""

from __future__ import annotations

import numpy as np

from detectors._attribution import FeatureAttribution
from detectors.base import DriftReport, FeatureBatch


def attribution(report: DriftReport, name: str) -> FeatureAttribution:
    feature = report.feature(name)
    assert isinstance(feature, FeatureAttribution)
    return feature


def correlated(rng: np.random.Generator, n: int, correlation: float) -> FeatureBatch:
    """Two standard normal features with the given correlation, three independent ones and a
    categorical one: a change of the correlation leaves every marginal as it was."""
    pair = rng.multivariate_normal([0.0, 0.0], [[1.0, correlation], [correlation, 1.0]], n)
    numeric = np.column_stack([pair, rng.normal(size=(n, 2)), rng.exponential(size=n)])
    return FeatureBatch(
        numeric=numeric, numeric_names=("sent", "received", "jitter", "latency", "duration"),
        categorical=rng.integers(0, 3, (n, 1)), categorical_names=("protocol",),
        categorical_vocab=(("tcp", "udp", "icmp"),), encoded=np.zeros((n, 0)))
