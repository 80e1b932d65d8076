"""The drift benchmark's data: the injection harness injects what it says, and nothing else.

The injection checks run on a small synthetic stream; the Elec2 timestamps and the NSL-KDD
protocol run on the real files and skip, saying which file is missing, where they are absent.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest

from bench import drift_streams as ds

START, LENGTH = 200, 144  # three "days" of 48 records


def _stream(n: int = 600, seed: int = 0) -> ds.Stream:
    """Two strongly correlated numeric features, one independent, a day-of-week column."""
    rng = np.random.default_rng(seed)
    lead = rng.normal(10.0, 2.0, n)
    numeric = np.column_stack([lead, 0.5 * lead + rng.normal(0.0, 0.3, n), rng.normal(0, 1, n)])
    categorical = np.empty((n, 1), dtype=object)
    categorical[:, 0] = np.asarray(ds.WEEKDAYS, dtype=object)[(np.arange(n) // 48) % 7]
    return ds.Stream(numeric, ("a", "b", "c"), categorical, ("day",), ds.elec2_timestamps(n))


def _outside(array: np.ndarray) -> np.ndarray:
    return np.concatenate([array[:START], array[START + LENGTH:]])


def test_a_mean_shift_moves_the_block_by_k_reference_standard_deviations_and_nothing_else(
) -> None:
    stream = _stream()
    shifted = ds.inject(stream, "mean", START, LENGTH, 1.5, "a", np.random.default_rng(1))
    reference_sd = stream.column("a")[:START].std()
    moved = shifted.column("a") - stream.column("a")
    np.testing.assert_allclose(moved[START:START + LENGTH], 1.5 * reference_sd)
    assert not _outside(moved).any()
    np.testing.assert_array_equal(shifted.column("b"), stream.column("b"))
    np.testing.assert_array_equal(shifted.categorical, stream.categorical)
    assert stream.column("a")[START] != shifted.column("a")[START], "the input was changed"
    (injection,) = shifted.injections
    assert (injection.kind, injection.start, injection.stop) == ("mean", START, START + LENGTH)


def test_a_mean_shift_is_measured_in_the_reference_it_is_given() -> None:
    stream = _stream()
    shifted = ds.inject(stream, "mean", START, LENGTH, 1.0, "c", np.random.default_rng(1),
                        reference=slice(0, 50))
    moved = shifted.column("c")[START] - stream.column("c")[START]
    assert moved == pytest.approx(stream.column("c")[:50].std())


def test_a_variance_change_scales_the_block_spread_and_keeps_its_mean() -> None:
    stream = _stream()
    shifted = ds.inject(stream, "variance", START, LENGTH, 2.0, ["a", "c"],
                        np.random.default_rng(1))
    for name in ("a", "c"):
        before, after = stream.column(name), shifted.column(name)
        block = slice(START, START + LENGTH)
        assert after[block].std() == pytest.approx(2.0 * before[block].std())
        assert after[block].mean() == pytest.approx(before[block].mean())
        np.testing.assert_array_equal(_outside(after), _outside(before))


def test_a_new_category_appears_in_the_block_only_at_the_share_asked() -> None:
    stream = _stream()
    shifted = ds.inject(stream, "new_category", START, LENGTH, 0.25, "day",
                        np.random.default_rng(1))
    is_new = shifted.column("day") == "new:day"
    assert is_new[START:START + LENGTH].sum() == round(0.25 * LENGTH)
    assert not _outside(is_new).any()
    assert "new:day" not in set(stream.column("day").tolist())
    kept = ~is_new
    np.testing.assert_array_equal(shifted.column("day")[kept], stream.column("day")[kept])
    np.testing.assert_array_equal(shifted.numeric, stream.numeric)


def test_a_correlation_change_keeps_every_chunks_marginal_and_reverses_the_correlation(
) -> None:
    stream = _stream()
    shifted = ds.inject(stream, "correlation", START, LENGTH, 1.0, ("a", "b"),
                        np.random.default_rng(1), chunk=48)
    a, b, new_b = stream.column("a"), stream.column("b"), shifted.column("b")
    for begin in range(START, START + LENGTH, 48):
        np.testing.assert_array_equal(np.sort(new_b[begin:begin + 48]),
                                      np.sort(b[begin:begin + 48]))
    block = slice(START, START + LENGTH)
    assert np.corrcoef(a[block], b[block])[0, 1] > 0.9
    assert np.corrcoef(a[block], new_b[block])[0, 1] < -0.9
    np.testing.assert_array_equal(shifted.column("a"), a)
    np.testing.assert_array_equal(_outside(new_b), _outside(b))


def test_a_block_outside_the_stream_or_an_unknown_kind_is_refused() -> None:
    stream = _stream(300)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="must lie in the stream"):
        ds.inject(stream, "mean", 250, 100, 1.0, "a", rng)
    with pytest.raises(ValueError, match="use one of"):
        ds.inject(stream, "seasonal", 10, 10, 1.0, "a", rng)
    with pytest.raises(ValueError, match="categorical"):
        ds.inject(stream, "new_category", 10, 10, 0.5, "a", rng)


def test_slicing_moves_injections_into_the_slice() -> None:
    shifted = ds.inject(_stream(), "mean", START, LENGTH, 1.0, "a", np.random.default_rng(0))
    part = shifted.slice(100, 500)
    assert [(i.start, i.length) for i in part.injections] == [(START - 100, LENGTH)]
    assert shifted.slice(400, 500).injections == ()


def test_records_carry_every_feature_for_the_agents_encoder() -> None:
    stream = _stream(10)
    records = stream.records(2, 4)
    assert len(records) == 2
    assert records[0] == {"a": stream.numeric[2, 0], "b": stream.numeric[2, 1],
                          "c": stream.numeric[2, 2], "day": "Mon",
                          "time": int(stream.timestamps[2])}


def test_elec2_timestamps_are_half_hours_from_the_seventh_of_may_1996() -> None:
    stamps = ds.elec2_timestamps(49)
    assert datetime.datetime.fromtimestamp(int(stamps[0]), datetime.UTC) == datetime.datetime(
        1996, 5, 7, 0, 0, tzinfo=datetime.UTC)
    assert set(np.diff(stamps).tolist()) == {1800}
    assert datetime.datetime.fromtimestamp(int(stamps[48]), datetime.UTC).day == 8


def test_error_streams_are_read_without_pickle(tmp_path: Path) -> None:
    errors = np.zeros((2, 10), dtype=np.uint8)
    errors[:, 6:] = 1
    np.savez(tmp_path / "e.npz", names=np.array(["x_abrupt", "x_none"]), change=np.array([6, -1]),
             width=np.array([1, 0]), meta=np.array(json.dumps({"runs": 2})),
             errors__x_abrupt=errors, errors__x_none=np.zeros((2, 10), dtype=np.uint8))
    streams = ds.load_error_streams(tmp_path / "e.npz")
    assert streams.names == ("x_abrupt", "x_none")
    assert streams.change == {"x_abrupt": 6, "x_none": -1}
    assert streams.errors["x_abrupt"].sum() == 8
    assert streams.meta == {"runs": 2}


# --- the real data ----------------------------------------------------------------------------


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"dataset file {path} is missing (set METASENTRY_DATA to the data root)")


@pytest.mark.data
def test_elec2_loads_with_rebuilt_time_period_slots_and_weekdays() -> None:
    _require(ds.data_root() / "elec2" / ds.ELEC2_FILE)
    stream = ds.load_elec2()
    assert len(stream) == 45312
    slots = stream.column("period").astype(int)
    np.testing.assert_array_equal(slots, np.arange(len(stream)) % 48)
    days = stream.column("day")
    assert (days[0], days[47], days[48]) == ("Tue", "Tue", "Wed")  # 7 May 1996 was a Tuesday
    last = datetime.datetime.fromtimestamp(int(stream.timestamps[-1]), datetime.UTC)
    # 45,312 records are 944 whole days: the rule "row i is 30·i minutes after 1996-05-07"
    # ends on 6 December 1998, a day after the usual "to 5 December" description.
    assert (last.year, last.month, last.day, last.hour, last.minute) == (1998, 12, 6, 23, 30)
    assert stream.numeric.shape == (45312, 5)
    assert np.ptp(stream.column("vicdemand")[: ds.ELEC2_VIC_START]) == 0.0
    assert np.ptp(stream.column("vicdemand")[ds.ELEC2_VIC_START:]) > 0.5


@pytest.fixture(scope="module")
def protocol() -> ds.NslKddProtocol:
    root = ds.data_root() / "nsl-kdd"
    for name in (ds.NSL_TRAIN_FILE, ds.NSL_TEST_FILE):
        _require(root / name)
    return ds.nsl_kdd_protocol(n_windows=5, seed=3)


@pytest.mark.data
def test_the_nsl_kdd_protocol_has_the_shapes_it_promises(protocol: ds.NslKddProtocol) -> None:
    assert len(protocol.reference) == ds.NSL_REFERENCE
    assert protocol.reference.numeric.shape[1] == 38
    assert protocol.reference.categorical_names == ("protocol_type", "service", "flag")
    assert len(protocol.train_pool) == 25192 - ds.NSL_REFERENCE
    assert len(protocol.test_pool) == 22544
    for size in ds.NSL_WINDOW_SIZES:
        for windows in (protocol.no_shift[size], protocol.shifted[size]):
            assert [len(w) for w in windows] == [size] * 5
            assert all(w.same_schema(protocol.reference) for w in windows)
        assert protocol.no_shift_index[size].shape == protocol.shifted_index[size].shape == (
            5, size)


@pytest.mark.data
def test_nsl_kdd_no_shift_windows_never_reuse_reference_records(
        protocol: ds.NslKddProtocol) -> None:
    reference = set(protocol.reference_index.tolist())
    for size in ds.NSL_WINDOW_SIZES:
        rows = protocol.no_shift_index[size].ravel()
        assert not reference & set(rows.tolist())
        assert len(set(rows.tolist())) == rows.size
        assert len(set(protocol.shifted_index[size].ravel().tolist())) == rows.size


@pytest.mark.data
def test_the_nsl_kdd_protocol_is_seeded() -> None:
    root = ds.data_root() / "nsl-kdd"
    for name in (ds.NSL_TRAIN_FILE, ds.NSL_TEST_FILE):
        _require(root / name)
    first = ds.nsl_kdd_protocol(n_windows=2, window_sizes=(30,), seed=5)
    second = ds.nsl_kdd_protocol(n_windows=2, window_sizes=(30,), seed=5)
    np.testing.assert_array_equal(first.reference_index, second.reference_index)
    np.testing.assert_array_equal(first.shifted_index[30], second.shifted_index[30])
    np.testing.assert_array_equal(first.no_shift[30][1].encoded, second.no_shift[30][1].encoded)
