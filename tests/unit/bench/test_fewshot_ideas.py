"""The few-shot ideas: each method on hand-made episodes where its answer is known, the
pseudo-class split, and the ideas report (no training, no data files)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.fewshot_baselines import ClassScores, NearestCentroid  # noqa: E402
from bench.fewshot_data import LabelledSet  # noqa: E402
from bench.fewshot_ideas import markdown, plot  # noqa: E402
from bench.fewshot_variants import (  # noqa: E402
    PrototypeFineTune,
    SeedEnsemble,
    ShrunkMahalanobis,
    TransductiveSlots,
    WithTrees,
    l2_normalise,
    pseudo_classes,
    with_classes,
    with_pseudo_classes,
)


class IdentityMemory:
    """A stand-in memory learner: keys are the records themselves, temperature fixed."""

    temperature = 1.0

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64).reshape(len(x), -1)

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        keys, ways = self.project(support_x), int(support_y.max()) + 1

        def read(x: np.ndarray) -> np.ndarray:
            d = ((x[:, None, :] - keys[None]) ** 2).sum(-1)
            return np.stack([-d[:, support_y == c].min(1) for c in range(ways)], 1)

        return ClassScores(read)


class Constant:
    """A learner whose adapted model always prefers one class, by a fixed margin."""

    def __init__(self, favourite: int) -> None:
        self.favourite = favourite

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        ways = int(support_y.max()) + 1

        def fixed(x: np.ndarray) -> np.ndarray:
            out = np.zeros((len(x), ways))
            out[:, self.favourite] = 3.0
            return out

        return ClassScores(fixed)


def _two_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[5.0, 0.0], [0.0, 5.0]])  # apart in direction too (L2 experts)
    sy = np.array([0, 1])
    qy = np.repeat([0, 1], 20)
    return (centres[sy], sy, centres[qy] + rng.normal(0, 0.7, (40, 2)), qy)


def test_an_ensemble_averages_log_probabilities_so_a_majority_wins() -> None:
    sx, sy, qx, _ = _two_blobs()
    votes = SeedEnsemble([Constant(1), Constant(1), Constant(0)]).adapt(sx, sy)
    assert (votes.predict(qx) == 1).all()
    tie = SeedEnsemble([Constant(1), Constant(0)]).adapt(sx, sy).logits(qx)
    assert np.allclose(tie[:, 0], tie[:, 1])


def test_a_raw_expert_breaks_a_tie_towards_the_nearest_support_record() -> None:
    sx, sy, qx, qy = _two_blobs()
    tied = SeedEnsemble([Constant(1), Constant(0)], raw_weight=1.0).adapt(sx, sy)
    assert (tied.predict(qx) == qy).mean() > 0.9
    with pytest.raises(ValueError):
        SeedEnsemble([])


def test_trees_beside_a_learner_decide_where_they_agree_and_outweigh_it_when_weighted() -> None:
    sx = np.array([[5.0, 0.0], [5.2, 0.1], [0.0, 5.0], [0.1, 5.2]])
    sy = np.array([0, 0, 1, 1])
    qx = np.array([[5.1, 0.2], [0.2, 5.1]])
    # The learner always says 1 (logit margin 3); trees fitted on the support say 0 then 1.
    light = WithTrees(Constant(1), weight=0.0).adapt(sx, sy)
    assert light.predict(qx).tolist() == [1, 1]
    heavy = WithTrees(Constant(1), weight=4.0).adapt(sx, sy)
    assert heavy.predict(qx).tolist() == [0, 1]
    with pytest.raises(ValueError, match="weight"):
        WithTrees(Constant(1), weight=-1.0)


def test_transduction_follows_the_queries_cluster_where_one_support_record_is_off_centre(
) -> None:
    rng = np.random.default_rng(3)
    # Class 1's only support record sits at the edge of its cluster, nearer class 0's centre
    # than most class-1 queries are: reading the queries as slots pulls those back to class 1.
    sx, sy = np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([0, 1])
    qx = np.vstack([rng.normal([0, 0], 0.5, (30, 2)), rng.normal([5.5, 0], 0.5, (30, 2))])
    qy = np.repeat([0, 1], 30)
    inductive = TransductiveSlots(IdentityMemory(), steps=0).adapt(sx, sy)
    transductive = TransductiveSlots(IdentityMemory(), steps=2).adapt(sx, sy)
    assert (transductive.predict(qx) == qy).mean() >= (inductive.predict(qx) == qy).mean()
    assert np.isfinite(transductive.logits(qx)).all()


def test_a_query_never_reads_its_own_slot() -> None:
    sx, sy = np.array([[0.0], [10.0]]), np.array([0, 1])
    lone = np.array([[100.0]])  # far from everything: only its own slot would be near
    logits = TransductiveSlots(IdentityMemory(), steps=1).adapt(sx, sy).logits(lone)
    assert logits[0, 1] > logits[0, 0]  # still the nearer support record's class
    assert np.all(logits < -1000)        # and no zero-distance read of itself


def test_the_fine_tuned_head_starts_at_the_prototype_classifier() -> None:
    sx, sy, qx, qy = _two_blobs()
    frozen = PrototypeFineTune(IdentityMemory(), strength=1e9, max_iter=1).adapt(sx, sy)
    proto = -((qx[:, None, :] - sx[None]) ** 2).sum(-1)
    # Logits differ from minus the squared distance by a per-row constant (|q|^2).
    assert np.allclose(frozen.logits(qx) - proto, (qx**2).sum(1, keepdims=True), atol=1e-6)
    tuned = PrototypeFineTune(IdentityMemory(), strength=0.1).adapt(sx, sy)
    assert (tuned.predict(qx) == qy).mean() > 0.9


def test_the_shrunk_metric_ignores_a_direction_every_class_varies_along() -> None:
    """Two classes 1 apart on feature 0 and both spread by about 8 along feature 1: a query at
    feature 0 = 0.05 is class 0's, though Euclidean prototypes put it in class 1 (it sits at
    class 1's feature-1 mean, 8 from class 0's)."""
    spread = np.array([-10.0, -5.0, 0.0, 5.0, 10.0])
    support_x = np.stack([np.r_[np.zeros(5), np.ones(5)], np.r_[spread + 4, spread - 4]],
                         axis=1)
    support_y = np.r_[np.zeros(5, np.int64), np.ones(5, np.int64)]
    query = np.array([[0.05, -4.0]])
    assert NearestCentroid().adapt(support_x, support_y).predict(query)[0] == 1  # the trap
    assert ShrunkMahalanobis(beta=0.01).adapt(support_x, support_y).predict(query)[0] == 0


def test_the_shrunk_metric_handles_one_shot_and_refuses_a_zero_ridge() -> None:
    support_x = np.array([[0.0, 0.0, 1.0], [3.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    model = ShrunkMahalanobis(beta=1.0).adapt(support_x, np.array([0, 1, 2]))
    scores = model.logits(support_x + 0.1)
    assert np.isfinite(scores).all()
    assert model.predict(support_x + 0.1).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="beta"):
        ShrunkMahalanobis(beta=0.0)


def test_pseudo_classes_split_a_two_mode_class_and_keep_a_small_one_whole() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(-8, 0.3, (60, 2)), rng.normal(8, 0.3, (60, 2)),
                   rng.normal(0, 0.3, (25, 2))])
    y = np.repeat([0, 0, 1], [60, 60, 25])
    split = pseudo_classes(LabelledSet(x, y, ("wide", "small")), records_per_mode=60)
    assert sorted(split.class_names) == ["small#0", "wide#0", "wide#1"]
    for name in ("wide#0", "wide#1"):
        members = split.x[split.y == split.class_names.index(name)]
        assert len(members) == 60 and np.ptp(members[:, 0]) < 5  # one mode each


def test_stream_clusters_become_new_classes_after_the_labelled_ones() -> None:
    rng = np.random.default_rng(1)
    labelled = LabelledSet(rng.normal(0, 1, (30, 2)), np.repeat([0, 1], 15), ("normal", "scan"))
    # Two dense groups of 40 and a stray handful of 5: the handful is too small for a class.
    stream = np.vstack([rng.normal(-20, 0.2, (40, 2)), rng.normal(20, 0.2, (40, 2)),
                        rng.normal((20, -20), 0.2, (5, 2))])
    out = with_pseudo_classes(labelled, stream, clusters=3, min_records=20)
    assert out.class_names[:2] == ("normal", "scan") and len(out.class_names) == 4
    assert all(name.startswith("stream#") for name in out.class_names[2:])
    np.testing.assert_array_equal(out.y[:30], labelled.y)
    assert len(out.y) == 30 + 80  # the stray handful is left out
    for label in (2, 3):
        group = out.x[out.y == label]
        assert len(group) == 40 and np.ptp(group[:, 0]) < 5


def test_extra_classes_follow_the_training_classes_and_a_shared_name_is_refused() -> None:
    base = LabelledSet(np.zeros((4, 2)), np.array([0, 0, 1, 1]), ("normal", "scan"))
    extra = LabelledSet(np.ones((3, 2)), np.array([1, 0, 1]), ("guess", "warez"))
    out = with_classes(base, extra)
    assert out.class_names == ("normal", "scan", "guess", "warez")
    np.testing.assert_array_equal(out.y, [0, 0, 1, 1, 3, 2, 3])
    np.testing.assert_array_equal(out.x[4:], extra.x)
    with pytest.raises(ValueError, match="scan"):
        with_classes(base, LabelledSet(np.ones((1, 2)), np.array([0]), ("scan",)))


def test_l2_normalise_gives_unit_rows_and_leaves_zero_rows_alone() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_the_report_gives_seed_ranges_and_marks_transductive_and_test_file_rows(
        tmp_path: Path) -> None:
    def row(idea: str, values: list[dict[str, float]], **extra: object) -> dict[str, object]:
        keys = values[0].keys()
        return {"idea": idea, "per_seed": values, **extra,
                "mean": {k: float(np.mean([v[k] for v in values])) for k in keys},
                "min": {k: min(v[k] for v in values) for k in keys},
                "max": {k: max(v[k] for v in values) for k in keys}}

    result = {"test_episodes": 600, "training_episodes": 960, "seeds": 2, "rows": [
        row("raw 1-NN", [{"5w1s": 0.7, "5w5s": 0.9}], baseline=True),
        row("memory", [{"5w1s": 0.70, "5w5s": 0.93, "base rate 5w5s": 0.6},
                       {"5w1s": 0.78, "5w5s": 0.95, "base rate 5w5s": 0.7}]),
        row("slots", [{"5w1s": 0.8, "5w5s": 0.9}, {"5w1s": 0.8, "5w5s": 0.9}],
            transductive=True),
        row("wider", [{"5w1s": 0.7, "5w5s": 0.9}], uses_test_file=True)]}
    text = markdown(result)
    assert "| raw 1-NN | 70.0 | 90.0 | – | – |" in text
    assert "| memory | 74.0 [70.0–78.0] | 94.0 [93.0–95.0] | – | 65.0 [60.0–70.0] |" in text
    assert "slots *(transductive)*" in text
    assert "wider *(uses the test file)*" in text and "memory *(" not in text
    plot(result, tmp_path / "ideas.png")
    assert (tmp_path / "ideas.png").stat().st_size > 1000
