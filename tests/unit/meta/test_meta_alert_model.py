"""The served model: classification, calibrated novelty, incremental enrolment, LOO checks."""

from __future__ import annotations

import numpy as np
import pytest

from meta.live import (
    AlertModel,
    NoveltyCalibration,
    SupportSet,
    support_digest,
    version_digest,
)


def _support(rng: np.random.Generator, n_normal: int = 400, n_scan: int = 150) -> SupportSet:
    x = np.concatenate([rng.normal(0.0, 1.0, (n_normal, 4)), rng.normal(8.0, 1.0, (n_scan, 4))])
    y = np.array(["normal"] * n_normal + ["scan"] * n_scan)
    return SupportSet(x=x, y=y, origin=[f"reference:{i}" for i in range(len(y))], numeric=x,
                      categorical=np.zeros((len(y), 0)))


def test_novelty_p_values_are_calibrated_on_exchangeable_records() -> None:
    rng = np.random.default_rng(0)
    model = AlertModel.build("knn", None, _support(rng), benign_class="normal")
    fresh = _support(rng, 4000, 800)
    out = model.classify(fresh.x)
    assert (out.predicted.astype(str) == fresh.y).mean() > 0.99
    flagged = (out.novelty_p <= 0.05).mean()
    assert 0.02 < flagged < 0.08  # conformal: about alpha on records like the support


def test_far_records_are_novel_and_named_after_enrolment() -> None:
    rng = np.random.default_rng(1)
    model = AlertModel.build("knn", None, _support(rng), benign_class="normal")
    new_kind = rng.normal([0.0, 20.0, 0.0, 20.0], 0.5, (50, 4))
    assert (model.classify(new_kind).novelty_p <= 0.01).all()
    labels = SupportSet(x=new_kind[:5], y=["tunnel"] * 5, origin=[f"label:{i}" for i in range(5)],
                        numeric=new_kind[:5], categorical=np.zeros((5, 0)))
    adapted = model.with_records(labels)
    assert "tunnel" in adapted.classes and "tunnel" not in model.classes
    later = adapted.classify(new_kind[5:])
    assert (later.predicted.astype(str) == "tunnel").all()


def _labelled(x: np.ndarray, label: str) -> SupportSet:
    return SupportSet(x=x, y=[label] * len(x), origin=[f"label:{i}" for i in range(len(x))],
                      numeric=x, categorical=np.zeros((len(x), 0)))


def test_a_type_learnt_from_five_spread_out_labels_is_named_not_novel() -> None:
    """The pooled scores come from dense reference classes; five labels of a broad type lie
    further apart, and the type's later records are judged on the pooled scores stretched by
    that spread instead of being reported novel for being as far from a label as they are."""
    rng = np.random.default_rng(4)
    model = AlertModel.build("knn", None, _support(rng), benign_class="normal")
    broad = rng.normal([0.0, 25.0, 0.0, 25.0], 3.0, (400, 4))
    adapted = model.with_records(_labelled(broad[:5], "tunnel"))
    assert adapted.calibration.spread["tunnel"] > 1.5
    later = adapted.classify(broad[5:])
    named = later.predicted.astype(str) == "tunnel"
    assert named.mean() > 0.95
    assert (later.novelty_p[named] <= 0.01).mean() < 0.1
    pooled_only = NoveltyCalibration(scores=adapted.calibration.scores,
                                     pooled=adapted.calibration.pooled, min_class_records=100)
    assert (pooled_only.p_values(later.predicted, later.novelty)[named] <= 0.01).mean() > 0.5


def test_the_spread_spares_the_benign_class_compact_classes_and_classes_of_two() -> None:
    rng = np.random.default_rng(5)
    support = _support(rng, n_normal=8, n_scan=300)
    benign_scale = SupportSet(x=support.x * np.where(support.y == "normal", 6.0, 1.0)[:, None],
                              y=support.y, origin=support.origin, numeric=support.x,
                              categorical=support.categorical)
    model = AlertModel.build("knn", None, benign_scale, benign_class="normal")
    assert "normal" not in model.calibration.spread
    compact = _labelled(rng.normal([0.0, 25.0, 0.0, 25.0], 0.01, (5, 4)), "tunnel")
    adapted = model.with_records(compact)
    assert "tunnel" not in adapted.calibration.spread
    far = np.array([[0.0, 40.0, 0.0, 40.0]])
    out = adapted.classify(far)
    assert out.predicted[0] == "tunnel" and out.novelty_p[0] <= 0.01
    # Two records give one distance, too little to measure a spread with.
    pair = _labelled(np.array([[0.0, -25.0, 0.0, 0.0], [0.0, -40.0, 0.0, 0.0]]), "probe")
    assert "probe" not in model.with_records(pair).calibration.spread
    trio = _labelled(np.array([[0.0, -25.0, 0.0, 0.0], [0.0, -40.0, 0.0, 0.0],
                               [0.0, -32.0, 0.0, 10.0]]), "probe")
    assert model.with_records(trio).calibration.spread["probe"] > 1.0


def _with_rare_reference_class(rng: np.random.Generator, records: int) -> SupportSet:
    rare = rng.normal([30.0, 0.0, 0.0, 0.0], 0.3, (records, 4))
    return _support(rng).extend(SupportSet(
        x=rare, y=["spy"] * records, origin=[f"reference:{1000 + i}" for i in range(records)],
        numeric=rare, categorical=np.zeros((records, 0))))


