"""False-alarm rate and power of the feature drift detector, on synthetic and real NSL-KDD data.

False-alarm assertions use a binomial margin: with ``N`` windows and level ``alpha``, the
budget is the smallest count ``c`` with ``P(X > c) <= 0.001`` for ``X ~ Binomial(N, alpha)``
(see ``detectors.checks.false_alarm_budget``). A detector whose per-window false-alarm rate is
exactly ``alpha`` fails such an assertion with probability below 0.1%. Several independent
references are used, so that the observed rate is not the rate of one lucky or unlucky
reference sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from detectors import FeatureDriftDetector
from detectors._multiple_testing import Correction
from detectors.checks import Shift, false_alarm_budget, synthetic_batch

if TYPE_CHECKING:
    from conftest import NslKdd  # the fixtures' type, from this folder's conftest.py

_N_REFERENCES = 6
_WINDOWS_PER_REFERENCE = 100
_WINDOW = 500


def stationary_min_adjusted_p(correction: Correction) -> np.ndarray:
    """Each window's smallest adjusted p-value, over windows drawn like their reference."""
    p_values = []
    for reference_seed in range(_N_REFERENCES):
        rng = np.random.default_rng(1000 + reference_seed)
        detector = FeatureDriftDetector(window=_WINDOW, correction=correction)
        detector.fit(synthetic_batch(rng, 4000))
        reports = detector.update(synthetic_batch(rng, _WINDOW * _WINDOWS_PER_REFERENCE))
        assert len(reports) == _WINDOWS_PER_REFERENCE
        assert all(r.rejected == (r.p_value <= 0.01) for r in reports)
        p_values.extend(r.p_value for r in reports)
    return np.array(p_values)


@pytest.mark.slow
@pytest.mark.parametrize("correction", ["bh", "bonferroni"])
def test_false_alarm_rate_within_alpha_on_exchangeable_synthetic_data(
    correction: Correction,
) -> None:
    """Continuous, zero-inflated, discrete, constant, long-tailed categorical, boolean features."""
    p_values = stationary_min_adjusted_p(correction)
    n_windows = p_values.size
    assert n_windows == 600
    for alpha in (0.01, 0.05, 0.1):
        alarms = int((p_values <= alpha).sum())
        assert alarms <= false_alarm_budget(n_windows, alpha), (alpha, alarms)


def power(shift: Shift, expected_top: str, seed: int) -> tuple[float, float]:
    """Share of shifted windows rejected, and share naming ``expected_top`` first."""
    rng = np.random.default_rng(seed)
    detector = FeatureDriftDetector(window=_WINDOW)
    detector.fit(synthetic_batch(rng, 4000))
    reports = detector.update(synthetic_batch(rng, _WINDOW * 100, shift))
    rejected = np.mean([r.rejected for r in reports])
    named_first = np.mean([r.top_features[:1] == (expected_top,) for r in reports])
    return float(rejected), float(named_first)


def test_a_mean_shift_in_one_feature_is_detected_with_high_power() -> None:
    # 0.3 standard deviations on one of nine features, windows of 500 against 4000.
    rejected, named_first = power(Shift(score_mean=0.3), "score", seed=21)
    assert rejected >= 0.95
    assert named_first >= 0.95


def test_a_new_category_is_detected_with_high_power() -> None:
    # 10% of the window's services were never seen in the reference.
    rejected, named_first = power(Shift(new_service_share=0.1), "service", seed=22)
    assert rejected >= 0.95
    assert named_first >= 0.95


def test_no_shift_means_almost_no_alarms() -> None:
    """The same power harness on an unshifted stream: the power figures above are not free."""
    rejected, _ = power(Shift(), "score", seed=23)
    assert rejected <= false_alarm_budget(100, 0.01) / 100


@pytest.mark.data
@pytest.mark.slow
def test_false_alarm_rate_within_alpha_on_real_nsl_kdd(nsl_kdd_train: NslKdd) -> None:
    """Random windows of KDDTrain+_20Percent against a disjoint reference from the same file."""
    n_splits, windows_per_split, window = 4, 75, 1000
    p_values: dict[Correction, list[float]] = {"bh": [], "bonferroni": []}
    for split in range(n_splits):
        rng = np.random.default_rng(split)
        order = rng.permutation(len(nsl_kdd_train))
        reference_rows, pool = order[:8000], order[8000:]
        vocab = nsl_kdd_train.vocabularies(reference_rows)
        everything = nsl_kdd_train.batch(np.arange(len(nsl_kdd_train)), vocab)
        detectors = {
            correction: FeatureDriftDetector(window=window, correction=correction)
            for correction in p_values
        }
        for detector in detectors.values():
            detector.fit(everything.take(reference_rows))
        for _ in range(windows_per_split):
            batch = everything.take(rng.choice(pool, size=window, replace=False))
            for correction, detector in detectors.items():
                (report,) = detector.update(batch)
                p_values[correction].append(report.p_value)
    n_windows = n_splits * windows_per_split
    for correction, values in p_values.items():
        assert len(values) == n_windows
        for alpha in (0.01, 0.05):
            alarms = int((np.array(values) <= alpha).sum())
            assert alarms <= false_alarm_budget(n_windows, alpha), (correction, alpha, alarms)


@pytest.mark.data
def test_the_nsl_kdd_train_test_shift_is_detected(
    nsl_kdd_train: NslKdd, nsl_kdd_test: NslKdd
) -> None:
    """KDDTest+ was built with other attack mixes and new attack types: every window drifts."""
    rng = np.random.default_rng(0)
    reference_rows = rng.permutation(len(nsl_kdd_train))[:8000]
    vocab = nsl_kdd_train.vocabularies(reference_rows)
    detector = FeatureDriftDetector(window=1000)
    detector.fit(nsl_kdd_train.batch(reference_rows, vocab))
    test_rows = rng.permutation(len(nsl_kdd_test))[:3000]
    reports = detector.update(nsl_kdd_test.batch(test_rows, vocab))
    assert len(reports) == 3
    assert all(r.rejected and r.p_value < 1e-20 for r in reports)
    assert all(len(r.top_features) == 5 for r in reports)
