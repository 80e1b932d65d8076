from __future__ import annotations

import numpy as np
import pytest

from meta.openset import auroc, calibrate_unknown, threshold_for_false_alarm_rate


def test_auroc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    known = rng.integers(0, 10, 50).astype(float)
    unknown = rng.integers(3, 13, 40).astype(float)
    pairs = (unknown[:, None] > known[None, :]) + 0.5 * (unknown[:, None] == known[None, :])
    assert auroc(known, unknown) == pytest.approx(pairs.mean())
    assert auroc(known, known + 100) == 1.0


def test_threshold_holds_the_false_alarm_rate_on_fresh_known_scores() -> None:
    rng = np.random.default_rng(1)
    calibration = calibrate_unknown(rng.normal(size=2000), 0.05)
    fresh = rng.normal(size=20000)
    assert np.mean(fresh > calibration.threshold) == pytest.approx(0.05, abs=0.015)
    assert calibration.calibration_records == 2000


def test_threshold_rejects_a_rate_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="false_alarm_rate"):
        threshold_for_false_alarm_rate(np.ones(3), 1.5)
