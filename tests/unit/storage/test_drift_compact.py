"""Drift reports: quiet features stored compact, the detail of what moved kept whole."""

from __future__ import annotations

import orjson

from storage.drift_compact import read_features, stored_features

MOVED = {"name": "src_bytes", "kind": "numeric", "test": "ks", "statistic": 0.21,
         "p_value": 1e-9, "adjusted_p_value": 4e-8, "rejected": True, "effect_size": 0.21,
         "reference_mean": 314.17725, "window_mean": 2244.608, "category_shifts": []}
QUIET = {"name": "duration", "kind": "numeric", "test": "ks", "statistic": 0.012345678901,
         "p_value": 0.7312322484867, "adjusted_p_value": 1.0, "rejected": False,
         "effect_size": 0.0123, "reference_mean": 1.5, "window_mean": 1.4,
         "category_shifts": []}


def test_a_quiet_window_keeps_each_features_test_and_p_values_only() -> None:
    stored = stored_features([QUIET, MOVED | {"rejected": False}], rejected=False)
    assert read_features(orjson.loads(orjson.dumps(stored))) == [
        {"name": "duration", "test": "ks", "statistic": 0.01235, "p_value": 0.7312,
         "adjusted_p_value": 1.0, "rejected": False},
        {"name": "src_bytes", "test": "ks", "statistic": 0.21, "p_value": 1e-9,
         "adjusted_p_value": 4e-8, "rejected": False},
    ]


def test_a_rejected_window_keeps_the_whole_detail_of_the_features_that_moved() -> None:
    stored = orjson.loads(orjson.dumps(stored_features([QUIET, MOVED], rejected=True)))
    quiet, moved = read_features(stored)
    assert moved == MOVED
    assert "reference_mean" not in quiet and quiet["p_value"] == 0.7312


def test_compact_storage_is_several_times_smaller_for_a_wide_quiet_window() -> None:
    features = [QUIET | {"name": f"feature_{i}"} for i in range(41)]
    full = len(orjson.dumps(features))
    compact = len(orjson.dumps(stored_features(features, rejected=False)))
    assert compact * 3 < full


def test_reports_stored_before_compaction_read_as_they_were() -> None:
    assert read_features([QUIET]) == [QUIET]
    assert read_features(None) == []


def test_fields_a_detector_does_not_report_stay_absent() -> None:
    stored = stored_features([{"name": "embedding", "p_value": 0.001}], rejected=False)
    assert read_features(stored) == [{"name": "embedding", "p_value": 0.001}]
