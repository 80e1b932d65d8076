"""The ceiling benchmark's scoring of classifiers that have seen the classes: each query is
judged among its own episode's classes only (no training, no data files)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.fewshot_ceiling import _restricted_accuracy, _restricted_recall  # noqa: E402
from bench.fewshot_harness import EpisodePlan  # noqa: E402


def test_a_query_is_judged_among_its_episode_classes_only() -> None:
    # Attack labels 0..2 are proba columns 1..3 (column 0 is benign). The query of class 0
    # prefers class 2, which is absent from the first episode and present in the second.
    proba = np.array([[0.0, 0.3, 0.1, 0.6], [0.0, 0.1, 0.8, 0.1]])
    y = np.array([0, 1])
    without_two = EpisodePlan(np.array([], np.int64), np.array([0, 1]), np.array([0, 1]))
    with_two = EpisodePlan(np.array([], np.int64), np.array([0, 1]), np.array([0, 1, 2]))
    assert _restricted_accuracy(proba, y, [without_two]) == 1.0
    assert _restricted_accuracy(proba, y, [with_two]) == 0.5


def test_base_rate_recall_scores_attacks_of_the_episode_against_benign() -> None:
    rng = np.random.default_rng(0)
    benign = 200
    y = np.concatenate([np.zeros(benign, np.int64), [1, 1, 2, 2]])
    proba = np.zeros((len(y), 4))
    leak = rng.uniform(0.0, 0.1, benign)
    # Benign records give half their mass to class 3, which is not in the episode: counted,
    # it would make every benign record look like an attack.
    proba[:benign, 0], proba[:benign, 1], proba[:benign, 3] = (1 - leak) / 2, leak / 2, 0.5
    proba[benign:, 0] = [0.01, 0.02, 0.97, 0.99]  # the class-2 queries look benign
    proba[benign:, 1:3] = ((1 - proba[benign:, 0]) / 2)[:, None]
    plan = EpisodePlan(np.array([], np.int64), np.arange(len(y)), np.array([0, 1, 2]))
    assert _restricted_recall(proba, y, [plan]) == 0.5
