"""The adversarial-input detector: calibration, combination rules, squeezing, explanations."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

import detectors.adversarial
from detectors._conformal import Calibration, conformal_p_values
from detectors.adversarial import AdversarialDetector
from detectors.base import FeatureBatch, TensorLayout
from detectors.checks import NearestLabelModel, false_alarm_budget, synthetic_labelled_batch


def _batch(x: np.ndarray) -> FeatureBatch:
    return FeatureBatch(numeric=np.zeros((len(x), 0)), numeric_names=(),
                        categorical=np.zeros((len(x), 0)), categorical_names=(),
                        categorical_vocab=(), encoded=x)


class _Versioned(NearestLabelModel):
    """The suite's model with a settable version and a record of reference passes."""

    def __init__(self, reference: FeatureBatch) -> None:
        super().__init__(reference)
        self.version = "1"
        self.passes = 0

    def layers(self, x: np.ndarray) -> list[np.ndarray]:
        self.passes += 1
        return super().layers(x)


class _HeldOut:
    """A handle naming the reference rows its model never trained on."""

    novel_false_alarm_rate = 0.01

    def __init__(self, model: NearestLabelModel, rows: np.ndarray) -> None:
        self.model = model
        self.held_out_rows = rows

    def current(self) -> NearestLabelModel:
        return self.model


def test_docstring_example_runs() -> None:
    assert doctest.testmod(detectors.adversarial).failed == 0


# --- the conformal machinery -------------------------------------------------------------------


def test_conformal_p_values_are_uniform_on_exchangeable_scores() -> None:
    rng = np.random.default_rng(0)
    calibration = np.sort(rng.normal(size=2000))
    p = conformal_p_values(calibration, rng.normal(size=20_000))
    for alpha in (0.01, 0.05, 0.2):
        # Given one calibration set the rate varies around alpha by its quantile's spread.
        spread = np.sqrt(alpha * (1 - alpha) / 2000) + np.sqrt(alpha * (1 - alpha) / 20_000)
        assert abs((p <= alpha).mean() - alpha) <= 3 * spread + 1 / 2001


@pytest.mark.parametrize("rule", ["fisher", "bonferroni"])
def test_combined_rate_holds_for_dependent_components(rule: str) -> None:
    """Components reading the same signal (strongly correlated) keep the rate when combined."""
    rng = np.random.default_rng(1)

    def scores(n: int) -> np.ndarray:
        shared = rng.normal(size=(n, 1))
        return np.hstack([shared + 0.3 * rng.normal(size=(n, 1)) for _ in range(5)])

    calibration = Calibration.fit(scores(3000), rule)  # type: ignore[arg-type]
    p, _ = calibration.combine(scores(20_000))
    assert int((p <= 0.01).sum()) <= false_alarm_budget(20_000, 0.01)


def test_one_component_far_out_is_not_drowned_by_the_others() -> None:
    """The extrapolated tail: a record far beyond every calibration record on one component
    is flagged even when its other components are ordinary."""
    rng = np.random.default_rng(2)
    calibration = Calibration.fit(rng.normal(size=(1000, 8)), "fisher")
    record = rng.normal(size=(5, 8))
    record[:, 0] = 40.0
    p, _ = calibration.combine(record)
    assert (p <= 0.01).all()


# --- the detector ------------------------------------------------------------------------------


def test_false_alarm_rate_on_clean_records_for_each_rule() -> None:
    """Averaged over calibration sets (a single one moves the rate by its quantile's
    spread, about 0.2 points here), the rate on clean records is alpha."""
    flagged = {"fisher": 0, "bonferroni": 0}
    total = 0
    for seed in range(4):
        rng = np.random.default_rng(30 + seed)
        reference = synthetic_labelled_batch(rng, 4000)
        model = NearestLabelModel(reference)
        clean = synthetic_labelled_batch(rng, 5000)
        total += len(clean)
        for combine in flagged:
            detector = AdversarialDetector(alpha=0.01, combine=combine, model=model,  # type: ignore[arg-type]
                                           seed=seed)
            detector.fit(reference)
            flagged[combine] += int(detector.score(clean).flagged.sum())
    calibration_spread = 3 * np.sqrt(0.01 * 0.99 / 2000 / 4) * total
    for combine, count in flagged.items():
        assert count <= false_alarm_budget(total, 0.01) + calibration_spread, (combine, count)


