"""ClassifierDriftDetector: the window contract, exact p-values, power, attribution, state."""

from __future__ import annotations

import dataclasses
import doctest
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats

import detectors.classifier_drift
from detectors import DetectorContext, FeatureBatch
from detectors._multivariate import MultivariateDriftReport
from detectors.checks import Shift, false_alarm_budget, synthetic_batch, yield_checks
from detectors.classifier_drift import (
    ClassifierDriftConfig,
    ClassifierDriftDetector,
    _mann_whitney_u,
)
from tests.unit.detectors.multivariate_data import attribution, correlated


@pytest.mark.parametrize("check", [pytest.param(check, id=check.__name__)
                                   for check in yield_checks(ClassifierDriftDetector)])
def test_conformance(check: Callable[[type[Any]], None]) -> None:
    check(ClassifierDriftDetector)


def test_doctests() -> None:
    result = doctest.testmod(detectors.classifier_drift)
    assert result.attempted > 0 and result.failed == 0


def fitted(reference: FeatureBatch, **params: Any) -> ClassifierDriftDetector:
    detector = ClassifierDriftDetector(**{"window": 200, "min_window": 50, **params})
    detector.fit(reference)
    return detector


def test_mann_whitney_u_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 3)).astype(float)
    positive = np.zeros((40, 3))
    positive[rng.permutation(40)[:12], 0] = 1
    positive[:, 1:] = positive[rng.permutation(40), :1]
    for column in range(3):
        mask = positive[:, column] == 1
        expected = stats.mannwhitneyu(scores[mask, column], scores[~mask, column]).statistic
        assert _mann_whitney_u(scores, positive)[column] == pytest.approx(expected)


def test_false_alarms_stay_within_the_binomial_budget() -> None:
    rng = np.random.default_rng(1)
    detector = fitted(synthetic_batch(rng, 3000), window=100, alpha=0.05, permutations=200)
    reports = detector.update(synthetic_batch(rng, 40 * 100))
    assert len(reports) == 40
    assert sum(r.rejected for r in reports) <= false_alarm_budget(40, 0.05)


def test_duplicated_records_do_not_raise_false_alarms() -> None:
    """Many exact duplicates (as in NSL-KDD floods) make cross-validation folds share records,
    which breaks the normal approximation of the AUC; the within-fold permutations do not."""
    rng = np.random.default_rng(2)
    templates = synthetic_batch(rng, 40)

    def duplicated(n: int) -> FeatureBatch:
        return templates.take(rng.integers(0, 40, n))

    detector = fitted(duplicated(2000), window=60, alpha=0.05, permutations=200)
    reports = detector.update(duplicated(40 * 60))
    assert sum(r.rejected for r in reports) <= false_alarm_budget(40, 0.05)


def test_detects_a_mean_shift_in_raw_units() -> None:
    rng = np.random.default_rng(3)
    detector = fitted(synthetic_batch(rng, 3000))
    report = detector.update(synthetic_batch(rng, 200, Shift(score_mean=1.0)))[0]
    assert isinstance(report, MultivariateDriftReport)
    assert report.rejected and report.top_features[0] == "score"
    assert report.auc is not None and report.auc > 0.7 and report.statistic == report.auc
    score = attribution(report, "score")
    assert score.describe_movement() == (
        f"score mean {score.reference_mean:.4g}→{score.window_mean:.4g}")


def test_a_pure_correlation_change_is_detected_and_named() -> None:
    rng = np.random.default_rng(4)
    detector = fitted(correlated(rng, 3000, 0.8), window=300)
    assert not any(r.rejected for r in detector.update(correlated(rng, 600, 0.8)))
    report = detector.update(correlated(rng, 300, -0.8))[0]
    assert report.rejected
    assert set(report.top_features[:2]) == {"sent", "received"}
    correlation = attribution(report, "received").correlation
    assert correlation is not None and correlation.partner == "sent"
    assert "correlation with" in attribution(report, "sent").describe_movement()


def test_a_linear_model_cannot_see_a_correlation_change() -> None:
    """Why ``interactions`` exists: without component products the change is invisible."""
    rng = np.random.default_rng(5)
    detector = fitted(correlated(rng, 3000, 0.8), window=300, interactions=0)
    assert not detector.update(correlated(rng, 300, -0.8))[0].rejected


def test_report_serialises_and_set_reference_keeps_the_window() -> None:
    rng = np.random.default_rng(6)
    detector = fitted(synthetic_batch(rng, 3000))
    report = detector.update(synthetic_batch(rng, 250))[0]
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["test"] == "classifier" and data["bandwidth"] is None
    assert data["n_reference"] == 500
    detector.set_reference(synthetic_batch(rng, 800, Shift(score_mean=2.0)))
    assert (detector.window_fill, detector.records_seen, detector.windows_tested) == (200, 250, 1)
    assert detector.update(synthetic_batch(rng, 150))[0].top_features[0] == "score"


def test_windows_smaller_than_the_folds() -> None:
    rng = np.random.default_rng(7)
    detector = fitted(synthetic_batch(rng, 1000), window=3, min_window=2, folds=5,
                      permutations=200)
    reports = detector.update(synthetic_batch(rng, 9))
    assert len(reports) == 3 and all(0.0 < r.p_value <= 1.0 for r in reports)


def test_from_config_builds_and_fits() -> None:
    config = ClassifierDriftConfig.model_validate(
        {"type": "classifier_drift", "window": 30, "folds": 3})
    reference = synthetic_batch(np.random.default_rng(8), 1500)
    detector = ClassifierDriftDetector.from_config(config, DetectorContext(reference=reference))
    assert detector.is_fitted and detector.name == "classifier_drift"
    assert detector.min_window == 30 and detector.folds == 3
    shifted = dataclasses.replace(synthetic_batch(np.random.default_rng(9), 30))
    assert len(detector.update(shifted)) == 1
