"""Benjamini–Hochberg and Bonferroni adjusted p-values against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors._multiple_testing import adjust_p_values, benjamini_hochberg, bonferroni

# m = 5. Sorted: 0.005, 0.01, 0.03, 0.04, 0.5; m * p_(i) / i = 0.025, 0.025, 0.05, 0.05, 0.5;
# the running minimum from the right leaves them unchanged.
P_VALUES = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
BH_BY_HAND = np.array([0.025, 0.05, 0.05, 0.025, 0.5])
BONFERRONI_BY_HAND = np.array([0.05, 0.2, 0.15, 0.025, 1.0])


def test_benjamini_hochberg_matches_hand_computation() -> None:
    np.testing.assert_allclose(benjamini_hochberg(P_VALUES), BH_BY_HAND, rtol=1e-12)


def test_benjamini_hochberg_steps_up() -> None:
    # 3 * 0.02 / 1 = 0.06 exceeds 3 * 0.021 / 2 = 0.0315, so the smallest p inherits 0.0315.
    adjusted = benjamini_hochberg(np.array([0.02, 0.021, 0.9]))
    np.testing.assert_allclose(adjusted, [0.0315, 0.0315, 0.9], rtol=1e-12)


def test_bonferroni_matches_hand_computation_and_caps_at_one() -> None:
    np.testing.assert_allclose(bonferroni(P_VALUES), BONFERRONI_BY_HAND, rtol=1e-12)


def test_benjamini_hochberg_agrees_with_scipy() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 41, 200):
        p = rng.uniform(size=size) ** 3
        np.testing.assert_allclose(
            benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), rtol=1e-12
        )


def test_ties_and_extremes() -> None:
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.0, 1.0, 0.0])), [0.0, 1.0, 0.0])
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.01, 0.01])), [0.01, 0.01])
    assert benjamini_hochberg(np.array([])).size == 0


def test_adjust_dispatches_by_name() -> None:
    np.testing.assert_allclose(adjust_p_values(P_VALUES, "bh"), BH_BY_HAND)
    np.testing.assert_allclose(adjust_p_values(P_VALUES, "bonferroni"), BONFERRONI_BY_HAND)
    with pytest.raises(ValueError, match="one of \\['bh', 'bonferroni'\\]"):
        adjust_p_values(P_VALUES, "holm")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[0.5, 1.5], [-0.1], [np.nan], [[0.1, 0.2]]])
def test_invalid_p_values_are_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        benjamini_hochberg(np.array(bad))
