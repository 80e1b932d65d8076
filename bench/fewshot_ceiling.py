"""How far the few-shot goals are from what the data allows: ceilings on NSL-KDD's novel attacks.

The few-shot benchmark asks a learner trained on 11 classes to tell apart 8 attack types it has
never seen. Two questions decide whether its goals are reachable at all, and neither needs a
meta-learner to answer:

1. **Are the novel classes separable, and by how much?** Each novel class (and KDDTest+'s
   benign traffic) is cut in two halves by record. Classifiers that *have seen* the classes
   are trained on half A and scored on few-shot and base-rate episodes drawn from half B only:
   many-shot 1-NN, extra trees, gradient boosting, and the memory learner meta-trained on
   half A's classes. That is the accuracy an embedding reaches when it knows these very
   classes: the ceiling a learner trained on other classes can approach, never pass.
2. **Which novel records are indistinguishable from benign traffic?** The share of each novel
   class whose encoded record equals a benign KDDTest+ record exactly, and its distance to
   the nearest benign record. A record identical to a benign one cannot be flagged at ≤ 1 %
   benign false positives by any detector.

Run from the repository root::

    nice -n 10 .venv/bin/python -m bench.fewshot_ceiling      # about 3 min on 2 cores

Writes ``fewshot_ceiling.json`` and ``fewshot_ceiling.md`` to ``--out`` (docs/bench).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.fewshot import _machine
from bench.fewshot_baselines import LinearHead, NearestNeighbour
from bench.fewshot_data import LabelledSet, load_nsl_kdd_novel_split
from bench.fewshot_harness import (
    EpisodePlan,
    FewShotMethod,
    accuracy_by_task,
    evaluate_base_rate,
    mean_with_ci,
    plan_episodes,
    recall_at_fpr,
)
from bench.fewshot_ideas import EPISODES, meta_train
from bench.fewshot_report import run_and_write

logger = logging.getLogger("bench.fewshot_ceiling")

OUT = Path(__file__).resolve().parents[1] / "docs" / "bench"
METRICS = ("5w1s", "5w5s", "base rate 5w1s", "base rate 5w5s")


class Halves:
    """Benign + novel records split per class into half A (to learn from) and half B (to
    draw episodes from), with the main benchmark's episode shapes on half B."""

    def __init__(self, seed: int = 0, test_episodes: int = 600) -> None:
        split = load_nsl_kdd_novel_split(min_novel_records=20)
        self.names = ("normal", *split.novel.class_names)
        x = np.concatenate([split.benign_test, split.novel.x])
        y = np.concatenate([np.zeros(len(split.benign_test), np.int64), split.novel.y + 1])
        rng = np.random.default_rng(seed)
        in_a = np.zeros(len(y), bool)
        for c in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == c))
            in_a[rows[: len(rows) // 2]] = True
        self.xa, self.ya = x[in_a], y[in_a]
        self.xb, self.yb = x[~in_a], y[~in_a]
        attack = self.yb > 0
        self.attack_x, self.attack_y = self.xb[attack], self.yb[attack] - 1
        self.plans = {f"5w{k}s": plan_episodes(self.attack_y, ways=5, shots=k, queries=15,
                                                n_episodes=test_episodes, seed=seed + 1)
                      for k in (1, 5)}
        self.base_rate_plans = {
            f"5w{k}s": plan_episodes(self.yb, ways=5, shots=k, queries=[1000, 5, 5, 5, 5],
                                     n_episodes=test_episodes, seed=seed + 4, always_include=0)
            for k in (1, 5)}

    def few_shot(self, method: FewShotMethod) -> dict[str, float]:
        """A few-shot method on half B's episodes (support and queries both from half B)."""
        out = accuracy_by_task(method, self.attack_x, self.attack_y, self.plans)
        for key, plans in self.base_rate_plans.items():
            out[f"base rate {key}"] = evaluate_base_rate(
                method, self.xb, self.yb, plans).recall_at_fpr.mean
        return out

    def seen_classes(self, proba: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        """A classifier over all 9 classes, trained on half A, on the same half-B episodes:
        each query is judged among its episode's classes only (the support is not used)."""
        attack_proba = proba(self.attack_x)
        out = {key: _restricted_accuracy(attack_proba, self.attack_y, plans)
               for key, plans in self.plans.items()}
        every_proba = proba(self.xb)
        for key, plans in self.base_rate_plans.items():
            out[f"base rate {key}"] = _restricted_recall(every_proba, self.yb, plans)
        return out


def _restricted_accuracy(proba: np.ndarray, y: np.ndarray, plans: Sequence[EpisodePlan]
                         ) -> float:
    # Column 0 is benign; attack class c is column c + 1.
    return mean_with_ci([
        np.mean(plan.classes[proba[plan.query_idx][:, plan.classes + 1].argmax(1)]
                == y[plan.query_idx]) for plan in plans]).mean


def _restricted_recall(proba: np.ndarray, y: np.ndarray, plans: Sequence[EpisodePlan]) -> float:
    recalls = []
    for plan in plans:
        p = np.clip(proba[plan.query_idx][:, plan.classes], 1e-12, 1.0)
        score = np.log(p[:, 1:].sum(1)) - np.log(p[:, 0])
        benign = y[plan.query_idx] == 0
        recalls.append(recall_at_fpr(score[benign], score[~benign], 0.01))
    return mean_with_ci(recalls).mean


def benign_lookalikes() -> list[dict[str, Any]]:
    """Per novel class: records identical to a benign KDDTest+ record, and the distance
    quartiles to the nearest benign record (encoded features)."""
    from scipy.spatial import cKDTree

    split = load_nsl_kdd_novel_split(min_novel_records=20)
    benign = split.benign_test
    benign_rows = {row.tobytes() for row in benign.astype(np.float32)}
    tree = cKDTree(benign)
    out = []
    for c, name in enumerate(split.novel.class_names):
        x = split.novel.x[split.novel.y == c]
        identical = np.mean([row.tobytes() in benign_rows for row in x.astype(np.float32)])
        distance = tree.query(x)[0]
        out.append({"class": name, "records": int(len(x)), "identical_to_benign": float(identical),
                    "nearest_benign_quartiles": [float(q) for q in
                                                 np.quantile(distance, [0.25, 0.5, 0.75])]})
        logger.info("  %-14s %4d records, %5.1f %% identical to a benign record, nearest benign "
                    "distance median %.3f", name, len(x), 100 * identical, np.median(distance))
    return out


def run(seeds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier
    from sklearn.neighbors import KNeighborsClassifier

    halves = Halves()
    rows: list[dict[str, Any]] = []

    def add(name: str, figures: dict[str, float], seen: bool) -> None:
        rows.append({"method": name, "seen_classes": seen, **figures})
        progress(f"{name}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in figures.items()))

    add("raw 1-NN (few-shot)", halves.few_shot(NearestNeighbour()), False)
    add("raw linear head, L2-normalised (few-shot)", halves.few_shot(LinearHead()), False)
    classifiers = (
        ("many-shot 1-NN on half A", KNeighborsClassifier(1)),
        ("extra trees on half A", ExtraTreesClassifier(300, n_jobs=2, random_state=0)),
        ("gradient boosting on half A", HistGradientBoostingClassifier(random_state=0)))
    for name, classifier in classifiers:
        classifier.fit(halves.xa, halves.ya)
        add(name, halves.seen_classes(classifier.predict_proba), True)
    seen = LabelledSet(halves.xa, halves.ya, halves.names)
    for seed in range(seeds):
        learner = meta_train(seen, seed, EPISODES, {})
        add(f"memory meta-trained on half A's classes (seed {seed}, few-shot)",
            halves.few_shot(learner), True)
    return {"rows": rows, "benign_lookalikes": benign_lookalikes(), "machine": _machine(),
            "test_episodes": len(halves.plans["5w1s"])}


def markdown(result: dict[str, Any]) -> str:
    lines = ["<!-- generated by bench/fewshot_ceiling.py -->", "",
             f"Episodes drawn from half B of every class ({result['test_episodes']} per cell); "
             "'seen' methods learned from half A of the same classes. Base rate: attack recall "
             "% at benign FPR ≤ 1 %.", "",
             "| method | has seen the classes | " + " | ".join(METRICS) + " |",
             "|---|---|" + "---:|" * len(METRICS)]
    for row in result["rows"]:
        cells = " | ".join(f"{100 * row[m]:.1f}" for m in METRICS)
        lines.append(f"| {row['method']} | {'yes' if row['seen_classes'] else 'no'} | {cells} |")
    lines += ["", "| novel class | records | identical to a benign record | nearest benign "
              "distance (quartiles) |", "|---|---:|---:|---|"]
    for item in result["benign_lookalikes"]:
        quartiles = " / ".join(f"{q:.3f}" for q in item["nearest_benign_quartiles"])
        lines.append(f"| {item['class']} | {item['records']} | "
                     f"{100 * item['identical_to_benign']:.1f} % | {quartiles} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    run_and_write("fewshot_ceiling", args.out, partial(run, args.seeds), markdown,
                  logger=logger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
