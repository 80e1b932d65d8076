"""OnlineDriftDetector: the window contract, calibrated run length, delay, attribution, restarts."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import detectors.online_drift
from detectors import DetectorContext, DriftReport, FeatureBatch, FeatureSchemaError
from detectors.checks import (
    Shift,
    check_detects_shift,
    synthetic_batch,
    synthetic_labelled_batch,
    yield_checks,
)
from detectors.online_drift import FeatureShift, OnlineDriftConfig, OnlineDriftDetector


class ChangeDetectorVariants(OnlineDriftDetector):
    """The change-detector methods through the suite's contract checks.

    They watch each record's distance to the reference's mean embedding, which a one-feature
    mean shift barely moves (the suite's shift moves it by a quarter of a standard deviation),
    so the suite's shift check is left to the MMD; :func:`test_change_detector_methods_detect`
    checks their detection on a shift they can see.
    """

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        return [
            {"name": "online_cusum", "window": 20, "ert": 300.0, "method": "cusum",
             "calibration_streams": 200},
            {"name": "online_page_hinkley", "window": 25, "ert": 300.0,
             "method": "page_hinkley", "report_every": 40, "calibration_streams": 200},
            {"name": "online_adwin", "window": 32, "ert": 300.0, "method": "adwin",
             "kernel_features": 128, "calibration_streams": 200},
        ]


def _checks(cls: type[Any], skip: tuple[Callable[..., None], ...] = ()) -> list[Any]:
    return [pytest.param(check, id=check.__name__) for check in yield_checks(cls)
            if check not in skip]


@pytest.mark.parametrize("check", _checks(OnlineDriftDetector))
def test_conformance(check: Callable[[type[Any]], None]) -> None:
    check(OnlineDriftDetector)


@pytest.mark.parametrize("check", _checks(ChangeDetectorVariants, skip=(check_detects_shift,)))
def test_conformance_of_change_detector_methods(check: Callable[[type[Any]], None]) -> None:
    check(ChangeDetectorVariants)


def test_doctests() -> None:
    assert doctest.testmod(detectors.online_drift).failed == 0


def fitted(data_seed: int = 0, **params: Any) -> OnlineDriftDetector:
    params = {"calibration_streams": 400, **params}
    detector = OnlineDriftDetector(**params)
    detector.fit(synthetic_batch(np.random.default_rng(data_seed), 4000))
    return detector


def alarm_records(detector: OnlineDriftDetector, stream: FeatureBatch,
                  batch_size: int = 500) -> list[int]:
    out: list[int] = []
    for start in range(0, len(stream), batch_size):
        reports = detector.update(stream.take(slice(start, start + batch_size)))
        out.extend(report.records_seen for report in reports if report.rejected)
    return out


def first_alarm_after(detector: OnlineDriftDetector, stream: FeatureBatch) -> DriftReport:
    """The first alarm on a window made only of ``stream``'s records."""
    start = detector.records_seen
    return next(report for report in detector.update(stream)
                if report.rejected and report.records_seen - report.n_window >= start)


@pytest.mark.parametrize("method", ["mmd", "cusum"])
def test_mean_run_length_without_change_reaches_the_ert(method: str) -> None:
    """False alarms on a stream drawn like the reference come every ``ert`` records or later.

    Two calibrations (seeds), each on fresh stationary records; complete runs end on an alarm
    and start at the previous one. Run lengths are about geometric (standard deviation about
    the mean), so with ``R`` runs the measured mean lies within ``3 / sqrt(R)`` of the true
    one but for about 1 seed in 700.
    """
    ert, runs = 150.0, []
    for seed in (1, 2):
        detector = fitted(data_seed=seed, window=20, ert=ert, method=method, seed=seed)
        assert detector.calibrated_run_length >= ert
        stream = synthetic_batch(np.random.default_rng(50 + seed), 30_000)
        runs.extend(np.diff([0, *alarm_records(detector, stream)]).tolist())
    assert len(runs) >= 200
    assert np.mean(runs) >= ert * (1 - 3 / math.sqrt(len(runs))), np.mean(runs)


def test_detects_a_mean_shift_within_about_a_window() -> None:
    detector = fitted(window=20, ert=500.0)
    rng = np.random.default_rng(3)
    delays = []
    for _ in range(10):
        before = detector.records_seen
        alarm_records(detector, synthetic_batch(rng, 600))
        start = detector.records_seen
        after = [r for r in alarm_records(detector, synthetic_batch(rng, 200, Shift(1.5)))]
        assert after, "a 1.5 standard deviation shift went unnoticed for 200 records"
        delays.append(after[0] - start)
        assert before <= start
    assert np.median(delays) <= 20, delays
    assert max(delays) <= 40, delays


def test_alarm_names_the_shifted_feature_in_raw_units() -> None:
    detector = fitted(window=20, ert=500.0)
    rng = np.random.default_rng(4)
    detector.update(synthetic_batch(rng, 500))
    shifted = synthetic_batch(rng, 60)
    shifted = dataclasses.replace(shifted, numeric=shifted.numeric + np.array(
        [30.0, 0, 0, 0, 0, 0]))  # every request 30 ms slower
    alarm = first_alarm_after(detector, shifted)
    assert alarm.top_features[0] == "latency_ms"
    latency = alarm.feature("latency_ms")
    assert isinstance(latency, FeatureShift)
    assert latency.reference_mean is not None and latency.window_mean is not None
    assert latency.reference_mean == pytest.approx(22.6, rel=0.05)  # lognormal(3, 0.5)
    assert latency.window_mean - latency.reference_mean == pytest.approx(30.0, abs=8.0)
    assert latency.p_value <= 1 / 1000 and latency.contribution > 5
    assert f"latency_ms mean {latency.reference_mean:.4g}→" in alarm.summary()
    json.dumps(alarm.to_dict(), allow_nan=False)


def test_alarm_names_a_moved_category_with_its_shares() -> None:
    detector = fitted(window=30, ert=500.0)
    rng = np.random.default_rng(5)
    detector.update(synthetic_batch(rng, 500))
    shifted = synthetic_batch(rng, 90)
    shifted = dataclasses.replace(shifted, categorical=shifted.categorical * np.array(
        [0, 1, 1]) + np.array([2, 0, 0]))  # every record icmp (5% of the reference)
    alarm = first_alarm_after(detector, shifted)
    assert alarm.top_features[0] == "protocol"
    protocol = alarm.feature("protocol")
    assert isinstance(protocol, FeatureShift)
    top = protocol.category_shifts[0]
    assert top.category in {"tcp", "icmp"} and {s.category for s in
                                                protocol.category_shifts} >= {"tcp", "icmp"}
    icmp = next(s for s in protocol.category_shifts if s.category == "icmp")
    assert icmp.reference_fraction == pytest.approx(0.05, abs=0.01)
    assert icmp.window_fraction == 1.0
    assert "protocol: " in protocol.describe_movement()


@pytest.mark.parametrize("method", ["cusum", "page_hinkley", "adwin"])
def test_change_detector_methods_detect(method: str) -> None:
    detector = fitted(window=20, ert=500.0, method=method)
    rng = np.random.default_rng(6)
    alarm_records(detector, synthetic_batch(rng, 300))
    start = detector.records_seen
    alarms = alarm_records(detector, synthetic_batch(rng, 300, Shift(3.0, 0.3)))
    assert alarms and alarms[0] - start <= 100, alarms


@pytest.mark.parametrize("method", ["mmd", "cusum"])
def test_restart_from_replayed_records_reports_identically(method: str) -> None:
    """A fresh detector fed ``records_to_replay()`` records reports on what this one would."""
    rng = np.random.default_rng(7)
    reference = synthetic_batch(rng, 3000)
    head = FeatureBatch.concat([synthetic_batch(rng, 500), synthetic_batch(rng, 47, Shift(2.0))])
    tail = FeatureBatch.concat([synthetic_batch(rng, 100, Shift(2.0)),
                                synthetic_batch(rng, 400)])
    params: dict[str, Any] = {"window": 20, "ert": 300.0, "method": method,
                              "report_every": 30, "calibration_streams": 200}
    original = OnlineDriftDetector(**params)
    original.fit(reference)
    assert any(report.rejected for report in original.update(head))
    replay = original.records_to_replay()
    assert 0 < replay < 2 * 30 + 20
    restarted = OnlineDriftDetector(**params)
    restarted.fit(reference)
    restarted.update(head.take(slice(len(head) - replay, len(head))))
    offset = len(head) - replay

    def keyed(reports: list[Any], shift: int) -> list[dict[str, Any]]:
        return [{**report.to_dict(), "records_seen": report.records_seen + shift}
                for report in reports]

    expected = keyed(original.update(tail), 0)
    assert any(report["rejected"] for report in expected)
    assert keyed(restarted.update(tail), offset) == expected


def test_set_reference_refuses_another_schema() -> None:
    detector = fitted()
    other = dataclasses.replace(synthetic_batch(np.random.default_rng(8), 500),
                                numeric_names=("a", "b", "c", "d", "e", "f"))
    with pytest.raises(FeatureSchemaError, match="fit the detector instead"):
        detector.set_reference(other)


def test_encoded_features() -> None:
    rng = np.random.default_rng(9)
    detector = OnlineDriftDetector(window=20, ert=300.0, features="encoded",
                                   calibration_streams=200)
    detector.fit(synthetic_labelled_batch(rng, 3000))
    assert detector.calibrated_run_length >= 300.0
    detector.update(synthetic_labelled_batch(rng, 300))
    start = detector.records_seen
    alarms = [r.records_seen for r in detector.update(synthetic_labelled_batch(rng, 60, far=2.0))
              if r.rejected]
    assert alarms and alarms[0] - start <= 20, alarms
    narrower = dataclasses.replace(synthetic_labelled_batch(rng, 10), encoded=np.zeros((10, 3)))
    with pytest.raises(FeatureSchemaError):
        detector.update(narrower)


def test_p_values_of_scheduled_reports_on_a_stationary_stream() -> None:
    """A scheduled report's p-value is the share of null windows at least as extreme."""
    detector = fitted(window=20, ert=500.0)
    reports = detector.update(synthetic_batch(np.random.default_rng(10), 20_000))
    p_values = np.array([r.p_value for r in reports if not r.rejected])
    assert len(p_values) > 900
    assert np.mean(p_values <= 0.1) <= 0.13
    assert 0.4 <= np.mean(p_values) <= 0.6


def test_test_reports_on_the_current_window_without_moving_the_schedule() -> None:
    detector = fitted(window=20, ert=300.0)
    assert detector.test() is None
    detector.update(synthetic_batch(np.random.default_rng(11), 25))
    report = detector.test()
    assert report is not None and report.records_seen == 25 and report.n_window == 20
    assert detector.windows_tested == 2
    assert [r.records_seen for r in detector.update(
        synthetic_batch(np.random.default_rng(12), 15))] == [40]


def test_config_builds_a_fitted_detector() -> None:
    config = OnlineDriftConfig(name="fast_drift", window=30, ert=400, method="cusum",
                               calibration_streams=100)
    context = DetectorContext(reference=synthetic_batch(np.random.default_rng(13), 1000))
    detector = OnlineDriftDetector.from_config(config, context)
    assert detector.name == "fast_drift" and detector.is_fitted
    assert detector.report_every == 30 and detector.method == "cusum"


@pytest.mark.parametrize("fields", [
    {"report_every": 10}, {"ert": 15}, {"kernel_features": 101}, {"method": "ks"},
    {"windoww": 20},
])
def test_config_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OnlineDriftConfig(window=20, **fields)


def test_reference_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4 windows"):
        OnlineDriftDetector(window=50).fit(synthetic_batch(np.random.default_rng(14), 150))
