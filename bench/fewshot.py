"""Few-shot benchmark on real data: MetaSentry's meta-learners against strong baselines.

Run from the repository root::

    nice -n 10 .venv/bin/python -m bench.fewshot            # full run, about an hour on 2 CPU cores
    nice -n 10 .venv/bin/python -m bench.fewshot --quick    # smoke run, a few minutes

Protocol (the same for every method, on the same episodes):

- NSL-KDD novel attacks. Meta-train on the labels of KDDTrain+_20Percent (normal included),
  test on attack types that occur only in KDDTest+ (5-way 1-shot and 5-shot, 15 queries per
  class). Training length and the embedding weight of "embedding + raw" are chosen on four
  validation classes held out of training; the final model is then retrained on every
  training class with the chosen length. Test classes are never used for any choice.
- Base rate: the benign class is always in the episode and dominates the queries; the
  metric is attack recall at benign FPR <= 1%.
- Omniglot: meta-train on the characters of the two small background zips (rotations as extra
  classes), stop early on held-out validation characters, test on held-out test characters and
  on the 20 official 20-way 1-shot runs (whose alphabets are unseen).
- Latency: adapt + first predict on a 5-way 5-shot tabular support set; speed: episodes/s.

Outputs in ``--out``: ``fewshot_results.json``, ``fewshot_tables.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.fewshot_augment import Augmentation, episode_sampler
from bench.fewshot_baselines import (
    ExtraTrees,
    LinearHead,
    NearestCentroid,
    NearestNeighbour,
    RangeScaledNearestNeighbour,
    conv4_backbone,
    pretrain_classifier,
    tabular_backbone,
)
from bench.fewshot_data import (
    LabelledSet,
    OmniglotRun,
    load_nsl_kdd_novel_split,
    load_omniglot_background,
    load_omniglot_runs,
    split_characters,
    with_rotations,
)
from bench.fewshot_harness import (
    EpisodePlan,
    FewShotMethod,
    MeanWithCI,
    evaluate_accuracy,
    evaluate_base_rate,
    materialise,
    mean_with_ci,
    measure_latency,
    plan_episodes,
)
from bench.fewshot_methods import (
    LearnerMethod,
    choose_weight,
    concatenate_features,
    embedding_scale,
)

logger = logging.getLogger("bench.fewshot")

ALL_LEARNERS = ("protonet", "maml", "fomaml", "metasgd", "memory")
OMNIGLOT_LEARNERS = ("protonet", "fomaml", "maml", "metasgd")
NSL_VALIDATION_CLASSES = 4


@dataclass(frozen=True)
class Budget:
    """How much of everything to run; --quick shrinks every number, never the protocol."""

    test_episodes: int
    val_episodes: int
    nsl_meta_episodes: dict[str, int]
    nsl_val_every: int
    omniglot_meta_episodes: dict[str, int]
    omniglot_val_every: int
    omniglot_gradient_20way_episodes: int
    omniglot_wide_protonet: tuple[int, int]  # (ways, episodes) of the wide-episode ProtoNet
    pretrain_epochs_nsl: int
    pretrain_epochs_omniglot: int
    latency_repeats: int
    meta_batch: int
    patience: int


FULL = Budget(
    test_episodes=600,
    val_episodes=200,
    nsl_meta_episodes={
        "protonet": 4800,
        "memory": 4800,
        "fomaml": 2400,
        "maml": 1600,
        "metasgd": 1600,
    },
    nsl_val_every=320,
    # One training budget for every learner on Omniglot (early stopping may end one sooner).
    omniglot_meta_episodes={name: 3200 for name in ("protonet", "fomaml", "maml", "metasgd")},
    omniglot_val_every=320,
    omniglot_gradient_20way_episodes=100,
    omniglot_wide_protonet=(20, 9600),
    pretrain_epochs_nsl=12,
    pretrain_epochs_omniglot=6,
    latency_repeats=60,
    meta_batch=16,
    patience=4,
)
QUICK = Budget(
    test_episodes=100,
    val_episodes=40,
    nsl_meta_episodes={name: 320 for name in ALL_LEARNERS},
    nsl_val_every=160,
    omniglot_meta_episodes={name: 32 for name in ("protonet", "fomaml", "maml", "metasgd")},
    omniglot_val_every=16,
    omniglot_gradient_20way_episodes=10,
    omniglot_wide_protonet=(20, 32),
    pretrain_epochs_nsl=2,
    pretrain_epochs_omniglot=1,
    latency_repeats=15,
    meta_batch=16,
    patience=2,
)


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _score(
    table: dict[str, Any],
    key: str,
    method: FewShotMethod,
    data: LabelledSet | tuple[np.ndarray, np.ndarray],
    plans: Sequence[EpisodePlan],
    task: str = "",
) -> None:
    x, y = (data.x, data.y) if isinstance(data, LabelledSet) else data
    result = evaluate_accuracy(method, x, y, plans, label=key)
    table[key] = {
        "mean": result.accuracy.mean,
        "ci95": result.accuracy.ci95,
        "episodes": result.accuracy.n,
        "seconds": round(result.seconds, 2),
    }
    logger.info(
        "  %-5s %-45s %s %%  (%d episodes, %.1f s)",
        task,
        key,
        result.accuracy.as_percent(),
        result.accuracy.n,
        result.seconds,
    )


# --------------------------------------------------------------------------- learners


def _build_learner(algorithm: str, spec: Any, seed: int) -> Any:
    from meta.learners import build_learner

    return build_learner(algorithm, spec, seed=seed, device="cpu")


def _learners_available() -> str | None:
    try:
        from meta.learners import build_learner  # noqa: F401
    except ImportError as error:
        return f"meta.learners.build_learner is not importable: {error}"
    return None


def _meta_train(
    learner: Any,
    train: LabelledSet,
    *,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    budget: Budget,
    seed: int,
    val: LabelledSet | None = None,
    val_ways: int = 5,
    val_every: int = 320,
    augment: Augmentation | None = None,
) -> dict[str, Any]:
    """Meta-train ``learner`` on ``train``'s episodes (changed by ``augment`` when given, see
    `bench.fewshot_augment`) and summarise its training."""
    from meta.episodes import EpisodeSampler

    sampler = episode_sampler(train.x, train.y, augment=augment, ways=ways, shots=shots,
                              queries=queries, seed=seed)
    val_sampler = None
    if val is not None:
        val_sampler = EpisodeSampler(
            val.x, val.y, ways=val_ways, shots=shots, queries=queries, seed=seed + 1
        )
    step_times: list[float] = []
    started = time.perf_counter()
    history = learner.meta_train(
        sampler,
        episodes=episodes,
        meta_batch=budget.meta_batch,
        val=val_sampler,
        val_every=val_every,
        patience=budget.patience,
        progress=lambda _: step_times.append(time.perf_counter()),
    )
    seconds = time.perf_counter() - started
    # Steady-state speed: from the end of the first step (tracing) to the last, validation
    # pauses included.
    steady = (
        (len(step_times) - 1) * budget.meta_batch / (step_times[-1] - step_times[0])
        if len(step_times) > 2
        else float("nan")
    )
    summary = {
        "episodes_run": int(history.episodes_run),
        "steps_run": int(history.steps_run),
        "seconds": round(seconds, 2),
        "episodes_per_s": history.episodes_run / max(seconds, 1e-9),
        "steady_episodes_per_s": steady,
        "best_step": history.best_step,
        "best_val_accuracy": history.best_val_accuracy,
        "val_accuracy": list(history.val_accuracy),
        "val_steps": list(history.val_steps),
        "stopped_early": bool(history.stopped_early),
    }
    logger.info(
        "  meta-trained %s: %d episodes in %.1f s (%.1f episodes/s after tracing), "
        "best val acc %s at step %s",
        learner.algorithm,
        history.episodes_run,
        seconds,
        steady,
        history.best_val_accuracy,
        history.best_step,
    )
    return summary


# --------------------------------------------------------------------------- NSL-KDD


@dataclass(frozen=True)
class NslKddEpisodes:
    """Everything the NSL-KDD protocol scores on: the split, the test, validation and
    base-rate episode plans. One function builds it so every script draws the same episodes."""

    train: LabelledSet
    stage_train: LabelledSet
    stage_val: LabelledSet
    tasks: dict[str, tuple[LabelledSet, int]]
    plans: dict[str, tuple[EpisodePlan, ...]]
    val_plans: dict[str, tuple[EpisodePlan, ...]]
    base_rate_set: LabelledSet
    base_rate_plans: dict[str, tuple[EpisodePlan, ...]]
    summary: dict[str, Any]


def nsl_kdd_episodes(budget: Budget, seed: int) -> NslKddEpisodes:
    from meta.episodes import split_classes

    split_1shot = load_nsl_kdd_novel_split(min_novel_records=16)
    split_5shot = load_nsl_kdd_novel_split(min_novel_records=20)
    train = split_5shot.train
    names = np.asarray(train.class_names)
    classes = split_classes(
        names[train.y], val=NSL_VALIDATION_CLASSES, test=0, seed=seed, always_train=("normal",)
    )
    stage_train, stage_val = train.subset(classes.train), train.subset(classes.val)
    summary: dict[str, Any] = {
        "features": len(split_5shot.feature_names),
        "train_classes": train.class_counts(),
        "selection_train_classes": list(classes.train),
        "validation_classes": list(classes.val),
        "novel_classes_1shot": split_1shot.novel.class_counts(),
        "novel_classes_5shot": split_5shot.novel.class_counts(),
    }
    tasks = {
        "5w1s": (split_1shot.novel, 1),
        "5w5s": (split_5shot.novel, 5),
    }
    plans = {
        key: plan_episodes(
            data.y, ways=5, shots=shots, queries=15, n_episodes=budget.test_episodes, seed=seed
        )
        for key, (data, shots) in tasks.items()
    }
    val_plans = {
        key: plan_episodes(
            stage_val.y,
            ways=len(classes.val),
            shots=shots,
            queries=15,
            n_episodes=budget.val_episodes,
            seed=seed + 7,
        )
        for key, (_, shots) in tasks.items()
    }
    # Base-rate episodes: label 0 is KDDTest+ normal traffic, always present, 1000 queries;
    # 4 novel attack types with 5 queries each (2% attacks).
    base_rate_set = LabelledSet(
        np.concatenate([split_5shot.benign_test, split_5shot.novel.x]),
        np.concatenate([np.zeros(len(split_5shot.benign_test), np.int64), split_5shot.novel.y + 1]),
        ("normal", *split_5shot.novel.class_names),
    )
    base_rate_plans = {
        f"5w{shots}s": plan_episodes(
            base_rate_set.y,
            ways=5,
            shots=shots,
            queries=[1000, 5, 5, 5, 5],
            n_episodes=budget.test_episodes,
            seed=seed + 3,
            always_include=0,
        )
        for shots in (1, 5)
    }
    return NslKddEpisodes(train, stage_train, stage_val, tasks, plans, val_plans,
                          base_rate_set, base_rate_plans, summary)


def run_nsl_kdd(budget: Budget, learners: Sequence[str], seed: int) -> dict[str, Any]:
    logger.info("== NSL-KDD novel attacks")
    episodes = nsl_kdd_episodes(budget, seed)
    train, stage_train, stage_val = episodes.train, episodes.stage_train, episodes.stage_val
    tasks, plans, val_plans = episodes.tasks, episodes.plans, episodes.val_plans
    base_rate_set, base_rate_plans = episodes.base_rate_set, episodes.base_rate_plans
    out: dict[str, Any] = dict(episodes.summary)
    logger.info("  validation classes (held out for every choice): %s", out["validation_classes"])
    accuracy: dict[str, dict[str, Any]] = {key: {} for key in tasks}
    base_rate: dict[str, dict[str, Any]] = {key: {} for key in base_rate_plans}

    def score_everywhere(
        name: str,
        method: FewShotMethod,
        transform: Any = None,
    ) -> None:
        for key, (data, _) in tasks.items():
            x = data.x if transform is None else transform(data.x)
            _score(accuracy[key], name, method, (x, data.y), plans[key], key)
        for key, br_plans in base_rate_plans.items():
            x = base_rate_set.x if transform is None else transform(base_rate_set.x)
            result = evaluate_base_rate(method, x, base_rate_set.y, br_plans, max_fpr=0.01)
            base_rate[key][name] = to_jsonable(result)
            logger.info(
                "  base rate %s %-30s recall@FPR<=1%% %s, AUC %s",
                key,
                name,
                result.recall_at_fpr.as_percent(),
                result.auc.as_percent(),
            )

    logger.info("-- baselines on raw encoded features")
    score_everywhere("raw 1-NN", NearestNeighbour())
    score_everywhere("raw nearest centroid", NearestCentroid())
    score_everywhere("raw linear head (L2-normalised)", LinearHead())
    score_everywhere("raw 1-NN, L1 on support-range-scaled features",
                     RangeScaledNearestNeighbour())
    score_everywhere("raw extra trees (100, fitted on the support set)", ExtraTrees())

    logger.info("-- pretrain a plain classifier, then prototypes / linear head on its features")
    pretrain = _pretrain_nsl(budget, stage_train, stage_val, train, val_plans, seed)
    out["pretrain"] = pretrain["summary"]
    embed = pretrain["embed"]
    score_everywhere("pretrain + prototypes", NearestCentroid(), embed)
    score_everywhere("pretrain + 1-NN", NearestNeighbour(), embed)
    score_everywhere("pretrain + linear head", LinearHead(), embed)
    hybrid = pretrain["hybrid"]
    score_everywhere(
        f"pretrain embedding + raw, 1-NN (w={hybrid['weight']})",
        NearestNeighbour(),
        lambda x, e=embed, h=hybrid: concatenate_features(
            x, e(x), scale=h["scale"], weight=h["weight"]
        ),
    )

    learner_results: dict[str, Any] = {}
    missing = _learners_available()
    if missing:
        logger.warning("  skipping meta-learners: %s", missing)
        out["learners_skipped"] = missing
    for algorithm in learners if not missing else ():
        logger.info("-- %s", algorithm)
        try:
            learner_results[algorithm] = _run_nsl_learner(
                algorithm,
                budget,
                seed,
                stage_train,
                stage_val,
                train,
                val_plans,
                score_everywhere,
            )
        except Exception as error:  # one broken learner must not sink the others' numbers
            logger.exception("  %s failed", algorithm)
            learner_results[algorithm] = {"error": f"{type(error).__name__}: {error}"}
    out["learners"] = learner_results
    out["accuracy"] = accuracy
    out["base_rate"] = base_rate
    return out


def _pretrain_nsl(
    budget: Budget,
    stage_train: LabelledSet,
    stage_val: LabelledSet,
    train: LabelledSet,
    val_plans: dict[str, tuple[EpisodePlan, ...]],
    seed: int,
) -> dict[str, Any]:
    def validate(embed: Any) -> float:
        plans = val_plans["5w5s"]
        return evaluate_accuracy(
            NearestCentroid(), embed(stage_val.x), stage_val.y, plans, progress_every=0
        ).accuracy.mean

    started = time.perf_counter()
    selection = pretrain_classifier(
        tabular_backbone(stage_train.x.shape[1]),
        stage_train.x,
        stage_train.y,
        epochs=budget.pretrain_epochs_nsl,
        validate=validate,
        seed=seed,
    )
    val_embedded = selection.embed(stage_val.x)
    scale = embedding_scale(stage_train.x, selection.embed(stage_train.x))
    choice = choose_weight(stage_val.x, val_embedded, stage_val.y, val_plans["5w1s"], scale=scale)
    logger.info(
        "  pretrain: best epoch %d on validation classes; embedding weight %s (val %s)",
        selection.best_epoch,
        choice.weight,
        choice.validation_accuracy,
    )
    final = pretrain_classifier(
        tabular_backbone(train.x.shape[1]),
        train.x,
        train.y,
        epochs=selection.best_epoch,
        seed=seed,
    )
    final_scale = embedding_scale(train.x, final.embed(train.x))
    return {
        "embed": final.embed,
        "hybrid": {"weight": choice.weight, "scale": final_scale},
        "summary": {
            "best_epoch": selection.best_epoch,
            "validation_accuracy_by_epoch": list(selection.validation_accuracy),
            "hybrid_weight_validation": choice.validation_accuracy,
            "hybrid_weight": choice.weight,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }


def _run_nsl_learner(
    algorithm: str,
    budget: Budget,
    seed: int,
    stage_train: LabelledSet,
    stage_val: LabelledSet,
    train: LabelledSet,
    val_plans: dict[str, tuple[EpisodePlan, ...]],
    score_everywhere: Any,
) -> dict[str, Any]:
    from meta.encoders import EncoderSpec

    spec = EncoderSpec(
        kind="mlp", input_shape=(train.x.shape[1],), hidden=(256, 128), embedding_dim=64
    )
    result: dict[str, Any] = {}
    # Stage 1: choose the training length (early stopping) and the embedding weight on the
    # validation classes.
    selector = _build_learner(algorithm, spec, seed)
    result["hyperparameters"] = to_jsonable(getattr(selector, "hyperparameters", dict)())
    result["selection"] = _meta_train(
        selector,
        stage_train,
        ways=5,
        shots=5,
        queries=15,
        episodes=budget.nsl_meta_episodes[algorithm],
        budget=budget,
        seed=seed,
        val=stage_val,
        val_ways=len(stage_val.class_names),
        val_every=budget.nsl_val_every,
    )
    best_step = result["selection"]["best_step"] or result["selection"]["steps_run"]
    chosen_episodes = max(budget.meta_batch, int(best_step) * budget.meta_batch)
    scale = embedding_scale(stage_train.x, selector.embed(stage_train.x))
    choice = choose_weight(
        stage_val.x, selector.embed(stage_val.x), stage_val.y, val_plans["5w1s"], scale=scale
    )
    result["validation_adapt_accuracy"] = {
        key: evaluate_accuracy(
            LearnerMethod(selector, algorithm), stage_val.x, stage_val.y, plans, progress_every=0
        ).accuracy.mean
        for key, plans in val_plans.items()
    }
    result["hybrid_weight_validation"] = choice.validation_accuracy
    result["hybrid_weight"] = choice.weight
    logger.info(
        "  %s: chose %d training episodes and embedding weight %s on validation classes",
        algorithm,
        chosen_episodes,
        choice.weight,
    )
    # Stage 2: retrain on every training class with the chosen length.
    learner = _build_learner(algorithm, spec, seed)
    result["final_training"] = _meta_train(
        learner,
        train,
        ways=5,
        shots=5,
        queries=15,
        episodes=chosen_episodes,
        budget=budget,
        seed=seed,
    )
    score_everywhere(algorithm, LearnerMethod(learner, algorithm))
    final_scale = embedding_scale(train.x, learner.embed(train.x))
    score_everywhere(
        f"{algorithm} embedding + raw, 1-NN (w={choice.weight})",
        NearestNeighbour(),
        lambda x, lr=learner: concatenate_features(
            x, lr.embed(x), scale=final_scale, weight=choice.weight
        ),
    )
    result["latency_ms"] = to_jsonable(_latency(learner, train, budget, seed))
    logger.info(
        "  %s latency adapt+predict 5w5s: p50 %.1f ms, p95 %.1f ms",
        algorithm,
        result["latency_ms"]["p50_ms"],
        result["latency_ms"]["p95_ms"],
    )
    return result


def _latency(learner: Any, data: LabelledSet, budget: Budget, seed: int) -> Any:
    plans = plan_episodes(
        data.y, ways=5, shots=5, queries=15, n_episodes=budget.latency_repeats + 3, seed=seed + 11
    )
    episodes = [materialise(p, data.x, data.y) for p in plans]

    def adapt_and_predict(episode: Any) -> object:
        return learner.adapt(episode.support_x, episode.support_y).predict(episode.query_x[:1])

    return measure_latency(adapt_and_predict, episodes, warmup=3)


# --------------------------------------------------------------------------- Omniglot


def official_run_predictions(method: FewShotMethod, runs: Sequence[OmniglotRun],
                             transform: Any = None) -> list[np.ndarray]:
    """Predicted labels of each official run's test glyphs, adapted to its training glyphs
    (both passed through ``transform`` first when given, e.g. an embedding)."""
    predictions = []
    for run in runs:
        sx = run.support_x if transform is None else transform(run.support_x)
        qx = run.query_x if transform is None else transform(run.query_x)
        predictions.append(np.argmax(method.adapt(sx, run.support_y).predict_proba(qx), 1))
    return predictions


def official_run_accuracy(method: FewShotMethod, runs: Sequence[OmniglotRun],
                          transform: Any = None) -> tuple[MeanWithCI, list[float]]:
    """Accuracy on each official run, and their mean with its 95 % CI over runs."""
    per_run = [float(np.mean(predicted == run.query_y)) for predicted, run in
               zip(official_run_predictions(method, runs, transform), runs, strict=True)]
    return mean_with_ci(per_run), per_run


def run_omniglot(budget: Budget, learners: Sequence[str], seed: int) -> dict[str, Any]:
    logger.info("== Omniglot (small background sets)")
    characters = load_omniglot_background()
    split = split_characters(characters, n_validation=30, n_test=40, seed=seed)
    train = with_rotations(split.train)
    runs = load_omniglot_runs()
    out: dict[str, Any] = {
        "train_characters": len(split.train.class_names),
        "train_classes_with_rotations": len(train.class_names),
        "validation_characters": len(split.validation.class_names),
        "test_characters": len(split.test.class_names),
        "official_runs": len(runs),
    }
    test = split.test
    plans = {
        "5w1s": plan_episodes(
            test.y, ways=5, shots=1, queries=10, n_episodes=budget.test_episodes, seed=seed
        ),
        # 5 queries per class at 20-way keeps 600 episodes affordable on a CPU.
        "20w1s": plan_episodes(
            test.y, ways=20, shots=1, queries=5, n_episodes=budget.test_episodes, seed=seed
        ),
    }
    val_plans = plan_episodes(
        split.validation.y,
        ways=20,
        shots=1,
        queries=5,
        n_episodes=budget.val_episodes,
        seed=seed + 7,
    )
    accuracy: dict[str, dict[str, Any]] = {"5w1s": {}, "20w1s": {}, "official_runs": {}}

    def score_everywhere(
        name: str, method: FewShotMethod, transform: Any = None, max_20way: int | None = None
    ) -> None:
        x = test.x if transform is None else transform(test.x)
        for key in ("5w1s", "20w1s"):
            limit = max_20way if key == "20w1s" else None
            _score(accuracy[key], name, method, (x, test.y), plans[key][:limit], key)
        summary, per_run = official_run_accuracy(method, runs, transform)
        accuracy["official_runs"][name] = {
            "mean": summary.mean,
            "ci95": summary.ci95,
            "episodes": summary.n,
            "per_run": per_run,
        }
        logger.info("  %-40s %s %%  (20 official 20-way 1-shot runs)", name, summary.as_percent())

    logger.info("-- baselines on raw pixels")
    score_everywhere("raw 1-NN", NearestNeighbour())
    score_everywhere("raw nearest centroid", NearestCentroid())

    logger.info("-- pretrain a plain Conv-4 classifier, then prototypes / linear head")

    def validate(embed: Any) -> float:
        return evaluate_accuracy(
            NearestCentroid(),
            embed(split.validation.x),
            split.validation.y,
            val_plans,
            progress_every=0,
        ).accuracy.mean

    started = time.perf_counter()
    pretrained = pretrain_classifier(
        conv4_backbone(train.x.shape[1:]),
        train.x,
        train.y,
        epochs=budget.pretrain_epochs_omniglot,
        validate=validate,
        seed=seed,
        balance_classes=False,
        batch_size=128,
    )
    out["pretrain"] = {
        "best_epoch": pretrained.best_epoch,
        "validation_accuracy_by_epoch": list(pretrained.validation_accuracy),
        "seconds": round(time.perf_counter() - started, 1),
    }
    score_everywhere("pretrain + prototypes", NearestCentroid(), pretrained.embed)
    score_everywhere("pretrain + linear head", LinearHead(), pretrained.embed)

    learner_results: dict[str, Any] = {}
    missing = _learners_available()
    if missing:
        logger.warning("  skipping meta-learners: %s", missing)
        out["learners_skipped"] = missing
    for algorithm in [a for a in learners if a in OMNIGLOT_LEARNERS] if not missing else []:
        logger.info("-- %s on Conv-4", algorithm)
        try:
            from meta.encoders import EncoderSpec

            spec = EncoderSpec(kind="conv4", input_shape=tuple(train.x.shape[1:]), filters=64)
            learner = _build_learner(algorithm, spec, seed)
            summary = _meta_train(
                learner,
                train,
                ways=5,
                shots=1,
                queries=5,
                episodes=budget.omniglot_meta_episodes[algorithm],
                budget=budget,
                seed=seed,
                val=split.validation,
                val_ways=5,
                val_every=budget.omniglot_val_every,
            )
            learner_results[algorithm] = {
                "training": summary,
                "hyperparameters": to_jsonable(getattr(learner, "hyperparameters", dict)()),
            }
            if algorithm == "protonet":
                # Mean prototypes + squared Euclidean distance in the learner's embedding is
                # exactly ProtoNet's adapt; embedding the test images once instead of per
                # episode saves minutes. The official runs check that the two paths agree.
                score_everywhere(algorithm, NearestCentroid(), learner.embed)
                direct = official_run_predictions(LearnerMethod(learner, algorithm), runs)
                shortcut = official_run_predictions(NearestCentroid(), runs, learner.embed)
                agreement = float(np.mean(np.concatenate(direct) == np.concatenate(shortcut)))
                learner_results[algorithm]["adapt_vs_embedding_agreement"] = agreement
                learner_results[algorithm]["validation_20way"] = evaluate_accuracy(
                    NearestCentroid(), learner.embed(split.validation.x), split.validation.y,
                    val_plans, progress_every=0).accuracy.mean
                logger.info(
                    "  protonet adapt() vs embed-once predictions agree on %.1f%%", 100 * agreement
                )
            else:
                score_everywhere(
                    algorithm,
                    LearnerMethod(learner, algorithm),
                    max_20way=budget.omniglot_gradient_20way_episodes,
                )
        except Exception as error:  # keep the other learners' numbers
            logger.exception("  %s failed", algorithm)
            learner_results[algorithm] = {"error": f"{type(error).__name__}: {error}"}
    if "protonet" in learners and not missing:
        learner_results["protonet, 20-way episodes"] = _omniglot_wide_protonet(
            budget, seed, train, split.validation, val_plans, score_everywhere)
    out["learners"] = learner_results
    out["accuracy"] = accuracy
    return out


def _omniglot_wide_protonet(
    budget: Budget,
    seed: int,
    train: LabelledSet,
    validation: LabelledSet,
    val_plans: Sequence[EpisodePlan],
    score_everywhere: Any,
) -> dict[str, Any]:
    """ProtoNet meta-trained on wider episodes than it is tested on (the paper trains 60-way
    for 20-way tests): each episode then holds more look-alike characters to tell apart.
    Validated on 20-way episodes of the validation characters, where the 5-way ProtoNet's
    embedding is scored too (``validation_20way``), so the choice between them is made there."""
    from meta.encoders import EncoderSpec

    ways, episodes = budget.omniglot_wide_protonet
    spec = EncoderSpec(kind="conv4", input_shape=tuple(train.x.shape[1:]), filters=64)
    learner = _build_learner("protonet", spec, seed)
    summary = _meta_train(
        learner, train, ways=ways, shots=1, queries=5, episodes=episodes, budget=budget,
        seed=seed, val=validation, val_ways=20, val_every=2 * budget.omniglot_val_every)
    name = "protonet, 20-way episodes"
    score_everywhere(name, NearestCentroid(), learner.embed)
    return {
        "training": summary,
        "ways": ways,
        "validation_20way": evaluate_accuracy(
            NearestCentroid(), learner.embed(validation.x), validation.y, val_plans,
            progress_every=0).accuracy.mean,
    }


# --------------------------------------------------------------------------- entry point


def _machine() -> dict[str, Any]:
    import os

    import tensorflow as tf

    from bench.machine import cpu_model

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fewshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny budgets, 100 test episodes (a few minutes)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/bench"),
        help="directory for the JSON, tables and plots (default docs/bench)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--learners",
        default=",".join(ALL_LEARNERS),
        help=f"comma-separated subset of {','.join(ALL_LEARNERS)}",
    )
    parser.add_argument(
        "--skip-omniglot",
        action="store_true",
        help="do not run Omniglot; keep its numbers from an earlier JSON in --out, if any",
    )
    parser.add_argument(
        "--skip-nsl-kdd",
        action="store_true",
        help="do not run NSL-KDD; keep its numbers from an earlier JSON in --out, if any",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    learners = tuple(name.strip() for name in args.learners.split(",") if name.strip())
    unknown = sorted(set(learners) - set(ALL_LEARNERS))
    if unknown:
        raise SystemExit(f"--learners: unknown {unknown}; use some of {list(ALL_LEARNERS)}.")
    budget = QUICK if args.quick else FULL
    # Episodes are tiny matrices: multi-threaded BLAS only adds contention on a shared CPU
    # (measured 10x slower linear-head fits). TensorFlow keeps its own thread pools.
    threadpool_limits(limits=1, user_api="blas")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "seed": args.seed,
        "budget": to_jsonable(budget),
        "machine": _machine(),
    }
    previous = _previous_results(args.out, results["mode"])
    for section, skipped, run in (
        ("nsl_kdd", args.skip_nsl_kdd, run_nsl_kdd),
        ("omniglot", args.skip_omniglot, run_omniglot),
    ):
        if skipped:
            if section in previous:
                # A rerun of one section keeps the other's numbers instead of dropping them.
                results[section] = previous[section]
                logger.info("kept %s results from the earlier run in %s", section, args.out)
            continue
        results[section] = run(budget, learners, args.seed)
        results[section]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write(args.out, results)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    _write(args.out, results)
    logger.info("done in %.0f s; results in %s", results["total_seconds"], args.out)
    return 0


def _results_path(out: Path, mode: str) -> Path:
    return out / f"fewshot_results{'_quick' if mode == 'quick' else ''}.json"


def _previous_results(out: Path, mode: str) -> dict[str, Any]:
    path = _results_path(out, mode)
    return json.loads(path.read_text()) if path.exists() else {}


def _write(out: Path, results: dict[str, Any]) -> None:
    from bench.fewshot_report import write_plots, write_tables

    suffix = "_quick" if results["mode"] == "quick" else ""
    _results_path(out, results["mode"]).write_text(
        json.dumps(to_jsonable(results), indent=2, sort_keys=True) + "\n"
    )
    write_tables(results, out / f"fewshot_tables{suffix}.md")
    write_plots(results, out, suffix=suffix)


if __name__ == "__main__":
    sys.exit(main())
