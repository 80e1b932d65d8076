"""Feature drift by time: tumbling windows by timestamp, lateness, seasonality, set_reference."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import SchemaConfig
from agent.schema import Encoder
from detectors import FeatureBatch, FeatureDriftDetector
from detectors._seasonality import SeasonalReference, phases, zone
from detectors._time_windows import TimeSchedule, parse_duration
from detectors.base import FeatureSchemaError, NotFittedError
from detectors.feature_drift import FeatureDriftConfig, TimedDriftReport

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MONDAY = 4 * DAY  # 1970-01-05
_DATA = Path(os.environ.get("METASENTRY_DATA",
                            Path(__file__).resolve().parents[3].parent / "shared" / "data"))
ELEC2 = _DATA / "elec2" / "elec.csv"


def batch(values: np.ndarray, times: np.ndarray | None, codes: np.ndarray | None = None
          ) -> FeatureBatch:
    """One numeric feature ``v`` and one categorical feature ``proto`` (tcp, udp)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    codes = np.zeros(n, dtype=np.int32) if codes is None else codes
    return FeatureBatch(numeric=values.reshape(n, 1), numeric_names=("v",),
                        categorical=np.asarray(codes).reshape(n, 1), categorical_names=("proto",),
                        categorical_vocab=(("tcp", "udp"),), encoded=np.zeros((n, 0)),
                        times=times)


def reference(rng: np.random.Generator, n: int = 4000) -> FeatureBatch:
    return batch(rng.normal(size=n), np.linspace(0.0, DAY, n), rng.integers(0, 2, n))


def timed_stream(rng: np.random.Generator, n: int, start: float, span: float,
                 shift: float = 0.0) -> FeatureBatch:
    times = np.sort(rng.uniform(start, start + span, n))
    return batch(rng.normal(shift, 1.0, n), times, rng.integers(0, 2, n))


def feed(detector: FeatureDriftDetector, stream: FeatureBatch, size: int
         ) -> list[Any]:
    reports = []
    for start in range(0, len(stream), size):
        reports.extend(detector.update(stream.take(slice(start, start + size))))
    return reports


def shifted(report: dict[str, Any], by: int) -> dict[str, Any]:
    """A report as the detector would have placed it had it seen ``by`` more records."""
    return {**report, "records_seen": report["records_seen"] + by,
            "first_record": report["first_record"] + by,
            "last_record": report["last_record"] + by}


