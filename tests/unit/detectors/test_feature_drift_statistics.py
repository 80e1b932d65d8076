"""The per-feature tests of the feature drift detector against scipy and hand-pooled tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors import FeatureBatch, FeatureDriftDetector
from detectors.feature_drift import ks_p_value, pooled_chi2


def numeric_batch(columns: np.ndarray) -> FeatureBatch:
    n, d = columns.shape
    return FeatureBatch(
        numeric=columns,
        numeric_names=tuple(f"x{j}" for j in range(d)),
        categorical=np.zeros((n, 0)),
        categorical_names=(),
        categorical_vocab=(),
        encoded=np.zeros((n, 0)),
    )


def detector_ks(reference: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KS statistics and p-values as the detector reports them for ``window``."""
    detector = FeatureDriftDetector(window=max(len(window), 2), min_window=1)
    detector.fit(numeric_batch(reference))
    detector.update(numeric_batch(window))
    report = detector.test()
    assert report is not None
    return (
        np.array([f.statistic for f in report.features]),
        np.array([f.p_value for f in report.features]),
    )


def mixed_columns(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    """Continuous, heavily tied (mostly zero), small-integer and constant columns."""
    return np.column_stack(
        [
            rng.normal(shift, 1.0, n),
            np.where(rng.random(n) < 0.9, 0.0, np.round(rng.lognormal(5 + shift, 1.0, n))),
            rng.poisson(2.0 + shift, n).astype(float),
            np.round(rng.uniform(0, 1, n), 1),
            np.full(n, 3.0),
        ]
    )


@pytest.mark.parametrize(
    ("n_reference", "n_window", "shift", "seed"),
    [
        (8000, 1000, 0.0, 0),
        (8000, 1000, 0.1, 1),
        (500, 400, 0.3, 2),
        (3000, 60, 0.0, 3),
        (200, 2000, 0.2, 4),
        (1000, 1000, 0.05, 5),
    ],
)
def test_ks_statistics_and_p_values_match_scipy_asymptotic(
    n_reference: int, n_window: int, shift: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    reference = mixed_columns(rng, n_reference, 0.0)
    window = mixed_columns(rng, n_window, shift)
    statistics, p_values = detector_ks(reference, window)
    for j in range(reference.shape[1]):
        expected = stats.ks_2samp(reference[:, j], window[:, j], method="asymp")
        assert statistics[j] == pytest.approx(expected.statistic, abs=1e-12)
        assert p_values[j] == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-4)


def test_ks_p_values_stay_close_to_scipy_exact() -> None:
    """scipy's default picks the exact distribution for these sizes; the asymptotic one is near."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        n, m = int(rng.integers(200, 3000)), int(rng.integers(100, 1000))
        reference = rng.normal(size=(n, 1))
        window = rng.normal(rng.choice([0.0, 0.1, 0.2, 0.4]), 1.0, size=(m, 1))
        _, (p_value,) = detector_ks(reference, window)
        exact = stats.ks_2samp(reference[:, 0], window[:, 0], method="exact").pvalue
        assert abs(p_value - exact) <= 0.01
        if exact > 1e-250:
            assert abs(np.log(p_value / exact)) <= 0.15


@pytest.mark.parametrize(("n_reference", "n_window"), [(8000, 1000), (4000, 500), (300, 200)])
def test_ks_p_value_matches_scipys_distribution_from_body_to_far_tail(
    n_reference: int, n_window: int
) -> None:
    n_eff = round(n_reference * n_window / (n_reference + n_window))
    d = np.linspace(0.0, 0.6, 601)
    expected = stats.kstwo.sf(d, n_eff)
    p_values = ks_p_value(d, n_reference, n_window)
    np.testing.assert_allclose(p_values, expected, rtol=0.0, atol=1e-5)
    far_tail = expected > 1e-300
    far_tail &= n_eff * d * d >= 4.0
    assert far_tail.sum() > 100
    np.testing.assert_allclose(p_values[far_tail], expected[far_tail], rtol=1e-9)


def test_ks_p_value_uses_scipys_exact_distribution_for_tiny_samples() -> None:
    d = np.linspace(0.0, 1.0, 21)
    np.testing.assert_allclose(ks_p_value(d, 40, 20), stats.kstwo.sf(d, 13), rtol=1e-12)


def test_ks_p_value_is_monotone_from_one_to_zero() -> None:
    d = np.linspace(0.0, 1.0, 2001)
    p = ks_p_value(d, 8000, 1000)
    assert p[0] == 1.0 and p[-1] == pytest.approx(0.0, abs=1e-300)
    assert np.all(np.diff(p) <= 1e-12)


def test_constant_features_have_p_one_and_a_moved_constant_is_caught() -> None:
    reference = np.column_stack([np.zeros(500), np.ones(500)])
    window = np.column_stack([np.zeros(200), np.full(200, 2.0)])
    statistics, p_values = detector_ks(reference, window)
    assert statistics[0] == 0.0 and p_values[0] == 1.0
    assert statistics[1] == 1.0 and p_values[1] < 1e-50


def chi2_by_scipy(table: list[list[float]]) -> tuple[float, float, int]:
    result = stats.chi2_contingency(np.array(table), correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


def test_chi2_without_sparse_categories_is_scipys_homogeneity_test() -> None:
    reference = np.array([500, 300, 200, 0])
    window = np.array([40, 35, 25, 0])
    result = pooled_chi2(reference, window)
    statistic, p_value, dof = chi2_by_scipy([[500, 300, 200], [40, 35, 25]])
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.degrees_of_freedom == dof == 2


def test_sparse_categories_are_pooled_into_other() -> None:
    # Window share is 100 / 1100; totals 20, 30 and 13 give expected window counts under 5.
    reference = np.array([600, 250, 18, 28, 12, 0])
    window = np.array([50, 44, 2, 2, 1, 1])
    result = pooled_chi2(reference, window)
    statistic, p_value, dof = chi2_by_scipy([[600, 250, 58], [50, 44, 6]])
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.degrees_of_freedom == dof == 2


def test_a_still_sparse_other_joins_the_smallest_bin() -> None:
    # Only the 4 + 0 records of categories 2 and 3 are sparse; together still under 5 expected,
    # so they join category 1 (the smallest regular bin).
    reference = np.array([900, 300, 3, 0])
    window = np.array([95, 40, 0, 1])
    result = pooled_chi2(reference, window)
    statistic, p_value, dof = chi2_by_scipy([[900, 303], [95, 41]])
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.degrees_of_freedom == dof == 1


def test_a_single_bin_cannot_be_tested() -> None:
    result = pooled_chi2(np.array([1000, 0, 0]), np.array([100, 0, 0]))
    assert (result.statistic, result.p_value, result.degrees_of_freedom) == (0.0, 1.0, 0)


def test_a_frequent_unseen_category_is_a_strong_signal() -> None:
    reference = np.array([5000, 2000, 1000, 0])  # unknown bucket last, never seen
    window = np.array([560, 230, 110, 100])
    assert pooled_chi2(reference, window).p_value < 1e-30


def test_a_stray_unseen_record_in_a_long_tail_is_no_signal() -> None:
    rng = np.random.default_rng(3)
    shares = 1.0 / np.arange(1, 61) ** 1.5
    reference = np.append(rng.multinomial(8000, shares / shares.sum()), 0)
    window = np.append(rng.multinomial(999, shares / shares.sum()), 1)
    assert pooled_chi2(reference, window).p_value > 0.01


def test_pooled_chi2_keeps_its_size_on_a_long_tailed_category() -> None:
    """Under homogeneity, p <= 0.05 happens at most at the binomial-bounded rate."""
    rng = np.random.default_rng(4)
    shares = 1.0 / np.arange(1, 81) ** 1.3
    shares /= shares.sum()
    n_trials = 1000
    rejections = 0
    for _ in range(n_trials):
        reference = rng.multinomial(4000, shares)
        window = rng.multinomial(500, shares)
        rejections += pooled_chi2(reference, window).p_value <= 0.05
    # P(X > budget) <= 0.001 for X ~ Binomial(1000, 0.05).
    assert rejections <= stats.binom.isf(1e-3, n_trials, 0.05)
