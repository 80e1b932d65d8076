"""MMDDriftDetector: the window contract, calibration, power, attribution in raw units, state."""

from __future__ import annotations

import dataclasses
import doctest
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import detectors.mmd_drift
from detectors import DetectorContext, FeatureBatch, FeatureSchemaError
from detectors._kernels import QuadraticMMD
from detectors._multivariate import MultivariateDriftReport
from detectors._permutation import sequential_p_value
from detectors.checks import Shift, false_alarm_budget, synthetic_batch, yield_checks
from detectors.mmd_drift import MMDDriftConfig, MMDDriftDetector
from tests.unit.detectors.multivariate_data import attribution, correlated


@pytest.mark.parametrize("check", [pytest.param(check, id=check.__name__)
                                   for check in yield_checks(MMDDriftDetector)])
def test_conformance(check: Callable[[type[Any]], None]) -> None:
    check(MMDDriftDetector)


def test_doctests() -> None:
    result = doctest.testmod(detectors.mmd_drift)
    assert result.attempted > 0 and result.failed == 0


def fitted(reference: FeatureBatch, **params: Any) -> MMDDriftDetector:
    detector = MMDDriftDetector(**{"window": 200, "min_window": 50, "n_reference": 1000,
                                   **params})
    detector.fit(reference)
    return detector


@pytest.mark.parametrize("estimator", ["quadratic", "rff", "linear"])
def test_false_alarms_stay_within_the_binomial_budget(estimator: str) -> None:
    rng = np.random.default_rng(11)
    detector = fitted(synthetic_batch(rng, 3000), estimator=estimator, alpha=0.05, window=100)
    reports = detector.update(synthetic_batch(rng, 40 * 100))
    assert len(reports) == 40
    assert sum(r.rejected for r in reports) <= false_alarm_budget(40, 0.05)


def test_detects_a_mean_shift_and_names_the_feature_in_raw_units() -> None:
    rng = np.random.default_rng(12)
    detector = fitted(synthetic_batch(rng, 3000))
    report = detector.update(synthetic_batch(rng, 200, Shift(score_mean=1.0)))[0]
    assert report.rejected and report.top_features[0] == "score"
    score = attribution(report, "score")
    assert score.describe_movement().startswith("score mean ")
    assert score.reference_mean == pytest.approx(0.0, abs=0.1)
    assert score.window_mean == pytest.approx(1.0, abs=0.2)
    assert score.share > 0.3


@pytest.mark.parametrize("estimator", ["quadratic", "rff"])
def test_a_pure_correlation_change_is_detected_and_named(estimator: str) -> None:
    rng = np.random.default_rng(13)
    detector = fitted(correlated(rng, 3000, 0.8), window=300, estimator=estimator)
    assert not any(r.rejected for r in detector.update(correlated(rng, 600, 0.8)))
    report = detector.update(correlated(rng, 300, -0.8))[0]
    assert report.rejected
    assert set(report.top_features[:2]) == {"sent", "received"}
    sent = attribution(report, "sent")
    assert sent.correlation is not None and sent.correlation.partner == "received"
    assert sent.correlation.reference > 0.7 and sent.correlation.window < -0.7
    assert report.summary().count(" correlation with ") == 1  # the pair is named once


def test_raw_units_survive_heavy_tails() -> None:
    """A count of bytes in the millions moves; the report speaks in bytes, not in scaled units."""
    rng = np.random.default_rng(14)
    reference = synthetic_batch(rng, 3000)
    window = synthetic_batch(rng, 200)
    numeric = window.numeric.copy()
    numeric[:, 2] += 5000.0  # src_bytes: every connection sends 5000 bytes more
    window = dataclasses.replace(window, numeric=numeric)
    report = fitted(reference).update(window)[0]
    assert report.rejected and report.top_features[0] == "src_bytes"
    feature = attribution(report, "src_bytes")
    assert feature.window_mean == pytest.approx(float(numeric[:, 2].mean()))
    assert feature.reference_mean == pytest.approx(float(reference.numeric[:, 2].mean()))
    assert feature.describe_movement() == (
        f"src_bytes mean {feature.reference_mean:.4g}→{feature.window_mean:.4g}")


def test_a_new_category_is_described_as_such() -> None:
    rng = np.random.default_rng(15)
    report = fitted(synthetic_batch(rng, 3000)).update(
        synthetic_batch(rng, 200, Shift(new_service_share=0.5)))[0]
    assert report.rejected and report.top_features[0] == "service"
    assert "unseen categories" in attribution(report, "service").describe_movement()


def test_statistic_is_the_unbiased_mmd2_of_the_window() -> None:
    rng = np.random.default_rng(16)
    reference, window = rng.normal(size=(300, 3)), rng.normal(0.3, 1.0, size=(40, 3))
    tester = QuadraticMMD(reference, 1.5, permutations=99, seed=0)
    statistic, p_value = tester.test(window, alpha=0.05)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * 1.5**2))

    def off_diagonal_mean(k: np.ndarray) -> float:
        return float((k.sum() - np.trace(k)) / (k.shape[0] * (k.shape[0] - 1)))

    expected = (off_diagonal_mean(kernel(reference, reference))
                + off_diagonal_mean(kernel(window, window))
                - 2 * kernel(reference, window).mean())
    assert statistic == pytest.approx(expected, rel=1e-4)
    assert 0.0 < p_value <= 1.0


