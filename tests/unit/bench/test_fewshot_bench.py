"""The few-shot benchmark's loaders, episode plans, metrics and baselines.

Synthetic data covers the harness and baselines; the real-data loaders run on the shared
datasets and skip, saying which file is missing, where they are absent.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.fewshot_baselines import (  # noqa: E402
    ExtraTrees,
    LinearHead,
    NearestCentroid,
    NearestNeighbour,
    RangeScaledNearestNeighbour,
    squared_distances,
)
from bench.fewshot_data import (  # noqa: E402
    LabelledSet,
    OmniglotCharacters,
    data_root,
    load_nsl_kdd_novel_split,
    load_omniglot_runs,
    rare_known_attack_types,
    split_characters,
    with_rotations,
)
from bench.fewshot_harness import (  # noqa: E402
    accuracy_by_task,
    evaluate_accuracy,
    evaluate_base_rate,
    materialise,
    mean_with_ci,
    plan_episodes,
    recall_at_fpr,
)
from bench.fewshot_methods import choose_weight, concatenate_features  # noqa: E402
from bench.fewshot_report import seed_range, write_plots, write_tables  # noqa: E402

DATA = data_root()


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"dataset file {path} is missing (set METASENTRY_DATA to the data root)")


def _blobs(n_classes: int, per_class: int, dim: int, spread: float, seed: int) -> LabelledSet:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    x = centres[y] + rng.normal(0.0, spread, size=(len(y), dim))
    return LabelledSet(x.astype(np.float32), y, tuple(f"c{i}" for i in range(n_classes)))


# --------------------------------------------------------------------------- harness


def test_mean_with_ci_is_196_sigma_over_root_n() -> None:
    values = np.array([0.5, 0.7, 0.9, 0.6, 0.8])
    result = mean_with_ci(values)
    assert result.mean == pytest.approx(0.7)
    assert result.ci95 == pytest.approx(1.96 * values.std(ddof=1) / math.sqrt(5))
    assert result.n == 5
    assert mean_with_ci([0.25]).ci95 == 0.0


def test_plans_are_reproducible_class_balanced_and_disjoint() -> None:
    data = _blobs(n_classes=7, per_class=30, dim=3, spread=0.1, seed=1)
    plans = plan_episodes(data.y, ways=5, shots=2, queries=4, n_episodes=20, seed=3)
    again = plan_episodes(data.y, ways=5, shots=2, queries=4, n_episodes=20, seed=3)
    for plan, twin in zip(plans, again, strict=True):
        np.testing.assert_array_equal(plan.support_idx, twin.support_idx)
        np.testing.assert_array_equal(plan.query_idx, twin.query_idx)
        assert not set(plan.support_idx) & set(plan.query_idx)
        episode = materialise(plan, data.x, data.y)
        assert np.bincount(episode.support_y).tolist() == [2] * 5
        assert np.bincount(episode.query_y).tolist() == [4] * 5
        np.testing.assert_array_equal(plan.classes[episode.support_y], data.y[plan.support_idx])
    different = plan_episodes(data.y, ways=5, shots=2, queries=4, n_episodes=20, seed=4)
    assert any(
        not np.array_equal(a.support_idx, b.support_idx)
        for a, b in zip(plans, different, strict=True)
    )


def test_base_rate_plans_always_hold_the_benign_class_first() -> None:
    data = _blobs(n_classes=6, per_class=60, dim=2, spread=0.1, seed=2)
    plans = plan_episodes(
        data.y, ways=3, shots=1, queries=[40, 3, 3], n_episodes=10, seed=0, always_include=5
    )
    for plan in plans:
        assert plan.classes[0] == 5
        episode = materialise(plan, data.x, data.y)
        assert np.bincount(episode.query_y).tolist() == [40, 3, 3]


def test_plans_refuse_classes_too_small_for_the_episode() -> None:
    y = np.repeat(np.arange(5), [30, 30, 30, 30, 4])
    with pytest.raises(ValueError, match="classes have"):
        plan_episodes(y, ways=5, shots=1, queries=5, n_episodes=1, seed=0)


def test_recall_at_fpr_keeps_false_positives_within_budget() -> None:
    benign = np.arange(100, dtype=float)  # top score 99
    attack = np.array([98.5, 99.5, 120.0, 50.0])
    # 1% of 100 benign = one false positive allowed: threshold is the second-highest (98).
    assert recall_at_fpr(benign, attack, 0.01) == pytest.approx(0.75)
    assert recall_at_fpr(benign, attack, 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        recall_at_fpr(benign, attack, 1.0)


# --------------------------------------------------------------------------- baselines


def test_nearest_neighbour_and_centroid_on_hand_made_support() -> None:
    support_x = np.array([[0.0, 0.0], [10.0, 0.0], [4.0, 0.0], [0.0, 10.0]])
    support_y = np.array([0, 0, 1, 1])
    query = np.array([[9.0, 0.0]])
    # 1-NN: the nearest support record (10, 0) is class 0.
    assert NearestNeighbour().adapt(support_x, support_y).predict(query).tolist() == [0]
    # Centroids (5, 0) and (2, 5): (9, 0) is nearer (5, 0) -> class 0; (2, 4) -> class 1.
    centroid = NearestCentroid().adapt(support_x, support_y)
    assert centroid.predict(np.array([[9.0, 0.0], [2.0, 4.0]])).tolist() == [0, 1]
    proba = centroid.predict_proba(query)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_range_scaling_counts_features_by_how_the_support_set_varies_on_them() -> None:
    # The records differ by 1 on feature 0 and by 100 on feature 1; feature 2 they share.
    support_x = np.array([[0.0, 0.0, 5.0], [1.0, 100.0, 5.0]])
    support_y = np.array([0, 1])
    query = np.array([[0.0, 80.0, 7.0]])
    # Squared L2: 6,400 + 4 against 1 + 400 + 4, so the wide feature decides.
    assert NearestNeighbour().adapt(support_x, support_y).predict(query).tolist() == [1]
    # Scaled by range, L1: 0 + 0.8 against 1 + 0.2, and the shared feature is left out.
    scaled = RangeScaledNearestNeighbour().adapt(support_x, support_y)
    np.testing.assert_allclose(scaled.logits(query), [[-0.8, -1.2]])
    assert scaled.predict(query).tolist() == [0]


def test_extra_trees_give_log_probability_scores_for_every_class() -> None:
    support_x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    support_y = np.array([0, 0, 2, 2])  # class 1 has no support record here
    model = ExtraTrees(trees=10).adapt(support_x, support_y)
    logits = model.logits(np.array([[0.0, 0.1], [5.0, 5.1]]))
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(logits[:, 1], np.log(1e-6))
    assert model.predict(np.array([[0.0, 0.1], [5.0, 5.1]])).tolist() == [0, 2]
    with pytest.raises(ValueError, match="trees"):
        ExtraTrees(trees=0)


def test_squared_distances_match_the_definition() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    expected = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(a, b), expected, atol=1e-9)


def test_baselines_separate_easy_classes_and_fail_on_noise() -> None:
    easy = _blobs(n_classes=8, per_class=25, dim=6, spread=0.3, seed=5)
    plans = plan_episodes(easy.y, ways=5, shots=1, queries=5, n_episodes=30, seed=0)
    for method in (NearestNeighbour(), NearestCentroid(), LinearHead(),
                   RangeScaledNearestNeighbour(), ExtraTrees(trees=20)):
        assert evaluate_accuracy(method, easy.x, easy.y, plans).accuracy.mean > 0.95
    rng = np.random.default_rng(1)
    noise = rng.normal(size=easy.x.shape).astype(np.float32)
    chance = evaluate_accuracy(NearestNeighbour(), noise, easy.y, plans).accuracy.mean
    assert chance < 0.45


def test_accuracy_by_task_scores_each_task_on_its_own_plans() -> None:
    easy = _blobs(n_classes=8, per_class=25, dim=6, spread=0.3, seed=5)
    plans = {k: plan_episodes(easy.y, ways=5, shots=s, queries=5, n_episodes=10, seed=0)
             for k, s in (("5w1s", 1), ("5w5s", 5))}
    out = accuracy_by_task(NearestNeighbour(), easy.x, easy.y, plans)
    assert set(out) == {"5w1s", "5w5s"}
    for task, task_plans in plans.items():
        expected = evaluate_accuracy(NearestNeighbour(), easy.x, easy.y, task_plans)
        assert out[task] == expected.accuracy.mean
    noise = np.random.default_rng(1).normal(size=easy.x.shape)
    assert max(accuracy_by_task(NearestNeighbour(), noise, easy.y, plans).values()) < 0.6


def test_seed_range_gives_one_figure_for_one_seed_and_the_spread_for_several() -> None:
    assert seed_range([0.7]) == "70.0"
    assert seed_range([0.70, 0.78, 0.74]) == "74.0 [70.0–78.0]"


def test_base_rate_evaluation_reports_recall_and_auc() -> None:
    data = _blobs(n_classes=5, per_class=300, dim=4, spread=0.3, seed=7)
    plans = plan_episodes(
        data.y, ways=3, shots=2, queries=[200, 5, 5], n_episodes=20, seed=0, always_include=0
    )
    result = evaluate_base_rate(NearestNeighbour(), data.x, data.y, plans, max_fpr=0.01)
    assert result.recall_at_fpr.mean > 0.9
    assert result.auc.mean > 0.95
    assert result.recall_at_fpr.n == 20


def test_embedding_weight_is_chosen_by_validation_accuracy() -> None:
    # Raw features are pure noise; the "embedding" carries the class: weight 0 must lose.
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(6), 20)
    raw = rng.normal(size=(len(y), 5))
    embedded = np.eye(6)[y] * 5.0 + rng.normal(0, 0.1, size=(len(y), 6))
    plans = plan_episodes(y, ways=5, shots=1, queries=5, n_episodes=20, seed=0)
    choice = choose_weight(raw, embedded, y, plans, scale=1.0, weights=(0.0, 4.0))
    assert choice.weight == 4.0
    assert choice.validation_accuracy[4.0] > choice.validation_accuracy[0.0]
    assert concatenate_features(raw, embedded, scale=2.0, weight=0.5).shape == (len(y), 11)


def test_tables_render_accuracy_with_ci(tmp_path: Path) -> None:
    results = {
        "mode": "quick",
        "omniglot": {
            "accuracy": {
                "5w1s": {"raw 1-NN": {"mean": 0.5, "ci95": 0.01}},
                "20w1s": {"raw 1-NN": {"mean": 0.25, "ci95": 0.02}},
                "official_runs": {},
            }
        },
    }
    path = tmp_path / "tables.md"
    write_tables(json.loads(json.dumps(results)), path)
    text = path.read_text()
    assert "| raw 1-NN | 50.0 ± 1.0 | 25.0 ± 2.0 | – |" in text


# --------------------------------------------------------------------------- real data


def test_omniglot_split_and_rotations_are_class_disjoint() -> None:
    images = np.zeros((40, 4, 4, 1), np.float32)
    images[:, 0, 1, 0] = 1.0  # asymmetric glyph so rotations differ
    characters = OmniglotCharacters(images, np.repeat(np.arange(10), 4),
                                    tuple(f"A/character{i:02d}" for i in range(10)))
    split = split_characters(characters, n_validation=2, n_test=3, seed=0)
    names = [set(part.class_names) for part in (split.train, split.validation, split.test)]
    assert sum(len(n) for n in names) == 10
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    rotated = with_rotations(split.train)
    assert len(rotated.class_names) == 4 * len(split.train.class_names)
    first = rotated.x[rotated.y == 0][0, :, :, 0]
    quarter = rotated.x[rotated.y == len(split.train.class_names)][0, :, :, 0]
    np.testing.assert_array_equal(quarter, np.rot90(first))


@pytest.mark.data
@pytest.mark.slow
def test_nsl_kdd_split_matches_the_documented_protocol() -> None:
    _require(DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    _require(DATA / "nsl-kdd" / "KDDTest+.txt")
    split = load_nsl_kdd_novel_split(min_novel_records=20)
    assert split.train.class_names[0] == "normal"
    assert len(split.train.class_names) == 11
    assert split.novel.class_names == (
        "apache2", "httptunnel", "mailbomb", "mscan",
        "processtable", "saint", "snmpgetattack", "snmpguess",
    )
    # Numeric columns are z-scored on the whole training file, before rare labels are dropped.
    numeric = split.train.x[:, :38]
    np.testing.assert_allclose(numeric.mean(axis=0), 0.0, atol=0.05)  # rare labels dropped
    assert split.benign_test.shape[1] == split.train.x.shape[1]
    one_shot = load_nsl_kdd_novel_split(min_novel_records=16)
    assert "named" in one_shot.novel.class_names and len(one_shot.novel.class_names) == 9
    # The research note's measured 1-NN baseline: 70.0% 1-shot on 600 episodes; the same
    # protocol on 100 episodes must land close to it.
    plans = plan_episodes(one_shot.novel.y, ways=5, shots=1, queries=15, n_episodes=100, seed=0)
    accuracy = evaluate_accuracy(NearestNeighbour(), one_shot.novel.x, one_shot.novel.y, plans)
    assert 0.65 < accuracy.accuracy.mean < 0.75


def test_rare_known_attack_types_are_neither_training_nor_novel_classes() -> None:
    _require(DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    _require(DATA / "nsl-kdd" / "KDDTest+.txt")
    split = load_nsl_kdd_novel_split(min_novel_records=16)
    rare = rare_known_attack_types()
    # Counted in the files: 10 + 1231, 7 + 944, 6 + 20 and 2 + 18 records.
    assert rare.class_counts() == {"buffer_overflow": 26, "guess_passwd": 1241,
                                   "multihop": 20, "warezmaster": 951}
    assert not set(rare.class_names) & set(split.train.class_names)
    assert not set(rare.class_names) & set(split.novel.class_names)
    assert rare.x.shape[1] == split.train.x.shape[1]


def test_every_nsl_kdd_script_draws_the_same_episodes() -> None:
    """bench/fewshot.py and bench/fewshot_ideas.py both score on nsl_kdd_episodes: one seed,
    one set of plans, validation classes kept out of the final training's selection stage."""
    _require(DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    _require(DATA / "nsl-kdd" / "KDDTest+.txt")
    from bench.fewshot import QUICK, nsl_kdd_episodes

    first, again = nsl_kdd_episodes(QUICK, seed=0), nsl_kdd_episodes(QUICK, seed=0)
    for key in ("5w1s", "5w5s"):
        assert len(first.plans[key]) == QUICK.test_episodes
        assert all(np.array_equal(a.query_idx, b.query_idx)
                   for a, b in zip(first.plans[key], again.plans[key], strict=True))
    benign_first = [plan.classes[0] for plan in first.base_rate_plans["5w5s"]]
    assert set(benign_first) == {0} and first.base_rate_set.class_names[0] == "normal"
    assert not set(first.summary["validation_classes"]) & set(first.stage_train.class_names)
    assert set(first.stage_val.class_names) == set(first.summary["validation_classes"])


@pytest.mark.data
def test_omniglot_official_runs_pair_each_test_item_with_its_class() -> None:
    _require(DATA / "omniglot" / "all_runs.zip")
    runs = load_omniglot_runs()
    assert len(runs) == 20
    for run in runs:
        assert run.support_x.shape == (20, 28, 28, 1)
        assert sorted(run.query_y.tolist()) == list(range(20))  # one test item per class
        assert 0.0 <= run.support_x.min() and run.support_x.max() <= 1.0
        assert 0.02 < run.query_x.mean() < 0.3  # ink is the minority and encoded as 1
    # run01's first line in class_labels.txt: test/item01 belongs to training/class08.
    assert runs[0].query_y[0] == 7


def test_plots_are_written_for_accuracy_and_latency(tmp_path: Path) -> None:
    entry = {"mean": 0.9, "ci95": 0.01, "episodes": 600}
    results = {
        "mode": "full",
        "nsl_kdd": {
            "accuracy": {"5w1s": {"raw 1-NN": entry}, "5w5s": {"protonet": entry}},
            "learners": {"protonet": {"latency_ms": {"p50_ms": 3.0, "p95_ms": 9.0}}},
        },
    }
    write_plots(results, tmp_path)
    for name in ("fewshot_accuracy.png", "fewshot_latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
