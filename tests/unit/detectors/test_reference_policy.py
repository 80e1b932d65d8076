"""How a reference may move: the rolling caps, approvals, and storage without pickle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detectors.base import FeatureBatch, FeatureSchemaError
from detectors.checks import Shift, synthetic_batch
from detectors.reference import (
    RollingPolicy,
    anchor_distance,
    merge_approved,
    pack,
    summarise,
    unpack,
)


def _reference(n: int = 1000, seed: int = 0) -> FeatureBatch:
    return synthetic_batch(np.random.default_rng(seed), n)


def test_pack_round_trips_and_refuses_another_schema() -> None:
    reference = _reference()
    data, sha = pack(reference)
    assert len(sha) == 64
    back = unpack(data, reference)
    assert np.array_equal(back.numeric, reference.numeric)
    assert np.array_equal(back.categorical, reference.categorical)
    renamed = dataclasses.replace(reference, numeric_names=tuple(
        f"x{i}" for i in range(len(reference.numeric_names))))
    with pytest.raises(FeatureSchemaError):
        unpack(data, renamed)


def test_last_n_replaces_at_most_the_follow_rate_per_window() -> None:
    reference = _reference()
    policy = RollingPolicy(follow_rate=0.05)
    shifted = synthetic_batch(np.random.default_rng(1), 400, Shift(score_mean=3.0))
    moved = policy.follow(reference, shifted, accepted_before=0, seed=0)
    assert len(moved) == len(reference)
    score = reference.numeric_names.index("score")
    from_stream = np.isin(moved.numeric[:, score], shifted.numeric[:, score]).sum()
    assert from_stream == 50  # 5 % of 1000
    # The oldest records went first.
    assert np.array_equal(moved.numeric[:950], reference.numeric[50:])


def test_reservoir_keeps_a_uniform_sample_slowed_by_the_cap() -> None:
    reference = _reference()
    policy = RollingPolicy(follow_rate=0.2, strategy="reservoir")
    window = synthetic_batch(np.random.default_rng(2), 200)
    early = policy.follow(reference, window, accepted_before=0, seed=1)
    late = policy.follow(reference, window, accepted_before=100_000, seed=1)
    changed_early = (early.numeric != reference.numeric).any(axis=1).sum()
    changed_late = (late.numeric != reference.numeric).any(axis=1).sum()
    assert changed_early <= 200 and changed_late < changed_early
    assert policy.follow(reference, window, accepted_before=0, seed=1).numeric.tobytes() == (
        early.numeric.tobytes())  # reproducible


def test_anchor_distance_names_the_feature_that_moved_most() -> None:
    reference = _reference()
    shifted = synthetic_batch(np.random.default_rng(3), 1000, Shift(score_mean=1.0))
    distance = anchor_distance(reference, shifted)
    assert distance.feature == "score" and 0.3 < distance.distance < 0.5
    assert "score mean" in distance.movement
    assert anchor_distance(reference, reference).distance == 0.0
    new_services = synthetic_batch(np.random.default_rng(4), 1000, Shift(new_service_share=0.6))
    assert anchor_distance(reference, new_services).feature == "service"


def test_merge_keeps_the_newest_records_and_summary_speaks_raw_units() -> None:
    reference = _reference(100)
    window = synthetic_batch(np.random.default_rng(5), 30)
    merged = merge_approved(reference, window, max_records=110)
    assert len(merged) == 110 and np.array_equal(merged.numeric[-30:], window.numeric)
    summary = summarise(merged)
    assert summary["n_records"] == 110
    assert set(summary["numeric"]["latency_ms"]) == {"mean", "std"}
    assert abs(sum(summary["categorical"]["protocol"].values()) - 1.0) < 0.05


@pytest.mark.parametrize("bad", [{"follow_rate": 0.0}, {"follow_rate": 1.5},
                                 {"anchor_limit": 0.0}, {"strategy": "fifo"}])
def test_bad_policies_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RollingPolicy(**bad)  # type: ignore[arg-type]