def test_a_rare_reference_class_raises_alarms_as_novel_until_an_analyst_labels_it() -> None:
    """One reference record of a type says little about it; whatever lands nearest it must
    not be reported under its name with confidence. An analyst label of the type does."""
    rng = np.random.default_rng(7)
    model = AlertModel.build("knn", None, _with_rare_reference_class(rng, 1),
                             benign_class="normal")
    assert model.unnamed_classes == frozenset({"spy"})
    assert model.describe()["unnamed_classes"] == ["spy"]
    near = rng.normal([30.0, 0.0, 0.0, 0.0], 0.3, (20, 4))
    out = model.classify(np.concatenate([near, _support(rng, 50, 50).x]))
    spy = out.predicted.astype(str) == "spy"
    assert spy[:20].all() and not spy[20:].any()
    assert out.unnamed[:20].all() and not out.unnamed[20:].any()
    # Close enough to pass the calibrated novelty test: only the naming rule reports them.
    assert (out.novelty_p[:20] > 0.01).any()
    assert out.novel(0.01)[:20].all()
    assert np.array_equal(out.novel(0.01)[20:], out.novelty_p[20:] <= 0.01)

    labelled = model.with_records(_labelled(near[:1], "spy"))
    assert labelled.unnamed_classes == frozenset()
    assert not labelled.classify(near[1:]).unnamed.any()
    other = model.with_records(_labelled(rng.normal(15.0, 0.5, (5, 4)), "tunnel"))
    assert other.unnamed_classes == frozenset({"spy"})


def test_reference_classes_of_three_records_name_and_the_rule_can_be_turned_off() -> None:
    rng = np.random.default_rng(8)
    assert AlertModel.build("knn", None, _with_rare_reference_class(rng, 3),
                            benign_class="normal").unnamed_classes == frozenset()
    lone = AlertModel.build("knn", None, _with_rare_reference_class(rng, 1),
                            benign_class="normal", min_reference_records_to_name=1)
    assert lone.unnamed_classes == frozenset()
    small_benign = AlertModel.build("knn", None, _support(rng, n_normal=2, n_scan=50),
                                    benign_class="normal", min_reference_records_to_name=5)
    assert small_benign.unnamed_classes == frozenset()


def test_incremental_enrolment_matches_a_full_rebuild() -> None:
    rng = np.random.default_rng(2)
    support = _support(rng)
    extra = _support(rng, 10, 10)
    extra = SupportSet(x=extra.x, y=extra.y, origin=[f"label:{i}" for i in range(20)],
                       numeric=extra.x, categorical=np.zeros((20, 0)))
    incremental = AlertModel.build("knn", None, support, benign_class="normal").with_records(extra)
    rebuilt = AlertModel.build("knn", None, support.extend(extra), benign_class="normal")
    probe = rng.normal(4.0, 4.0, (300, 4))
    a, b = incremental.classify(probe), rebuilt.classify(probe)
    assert np.array_equal(a.predicted, b.predicted)
    assert np.allclose(a.novelty_p, b.novelty_p)


def test_leave_one_out_classification_ignores_the_record_itself() -> None:
    rng = np.random.default_rng(3)
    support = _support(rng)
    lonely = SupportSet(x=[[0.0, 0.0, 0.0, 0.1]], y=["mislabel"], origin=["label:1"],
                        numeric=[[0.0, 0.0, 0.0, 0.1]], categorical=np.zeros((1, 0)))
    model = AlertModel.build("knn", None, support.extend(lonely), benign_class="normal")
    row = np.array([len(support)])
    assert model.classify(model.support.x[row]).predicted[0] == "mislabel"
    assert model.classify(model.support.x[row], exclude=row).predicted[0] == "normal"


def test_build_refuses_bad_inputs_in_one_sentence() -> None:
    rng = np.random.default_rng(4)
    support = _support(rng)
    with pytest.raises(ValueError, match="benign class"):
        AlertModel.build("knn", None, support, benign_class="benign")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        AlertModel.build("svm", None, support, benign_class="normal")
    with pytest.raises(ValueError, match="needs its meta-trained learner"):
        AlertModel.build("memory", None, support, benign_class="normal")
    with pytest.raises(ValueError, match="two classes"):
        AlertModel.build("knn", None, support.take(np.arange(10)), benign_class="normal")


def test_digests_name_the_inputs_not_the_floats() -> None:
    rng = np.random.default_rng(5)
    support = _support(rng)
    nudged = SupportSet(x=support.x + 1e-7, y=support.y, origin=support.origin,
                        numeric=support.numeric, categorical=support.categorical)
    assert support_digest(support) == support_digest(nudged)
    relabelled = SupportSet(x=support.x, y=np.where(support.y == "scan", "probe", support.y),
                            origin=support.origin, numeric=support.numeric,
                            categorical=support.categorical)
    assert support_digest(support) != support_digest(relabelled)
    assert version_digest({"a": 1, "b": [1, 2]}) == version_digest({"b": [1, 2], "a": 1})


@pytest.mark.slow
def test_meta_learned_memory_and_protonet_models_serve_and_enrol() -> None:
    from meta.encoders import EncoderSpec
    from meta.learners import build_learner

    rng = np.random.default_rng(6)
    support = _support(rng, 200, 60)
    for algorithm in ("memory", "protonet", "fomaml"):
        learner = build_learner(algorithm, EncoderSpec(kind="mlp", input_shape=(4,),
                                                       hidden=(16,), embedding_dim=8),
                                device="cpu")
        model = AlertModel.build(algorithm, learner, support, benign_class="normal", folds=3)
        out = model.classify(support.x[:10])
        assert out.predicted.shape == (10,) and np.isfinite(out.novelty).all()
        assert model.embed(support.x[:3]).shape[0] == 3
        labels = SupportSet(x=rng.normal(15.0, 0.5, (5, 4)), y=["tunnel"] * 5,
                            origin=[f"label:{i}" for i in range(5)],
                            numeric=np.zeros((5, 4)), categorical=np.zeros((5, 0)))
        assert "tunnel" in model.with_records(labels).classes
