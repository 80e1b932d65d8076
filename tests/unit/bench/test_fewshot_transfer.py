"""The transfer study's folds and report (no training, no data files)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.fewshot_transfer import FOLD_TRAINING_TYPES, folds, markdown  # noqa: E402

NOVEL = ("apache2", "httptunnel", "mailbomb", "mscan", "processtable", "saint",
         "snmpgetattack", "snmpguess")


def test_a_fold_tests_on_the_novel_types_it_does_not_train_on() -> None:
    out = folds(NOVEL)
    assert len(out) == len(FOLD_TRAINING_TYPES)
    for training, testing in out:
        assert len(training) == 3 and len(testing) == 5
        assert not set(training) & set(testing)
        assert set(training) | set(testing) == set(NOVEL)
    # Every novel type trains in some fold, so every type is also tested without being seen.
    assert set().union(*(set(training) for training, _ in out)) == set(NOVEL)


def test_folds_refuse_a_type_that_is_not_novel() -> None:
    with pytest.raises(ValueError, match="apache2"):
        folds(tuple(t for t in NOVEL if t != "apache2"))


def test_the_report_gives_each_fold_and_the_mean_over_folds() -> None:
    def fold(trees: float, memory: tuple[float, float]) -> dict[str, object]:
        return {"training_types": ["a", "b", "c"], "test_types": ["d", "e"], "rows": [
            {"method": "raw extra trees", "per_seed": [{"5w1s": trees, "5w5s": 0.9}]},
            {"method": "memory", "per_seed": [{"5w1s": m, "5w5s": 0.9} for m in memory]}]}

    text = markdown({"folds": [fold(0.8, (0.7, 0.8)), fold(0.6, (0.5, 0.6))], "seeds": 2,
                     "test_episodes": 300, "training_episodes": 960})
    assert "**Training adds a, b, c; test: d, e**" in text
    assert "| memory | 75.0 [70.0–80.0] | 90.0 [90.0–90.0] |" in text
    assert "| raw extra trees | 70.0 | 90.0 |" in text.split("Mean over the folds")[1]
    assert "| memory | 65.0 | 90.0 |" in text.split("Mean over the folds")[1]
