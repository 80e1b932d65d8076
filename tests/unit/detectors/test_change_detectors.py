"""CUSUM, Page–Hinkley and ADWIN: detection, false alarms, batching, persistence, calibration."""

from __future__ import annotations

import doctest
import io
import math
from typing import Any

import numpy as np
import pytest

import detectors.change_detectors
from detectors.change_detectors import (
    Adwin,
    Calibration,
    Cusum,
    Direction,
    Method,
    PageHinkley,
    calibrate,
    calibrate_threshold,
    run_length_threshold,
)

ERT = 300.0
Calibrated = dict[Method, Calibration]
CLASSES: dict[Method, type[Any]] = {"cusum": Cusum, "page_hinkley": PageHinkley,
                                    "adwin": Adwin}


def null_scores(seed: int = 0, n: int = 5000) -> np.ndarray:
    """Scores of the kind these detectors watch: skewed, like a distance or an error."""
    return np.random.default_rng(seed).gamma(2.0, 1.0, n)


@pytest.fixture(scope="module")
def calibrated() -> Calibrated:
    return {method: calibrate(method, null_scores(), ERT, n_streams=400, seed=1)
            for method in CLASSES}


def complete_runs(alarms: np.ndarray) -> np.ndarray:
    """Run lengths between alarms (the first from the start), each ending on its alarm."""
    return np.diff(np.concatenate([[-1], alarms]))


def test_module_doctests() -> None:
    assert doctest.testmod(detectors.change_detectors).failed == 0


@pytest.mark.parametrize("method", sorted(CLASSES))
def test_detects_an_abrupt_mean_change(method: Method, calibrated: Calibrated) -> None:
    delays = []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        detector = calibrated[method].build()
        before = detector.update(rng.gamma(2.0, 1.0, 1000))
        after = detector.update(rng.gamma(2.0, 1.0, 1000) + 1.5)  # one standard deviation up
        assert before.size <= 8, f"{before.size} false alarms in 1000 null scores"
        assert after.size, "a one-standard-deviation step was never detected"
        delays.append(int(after[0]) + 1)
    assert np.median(delays) <= 64, delays


@pytest.mark.parametrize("method", sorted(CLASSES))
def test_calibrated_run_length_reaches_the_ert(method: Method, calibrated: Calibrated) -> None:
    """On fresh null scores, false alarms come every ``ERT`` values or later.

    Run lengths are about geometric (standard deviation about the mean), so with ``R`` complete
    runs the measured mean sits within ``3 / sqrt(R)`` of the true one but for 1 in 700 seeds.
    """
    fit = calibrated[method].fit
    assert fit.mean_run_length >= ERT
    detector = calibrated[method].build()
    runs = complete_runs(detector.update(null_scores(seed=2, n=150_000)))
    assert runs.size >= 200
    assert runs.mean() >= ERT * (1 - 3 / math.sqrt(runs.size)), runs.mean()


@pytest.mark.parametrize("method", sorted(CLASSES))
def test_few_false_alarms_on_stationary_data(method: Method, calibrated: Calibrated) -> None:
    detector = calibrated[method].build()
    alarms = detector.update(null_scores(seed=3, n=30_000))
    # 100 alarms expected at most; Poisson(100) exceeds 135 once in 1000 seeds.
    assert alarms.size <= 135


@pytest.mark.parametrize("method", sorted(CLASSES))
def test_results_do_not_depend_on_batching(method: Method, calibrated: Calibrated) -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.gamma(2.0, 1.0, 2000), rng.gamma(2.0, 1.0, 1000) + 1.0])
    outcomes = []
    for size in (len(values), 97, 1):
        detector = calibrated[method].build()
        alarms: list[int] = []
        statistics = []
        for start in range(0, len(values), size):
            scan = detector.scan(values[start:start + size])
            alarms.extend((scan.alarms + start).tolist())
            statistics.append(scan.statistic)
        outcomes.append((alarms, np.concatenate(statistics)))
    assert outcomes[0][0], "no alarm to compare"
    for other_alarms, other_statistics in outcomes[1:]:
        assert other_alarms == outcomes[0][0]
        assert np.array_equal(other_statistics, outcomes[0][1])


@pytest.mark.parametrize("method", sorted(CLASSES))
def test_state_round_trip(method: Method, calibrated: Calibrated) -> None:
    rng = np.random.default_rng(5)
    head, tail = rng.gamma(2.0, 1.0, 777), rng.gamma(2.0, 1.0, 2000) + 0.8
    original = calibrated[method].build()
    original.update(head)
    buffer = io.BytesIO()
    np.savez(buffer, **original.state_dict())  # type: ignore[arg-type]
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        state = {key: saved[key] for key in saved.files}
    resumed = calibrated[method].build()
    resumed.load_state(state)
    assert resumed.count == original.count and resumed.statistic == original.statistic
    first, second = original.scan(tail), resumed.scan(tail)
    assert np.array_equal(first.alarms, second.alarms)
    assert np.array_equal(first.statistic, second.statistic)


def test_state_of_other_parameters_is_refused() -> None:
    state = Cusum(threshold=4.0).state_dict()
    with pytest.raises(ValueError, match="parameters"):
        Cusum(threshold=5.0).load_state(state)


