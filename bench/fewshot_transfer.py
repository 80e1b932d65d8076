"""Does meta-training on attack types like the novel ones transfer to the others?

The ceilings study (``bench/fewshot_ceiling.py``) shows a memory learner trained on other
records of the *same* attack types reaches 97–99 %; trained on NSL-KDD's 11 training classes
it reaches 73 / 94 %. Between the two lies the question this study answers: would *more, and
more modern,* training attack types close the gap, or does only knowing the test types help?

NSL-KDD has no more training classes to give (KDDTrain+_20Percent's other attack types have a
handful of records each; ``rare_known_attack_types`` adds the four that KDDTest+ makes common
enough), so the study borrows from the novel types themselves, in folds. In each fold three of
the eight novel types (5-shot split) join the training classes, and the other five are the test:
5-way episodes of exactly those five, 1- and 5-shot with 15 queries. Within a fold every method
scores the same episodes:

- the per-episode baselines (raw 1-NN, range-scaled L1 1-NN, extra trees), which learn nothing
  from training classes and so do not depend on the fold;
- the memory learner meta-trained on the 11 training classes;
- the same with the four rare known types added (15 classes);
- the same with the fold's three novel types added as well (18 classes).

Training length is the main benchmark's (960 episodes, chosen there on validation); nothing
here is chosen on the test types. A novel type that trains in one fold is a test type in
another, so no fold's test types were seen by its learners.

Run from the repository root::

    nice -n 10 .venv/bin/python -m bench.fewshot_transfer      # about 3 min on 2 cores

Writes ``fewshot_transfer.json`` and ``fewshot_transfer.md`` to ``--out`` (docs/bench).
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
from bench.fewshot_baselines import ExtraTrees, NearestNeighbour, RangeScaledNearestNeighbour
from bench.fewshot_data import LabelledSet, load_nsl_kdd_novel_split, rare_known_attack_types
from bench.fewshot_harness import accuracy_by_task, plan_episodes
from bench.fewshot_ideas import EPISODES, meta_train
from bench.fewshot_report import run_and_write, seed_range
from bench.fewshot_variants import with_classes

logger = logging.getLogger("bench.fewshot_transfer")

OUT = Path(__file__).resolve().parents[1] / "docs" / "bench"
TASKS = {"5w1s": 1, "5w5s": 5}
# Each novel type of the 5-shot split trains in at least one fold; the rest of a fold tests.
FOLD_TRAINING_TYPES = (
    ("apache2", "mailbomb", "processtable"),
    ("mscan", "snmpgetattack", "snmpguess"),
    ("apache2", "httptunnel", "saint"),
)


def folds(novel_types: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(training types, test types) per fold: the test types are the novel ones left over."""
    out = []
    for training in FOLD_TRAINING_TYPES:
        unknown = set(training) - set(novel_types)
        if unknown:
            raise ValueError(f"Fold types {sorted(unknown)} are not novel types {novel_types}.")
        out.append((training, tuple(t for t in novel_types if t not in training)))
    return out


def run(seeds: int, test_episodes: int, progress: Callable[[str], None]) -> dict[str, Any]:
    split = load_nsl_kdd_novel_split(min_novel_records=20)
    rare = rare_known_attack_types()
    wider = with_classes(split.train, rare)

    def trained(data: LabelledSet) -> list[Any]:
        progress(f"meta-training on {len(data.class_names)} classes, {seeds} seeds")
        return [meta_train(data, seed, EPISODES, {}) for seed in range(seeds)]

    # The first two training sets do not depend on the fold: their learners train once.
    base_name = f"memory, {len(split.train.class_names)} training classes"
    wider_name = f"memory, + {len(rare.class_names)} rare known types"
    fold_free = {base_name: (len(split.train.class_names), trained(split.train)),
                 wider_name: (len(wider.class_names), trained(wider))}
    out_folds = []
    for number, (training, testing) in enumerate(folds(split.novel.class_names)):
        test = split.novel.subset(testing)
        plans = {key: plan_episodes(test.y, ways=len(testing), shots=shots, queries=15,
                                    n_episodes=test_episodes, seed=number)
                 for key, shots in TASKS.items()}
        rows: list[dict[str, Any]] = []
        for method in (NearestNeighbour(), RangeScaledNearestNeighbour(), ExtraTrees()):
            rows.append({"method": f"raw {method.name}", "per_seed": [
                accuracy_by_task(method, test.x, test.y, plans)]})
            progress(f"fold {number} {rows[-1]['method']}: {rows[-1]['per_seed'][0]}")
        with_fold = with_classes(wider, split.novel.subset(training))
        learner_sets = {**fold_free, "memory, + rare known types + the fold's 3 novel types":
                        (len(with_fold.class_names), trained(with_fold))}
        for name, (classes, learners) in learner_sets.items():
            rows.append({"method": name, "classes": classes, "per_seed": [
                accuracy_by_task(learner, test.x, test.y, plans) for learner in learners]})
            progress(f"fold {number} {name}: {rows[-1]['per_seed']}")
        out_folds.append({"training_types": list(training), "test_types": list(testing),
                          "rows": rows})
    return {"folds": out_folds, "seeds": seeds, "test_episodes": test_episodes,
            "training_episodes": EPISODES, "machine": _machine()}


def markdown(result: dict[str, Any]) -> str:
    lines = ["<!-- generated by bench/fewshot_transfer.py -->", "",
             f"5-way episodes of each fold's five test types ({result['test_episodes']} per "
             f"cell), accuracy %; memory learners meta-trained for "
             f"{result['training_episodes']} episodes from each of {result['seeds']} seeds "
             "(mean [lowest–highest seed]).", ""]
    methods = [row["method"] for row in result["folds"][0]["rows"]]
    for fold in result["folds"]:
        lines += [f"**Training adds {', '.join(fold['training_types'])}; test: "
                  f"{', '.join(fold['test_types'])}**", "",
                  "| method | " + " | ".join(TASKS) + " |", "|---|" + "---:|" * len(TASKS)]
        for row in fold["rows"]:
            cells = [seed_range([seed[key] for seed in row["per_seed"]]) for key in TASKS]
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Mean over the folds**", "", "| method | " + " | ".join(TASKS) + " |",
              "|---|" + "---:|" * len(TASKS)]
    for i, method in enumerate(methods):
        means = [np.mean([np.mean([s[key] for s in fold["rows"][i]["per_seed"]])
                          for fold in result["folds"]]) for key in TASKS]
        lines.append(f"| {method} | " + " | ".join(f"{100 * m:.1f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=300, help="test episodes per cell")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    run_and_write("fewshot_transfer", args.out, partial(run, args.seeds, args.episodes),
                  markdown, logger=logger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