def test_sequential_p_values_stop_early_only_above_alpha() -> None:
    rng = np.random.default_rng(17)
    null = rng.normal(size=1000)

    def batches(observed: float) -> Callable[[int], np.ndarray]:
        values = np.concatenate([[observed], null])
        return lambda i: values[i * 100:(i + 1) * 100]

    calls: list[int] = []

    def counting(observed: float) -> Callable[[int], np.ndarray]:
        inner = batches(observed)

        def batch(i: int) -> np.ndarray:
            calls.append(i)
            return inner(i)

        return batch

    # An unremarkable statistic stops after the first batch with p > alpha ...
    _, p_value = sequential_p_value(counting(0.0), 11, 999, alpha=0.01)
    assert len(calls) == 1 and p_value > 0.01
    # ... an extreme one runs every permutation and gets the smallest p-value possible.
    observed, p_value = sequential_p_value(batches(10.0), 11, 1000, alpha=0.01)
    assert observed == 10.0 and p_value == pytest.approx(1 / 1001)


def test_report_records_the_bandwidth_and_serialises() -> None:
    rng = np.random.default_rng(18)
    detector = fitted(synthetic_batch(rng, 3000))
    report = detector.update(synthetic_batch(rng, 200))[0]
    assert isinstance(report, MultivariateDriftReport)
    assert report.bandwidth == detector.bandwidth > 0.0
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["test"] == "mmd" and data["method"] == "quadratic on raw features"
    assert data["permutations"] == 1000 and data["n_reference"] == 1000
    assert report.summary().startswith("mmd_drift: no drift over 200 records")


def test_set_reference_keeps_the_window_and_recomputes_the_bandwidth() -> None:
    rng = np.random.default_rng(19)
    detector = fitted(synthetic_batch(rng, 3000))
    detector.update(synthetic_batch(rng, 150))
    before = detector.bandwidth
    wide = synthetic_batch(rng, 3000)
    wide = dataclasses.replace(wide, numeric=wide.numeric * 10.0)
    detector.set_reference(wide)
    assert (detector.window_fill, detector.records_seen, detector.windows_tested) == (150, 150, 0)
    assert detector.bandwidth != before
    with pytest.raises(FeatureSchemaError):
        detector.set_reference(
            dataclasses.replace(wide, numeric_names=("x",) + wide.numeric_names[1:]))


def test_load_state_refuses_other_parameters() -> None:
    rng = np.random.default_rng(20)
    detector = fitted(synthetic_batch(rng, 2000))
    buffer = io.BytesIO()
    arrays: dict[str, Any] = detector.state_dict()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        state = {key: saved[key] for key in saved.files}
    with pytest.raises(ValueError, match="parameters"):
        MMDDriftDetector(window=200, min_window=50, n_reference=1000,
                         bandwidth_scale=1.0).load_state(state)


def test_encoded_and_embedding_spaces() -> None:
    rng = np.random.default_rng(21)

    def with_vectors(batch: FeatureBatch, shift: float = 0.0) -> FeatureBatch:
        vectors = rng.normal(shift, 1.0, size=(len(batch), 4)).astype(np.float32)
        return dataclasses.replace(batch, encoded=vectors).with_embeddings(vectors)

    for space in ("encoded", "embeddings"):
        detector = fitted(with_vectors(synthetic_batch(rng, 2000)), features=space)
        assert detector.uses_embeddings == (space == "embeddings")
        assert not detector.update(with_vectors(synthetic_batch(rng, 200)))[0].rejected
        assert detector.update(with_vectors(synthetic_batch(rng, 200), 1.0))[0].rejected
    with pytest.raises(ValueError, match="embeddings"):
        fitted(synthetic_batch(rng, 2000), features="embeddings")
    with pytest.raises(ValueError, match="encoded"):
        fitted(synthetic_batch(rng, 2000), features="encoded")


def test_from_config_builds_and_fits() -> None:
    config = MMDDriftConfig.model_validate(
        {"type": "mmd_drift", "name": "mmd", "window": 30, "estimator": "rff"})
    reference = synthetic_batch(np.random.default_rng(22), 1500)
    detector = MMDDriftDetector.from_config(config, DetectorContext(reference=reference))
    assert detector.is_fitted and detector.min_window == 30 and detector.step == 30
    assert detector.get_params()["estimator"] == "rff"
    with pytest.raises(ValueError):
        MMDDriftConfig.model_validate({"type": "mmd_drift", "estimatr": "rff"})


def test_a_timer_test_of_a_part_filled_window() -> None:
    rng = np.random.default_rng(23)
    detector = fitted(synthetic_batch(rng, 3000))
    assert detector.update(synthetic_batch(rng, 40)) == [] and detector.test() is None
    detector.update(synthetic_batch(rng, 30, Shift(score_mean=2.0)))
    first, again = detector.test(), detector.test()
    assert first is not None and again is not None
    assert first.n_window == 70 and first.to_dict() == again.to_dict()
    assert first.rejected and first.top_features[0] == "score"
    assert detector.records_to_replay() == 70  # test() leaves the schedule alone
    assert len(detector.update(synthetic_batch(rng, 130))) == 1


def test_importing_the_detector_leaves_tensorflow_unloaded() -> None:
    import subprocess
    import sys

    code = "import sys, detectors.mmd_drift; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