@pytest.mark.parametrize("direction", ["down", "both"])
def test_downward_changes(direction: Direction) -> None:
    rng = np.random.default_rng(6)
    for cls in (Cusum, PageHinkley):
        detector = cls(threshold=15.0, drift=0.5, direction=direction, mean=0.0, std=1.0)
        assert detector.update(rng.normal(0, 1, 1000)).size == 0
        assert detector.update(rng.normal(-2, 1, 100)).size, f"{cls.__name__} missed a drop"
    assert Cusum(threshold=8.0, mean=0.0, std=1.0).update(rng.normal(-2, 1, 500)).size == 0


def test_cusum_memory_is_enough_to_rebuild_its_state() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(0, 1, 5000)
    detector = Cusum(threshold=1e9, direction="both", mean=0.0, std=1.0)
    detector.update(values)
    fresh = Cusum(threshold=1e9, direction="both", mean=0.0, std=1.0)
    fresh.update(values[len(values) - detector.memory:])
    assert detector.memory < 200
    assert (fresh._up, fresh._down) == (detector._up, detector._down)


def test_grace_period_holds_alarms_back() -> None:
    detector = Cusum(threshold=3.0, mean=0.0, std=1.0, grace_period=50)
    alarms = detector.update(np.full(100, 5.0))
    assert alarms.tolist() == [49, 99]


def test_adwin_histogram_stays_logarithmic_and_exact() -> None:
    rng = np.random.default_rng(8)
    values = rng.normal(0, 1, 20_000)
    detector = Adwin(delta=1e-9, mean=0.0, std=1.0)
    detector.update(values)
    assert detector.width == 20_000
    assert detector._sizes.size <= 5 * math.ceil(math.log2(20_000))
    assert np.all(np.diff(detector._sizes) <= 0), "bucket sizes must shrink towards the newest"
    assert int(detector._sums.sum()) == int(detector.quantise(values).sum())


@pytest.mark.parametrize("cls", [Cusum, PageHinkley, Adwin])
def test_defaults_learn_the_scale_of_an_error_stream(cls: type[Any]) -> None:
    """Uncalibrated, each learns the mean and spread of a 0/1 error series as it starts."""
    rng = np.random.default_rng(11)
    delays, false_alarms = [], 0
    for _ in range(10):
        detector = cls()
        false_alarms += detector.update((rng.random(1000) < 0.1).astype(float)).size
        after = detector.update((rng.random(1000) < 0.4).astype(float))
        assert after.size, "an error rate going from 10% to 40% went unnoticed"
        delays.append(int(after[0]) + 1)
    assert false_alarms <= 8  # about 3 expected from the defaults' run length
    assert np.median(delays) <= 100, delays


def test_self_starting_state_round_trip() -> None:
    values = (np.random.default_rng(12).random(500) < 0.2).astype(float)
    original = Cusum()
    original.update(values[:17])  # mid warm-up
    resumed = Cusum()
    resumed.load_state(original.state_dict())
    assert np.array_equal(original.scan(values[17:]).statistic,
                          resumed.scan(values[17:]).statistic)


def test_run_length_threshold_on_independent_statistics() -> None:
    """With independent uniform statistics the run length is geometric with mean 1/(1 - b)."""
    rng = np.random.default_rng(9)
    ert = 100.0
    fit = run_length_threshold((rng.random((500, 800)) for _ in range(4)), ert)
    assert 1 - 1 / ert * 1.15 < fit.threshold < 1 - 1 / ert * 0.85
    assert fit.mean_run_length >= ert
    # "statistic > threshold" and "p-value <= alpha" are one decision.
    for value in (fit.threshold, np.nextafter(fit.threshold, 2.0), 0.5, 0.999999):
        assert (value > fit.threshold) == (fit.p_value(value) <= fit.alpha)


def test_calibrate_threshold_returns_the_level() -> None:
    null = null_scores(seed=10)
    threshold = calibrate_threshold(null, 200.0, method="cusum", n_streams=100)
    delta = calibrate_threshold(null, 200.0, method="adwin", n_streams=100)
    assert threshold > 0 and delta > 0
    calibration = calibrate("cusum", null, 200.0, n_streams=100)
    assert calibration.level == threshold
    assert calibration.params["mean"] == pytest.approx(null.mean())


@pytest.mark.parametrize(("cls", "params"), [
    (Cusum, {"threshold": float("nan")}), (Cusum, {"std": 0.0}), (Cusum, {"drift": -1.0}),
    (Cusum, {"direction": "sideways"}), (Cusum, {"grace_period": 0}), (Cusum, {"warmup": 1}),
    (PageHinkley, {"threshold": "10"}), (Adwin, {"delta": 0.0}), (Adwin, {"clock": 0}),
    (Adwin, {"max_buckets": 1}), (Adwin, {"max_window": 2**25}),
])
def test_bad_parameters_are_refused(cls: type[Any], params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\.$"):
        cls(**params)


def test_bad_calibration_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        calibrate("ewma", null_scores(), 100.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        calibrate("cusum", np.array([1.0, np.nan]), 100.0)
    with pytest.raises(ValueError, match="ert"):
        calibrate("cusum", null_scores(), 0.5)
    with pytest.raises(ValueError, match="finite"):
        Cusum().update(np.array([np.inf]))