class TestConfiguration:
    @pytest.mark.parametrize(("text", "seconds"), [
        ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0), ("2w", 1209600.0),
        ("1.5h", 5400.0), ("0s", 0.0)])
    def test_durations(self, text: str, seconds: float) -> None:
        assert parse_duration(text) == seconds

    def test_a_time_window_is_configured_with_its_fields(self) -> None:
        config = FeatureDriftConfig(window="5m", step="1m", allowed_lateness="10s",
                                    seasonality="hour_of_day", timezone="Europe/Paris")
        detector = FeatureDriftDetector(window=config.window, step=config.step,
                                        allowed_lateness=config.allowed_lateness,
                                        seasonality=config.seasonality,
                                        timezone=config.timezone)
        assert (detector.window, detector.step) == ("5m", "1m")
        assert FeatureDriftConfig().window == 1000  # count windows stay the default

    @pytest.mark.parametrize("fields", [
        {"window": "5 minutes"}, {"window": "5m", "step": 60}, {"window": 100, "step": "1m"},
        {"window": 100, "allowed_lateness": "5s"}, {"timezone": "Nowhere/Else"},
        {"seasonality": "monthly"}, {"window": 50, "min_window": 100}])
    def test_bad_entries_are_refused(self, fields: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            FeatureDriftConfig(**fields)

    def test_a_time_window_needs_timestamps(self) -> None:
        rng = np.random.default_rng(0)
        detector = FeatureDriftDetector(window="1m")
        untimed = reference(rng).with_times(None)
        with pytest.raises(ValueError, match="schema.timestamp"):
            detector.fit(untimed)
        detector.fit(reference(rng))
        with pytest.raises(ValueError, match="schema.timestamp"):
            detector.update(untimed)


class TestFeatureBatchTimes:
    def test_times_travel_with_the_records(self) -> None:
        first = batch(np.arange(4.0), np.array([1.0, 2.0, np.nan, 4.0]))
        second = batch(np.arange(2.0), np.array([5.0, 6.0]))
        np.testing.assert_array_equal(first.take([0, 3]).times, [1.0, 4.0])
        np.testing.assert_array_equal(FeatureBatch.concat([first, second]).times,
                                      [1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
        assert FeatureBatch.concat([first, second.with_times(None)]).times is None
        assert first.with_embeddings(np.zeros((4, 2))).times is not None

    def test_malformed_times_are_refused(self) -> None:
        with pytest.raises(ValueError, match="one entry per record"):
            batch(np.arange(3.0), np.zeros(2))
        with pytest.raises(ValueError, match="NaN"):
            batch(np.arange(2.0), np.array([1.0, np.inf]))

    def test_the_encoder_reads_the_schema_timestamp(self) -> None:
        schema = SchemaConfig(timestamp="ts", features=[{"name": "v", "type": "numeric"}])
        encoder = Encoder(schema).fit([{"v": 1.0, "ts": 0}])
        encoded = encoder.encode([{"v": 1.0, "ts": "1970-01-01T00:01:00Z"}, {"v": 2.0, "ts": 90},
                                  {"v": 3.0}, {"v": 4.0, "ts": "yesterday"}])
        np.testing.assert_array_equal(encoded.features.times, [60.0, 90.0, np.nan, np.nan])
        numbers = encoder.encode([{"v": 1.0, "ts": 1.5}, {"v": 1.0, "ts": "2"}])
        np.testing.assert_array_equal(numbers.features.times, [1.5, 2.0])
        plain = Encoder(SchemaConfig(features=[{"name": "v", "type": "numeric"}]))
        assert plain.fit([{"v": 1.0}]).encode([{"v": 1.0}]).features.times is None


class TestTumblingWindows:
    def test_windows_follow_the_clock_and_report_on_their_closing_record(self) -> None:
        rng = np.random.default_rng(1)
        detector = FeatureDriftDetector(window="1m", min_window=5)
        detector.fit(reference(rng))
        times = np.array([5.0, 20.0, 30.0, 40.0, 59.9, 60.0, 70.0, 80.0, 90.0, 100.0, 125.0])
        reports = detector.update(batch(rng.normal(size=times.size), times))
        assert [type(r) for r in reports] == [TimedDriftReport, TimedDriftReport]
        first, second = (r.to_dict() for r in reports)
        # [0, 60) holds records 1-5 and is closed by record 6 (t=60), which opens [60, 120).
        assert (first["window_start"], first["window_end"]) == (0.0, 60.0)
        assert (first["n_window"], first["first_record"], first["last_record"],
                first["records_seen"]) == (5, 1, 5, 6)
        assert (second["window_start"], second["n_window"], second["records_seen"]) == (
            60.0, 5, 11)
        assert detector.window_fill == 1 and detector.records_to_replay() == 1

    def test_boundaries_are_multiples_of_the_duration_since_the_epoch(self) -> None:
        rng = np.random.default_rng(2)
        detector = FeatureDriftDetector(window="1h", min_window=2)
        detector.fit(reference(rng))
        start = 1_700_000_000.0 + 1234.5  # not on an hour
        reports = detector.update(batch(rng.normal(size=200), start + np.arange(200) * 60.0))
        assert reports
        for report in reports:
            assert report.window_start is not None and report.window_start % HOUR == 0.0
            assert report.window_end == report.window_start + HOUR

    def test_a_window_with_few_records_is_skipped_not_tested(self) -> None:
        rng = np.random.default_rng(3)
        detector = FeatureDriftDetector(window="1m", min_window=20)
        detector.fit(reference(rng))
        busy = np.linspace(0.0, 59.0, 50)
        quiet = np.array([61.0, 65.0, 70.0])
        reports = detector.update(batch(rng.normal(size=54), np.r_[busy, quiet, 130.0]))
        assert [r.window_start for r in reports] == [0.0]
        assert detector.windows_skipped == 1 and detector.windows_tested == 1

    def test_overlapping_windows_with_a_shorter_step(self) -> None:
        rng = np.random.default_rng(4)
        detector = FeatureDriftDetector(window="2m", step="1m", min_window=5)
        detector.fit(reference(rng))
        reports = detector.update(batch(rng.normal(size=300), np.linspace(0.0, 299.0, 300)))
        assert [(r.window_start, r.window_end) for r in reports] == [
            (-60.0, 60.0), (0.0, 120.0), (60.0, 180.0), (120.0, 240.0)]
        assert [r.n_window for r in reports] == [60, 120, 120, 120]

    def test_reports_do_not_depend_on_batch_sizes(self) -> None:
        rng = np.random.default_rng(5)
        stream = timed_stream(rng, 2000, 0.0, 1800.0)
        jitter = rng.uniform(-20.0, 0.0, 2000) * (rng.random(2000) < 0.1)
        stream = stream.with_times(stream.times + jitter)
        outcomes = []
        for size in (2000, 97, 1):
            detector = FeatureDriftDetector(window="5m", allowed_lateness="10s", min_window=10,
                                            max_window_records=150)
            detector.fit(reference(np.random.default_rng(0)))
            outcomes.append([r.to_dict() for r in feed(detector, stream, size)])
        assert outcomes[0] and outcomes[0] == outcomes[1] == outcomes[2]

    def test_a_shift_is_detected(self) -> None:
        rng = np.random.default_rng(6)
        detector = FeatureDriftDetector(window="10m", min_window=50)
        detector.fit(reference(rng))
        calm = detector.update(timed_stream(rng, 600, 0.0, 1200.0))
        # The first shifted record closes the last calm window.
        last_calm, *moved = detector.update(timed_stream(rng, 601, 1200.0, 1200.0, shift=1.0))
        assert not any(r.rejected for r in [*calm, last_calm])
        assert moved and all(r.rejected for r in moved)
        assert moved[0].top_features == ("v",)


class TestOutOfOrderRecords:
    def test_late_records_are_counted_and_left_out(self) -> None:
        rng = np.random.default_rng(7)
        detector = FeatureDriftDetector(window="1m", min_window=1)
        detector.fit(reference(rng))
        times = np.array([10.0, 20.0, 30.0, 25.0, 40.0, 5.0, 61.0, 50.0, 121.0])
        reports = detector.update(batch(rng.normal(size=times.size), times))
        # 25 and 5 arrive after 30 (lateness 0); 50 arrives after 61 closed [0, 60).
        assert detector.late_records == 3
        first, second = reports
        assert (first.n_window, first.late_records, first.records_in_window) == (4, 2, 4)
        assert (second.n_window, second.late_records) == (1, 1)
        assert first.to_dict()["late_records"] == 2

    def test_records_within_the_allowed_lateness_join_their_own_window(self) -> None:
        rng = np.random.default_rng(8)
        detector = FeatureDriftDetector(window="1m", allowed_lateness="15s", min_window=1)
        detector.fit(reference(rng))
        # 58 comes after 65 but within 15 s: it joins [0, 60), which waits for 75 to close.
        times = np.array([10.0, 50.0, 65.0, 58.0, 74.0, 30.0, 75.0, 200.0])
        reports = detector.update(batch(rng.normal(size=times.size), times))
        assert [r.n_window for r in reports] == [3, 3]
        assert reports[0].records_seen == 7  # closed by t=75, the watermark's end
        assert detector.late_records == 1 and reports[0].late_records == 1

    def test_untimed_records_are_counted_and_left_out(self) -> None:
        rng = np.random.default_rng(9)
        detector = FeatureDriftDetector(window="1m", min_window=1)
        detector.fit(reference(rng))
        times = np.array([1.0, np.nan, 2.0, np.nan, np.nan, 70.0])
        (report,) = detector.update(batch(rng.normal(size=times.size), times))
        assert (report.n_window, report.untimed_records, detector.untimed_records) == (2, 3, 3)


class TestRestart:
    @pytest.mark.parametrize("params", [
        {"window": "5m", "min_window": 10},
        {"window": "5m", "allowed_lateness": "30s", "min_window": 10, "max_window_records": 80},
        {"window": "4m", "step": "2m", "allowed_lateness": "10s", "min_window": 10},
        {"window": "5m", "seasonality": "hour_of_day", "min_window": 10},
    ])
    def test_replaying_the_open_window_reproduces_the_reports(self, params: dict[str, Any]
                                                               ) -> None:
        rng = np.random.default_rng(10)
        ref = reference(rng, 6000)
        stream = timed_stream(rng, 3000, 0.0, 6 * HOUR / 4)
        jitter = rng.uniform(-60.0, 0.0, 3000) * (rng.random(3000) < 0.2)
        times = stream.times + jitter
        times[rng.random(3000) < 0.02] = np.nan
        stream = stream.with_times(times)
        for cut in (700, 1234, 2001):
            original = FeatureDriftDetector(**params)
            original.fit(ref)
            feed(original, stream.take(slice(0, cut)), 150)
            replay = original.records_to_replay()
            assert 0 < replay <= cut
            later = [r.to_dict() for r in feed(original, stream.take(slice(cut, None)), 150)]

            fresh = FeatureDriftDetector(**params)
            fresh.fit(ref)
            warm = fresh.update(stream.take(slice(cut - replay, cut)))
            # Reports closed by re-read records were stored before the restart.
            assert all(r.records_seen <= replay for r in warm)
            resumed = [shifted(r.to_dict(), cut - replay)
                       for r in feed(fresh, stream.take(slice(cut, None)), 333)]
            assert later and resumed == later


class TestSeasonality:
    @staticmethod
    def daily(rng: np.random.Generator, days: float, start: float, per_hour: int = 120,
              shift: float = 0.0) -> FeatureBatch:
        n = int(days * 24 * per_hour)
        times = start + np.sort(rng.uniform(0.0, days * DAY, n))
        level = 3.0 * np.sin(2 * np.pi * times / DAY)
        busy = (rng.random(n) < 0.2 + 0.6 * (level > 0)).astype(np.int32)
        return batch(level + rng.normal(shift, 1.0, n), times, busy)

    def test_phases(self) -> None:
        utc = zone("UTC")
        times = np.array([MONDAY, MONDAY + 13 * HOUR + 5, MONDAY + 6 * DAY + 23 * HOUR, np.nan])
        assert phases(times, "hour_of_day", utc).tolist() == [0, 13, 23, -1]
        assert phases(times, "day_of_week", utc).tolist() == [0, 0, 6, -1]
        assert phases(times, "hour_of_week", utc).tolist() == [0, 13, 167, -1]
        winter, summer = 1_704_067_200.0, 1_719_792_000.0  # 2024-01-01, 2024-07-01 00:00 UTC
        paris = phases(np.array([winter, summer]), "hour_of_day", zone("Europe/Paris"))
        assert paris.tolist() == [1, 2]
        # The hour of the 2024-03-31 change to summer time, record by record.
        change = 1_711_846_800.0  # 01:00 UTC
        around = np.array([change - 1.0, change, change + 1.0])
        assert phases(around, "hour_of_day", zone("Europe/Paris")).tolist() == [1, 3, 3]

    def test_the_comparison_reference_follows_the_window_mix(self) -> None:
        reference_phase = np.repeat([0, 1, 2], [100, 300, 50])
        index = SeasonalReference(reference_phase, 24, {"row": np.arange(450)},
                                  lambda rows: rows)
        window = np.repeat([0, 1], [80, 20])
        rows, selection = index.summary(window)
        assert selection.quotas == ((0, 100), (1, 25))
        assert np.bincount(reference_phase[rows]).tolist() == [100, 25]
        again, _ = index.summary(window)
        np.testing.assert_array_equal(rows, again)
        unmatched, fallback = index.summary(np.repeat([1, 5, -1], [10, 10, 10]))
        assert fallback.fallback_phases == (5,) and fallback.fallback_records == 20
        assert unmatched.size == len(set(unmatched.tolist()))

    def test_a_daily_cycle_pages_nobody_but_a_shift_does(self) -> None:
        rng = np.random.default_rng(11)
        ref = self.daily(rng, 14, MONDAY - 14 * DAY)
        stream = self.daily(rng, 2, MONDAY)
        plain = FeatureDriftDetector(window="1h", min_window=50)
        seasonal = FeatureDriftDetector(window="1h", min_window=50, seasonality="hour_of_day")
        outcomes = {}
        for name, detector in (("plain", plain), ("seasonal", seasonal)):
            detector.fit(ref)
            outcomes[name] = detector.update(stream)
        assert len(outcomes["seasonal"]) == 47
        assert sum(r.rejected for r in outcomes["plain"]) >= 40
        assert sum(r.rejected for r in outcomes["seasonal"]) <= 3
        report = outcomes["seasonal"][0].to_dict()
        assert report["seasonality"] == "hour_of_day"
        assert report["seasonal_fallback_phases"] == []
        assert 0.9 * 14 * 120 <= report["n_reference"] <= 1.1 * 14 * 120
        last_calm, *moved = seasonal.update(self.daily(rng, 0.5, MONDAY + 2 * DAY, shift=1.0))
        assert moved and all(r.rejected for r in moved)

    def test_phases_without_reference_fall_back_and_say_so(self) -> None:
        rng = np.random.default_rng(12)
        ref = batch(rng.normal(size=2000), MONDAY + rng.uniform(0, 12 * HOUR, 2000))
        detector = FeatureDriftDetector(window="1h", min_window=10, seasonality="hour_of_day")
        detector.fit(ref)
        night = batch(rng.normal(size=101), MONDAY + 20 * HOUR + np.linspace(0, HOUR, 101))
        (report,) = detector.update(night)
        assert report.to_dict()["seasonal_fallback_phases"] == [20]
        assert report.seasonal_fallback_records == 100 and report.n_reference == 2000

    def test_a_count_window_can_be_seasonal(self) -> None:
        rng = np.random.default_rng(13)
        ref = self.daily(rng, 7, MONDAY - 7 * DAY)
        stream = self.daily(rng, 1, MONDAY)
        times = stream.times.copy()
        times[::50] = np.nan
        seasonal = FeatureDriftDetector(window=200, seasonality="hour_of_day")
        seasonal.fit(ref)
        reports = seasonal.update(stream.with_times(times))
        assert len(reports) == len(stream) // 200
        assert sum(r.rejected for r in reports) <= 2
        assert reports[0].untimed_records == 4 and reports[0].seasonal_fallback_records == 4
        assert seasonal.untimed_records == int(np.isnan(times).sum())
        with pytest.raises(ValueError, match="seasonality"):
            seasonal.fit(ref.with_times(None))

    @pytest.mark.skipif(not ELEC2.exists(), reason=f"the Elec2 data set is not at {ELEC2}")
    def test_elec2_demand_follows_its_day(self) -> None:
        data = np.loadtxt(ELEC2, delimiter=",", skiprows=1)
        start = 831_427_200.0  # 1996-05-07 00:00 UTC, one record every 30 minutes
        elec = batch(data[:, 2], start + 1800.0 * np.arange(len(data)))
        ref, stream = elec.take(slice(0, 48 * 28)), elec.take(slice(48 * 28, 48 * 42))
        rejected = {}
        for seasonality in ("none", "hour_of_day"):
            detector = FeatureDriftDetector(window="6h", min_window=10, alpha=0.01,
                                            seasonality=seasonality)
            detector.fit(ref)
            reports = detector.update(stream)
            rejected[seasonality] = sum(r.rejected for r in reports)
        # Demand also climbs towards the southern winter, a drift no daily phase explains, so
        # both still flag windows; the daily cycle's share of the alarms goes.
        assert rejected["hour_of_day"] < 0.75 * rejected["none"]


class TestSetReference:
    @pytest.mark.parametrize("params", [
        {"window": 300, "min_window": 50},
        {"window": "10m", "min_window": 50},
        {"window": "10m", "min_window": 50, "seasonality": "hour_of_day"},
    ])
    def test_the_stream_is_kept_and_the_next_window_meets_the_new_reference(
            self, params: dict[str, Any]) -> None:
        rng = np.random.default_rng(14)
        detector = FeatureDriftDetector(**params)
        detector.fit(reference(rng))
        detector.update(timed_stream(rng, 450, 0.0, 900.0, shift=1.5))
        before = (detector.window_fill, detector.records_seen, detector.windows_tested,
                  detector.records_to_replay())
        moved = reference(rng, 1500)
        moved = batch(moved.numeric[:, 0] + 1.5, moved.times, moved.categorical[:, 0])
        detector.set_reference(moved)
        assert (detector.window_fill, detector.records_seen, detector.windows_tested,
                detector.records_to_replay()) == before
        reports = detector.update(timed_stream(rng, 451, 900.0, 900.0, shift=1.5))
        assert reports and reports[0].n_reference <= 1500
        assert not reports[0].rejected

    def test_set_reference_refuses_other_features_and_an_unfitted_detector(self) -> None:
        rng = np.random.default_rng(15)
        detector = FeatureDriftDetector(window="1m")
        with pytest.raises(NotFittedError):
            detector.set_reference(reference(rng))
        detector.fit(reference(rng))
        other = reference(rng)
        renamed = FeatureBatch(numeric=other.numeric, numeric_names=("w",),
                               categorical=other.categorical, categorical_names=("proto",),
                               categorical_vocab=(("tcp", "udp"),), encoded=other.encoded,
                               times=other.times)
        with pytest.raises(FeatureSchemaError, match="fit"):
            detector.set_reference(renamed)


class TestState:
    @pytest.mark.parametrize("params", [
        {"window": "5m", "allowed_lateness": "20s", "min_window": 10, "max_window_records": 60},
        {"window": "5m", "seasonality": "hour_of_week", "min_window": 10},
        {"window": 250, "seasonality": "hour_of_day", "timezone": "America/New_York"},
    ])
    def test_a_round_trip_through_npz_resumes_exactly(self, params: dict[str, Any]) -> None:
        rng = np.random.default_rng(16)
        ref = reference(rng, 5000)
        stream = timed_stream(rng, 1500, 0.0, 3600.0)
        original = FeatureDriftDetector(**params)
        original.fit(ref)
        original.update(stream.take(slice(0, 700)))
        buffer = io.BytesIO()
        np.savez(buffer, **original.state_dict())
        buffer.seek(0)
        with np.load(buffer, allow_pickle=False) as saved:
            state = {key: saved[key] for key in saved.files}
        resumed = FeatureDriftDetector(**params)
        resumed.load_state(state)
        assert (resumed.window_fill, resumed.late_records, resumed.records_to_replay()) == (
            original.window_fill, original.late_records, original.records_to_replay())
        tail = stream.take(slice(700, None))
        expected = [r.to_dict() for r in original.update(tail)]
        assert expected and [r.to_dict() for r in resumed.update(tail)] == expected

    def test_a_state_saved_before_time_windows_still_loads(self) -> None:
        rng = np.random.default_rng(17)
        original = FeatureDriftDetector(window=200)
        original.fit(reference(rng))
        original.update(reference(rng, 300))
        new_keys = ("window.times", "stream.windows_skipped", "stream.untimed_records",
                    "params.allowed_lateness", "params.max_window_records",
                    "params.seasonality", "params.timezone")
        old = {k: v for k, v in original.state_dict().items() if k not in new_keys}
        resumed = FeatureDriftDetector(window=200)
        resumed.load_state(old)
        tail = reference(rng, 500)
        assert [r.to_dict() for r in resumed.update(tail)] == [
            r.to_dict() for r in original.update(tail)]
        with pytest.raises(ValueError, match="saved with parameters"):
            FeatureDriftDetector(window=200, seasonality="hour_of_day").load_state(old)


def test_the_schedule_puts_boundary_times_in_the_later_window() -> None:
    schedule = TimeSchedule(length=0.3, step=0.1, lateness=0.0, max_records=10)
    t = np.array([0.3, 0.7, 1.0])
    first, last = schedule.windows_of(t)
    for value, lo, hi in zip(t.tolist(), first.tolist(), last.tolist(), strict=True):
        assert all(k * 0.1 <= value < k * 0.1 + 0.3 for k in range(lo, hi + 1))
        assert not (lo - 1) * 0.1 + 0.3 > value >= (lo - 1) * 0.1
        assert not (hi + 1) * 0.1 <= value < (hi + 1) * 0.1 + 0.3
