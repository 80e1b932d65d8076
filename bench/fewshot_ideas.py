"""Ideas for few-shot accuracy on NSL-KDD novel attacks, each measured over several training
seeds on the episodes of ``bench/fewshot.py``, beside the plain memory learner and the raw
baselines.

Run from the repository root::

    nice -n 10 .venv/bin/python -m bench.fewshot_ideas            # 40–100 min on 2 cores
    nice -n 10 .venv/bin/python -m bench.fewshot_ideas --quick    # smoke run

Discipline as in the main benchmark: an idea's hyperparameter (ensemble raw weight, fine-tune
strength, number of modes) is chosen on the validation classes with learners meta-trained on
the selection classes; the test classes only report. Every row is meta-trained from ``seeds``
seeds and the table gives the mean over seeds with the lowest and highest seed beside it: the
95 % CI of one model covers episode sampling only, and a single training seed moves 1-shot
accuracy by more than that.

Outputs in ``--out``: ``fewshot_ideas.json``, ``fewshot_ideas.md``, ``fewshot_ideas.png``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.fewshot import FULL, QUICK, Budget, NslKddEpisodes, _machine, nsl_kdd_episodes
from bench.fewshot_augment import AugmentKind, RecordAugmentation, episode_sampler
from bench.fewshot_baselines import (
    ExtraTrees,
    LinearHead,
    NearestNeighbour,
    RangeScaledNearestNeighbour,
)
from bench.fewshot_data import LabelledSet, rare_known_attack_types, unlabelled_stream
from bench.fewshot_harness import (
    FewShotMethod,
    accuracy_by_task,
    attack_log_odds,
    evaluate_accuracy,
    evaluate_base_rate,
    materialise,
    mean_with_ci,
    recall_at_fpr,
)
from bench.fewshot_report import run_and_write, seed_range
from bench.fewshot_variants import (
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

logger = logging.getLogger("bench.fewshot_ideas")

OUT = Path(__file__).resolve().parents[1] / "docs" / "bench"
EPISODES = 960            # the memory learner's length chosen on validation (fewshot.md)
ENSEMBLE_SIZE = 5
RAW_WEIGHTS = (0.0, 0.5, 1.0)
STRENGTHS = (0.1, 1.0, 10.0)
MODES = (10, 30)
RIDGES = (0.1, 1.0, 10.0)
AUGMENT_STRENGTHS = (0.1, 0.3)
CLUSTERS = (100, 300)
TREE_WEIGHTS = (1.0, 4.0, 16.0)
AGENT_MEMBERS = 3  # the opt-in ensemble of the live model (model.members: 3)
REFERENCE_SIZES = (100, 1000)
TASKS = ("5w1s", "5w5s")


@dataclass(frozen=True)
class Learned:
    """How to meta-train one kind of memory learner: its training set, episode sampler,
    ensemble members and encoder shape (hidden sizes, embedding width)."""

    data: Callable[[LabelledSet], LabelledSet]
    sampler: dict[str, Any]
    members: int = 1
    encoder: tuple[tuple[int, ...], int] = ((256, 128), 64)


PLAIN = Learned(lambda d: d, {})


def meta_train(data: LabelledSet, seed: int, episodes: int, sampler: dict[str, Any],
               members: int = 1, encoder: tuple[tuple[int, ...], int] = PLAIN.encoder) -> Any:
    """A memory learner; an ensemble's seed is ``seed * members`` so that rows trained from
    seeds 0, 1, 2 hold disjoint members (seeds 0–2, 3–5, 6–8 for three members)."""
    from meta.encoders import EncoderSpec
    from meta.learners import build_learner

    hidden, width = encoder
    spec = EncoderSpec(kind="mlp", input_shape=(data.x.shape[1],), hidden=hidden,
                       embedding_dim=width)
    seed *= members
    learner = build_learner("memory", spec, seed=seed, device="cpu",
                            **({"members": members} if members > 1 else {}))
    learner.meta_train(episode_sampler(data.x, data.y, ways=5, shots=5, queries=15, seed=seed,
                                       **sampler), episodes=episodes, meta_batch=16)
    return learner


class Runner:
    """Scores methods on the shared episodes and keeps every figure."""

    def __init__(self, episodes: NslKddEpisodes, budget: Budget, training_episodes: int) -> None:
        self.e = episodes
        self.budget = budget
        self.training_episodes = training_episodes
        self._cache: dict[tuple[str, int, bool], Any] = {}

    def learner(self, name: str, kind: Learned, seed: int, *, selection: bool = False) -> Any:
        key = (name, seed, selection)
        if key not in self._cache:
            base = self.e.stage_train if selection else self.e.train
            self._cache[key] = meta_train(kind.data(base), seed, self.training_episodes,
                                          kind.sampler, kind.members, kind.encoder)
        return self._cache[key]

    def validation(self, method: FewShotMethod) -> float:
        """Mean validation accuracy over both shot counts: the number choices are made on."""
        return float(np.mean(list(accuracy_by_task(
            method, self.e.stage_val.x, self.e.stage_val.y, self.e.val_plans).values())))

    def test(self, method: FewShotMethod, transform: Callable[[np.ndarray], np.ndarray] | None
             = None) -> dict[str, float]:
        """Accuracy per task and base-rate recall at FPR <= 1 % (benign K-shot, as in the main
        benchmark)."""
        out: dict[str, float] = {}
        for key, (data, _) in self.e.tasks.items():
            x = data.x if transform is None else transform(data.x)
            out[key] = evaluate_accuracy(method, x, data.y, self.e.plans[key],
                                         progress_every=0).accuracy.mean
        for key, plans in self.e.base_rate_plans.items():
            x = self.e.base_rate_set.x if transform is None else transform(self.e.base_rate_set.x)
            result = evaluate_base_rate(method, x, self.e.base_rate_set.y, plans, max_fpr=0.01)
            out[f"base rate {key}"] = result.recall_at_fpr.mean
        return out


def stream_kind(k: int, *, selection: bool = False) -> Learned:
    """Training classes plus k-means clusters of an unlabelled stream as pseudo-classes.

    The stream is every record of KDDTest+ (the novel attacks among them, unlabelled): the
    agent sees its stream too, so this is self-supervision on it, transductive in that the
    test episodes' records are in it. For the choice of ``k`` on validation the stream is
    KDDTrain+_20Percent, which holds the validation classes the same way."""
    def build(data: LabelledSet) -> LabelledSet:
        stream = unlabelled_stream("train" if selection else "test")
        return with_pseudo_classes(data, stream, clusters=k, seed=0)

    return Learned(build, {})


def augmented_learner(runner: Runner, kind: AugmentKind, strength: float, seed: int,
                      *, selection: bool = False) -> Any:
    """A memory learner meta-trained on episodes changed by `RecordAugmentation`."""
    learned = Learned(lambda d: d, {"augment": RecordAugmentation(kind, strength)})
    return runner.learner(f"{kind}{strength}", learned, seed, selection=selection)


def reference_base_rate(runner: Runner, method: FewShotMethod, size: int, seed: int
                        ) -> dict[str, float]:
    """Base rate with the benign class supported by ``size`` KDDTrain+ normal records (the
    agent's reference) instead of K: attacks keep K labels each, queries are unchanged."""
    e = runner.e
    normal = e.train.x[e.train.y == e.train.class_names.index("normal")]
    rng = np.random.default_rng([seed, size])
    out = {}
    for key, plans in e.base_rate_plans.items():
        recalls = []
        for plan in plans:
            episode = materialise(plan, e.base_rate_set.x, e.base_rate_set.y)
            attacks = episode.support_y != 0
            support_x = np.concatenate(
                [normal[rng.choice(len(normal), size, replace=False)], episode.support_x[attacks]])
            support_y = np.concatenate([np.zeros(size, np.int64), episode.support_y[attacks]])
            model = method.adapt(support_x, support_y)
            scores = attack_log_odds(model, episode.query_x, model.predict_proba(episode.query_x))
            benign = episode.query_y == 0
            recalls.append(recall_at_fpr(scores[benign], scores[~benign], 0.01))
        out[f"base rate {key}"] = mean_with_ci(recalls).mean
    return out


def _row(idea: str, per_seed: Sequence[dict[str, float]], **extra: Any) -> dict[str, Any]:
    metrics = sorted({k for seed in per_seed for k in seed})
    return {"idea": idea, "per_seed": list(per_seed), **extra,
            "mean": {k: float(np.mean([s[k] for s in per_seed])) for k in metrics},
            "min": {k: float(np.min([s[k] for s in per_seed])) for k in metrics},
            "max": {k: float(np.max([s[k] for s in per_seed])) for k in metrics}}


def _choose(runner: Runner, options: Sequence[Any], build: Callable[[Any], FewShotMethod],
            what: str) -> tuple[Any, dict[str, float]]:
    scores = {str(option): runner.validation(build(option)) for option in options}
    best = max(options, key=lambda option: scores[str(option)])
    logger.info("  %s chosen on validation: %s (%s)", what, best,
                {k: round(v, 4) for k, v in scores.items()})
    return best, scores


def run(budget: Budget, seeds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    episodes = nsl_kdd_episodes(budget, seed=0)
    runner = Runner(episodes, budget, EPISODES if budget is FULL else 320)
    rows: list[dict[str, Any]] = []
    seed_list = list(range(seeds))

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        mean = row["mean"]
        progress(f"{row['idea']}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in mean.items()))

    add(_row("raw 1-NN", [runner.test(NearestNeighbour())], baseline=True))
    add(_row("raw linear head (L2-normalised)", [runner.test(LinearHead())], baseline=True))
    add(_row("raw 1-NN, L1 on support-range-scaled features",
             [runner.test(RangeScaledNearestNeighbour())], baseline=True))
    add(_row("raw extra trees (fitted on the support set)", [runner.test(ExtraTrees())],
             baseline=True))
    add(_row("memory", [runner.test(runner.learner("plain", PLAIN, s)) for s in seed_list]))

    normalised = Learned(lambda d: LabelledSet(l2_normalise(d.x), d.y, d.class_names), {})
    add(_row("memory on L2-normalised input",
             [runner.test(runner.learner("l2", normalised, s), l2_normalise) for s in seed_list]))

    members = ENSEMBLE_SIZE if budget is FULL else 2
    weight, scores = _choose(runner, RAW_WEIGHTS, lambda w: SeedEnsemble(
        [runner.learner("plain", PLAIN, s, selection=True) for s in range(members)],
        raw_weight=w), "ensemble raw weight")
    add(_row(f"ensemble of {members} seeds", [runner.test(SeedEnsemble(
        [runner.learner("plain", PLAIN, s) for s in range(members)]))]))
    add(_row(f"ensemble of {members} seeds + raw 1-NN expert (w={weight})", [runner.test(
        SeedEnsemble([runner.learner("plain", PLAIN, s) for s in range(members)],
                     raw_weight=weight))], validation=scores))

    members_kind = Learned(lambda d: d, {}, members=AGENT_MEMBERS)
    add(_row(f"memory, {AGENT_MEMBERS} members in one model (model.members: {AGENT_MEMBERS})",
             [runner.test(runner.learner("members", members_kind, s)) for s in seed_list]))
    add(_row(f"ensemble of {AGENT_MEMBERS} separately trained learners (disjoint seeds)",
             [runner.test(SeedEnsemble([runner.learner("plain", PLAIN, AGENT_MEMBERS * s + i)
                                        for i in range(AGENT_MEMBERS)])) for s in seed_list]))
    tree_weight, scores = _choose(runner, TREE_WEIGHTS, lambda w: WithTrees(
        runner.learner("plain", PLAIN, 0, selection=True), weight=w), "trees weight")
    add(_row(f"memory + extra trees fitted on the support set (trees weight {tree_weight})",
             [runner.test(WithTrees(runner.learner("plain", PLAIN, s), weight=tree_weight))
              for s in seed_list], validation=scores))

    d_in = episodes.train.x.shape[1]
    linear = Learned(lambda d: d, {}, encoder=((), d_in))
    add(_row(f"memory with a linear encoder ({d_in} → {d_in}, no hidden layer)",
             [runner.test(runner.learner("linear", linear, s)) for s in seed_list]))

    clusters, scores = _choose(runner, CLUSTERS, lambda k: runner.learner(
        f"stream{k}", stream_kind(k, selection=True), 0, selection=True), "stream clusters")
    add(_row(f"pseudo-classes: the unlabelled test stream in {clusters} k-means clusters",
             [runner.test(runner.learner(f"stream{clusters}", stream_kind(clusters), s))
              for s in seed_list], validation=scores, transductive=True))

    add(_row("transductive: queries as soft memory slots (1 round)",
             [runner.test(TransductiveSlots(runner.learner("plain", PLAIN, s)))
              for s in seed_list], transductive=True))

    strength, scores = _choose(runner, STRENGTHS, lambda v: PrototypeFineTune(
        runner.learner("plain", PLAIN, 0, selection=True), strength=v), "fine-tune strength")
    add(_row(f"prototype-initialised head, fine-tuned (strength {strength})",
             [runner.test(PrototypeFineTune(runner.learner("plain", PLAIN, s), strength=strength))
              for s in seed_list], validation=scores))

    beta, scores = _choose(runner, RIDGES, lambda b: ShrunkMahalanobis(beta=b),
                           "raw class-covariance ridge")
    add(_row(f"raw features, class covariance shrunk to the episode's (Simple CNAPS, "
             f"ridge {beta})", [runner.test(ShrunkMahalanobis(beta=beta))], baseline=True,
             validation=scores))
    beta, scores = _choose(runner, RIDGES, lambda b: ShrunkMahalanobis(
        runner.learner("plain", PLAIN, 0, selection=True).project, beta=b),
        "memory-key class-covariance ridge")
    add(_row(f"memory keys, class covariance shrunk to the episode's (ridge {beta})",
             [runner.test(ShrunkMahalanobis(runner.learner("plain", PLAIN, s).project, beta=beta))
              for s in seed_list], validation=scores))

    rare = rare_known_attack_types()
    wider = Learned(lambda d: with_classes(d, rare), {})
    add(_row(f"more training classes: {len(rare.class_names)} attack types too rare in "
             f"KDDTrain+_20Percent, with their KDDTest+ records ({', '.join(rare.class_names)})",
             [runner.test(runner.learner("wider", wider, s)) for s in seed_list],
             uses_test_file=True))

    def modes_kind(k: int) -> Learned:
        return Learned(lambda d: pseudo_classes(d, max_modes=k), {})

    modes, scores = _choose(runner, MODES, lambda k: runner.learner(
        f"modes{k}", modes_kind(k), 0, selection=True), "modes per class")
    add(_row(f"pseudo-classes: training classes split into up to {modes} k-means modes",
             [runner.test(runner.learner(f"modes{modes}", modes_kind(modes), s))
              for s in seed_list], validation=scores))

    augmentations: tuple[tuple[AugmentKind, str], ...] = (
        ("mask", "task augmentation: features masked per episode, plus noise"),
        ("mix", "task augmentation: records mixed within their class"))
    for augment, label in augmentations:
        strength, scores = _choose(runner, AUGMENT_STRENGTHS, partial(
            augmented_learner, runner, augment, seed=0, selection=True), f"{augment} strength")
        add(_row(f"{label} (strength {strength})",
                 [runner.test(augmented_learner(runner, augment, strength, s))
                  for s in seed_list], validation=scores))

    benign_index = episodes.train.class_names.index("normal")
    for label, sampler in (
            ("episodes always with the benign class", {"benign_class": benign_index}),
            ("episodes with the benign class at a base rate (60 benign, 5 per attack queries)",
             {"benign_class": benign_index, "query_mode": "base_rate", "benign_queries": 60,
              "attack_queries_per_class": 5})):
        kind = Learned(lambda d: d, sampler)
        add(_row(label, [runner.test(runner.learner(label, kind, s)) for s in seed_list]))

    for size in REFERENCE_SIZES:
        add(_row(f"raw 1-NN, benign supported by {size} reference records",
                 [reference_base_rate(runner, NearestNeighbour(), size, 0)], baseline=True,
                 reference=size))
        add(_row(f"memory, benign supported by {size} reference records",
                 [reference_base_rate(runner, runner.learner("plain", PLAIN, s), size, s)
                  for s in seed_list], reference=size))
        add(_row(f"raw extra trees, benign supported by {size} reference records",
                 [reference_base_rate(runner, ExtraTrees(), size, 0)], baseline=True,
                 reference=size))
        add(_row(f"memory + extra trees (weight {tree_weight}), benign supported by {size} "
                 "reference records",
                 [reference_base_rate(runner, WithTrees(runner.learner("plain", PLAIN, s),
                                                        weight=tree_weight), size, s)
                  for s in seed_list], reference=size))
    return {"rows": rows, "seeds": seeds, "training_episodes": runner.training_episodes,
            "test_episodes": budget.test_episodes, "validation_classes":
            episodes.summary["validation_classes"], "machine": _machine()}


def markdown(result: dict[str, Any]) -> str:
    metrics = [*TASKS, *(f"base rate {t}" for t in TASKS)]
    lines = [
        "<!-- generated by bench/fewshot_ideas.py -->", "",
        f"NSL-KDD novel attacks, {result['test_episodes']} test episodes per cell (the main "
        f"benchmark's), memory learners meta-trained for {result['training_episodes']} "
        f"episodes from each of {result['seeds']} seeds. Cells: mean over seeds [lowest–highest "
        "seed]; one number where a row is one model or deterministic. Base rate: attack recall "
        "% at benign FPR ≤ 1 %.", "",
        "| idea | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for row in result["rows"]:
        cells = [seed_range([seed[metric] for seed in row["per_seed"]])
                 if metric in row["mean"] else "–" for metric in metrics]
        name = row["idea"] + (" *(transductive)*" if row.get("transductive") else "") + (
            " *(uses the test file)*" if row.get("uses_test_file") else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    metrics = [*TASKS, f"base rate {TASKS[1]}"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 0.45 * len(rows) + 1.5),
                             sharey=True)
    names = [r["idea"][:60] for r in rows]
    y = np.arange(len(rows))
    for ax, metric in zip(axes, metrics, strict=True):
        mean = np.array([100 * r["mean"].get(metric, np.nan) for r in rows])
        low = np.array([100 * r["min"].get(metric, np.nan) for r in rows])
        high = np.array([100 * r["max"].get(metric, np.nan) for r in rows])
        colours = ["grey" if r.get("baseline") else "tab:blue" for r in rows]
        ax.barh(y, mean, color=colours, xerr=[mean - low, high - mean], capsize=2)
        ax.set_title(metric)
        ax.set_xlim(max(0.0, float(np.nanmin(low)) - 5), 100)
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("Few-shot ideas on NSL-KDD novel attacks (bars: seed range; grey: baselines)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    budget, seeds = (QUICK, 2) if args.quick else (FULL, args.seeds)
    run_and_write("fewshot_ideas" + ("_quick" if args.quick else ""), args.out,
                  partial(run, budget, seeds), markdown, plot=plot, logger=logger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
