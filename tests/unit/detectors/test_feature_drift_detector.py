"""FeatureDriftDetector: hyperparameters, window bookkeeping, report contents, explanations."""

from __future__ import annotations

import dataclasses
import doctest
from typing import Any

import numpy as np
import pytest

import detectors.feature_drift
from detectors import (
    DriftReport,
    FeatureBatch,
    FeatureDriftDetector,
    FeatureSchemaError,
    NotFittedError,
)
from detectors._multiple_testing import adjust_p_values
from detectors.checks import CATEGORICAL_NAMES, NUMERIC_NAMES, Shift, synthetic_batch


def fitted(seed: int = 0, n_reference: int = 4000, **params: Any) -> FeatureDriftDetector:
    detector = FeatureDriftDetector(**params)
    detector.fit(synthetic_batch(np.random.default_rng(seed), n_reference))
    return detector


class TestHyperparameters:
    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"name": ""}, "name"),
            ({"window": 1}, "window"),
            ({"window": 10.5}, "window"),
            ({"window": True}, "window"),
            ({"step": 0}, "step"),
            ({"step": 2.5}, "step"),
            ({"alpha": 0.0}, "alpha"),
            ({"alpha": 1.0}, "alpha"),
            ({"alpha": -0.1}, "alpha"),
            ({"alpha": "0.01"}, "alpha"),
            ({"correction": "holm"}, "one of \\['bh', 'bonferroni'\\]"),
            ({"top_k": 0}, "top_k"),
            ({"min_window": 0}, "min_window"),
            ({"window": 50, "min_window": 100}, "min_window must not exceed window"),
        ],
    )
    def test_bad_values_raise_value_error(self, params: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            FeatureDriftDetector(**params)

    def test_defaults_and_step_default(self) -> None:
        detector = FeatureDriftDetector()
        assert detector.get_params() == {
            "name": "feature_drift",
            "window": 1000,
            "step": 1000,
            "alpha": 0.01,
            "correction": "bh",
            "top_k": 5,
            "min_window": 100,
            "min_effect": 0.0,
            "min_effect_by_feature": {},
            "allowed_lateness": "0s",
            "max_window_records": 100_000,
            "seasonality": "none",
            "timezone": "UTC",
        }
        assert FeatureDriftDetector(window=300, min_window=10).step == 300
        assert repr(detector).startswith("FeatureDriftDetector(name='feature_drift', window=1000")

    def test_a_detector_rebuilt_from_its_params_is_equivalent(self) -> None:
        detector = FeatureDriftDetector("d", window=200, step=50, alpha=0.05, min_window=20)
        assert FeatureDriftDetector(**detector.get_params()).get_params() == detector.get_params()


class TestLifecycle:
    def test_use_before_fit_raises_not_fitted(self) -> None:
        detector = FeatureDriftDetector()
        batch = synthetic_batch(np.random.default_rng(0), 10)
        assert not detector.is_fitted
        with pytest.raises(NotFittedError, match="call fit"):
            detector.update(batch)
        with pytest.raises(NotFittedError):
            detector.test()
        with pytest.raises(NotFittedError):
            detector.state_dict()

    def test_fit_refuses_empty_and_featureless_references(self) -> None:
        detector = FeatureDriftDetector()
        with pytest.raises(ValueError, match="at least one record"):
            detector.fit(synthetic_batch(np.random.default_rng(0), 0))
        featureless = FeatureBatch(np.zeros((5, 0)), (), np.zeros((5, 0)), (), (), np.zeros((5, 0)))
        with pytest.raises(ValueError, match="no numeric or categorical feature"):
            detector.fit(featureless)

    def test_a_batch_with_another_vocabulary_is_refused(self) -> None:
        detector = fitted(window=100, min_window=10)
        batch = synthetic_batch(np.random.default_rng(1), 20)
        vocab = (batch.categorical_vocab[0][::-1],) + batch.categorical_vocab[1:]
        relabelled = dataclasses.replace(batch, categorical_vocab=vocab)
        with pytest.raises(FeatureSchemaError, match="refit"):
            detector.update(relabelled)
        assert detector.records_seen == 0


class TestWindowBookkeeping:
    def test_first_report_when_the_window_fills_then_every_step(self) -> None:
        detector = fitted(window=100, step=50, min_window=10)
        stream = synthetic_batch(np.random.default_rng(1), 2000)
        assert detector.update(stream.take(slice(0, 99))) == []
        assert detector.window_fill == 99
        (first,) = detector.update(stream.take(slice(99, 100)))
        assert (first.records_seen, first.n_window) == (100, 100)
        assert detector.update(stream.take(slice(100, 149))) == []
        (second,) = detector.update(stream.take(slice(149, 150)))
        assert second.records_seen == 150
        many = detector.update(stream.take(slice(150, 1150)))
        assert [r.records_seen for r in many] == list(range(200, 1151, 50))
        assert detector.windows_tested == 2 + len(many)
        assert detector.window_fill == 100
        assert detector.records_seen == 1150

    def test_a_step_longer_than_the_window_skips_records_between_windows(self) -> None:
        detector = fitted(window=100, step=250, min_window=10)
        reports = detector.update(synthetic_batch(np.random.default_rng(1), 1000))
        assert [r.records_seen for r in reports] == [100, 350, 600, 850]

    @pytest.mark.parametrize(
        ("window", "step", "batch_size"),
        [(100, 100, 37), (100, 30, 7), (120, 250, 1000), (50, 1, 13)],
    )
    def test_each_report_covers_exactly_the_last_window_records(
        self, window: int, step: int, batch_size: int
    ) -> None:
        detector = fitted(window=window, step=step, min_window=10)
        stream = synthetic_batch(np.random.default_rng(2), 700, Shift(score_mean=0.3))
        reports = []
        for start in range(0, len(stream), batch_size):
            reports.extend(detector.update(stream.take(slice(start, start + batch_size))))
        assert reports
        for report in reports:
            covered = stream.numeric[report.records_seen - window : report.records_seen]
            means = [report.feature(name).window_mean for name in NUMERIC_NAMES]
            np.testing.assert_allclose(means, covered.mean(axis=0), rtol=1e-9, atol=1e-12)
            assert report.n_window == window

    def test_test_judges_a_partial_window_without_moving_the_schedule(self) -> None:
        detector = fitted(window=200, min_window=50)
        stream = synthetic_batch(np.random.default_rng(3), 400)
        detector.update(stream.take(slice(0, 49)))
        assert detector.test() is None
        detector.update(stream.take(slice(49, 120)))
        partial = detector.test()
        assert partial is not None
        assert (partial.n_window, partial.records_seen) == (120, 120)
        (scheduled,) = detector.update(stream.take(slice(120, 200)))
        assert (scheduled.n_window, scheduled.records_seen) == (200, 200)
        assert detector.windows_tested == 2

    def test_refit_starts_an_empty_window(self) -> None:
        detector = fitted(window=100, min_window=10)
        detector.update(synthetic_batch(np.random.default_rng(4), 150))
        detector.fit(synthetic_batch(np.random.default_rng(5), 1000))
        assert (detector.window_fill, detector.windows_tested, detector.records_seen) == (0, 0, 0)


@dataclasses.dataclass(frozen=True)
class DriftedWindow:
    report: DriftReport
    reference: FeatureBatch
    window: FeatureBatch


@pytest.fixture(scope="module")
def drifted() -> DriftedWindow:
    """One window with the score mean moved and 15% of services never seen before."""
    rng = np.random.default_rng(6)
    reference = synthetic_batch(rng, 4000)
    window = synthetic_batch(rng, 500, Shift(score_mean=0.5, new_service_share=0.15))
    detector = FeatureDriftDetector(window=500, top_k=2)
    detector.fit(reference)
    (report,) = detector.update(window)
    return DriftedWindow(report, reference, window)


class TestReportContents:
    def test_header_fields(self, drifted: DriftedWindow) -> None:
        report = drifted.report
        assert (report.detector, report.n_reference, report.n_window) == (
            "feature_drift",
            4000,
            500,
        )
        assert (report.alpha, report.correction, report.records_seen) == (0.01, "bh", 500)
        assert [f.name for f in report.features] == list(NUMERIC_NAMES + CATEGORICAL_NAMES)

    def test_adjusted_p_values_and_the_verdict_follow_from_the_raw_ones(
        self, drifted: DriftedWindow
    ) -> None:
        report = drifted.report
        raw = np.array([f.p_value for f in report.features])
        adjusted = np.array([f.adjusted_p_value for f in report.features])
        np.testing.assert_allclose(adjusted, adjust_p_values(raw, "bh"), rtol=1e-12)
        assert report.p_value == adjusted.min()
        assert report.rejected and report.rejected == (report.p_value <= report.alpha)
        assert [f.rejected for f in report.features] == list(adjusted <= report.alpha)
        assert report.statistic == max(f.effect_size for f in report.features)

    def test_numeric_movement_is_reported_in_raw_units(self, drifted: DriftedWindow) -> None:
        report, reference, window = drifted.report, drifted.reference, drifted.window
        for j, name in enumerate(NUMERIC_NAMES):
            feature = report.feature(name)
            assert (feature.kind, feature.test) == ("numeric", "ks")
            assert feature.reference_mean == pytest.approx(reference.numeric[:, j].mean())
            assert feature.window_mean == pytest.approx(window.numeric[:, j].mean())
            assert feature.reference_std == pytest.approx(reference.numeric[:, j].std())
            assert feature.window_std == pytest.approx(window.numeric[:, j].std())
            assert feature.effect_size == feature.statistic
        constant = report.feature("constant")
        assert (constant.statistic, constant.p_value, constant.rejected) == (0.0, 1.0, False)

    def test_categorical_movement_counts_unseen_values_and_share_changes(
        self, drifted: DriftedWindow
    ) -> None:
        report, reference, window = drifted.report, drifted.reference, drifted.window
        service = report.feature("service")
        column = CATEGORICAL_NAMES.index("service")
        unknown = len(window.categorical_vocab[column])
        reference_share = (
            np.bincount(reference.categorical[:, column], minlength=unknown + 1) / 4000
        )
        window_share = np.bincount(window.categorical[:, column], minlength=unknown + 1) / 500
        assert (service.kind, service.test) == ("categorical", "chi2")
        assert service.new_categories == int((window.categorical[:, column] == unknown).sum())
        assert service.new_category_fraction == pytest.approx(window_share[-1])
        assert service.reference_new_category_fraction == pytest.approx(reference_share[-1])
        assert service.effect_size == pytest.approx(
            0.5 * np.abs(reference_share - window_share).sum()
        )
        moves = [abs(s.change) for s in service.category_shifts]
        assert 1 <= len(moves) <= 3 and moves == sorted(moves, reverse=True)
        top = service.category_shifts[0]
        code = window.categorical_vocab[column].index(top.category)
        assert top.reference_fraction == pytest.approx(reference_share[code])
        assert top.window_fraction == pytest.approx(window_share[code])
        assert moves[0] == pytest.approx(np.abs(window_share - reference_share)[:-1].max())

    def test_top_features_are_the_strongest_rejected_features_up_to_top_k(
        self, drifted: DriftedWindow
    ) -> None:
        report = drifted.report
        assert set(report.top_features) == {"score", "service"}
        assert len(report.top_features) <= 2
        summary = report.summary()
        assert "score mean" in summary and "service:" in summary and "unseen categories" in summary


class TestExplanation:
    def test_a_mean_shift_is_named_first(self) -> None:
        detector = fitted(seed=7, window=500)
        stream = synthetic_batch(np.random.default_rng(8), 5000, Shift(score_mean=0.4))
        reports = detector.update(stream)
        assert all(r.rejected and r.top_features[0] == "score" for r in reports)
        assert "score mean 0.0" in reports[0].summary()

    def test_a_new_category_is_named_first(self) -> None:
        detector = fitted(seed=9, window=500)
        stream = synthetic_batch(np.random.default_rng(10), 5000, Shift(new_service_share=0.12))
        reports = detector.update(stream)
        assert all(r.rejected and r.top_features[0] == "service" for r in reports)
        assert "service: " in reports[0].summary()
        assert "unseen categories" in reports[0].summary()

    def test_a_category_share_change_is_explained_by_the_category(self) -> None:
        detector = fitted(seed=11, window=500)
        stream = synthetic_batch(np.random.default_rng(12), 500)
        codes = stream.categorical.copy()
        protocol = CATEGORICAL_NAMES.index("protocol")
        codes[: len(codes) // 5, protocol] = 1  # a fifth of the traffic becomes udp
        shifted = dataclasses.replace(stream, categorical=codes)
        (report,) = detector.update(shifted)
        assert report.top_features == ("protocol",)
        assert "protocol: udp 15%→" in report.summary()

    def test_features_are_ranked_by_adjusted_p_not_by_position(self) -> None:
        detector = fitted(seed=15, window=500)
        stream = synthetic_batch(np.random.default_rng(16), 500, Shift(0.35, 0.3))
        (report,) = detector.update(stream)
        score, service = report.feature("score"), report.feature("service")
        assert service.adjusted_p_value < score.adjusted_p_value <= report.alpha
        assert report.top_features == ("service", "score")

    def test_effect_size_ranks_features_whose_p_values_both_underflow(self) -> None:
        detector = fitted(seed=17, window=500)
        stream = synthetic_batch(np.random.default_rng(18), 500)
        numeric = stream.numeric.copy()
        numeric[:, NUMERIC_NAMES.index("latency_ms")] *= 6.0
        numeric[:, NUMERIC_NAMES.index("score")] += 20.0
        (report,) = detector.update(dataclasses.replace(stream, numeric=numeric))
        latency, score = report.feature("latency_ms"), report.feature("score")
        assert latency.p_value == score.p_value == 0.0
        assert latency.effect_size < score.effect_size
        assert report.top_features[:2] == ("score", "latency_ms")

    def test_top_k_limits_the_named_features(self) -> None:
        detector = fitted(seed=13, window=500, top_k=1)
        stream = synthetic_batch(np.random.default_rng(14), 500, Shift(0.6, 0.2))
        (report,) = detector.update(stream)
        assert sum(f.rejected for f in report.features) >= 2
        assert len(report.top_features) == 1


class TestState:
    def test_load_state_refuses_other_hyperparameters(self) -> None:
        state = fitted(window=200, min_window=10).state_dict()
        with pytest.raises(ValueError, match="parameters"):
            FeatureDriftDetector(window=300, min_window=10).load_state(state)

    def test_load_state_refuses_unknown_formats(self) -> None:
        state = fitted(window=200, min_window=10).state_dict()
        state["format_version"] = np.asarray(99)
        with pytest.raises(ValueError, match="format 99"):
            FeatureDriftDetector(window=200, min_window=10).load_state(state)


def test_docstring_example_runs() -> None:
    result = doctest.testmod(detectors.feature_drift, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_a_41_feature_window_flags_a_broad_shift() -> None:
    """41 features (as NSL-KDD), window 1000 against reference 8000 (speed: bench/)."""
    rng = np.random.default_rng(15)
    n_numeric, n_categorical = 34, 7

    def batch(n: int) -> FeatureBatch:
        numeric = rng.normal(size=(n, n_numeric))
        numeric[:, ::2] = np.where(
            rng.random((n, n_numeric // 2)) < 0.8, 0.0, np.round(numeric[:, ::2], 2)
        )
        return FeatureBatch(
            numeric=numeric,
            numeric_names=tuple(f"n{j}" for j in range(n_numeric)),
            categorical=rng.integers(0, 20, size=(n, n_categorical)),
            categorical_names=tuple(f"c{j}" for j in range(n_categorical)),
            categorical_vocab=tuple(
                tuple(f"v{i}" for i in range(19)) for _ in range(n_categorical)
            ),
            encoded=np.zeros((n, 0)),
        )

    detector = FeatureDriftDetector(window=1000)
    detector.fit(batch(8000))
    stationary = batch(1000)
    drifted = dataclasses.replace(stationary, numeric=stationary.numeric * 1.5 + 0.2)
    for window in (stationary, drifted):
        (report,) = detector.update(window)
    assert sum(f.rejected for f in report.features) >= 30


class TestEffectFloor:
    """Practical significance: a real but tiny shift on a large window pages nobody."""

    def test_a_tiny_significant_shift_is_not_drift_above_the_floor(self) -> None:
        rng = np.random.default_rng(5)
        reference = rng.normal(0.0, 1.0, (20_000, 1))
        window = rng.normal(0.08, 1.0, (20_000, 1))  # significant at n=20,000, KS ~0.03

        def report(**floor: Any) -> Any:
            detector = FeatureDriftDetector(window=20_000, min_window=10, **floor)
            detector.fit(_numeric_batch(reference))
            [result] = detector.update(_numeric_batch(window))
            return result

        assert report().rejected
        floored = report(min_effect=0.05)
        assert not floored.rejected and floored.p_value == 1.0
        assert not floored.features[0].rejected
        per_feature = report(min_effect=0.5, min_effect_by_feature={"x": 0.01})
        assert per_feature.rejected and per_feature.top_features == ("x",)
        assert per_feature.p_value <= 0.01

    def test_the_floor_survives_a_state_round_trip(self) -> None:
        rng = np.random.default_rng(6)
        detector = FeatureDriftDetector(window=100, min_window=10,
                                        min_effect_by_feature={"x": 0.2})
        detector.fit(_numeric_batch(rng.normal(size=(500, 1))))
        other = FeatureDriftDetector(window=100, min_window=10,
                                     min_effect_by_feature={"x": 0.2})
        other.load_state(detector.state_dict())
        changed = FeatureDriftDetector(window=100, min_window=10,
                                       min_effect_by_feature={"x": 0.3})
        with pytest.raises(ValueError, match="saved with parameters"):
            changed.load_state(detector.state_dict())


def _numeric_batch(x: np.ndarray) -> FeatureBatch:
    return FeatureBatch(numeric=x, numeric_names=("x",), categorical=np.zeros((len(x), 0)),
                        categorical_names=(), categorical_vocab=(), encoded=np.zeros((len(x), 0)))
