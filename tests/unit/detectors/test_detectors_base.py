"""The detector contract's data types: FeatureBatch, Verdict, FeatureTest and DriftReport."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from detectors import (
    CategoryShift,
    DriftReport,
    FeatureBatch,
    FeatureSchemaError,
    FeatureTest,
    Verdict,
)


def make_batch(n: int = 4, *, seed: int = 0) -> FeatureBatch:
    rng = np.random.default_rng(seed)
    return FeatureBatch(
        numeric=rng.normal(size=(n, 2)),
        numeric_names=("bytes", "duration"),
        categorical=rng.integers(0, 4, size=(n, 2)),
        categorical_names=("service", "logged_in"),
        categorical_vocab=(("http", "ftp", "smtp"), ("false", "true", "maybe")),
        encoded=rng.normal(size=(n, 3)),
    )


class TestFeatureBatch:
    def test_arrays_are_converted_to_the_documented_dtypes(self) -> None:
        batch = make_batch()
        assert batch.numeric.dtype == np.float64
        assert batch.categorical.dtype == np.int32
        assert batch.encoded.dtype == np.float32
        assert len(batch) == 4
        assert batch.feature_names == ("bytes", "duration", "service", "logged_in")

    def test_lists_become_tuples(self) -> None:
        vocab = [["a", "b", "c"], ["x", "y", "z"]]
        batch = dataclasses.replace(make_batch(), numeric_names=["a", "b"], categorical_vocab=vocab)
        assert batch.numeric_names == ("a", "b")
        assert batch.categorical_vocab == (("a", "b", "c"), ("x", "y", "z"))

    def test_row_counts_must_agree(self) -> None:
        batch = make_batch()
        with pytest.raises(ValueError, match="same number of rows"):
            dataclasses.replace(batch, encoded=np.zeros((3, 3)))

    def test_names_must_match_columns(self) -> None:
        with pytest.raises(ValueError, match="numeric_names"):
            dataclasses.replace(make_batch(), numeric_names=("bytes",))
        with pytest.raises(ValueError, match="vocabularies"):
            dataclasses.replace(make_batch(), categorical_vocab=(("a",),))

    def test_arrays_must_be_two_dimensional(self) -> None:
        with pytest.raises(ValueError, match="2-D"):
            dataclasses.replace(make_batch(), numeric=np.zeros(4))

    def test_non_finite_numeric_values_are_refused_naming_the_column(self) -> None:
        numeric = make_batch().numeric.copy()
        numeric[2, 1] = np.nan
        with pytest.raises(ValueError, match="'duration'"):
            dataclasses.replace(make_batch(), numeric=numeric)
        numeric[2, 1] = np.inf
        with pytest.raises(ValueError, match="non-finite"):
            dataclasses.replace(make_batch(), numeric=numeric)

    @pytest.mark.parametrize("bad_code", [-1, 4])
    def test_codes_outside_vocab_and_unknown_bucket_are_refused(self, bad_code: int) -> None:
        codes = make_batch().categorical.copy()
        codes[0, 0] = bad_code
        with pytest.raises(ValueError, match="'service'.*0..3"):
            dataclasses.replace(make_batch(), categorical=codes)

    def test_the_unknown_bucket_code_is_accepted(self) -> None:
        codes = np.full((4, 2), 3)
        assert dataclasses.replace(make_batch(), categorical=codes).categorical.max() == 3

    def test_feature_names_must_be_unique(self) -> None:
        with pytest.raises(ValueError, match="duplicates \\['service'\\]"):
            dataclasses.replace(make_batch(), numeric_names=("service", "duration"))

    def test_take_selects_rows_by_slice_positions_or_mask(self) -> None:
        batch = make_batch(6)
        by_slice = batch.take(slice(1, 3))
        by_positions = batch.take([1, 2])
        by_mask = batch.take(np.array([False, True, True, False, False, False]))
        for subset in (by_slice, by_positions, by_mask):
            assert len(subset) == 2
            np.testing.assert_array_equal(subset.numeric, batch.numeric[1:3])
            np.testing.assert_array_equal(subset.categorical, batch.categorical[1:3])
            np.testing.assert_array_equal(subset.encoded, batch.encoded[1:3])
            assert subset.same_schema(batch)

    def test_concat_stacks_rows_in_order(self) -> None:
        batch = make_batch(6)
        joined = FeatureBatch.concat([batch.take(slice(0, 2)), batch.take(slice(2, 6))])
        np.testing.assert_array_equal(joined.numeric, batch.numeric)
        np.testing.assert_array_equal(joined.categorical, batch.categorical)

    def test_concat_refuses_mixed_schemas_and_nothing(self) -> None:
        vocab = (("http", "ftp", "ssh"), ("false", "true", "maybe"))
        other = dataclasses.replace(make_batch(), categorical_vocab=vocab)
        with pytest.raises(FeatureSchemaError):
            FeatureBatch.concat([make_batch(), other])
        with pytest.raises(ValueError, match="at least one"):
            FeatureBatch.concat([])


class TestVerdict:
    def test_shapes_must_agree(self) -> None:
        with pytest.raises(ValueError, match="one shape"):
            Verdict("d", flagged=np.zeros(3, bool), score=np.zeros(2), p_value=None)
        with pytest.raises(ValueError, match="p_value"):
            Verdict("d", flagged=np.zeros(3, bool), score=np.zeros(3), p_value=np.zeros(2))

    def test_arrays_are_coerced(self) -> None:
        verdict = Verdict("d", flagged=[0, 1], score=[0.1, 2.0], p_value=[0.5, 0.001])
        assert verdict.flagged.dtype == bool and verdict.flagged.tolist() == [False, True]
        assert verdict.p_value is not None and verdict.p_value.dtype == np.float64


def numeric_test(name: str = "src_bytes", **changes: object) -> FeatureTest:
    fields: dict[str, object] = {
        "name": name,
        "kind": "numeric",
        "test": "ks",
        "statistic": 0.4,
        "p_value": 1e-12,
        "adjusted_p_value": 4e-12,
        "rejected": True,
        "effect_size": 0.4,
        "reference_mean": 120.0,
        "window_mean": 5400.0,
        "reference_std": 30.0,
        "window_std": 31.0,
    }
    fields.update(changes)
    return FeatureTest(**fields)  # type: ignore[arg-type]


def categorical_test(name: str = "service", **changes: object) -> FeatureTest:
    fields: dict[str, object] = {
        "name": name,
        "kind": "categorical",
        "test": "chi2",
        "statistic": 80.0,
        "p_value": 1e-9,
        "adjusted_p_value": 2e-9,
        "rejected": True,
        "effect_size": 0.12,
        "degrees_of_freedom": 3,
        "new_categories": 120,
        "new_category_fraction": 0.12,
        "reference_new_category_fraction": 0.0,
        "category_shifts": (CategoryShift("http", 0.6, 0.5),),
    }
    fields.update(changes)
    return FeatureTest(**fields)  # type: ignore[arg-type]


def report(*features: FeatureTest, rejected: bool = True) -> DriftReport:
    return DriftReport(
        detector="feature_drift",
        n_reference=8000,
        n_window=1000,
        alpha=0.01,
        correction="bh",
        statistic=max(f.effect_size for f in features),
        p_value=min(f.adjusted_p_value for f in features),
        rejected=rejected,
        features=features,
        top_features=tuple(f.name for f in features if f.rejected),
        records_seen=5000,
    )


class TestExplanations:
    def test_numeric_movement_names_the_mean_when_the_mean_moved_most(self) -> None:
        assert numeric_test().describe_movement() == "src_bytes mean 120→5400"

    def test_numeric_movement_names_the_spread_when_it_moved_most(self) -> None:
        spread = numeric_test(window_mean=121.0, window_std=300.0)
        assert spread.describe_movement() == "src_bytes std 30→300"

    def test_categorical_movement_leads_with_unseen_categories_when_they_dominate(self) -> None:
        assert categorical_test().describe_movement() == "service: 12% unseen categories"

    def test_categorical_movement_names_the_category_that_moved_most(self) -> None:
        shifted = categorical_test(
            new_categories=2,
            new_category_fraction=0.002,
            category_shifts=(CategoryShift("http", 0.6, 0.3), CategoryShift("ftp", 0.1, 0.2)),
        )
        assert shifted.describe_movement() == "service: http 60%→30%"

    def test_small_shares_keep_a_decimal(self) -> None:
        rare = categorical_test(new_categories=4, new_category_fraction=0.004, category_shifts=())
        assert rare.describe_movement() == "service: 0.4% unseen categories"

    def test_summary_of_a_drifted_window_names_features_and_movements(self) -> None:
        line = report(numeric_test(), categorical_test()).summary()
        assert line.startswith("feature_drift: drift in 2 of 2 features over 1000 records")
        assert line.endswith("src_bytes mean 120→5400, service: 12% unseen categories")

    def test_summary_of_a_quiet_window_says_so(self) -> None:
        quiet = numeric_test(rejected=False, adjusted_p_value=0.4)
        line = report(quiet, rejected=False).summary()
        assert line == (
            "feature_drift: no drift in 1 features over 1000 records (smallest adjusted p=0.4)"
        )

    def test_to_dict_is_strict_json_with_plain_types(self) -> None:
        data = report(numeric_test(), categorical_test()).to_dict()
        text = json.dumps(data, allow_nan=False)
        assert json.loads(text) == data
        assert data["top_features"] == ["src_bytes", "service"]
        assert data["features"][1]["category_shifts"] == [
            {"category": "http", "reference_fraction": 0.6, "window_fraction": 0.5}
        ]

    def test_feature_lookup_by_name(self) -> None:
        drift = report(numeric_test(), categorical_test())
        assert drift.feature("service").kind == "categorical"
        with pytest.raises(KeyError, match="nope"):
            drift.feature("nope")

    def test_category_shift_change_is_signed(self) -> None:
        assert CategoryShift("http", 0.6, 0.5).change == pytest.approx(-0.1)
