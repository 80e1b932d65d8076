"""The tabular adversarial benchmark: valid attacks, finite figures, a calibrated false-alarm rate.

The rounding and constraint checks run on synthetic counts; the benchmark itself runs in its
quick form on the real NSL-KDD files and skips, saying which file is missing, where they are
absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.adversarial_tabular import constraint_violations, round_into_budget, run
from bench.fewshot_data import NSL_TEST_FILE, NSL_TRAIN_FILE, data_root
from detectors.checks import false_alarm_budget

MUTABLE = np.array([True, True, False, True])
UPPER = np.array([10.0, 1e6, 5.0, 3.0])


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"dataset file {path} is missing (set METASENTRY_DATA to the data root)")


# --- rounding into the budget (synthetic) ------------------------------------------------------


@pytest.mark.parametrize("mode", ["nearest", "away"])
@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_rounded_attacks_respect_every_constraint(mode: str, eps: float) -> None:
    rng = np.random.default_rng(0)
    clean = np.column_stack([rng.integers(0, 11, 500), rng.integers(0, 10**6, 500),
                             rng.integers(0, 6, 500), rng.integers(0, 4, 500)]).astype(float)
    wild = np.log1p(clean) + rng.uniform(-3 * eps, 3 * eps, clean.shape)  # far out of budget
    adversarial = round_into_budget(clean, wild, MUTABLE, UPPER, eps, mode=mode)
    assert constraint_violations(clean, adversarial, MUTABLE, UPPER, eps) == {
        "immutable_changed": 0, "non_integer": 0, "out_of_bounds": 0, "over_budget": 0}
    assert (adversarial != clean).any()


def test_rounding_away_keeps_a_small_move_that_nearest_rounding_undoes() -> None:
    clean = np.zeros((1, 4))
    moved = np.log1p(np.array([[0.3, 0.3, 0.0, 0.0]]))
    assert round_into_budget(clean, moved, MUTABLE, UPPER, 1.0)[0, :2].tolist() == [0, 0]
    assert round_into_budget(clean, moved, MUTABLE, UPPER, 1.0, mode="away")[0, :2].tolist() == [
        1, 1]


def test_a_zero_count_cannot_move_under_a_budget_below_log_2() -> None:
    """e^0.5 - 1 < 1: the only integer within the budget of a zero count is zero."""
    clean = np.zeros((1, 4))
    moved = np.full((1, 4), 0.5)
    assert not round_into_budget(clean, moved, MUTABLE, UPPER, 0.5, mode="away").any()


def test_each_violation_is_counted() -> None:
    clean = np.array([[1.0, 100.0, 2.0, 0.0]] * 4)
    bad = clean.copy()
    bad[0, 2] = 3.0  # immutable feature changed
    bad[1, 0] = 1.5  # not an integer
    bad[2, 3] = 4.0  # above the domain (3)...
    bad[3, 1] = 1000.0  # ...and ten times the count: over a budget of e
    assert constraint_violations(clean, bad, MUTABLE, UPPER, 1.0) == {
        "immutable_changed": 1, "non_integer": 1, "out_of_bounds": 1, "over_budget": 2}


# --- the benchmark on NSL-KDD ------------------------------------------------------------------


def _numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(value, dict):
        return [n for key, item in value.items() for n in _numbers(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [n for i, item in enumerate(value) for n in _numbers(item, f"{path}[{i}]")]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [(path, float(value))]
    return []


@pytest.fixture(scope="module")
def quick_results() -> dict[str, Any]:
    root = data_root()
    _require(root / "nsl-kdd" / NSL_TRAIN_FILE)
    _require(root / "nsl-kdd" / NSL_TEST_FILE)
    lines: list[str] = []
    results = run(quick=True, progress=lines.append)
    assert lines, "the benchmark reports its progress"
    return results


@pytest.mark.data
@pytest.mark.slow
def test_quick_run_reports_every_section_with_finite_numbers(quick_results: dict[str, Any]
                                                             ) -> None:
    for section in ("data", "model", "detector", "throughput", "false_alarms", "attack",
                    "adaptive"):
        assert section in quick_results
    json.dumps(quick_results, allow_nan=False)  # JSON-ready as main() writes it
    numbers = _numbers(quick_results)
    assert numbers and all(math.isfinite(v) for _, v in numbers), [
        p for p, v in numbers if not math.isfinite(v)]
    throughput = quick_results["throughput"]
    assert throughput["detector_records_per_s"] > 0 and throughput["forward_records_per_s"] > 0
    attacks = quick_results["attack"]["per_eps"]
    adaptive = quick_results["adaptive"]["runs"]
    assert len(attacks) == len(quick_results["adaptive"]["best_of_all"]["per_eps"]) >= 1
    assert {run["surrogate"] for run in adaptive} >= {"none", "last_layer"}
    for result in attacks + adaptive:
        assert 0.0 <= result["success_rate"] <= 1.0
        assert 0.0 <= result["evades_model_and_detector"] <= result["success_rate"]
        if result["success_rate"] > 0:  # detection figures exist exactly when something evades
            assert 0.0 <= result["detection_rate"] <= 1.0
            assert 0.0 <= result["auroc_vs_clean_attack"] <= 1.0
        else:
            assert result["detection_rate"] is None
    fidelity = quick_results["adaptive"]["surrogate_fidelity"]
    assert fidelity["encoder_max_abs_error"] < 1e-4
    assert fidelity["mahalanobis_max_rel_error"] < 1e-2


@pytest.mark.data
@pytest.mark.slow
def test_quick_run_attacks_only_change_mutable_integers_within_bounds(
        quick_results: dict[str, Any]) -> None:
    results = quick_results["attack"]["per_eps"] + quick_results["adaptive"]["runs"]
    for result in results:
        assert result["constraints"] == {"immutable_changed": 0, "non_integer": 0,
                                         "out_of_bounds": 0, "over_budget": 0}, result
    assert quick_results["attack"]["mutable_features"] == [
        "duration", "src_bytes", "dst_bytes", "wrong_fragment", "urgent", "hot",
        "num_failed_logins", "num_compromised", "num_root", "num_file_creations", "num_shells",
        "num_access_files"]


@pytest.mark.data
@pytest.mark.slow
def test_quick_run_false_alarms_on_held_out_records_stay_within_budget(
        quick_results: dict[str, Any]) -> None:
    held = quick_results["false_alarms"]["heldout_training_file"]
    assert held["n"] >= 1000
    assert held["flagged"] <= false_alarm_budget(held["n"], quick_results["alpha"])
    shifted = quick_results["false_alarms"]["shifted_test_file"]
    assert shifted["all"]["n"] == quick_results["data"]["test"]
