"""The Elec2 benign envelope: the unit of its moves, the control order and the report, on
synthetic streams (no data file needed); and a partial benchmark rerun keeps the other parts."""

from __future__ import annotations

import numpy as np

from bench import drift, drift_envelope
from bench import drift_streams as ds


def _stream(days: int, drift_per_day: float, seed: int = 0) -> ds.Stream:
    """A five-feature stream whose level walks by ``drift_per_day`` reference-scale units a day,
    long enough for the envelope's longest reference after the Victorian start."""
    n = ds.ELEC2_VIC_START + days * ds.ELEC2_RECORDS_PER_DAY
    rng = np.random.default_rng(seed)
    level = drift_per_day * np.arange(n)[:, None] / ds.ELEC2_RECORDS_PER_DAY
    numeric = level + rng.normal(size=(n, len(ds.ELEC2_NUMERIC)))
    return ds.Stream(numeric, ds.ELEC2_NUMERIC, np.full((n, 2), "x", dtype=object),
                     ds.ELEC2_CATEGORICAL, ds.elec2_timestamps(n))


def test_a_window_move_is_measured_in_reference_standard_deviations() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(4000, 2)) * [1.0, 3.0]
    monitored = rng.normal(size=(200, 2)) * [1.0, 3.0] + [0.0, 3.0]   # 1 sd on the second
    moves = drift_envelope.window_moves(reference, monitored, window=100, step=100, windows=2)
    assert moves.shape == (2, 2)
    assert np.all(moves[:, 0] < 0.35)
    assert np.all(np.abs(moves[:, 1] - 1.0) < 0.35)


def test_a_constant_reference_column_counts_as_moved_only_when_the_window_moves_it() -> None:
    reference = np.column_stack([np.zeros(50), np.arange(50.0)])
    still = drift_envelope.window_moves(reference, np.column_stack([np.zeros(10), np.ones(10)]),
                                        window=10, step=10, windows=1)
    moved = drift_envelope.window_moves(reference, np.column_stack([np.ones(10), np.ones(10)]),
                                        window=10, step=10, windows=1)
    assert still[0, 0] == 0.0 and np.isinf(moved[0, 0])


def test_a_walking_level_fills_the_time_envelope_and_shuffling_empties_it() -> None:
    stream = _stream(days=220, drift_per_day=0.2)
    envelope = drift_envelope.benign_envelope(stream, window=336, step=96, windows=3,
                                              segments=6, reference_weeks=(4, 8))
    time_rows, shuffled_rows = envelope["orders"]["time"], envelope["orders"]["shuffled"]
    assert [row["reference_weeks"] for row in time_rows] == [4, 8]
    # A level 2.8+ units a week past a reference centred 2 weeks back: every window moves.
    assert all(row["share_any_feature"] == 1.0 for row in time_rows)
    assert all(row["share_any_feature"] == 0.0 for row in shuffled_rows)
    text = "\n".join(drift_envelope.markdown(envelope))
    assert "at least 100% of benign windows" in text and "| shuffled | 8 weeks | 0% |" in text


def test_a_still_stream_has_an_empty_envelope() -> None:
    envelope = drift_envelope.benign_envelope(_stream(days=220, drift_per_day=0.0), window=336,
                                              step=96, windows=3, segments=4,
                                              reference_weeks=(4,))
    assert envelope["orders"]["time"][0]["share_any_feature"] == 0.0


def test_a_partial_rerun_replaces_its_parts_and_keeps_the_others() -> None:
    previous = {"machine": {"cpu": "old"}, "nsl_kdd": {"a": 1}, "elec2": {"b": 2},
                "seconds": 900.0}
    fresh = {"machine": {"cpu": "new"}, "elec2_envelope": {"c": 3}, "seconds": 2.0}
    merged = drift.merge_parts(previous, fresh)
    assert merged["nsl_kdd"] == {"a": 1} and merged["elec2"] == {"b": 2}
    assert merged["elec2_envelope"] == {"c": 3}
    assert merged["machine"] == {"cpu": "old"} and merged["seconds"] == 900.0
    assert merged["part_runs"]["envelope"]["machine"] == {"cpu": "new"}
    assert set(merged["part_runs"]) == {"envelope"}


def test_adjacent_weeks_move_with_a_walking_level_and_not_with_a_still_one() -> None:
    walking = drift_envelope.adjacent_week_moves(_stream(days=220, drift_per_day=1.0))
    still = drift_envelope.adjacent_week_moves(_stream(days=220, drift_per_day=0.0))
    # 7 units a week against a spread of about 8 over the 4 weeks before: about 0.9 sd
    assert walking["weeks"] == still["weeks"] > 20
    assert walking["largest_move_quantiles"]["50"] > 0.5
    assert still["share_any_feature"] == 0.0 and still["largest_move_quantiles"]["95"] < 0.3