def test_calibrates_on_the_rows_the_model_never_trained_on() -> None:
    rng = np.random.default_rng(4)
    reference = synthetic_labelled_batch(rng, 1200)
    held_out = np.arange(0, 1200, 4)
    detector = AdversarialDetector(alpha=0.01, model=_HeldOut(NearestLabelModel(reference),
                                                               held_out))
    detector.fit(reference)
    assert detector._split is not None
    fitting, calibration = detector._split
    assert np.array_equal(calibration, held_out)
    assert not set(fitting.tolist()) & set(held_out.tolist())


def test_refuses_a_reference_too_small_for_alpha() -> None:
    rng = np.random.default_rng(5)
    reference = synthetic_labelled_batch(rng, 120)
    detector = AdversarialDetector(alpha=0.01, model=NearestLabelModel(reference))
    with pytest.raises(ValueError, match="too small to calibrate alpha=0.01"):
        detector.fit(reference)


def test_recalibrates_when_the_model_version_changes() -> None:
    rng = np.random.default_rng(6)
    reference = synthetic_labelled_batch(rng, 1000)
    model = _Versioned(reference)
    detector = AdversarialDetector(alpha=0.05, model=model)
    detector.fit(reference)
    batch = synthetic_labelled_batch(rng, 50)
    detector.score(batch)
    after_first = model.passes
    detector.score(batch)
    assert model.passes == after_first + 1  # the batch only: calibration was kept
    model.version = "2"
    verdict = detector.score(batch)
    assert model.passes == after_first + 4  # fitting rows, calibration rows, the batch
    assert verdict.explanation["model_version"] == "2"


def test_explanation_names_components_p_values_and_nearest_clean_records() -> None:
    rng = np.random.default_rng(7)
    reference = synthetic_labelled_batch(rng, 1000)
    detector = AdversarialDetector(alpha=0.01, explain_neighbours=2,
                                   model=NearestLabelModel(reference))
    detector.fit(reference)
    batch = FeatureBatch.concat([synthetic_labelled_batch(rng, 10),
                                 synthetic_labelled_batch(rng, 3, far=30.0)])
    verdict = detector.score(batch)
    assert verdict.flagged[-3:].all()
    [explanation] = detector.explain(batch, [11])
    json.dumps(explanation, allow_nan=False)
    assert explanation["fired"] and set(explanation["fired"]) <= {"mahalanobis", "knn", "lid",
                                                                  "margin"}
    assert explanation["p_value"] <= 0.01
    assert [c["p_value"] for c in explanation["components"]] == sorted(
        c["p_value"] for c in explanation["components"])
    assert len(explanation["nearest_clean"]) == 2
    assert explanation["nearest_clean"][0]["origin"].startswith("reference:")


class _Brightness:
    """A model that reads fine detail: class "bright" grows with the mean pixel value."""

    version = "b"
    classes = probability_classes = ("dark", "bright")

    def current(self) -> _Brightness:
        return self

    def layers(self, x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(x, np.float32)]

    def classify(self, x: np.ndarray, embeddings: np.ndarray | None = None) -> object:
        class Out:
            predicted = np.where(np.asarray(x).mean(axis=1) > 0.5, "bright", "dark")
        return Out()

    def class_probabilities(self, x: np.ndarray) -> np.ndarray:
        bright = 1.0 / (1.0 + np.exp(-20.0 * (np.asarray(x).mean(axis=1) - 0.5)))
        return np.column_stack([1.0 - bright, bright])


def test_squeeze_needs_an_image_feature() -> None:
    with pytest.raises(ValueError, match="needs a tensor"):
        AdversarialDetector(methods=("squeeze",))


def test_squeeze_scores_the_change_squeezing_makes() -> None:
    """Flat black or white images survive squeezing; a faint pattern that pushes the model
    is wiped out by the 1-bit reduction, so the model's answer moves."""
    rng = np.random.default_rng(8)
    flat = np.repeat(rng.integers(0, 2, 600).astype(float)[:, None], 16, axis=1)
    reference = _batch(flat)
    layout = TensorLayout(name="image", shape=(4, 4), start=0, center=0.0, scale=1.0, low=0.0,
                          high=1.0)
    detector = AdversarialDetector(alpha=0.05, methods=("squeeze",), squeeze_bits=1,
                                   model=_Brightness(), tensors=(layout,))
    detector.fit(reference)
    clean = detector.score(_batch(flat[:50]))
    assert np.allclose(clean.score, clean.score[0]) and not clean.flagged.any()
    pushed = np.full((20, 16), 0.45)  # dark pixels, nudged up: "almost bright"
    verdict = detector.score(_batch(pushed))
    assert verdict.flagged.all()
