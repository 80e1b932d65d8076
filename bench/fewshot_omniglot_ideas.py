"""Ideas for Omniglot 20-way 1-shot, each measured beside the main benchmark's best learner
(ProtoNet meta-trained on 20-way episodes) meta-trained in the same run, on the same episodes.

Run from the repository root::

    nice -n 10 .venv/bin/python -m bench.fewshot_omniglot_ideas            # 30–45 min on 2 cores
    nice -n 10 .venv/bin/python -m bench.fewshot_omniglot_ideas --quick    # smoke run

Ideas:

- **Task augmentation while meta-training** (`bench.fewshot_augment.GlyphAugmentation`): every
  class of a training episode warped by an affine map of its own (a new look-alike
  character) and every image jittered; and the jitter alone (new drawings of the same
  characters).
- **Test-time shifts of the support glyph**: a class's prototype is the mean embedding of its
  support image moved by at most one pixel in each direction (9 copies); queries are embedded
  as they are. It costs nine embeddings per support image and no training.

Each model is meta-trained with the main benchmark's 20-way budget and early stopping on the
30 validation characters; the table gives its 20-way validation accuracy (where a choice would
be made), held-out test characters (600 episodes) and the 20 official runs. One training seed
per row: the official runs' confidence interval (20 runs) is wider than most differences here,
and the main benchmark's run of the same plain learner is a second sample of it.

Outputs in ``--out``: ``fewshot_omniglot_ideas.json`` and ``fewshot_omniglot_ideas.md``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.fewshot import (
    FULL,
    QUICK,
    Budget,
    _build_learner,
    _machine,
    _meta_train,
    official_run_accuracy,
)
from bench.fewshot_augment import Augmentation, GlyphAugmentation
from bench.fewshot_baselines import ClassScores, NearestCentroid
from bench.fewshot_data import (
    LabelledSet,
    OmniglotRun,
    load_omniglot_background,
    load_omniglot_runs,
    split_characters,
    with_rotations,
)
from bench.fewshot_harness import evaluate_accuracy, plan_episodes
from bench.fewshot_report import run_and_write

logger = logging.getLogger("bench.fewshot_omniglot_ideas")

OUT = Path(__file__).resolve().parents[1] / "docs" / "bench"
SHIFTS = tuple((dy, dx) for dy in (0, -1, 1) for dx in (0, -1, 1))
"""Support-image shifts in pixels; the first is the image itself."""
JITTER_ONLY = GlyphAugmentation(class_rotation_deg=0.0, class_scale=0.0, class_shear=0.0)
TRAININGS: dict[str, tuple[str, Augmentation | None]] = {
    "plain": ("protonet, 20-way episodes", None),
    "glyph": ("+ class maps and per-image jitter while meta-training", GlyphAugmentation()),
    "jitter": ("+ per-image jitter only while meta-training", JITTER_ONLY),
}


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``images`` ``[n, h, w, c]`` moved by whole pixels, the uncovered edge left empty."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    out[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        images[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def shift_stack(embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """``[n, len(SHIFTS) * d]``: the embeddings of every shifted copy side by side."""
    return np.concatenate([embed(shifted(images, dy, dx)) for dy, dx in SHIFTS], axis=1)


class ShiftedPrototypes:
    """Nearest prototype where a prototype averages the support image's shifted copies.

    Works on `shift_stack` rows, so the embeddings of a test set are computed once: support
    rows use every block, query rows only the first (the image as it is).
    """

    name = "shifted prototypes"

    def __init__(self, copies: int = len(SHIFTS)) -> None:
        self.copies = copies

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        blocks = support_x.reshape(len(support_x), self.copies, -1).mean(axis=1)
        centroids = NearestCentroid().adapt(blocks, support_y)
        width = blocks.shape[1]
        return ClassScores(lambda x: centroids.logits(x[:, :width]))


def official_accuracy(method: Any, runs: Sequence[OmniglotRun],
                      features: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    summary, per_run = official_run_accuracy(method, runs, features)
    return {"mean": summary.mean, "ci95": summary.ci95, "per_run": per_run}


def run(budget: Budget, seed: int, progress: Callable[[str], None], *,
        trainings: Sequence[str] = tuple(TRAININGS), episodes: int | None = None
        ) -> dict[str, Any]:
    """Meta-train each of ``trainings`` (keys of `TRAININGS`) for ``episodes`` at most (the
    main benchmark's 20-way budget by default) and score it with and without support
    shifts."""
    characters = load_omniglot_background()
    split = split_characters(characters, n_validation=30, n_test=40, seed=seed)
    train = with_rotations(split.train)
    runs = load_omniglot_runs()
    ways, budget_episodes = budget.omniglot_wide_protonet
    episodes = episodes or budget_episodes
    plans = {
        "validation_20w1s": (split.validation, plan_episodes(
            split.validation.y, ways=20, shots=1, queries=5, n_episodes=budget.val_episodes,
            seed=seed + 7)),
        "test_20w1s": (split.test, plan_episodes(
            split.test.y, ways=20, shots=1, queries=5, n_episodes=budget.test_episodes,
            seed=seed)),
    }
    rows: list[dict[str, Any]] = []
    for key in trainings:
        name, augment = TRAININGS[key]
        learner, training = _train(train, split.validation, budget, seed, ways, episodes, augment)
        progress(f"{name}: meta-trained, {training['episodes_run']} episodes")
        for suffix, method, features in (
                ("", ShiftedPrototypes(copies=1), learner.embed),
                (", test-time support shifts", ShiftedPrototypes(),
                 lambda x, embed=learner.embed: shift_stack(embed, x))):
            row: dict[str, Any] = {"idea": name + suffix, "training": training}
            for plan_name, (data, episode_plans) in plans.items():
                row[plan_name] = _accuracy(method, features, data, episode_plans)
            row["official_runs"] = official_accuracy(method, runs, features)
            rows.append(row)
            progress(f"{row['idea']}: official runs {100 * row['official_runs']['mean']:.1f} %, "
                     f"test 20-way {100 * row['test_20w1s']['mean']:.1f} %")
    return {"rows": rows, "ways": ways, "training_episodes": episodes, "seed": seed,
            "test_episodes": budget.test_episodes, "validation_episodes": budget.val_episodes,
            "train_classes_with_rotations": len(train.class_names), "machine": _machine()}


def _train(train: LabelledSet, validation: LabelledSet, budget: Budget, seed: int, ways: int,
           episodes: int, augment: Augmentation | None) -> tuple[Any, dict[str, Any]]:
    from meta.encoders import EncoderSpec

    spec = EncoderSpec(kind="conv4", input_shape=tuple(train.x.shape[1:]), filters=64)
    learner = _build_learner("protonet", spec, seed)
    summary = _meta_train(learner, train, ways=ways, shots=1, queries=5, episodes=episodes,
                          budget=budget, seed=seed, val=validation, val_ways=20,
                          val_every=2 * budget.omniglot_val_every, augment=augment)
    return learner, summary


def _accuracy(method: Any, features: Callable[[np.ndarray], np.ndarray], data: LabelledSet,
              plans: Sequence[Any]) -> dict[str, float]:
    result = evaluate_accuracy(method, features(data.x), data.y, plans, progress_every=0)
    return {"mean": result.accuracy.mean, "ci95": result.accuracy.ci95}


def markdown(result: dict[str, Any]) -> str:
    def cell(value: dict[str, float]) -> str:
        return f"{100 * value['mean']:.1f} ± {100 * value['ci95']:.1f}"

    lines = [
        "<!-- generated by bench/fewshot_omniglot_ideas.py -->", "",
        f"Omniglot small background sets, ProtoNet (Conv-4) meta-trained on {result['ways']}-way "
        f"1-shot episodes for up to {result['training_episodes']} episodes (early stopping on "
        f"the validation characters), seed {result['seed']}. Validation: "
        f"{result['validation_episodes']} 20-way episodes of the validation characters; test: "
        f"{result['test_episodes']} 20-way 1-shot episodes of the held-out characters; official: "
        "the 20 runs of 20-way 1-shot within an unseen alphabet (mean ± 95 % CI over runs).",
        "", "| idea | episodes run | validation 20-way | test 20-way | 20 official runs |",
        "|---|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['idea']} | {row['training']['episodes_run']} | "
                     f"{cell(row['validation_20w1s'])} | {cell(row['test_20w1s'])} | "
                     f"{cell(row['official_runs'])} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=None,
                        help="training budget per model (default: the main benchmark's 20-way "
                             "budget); a report with another budget gets it in its file name")
    parser.add_argument("--trainings", default=",".join(TRAININGS),
                        help=f"which to meta-train, of {', '.join(TRAININGS)}")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    trainings = [t for t in args.trainings.split(",") if t]
    unknown = sorted(set(trainings) - set(TRAININGS))
    if unknown:
        parser.error(f"unknown trainings {unknown}; choose from {list(TRAININGS)}")
    name = "fewshot_omniglot_ideas" + ("_quick" if args.quick else "") + (
        f"_{args.episodes}" if args.episodes else "")
    run_and_write(name, args.out, partial(run, QUICK if args.quick else FULL, args.seed,
                                          trainings=trainings, episodes=args.episodes),
                  markdown, logger=logger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
