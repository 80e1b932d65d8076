"""Evaluation harness: fixed test episodes, accuracy with 95% CIs, base-rate recall, latency.

Every method in the benchmark is scored on the *same* episodes. Episodes are therefore drawn
once, as index plans into a labelled set, and only materialised when a method is scored; that
keeps 600 Omniglot 20-way episodes cheap to hold and makes "same episodes" a fact rather than
a hope about seeds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)


class AdaptedModel(Protocol):
    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


class FewShotMethod(Protocol):
    """Anything that turns a labelled support set into a classifier over its labels."""

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> AdaptedModel: ...


@dataclass(frozen=True)
class EpisodePlan:
    """Indices of one episode into a labelled set; labels are remapped to 0..ways-1.

    ``classes`` holds the original class ids; position i is episode label i.
    """

    support_idx: np.ndarray
    query_idx: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class Episode:
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray


def materialise(plan: EpisodePlan, x: np.ndarray, y: np.ndarray) -> Episode:
    lookup = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    lookup[plan.classes] = np.arange(len(plan.classes))
    return Episode(
        support_x=x[plan.support_idx],
        support_y=lookup[y[plan.support_idx]],
        query_x=x[plan.query_idx],
        query_y=lookup[y[plan.query_idx]],
        classes=plan.classes,
    )


def plan_episodes(
    y: np.ndarray,
    *,
    ways: int,
    shots: int,
    queries: int | Sequence[int],
    n_episodes: int,
    seed: int,
    classes: Sequence[int] | None = None,
    always_include: int | None = None,
) -> tuple[EpisodePlan, ...]:
    """Draw ``n_episodes`` class-balanced support sets with disjoint query sets.

    ``queries`` is per class, or one count per episode position (position 0 is the
    ``always_include`` class when given): that is how base-rate episodes make the benign class
    dominate the queries while the support stays K-shot.
    """
    if ways < 2 or shots < 1 or n_episodes < 1:
        raise ValueError("ways must be >= 2 and shots, n_episodes >= 1.")
    per_position = (
        np.full(ways, int(queries), dtype=np.int64)
        if np.isscalar(queries)
        else np.asarray(queries, dtype=np.int64)
    )
    if per_position.shape != (ways,) or (per_position < 1).any():
        raise ValueError("queries must be a positive count or one positive count per way.")
    candidates = np.unique(y) if classes is None else np.asarray(classes, dtype=np.int64)
    if always_include is not None:
        candidates = candidates[candidates != always_include]
    counts = np.bincount(y, minlength=int(y.max()) + 1)
    n_random = ways - (always_include is not None)
    needed = shots + per_position[-1]
    eligible = candidates[counts[candidates] >= needed]
    if len(eligible) < n_random:
        raise ValueError(f"Only {len(eligible)} classes have {needed} records; need {n_random}.")
    if always_include is not None and counts[always_include] < shots + per_position[0]:
        raise ValueError("The always-included class has too few records for its queries.")
    members = {int(c): np.flatnonzero(y == c) for c in np.unique(y)}
    rng = np.random.default_rng(seed)
    plans = []
    for _ in range(n_episodes):
        chosen = rng.choice(eligible, size=n_random, replace=False)
        if always_include is not None:
            chosen = np.concatenate([[always_include], chosen])
        support, query = [], []
        for position, cls in enumerate(chosen):
            picked = rng.choice(
                members[int(cls)], size=shots + per_position[position], replace=False
            )
            support.append(picked[:shots])
            query.append(picked[shots:])
        plans.append(
            EpisodePlan(np.concatenate(support), np.concatenate(query), chosen.astype(np.int64))
        )
    return tuple(plans)


@dataclass(frozen=True)
class MeanWithCI:
    """Mean over episodes with the usual 95% half-width 1.96 * std / sqrt(n)."""

    mean: float
    ci95: float
    n: int

    def as_percent(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.ci95:.1f}"


def mean_with_ci(values: Sequence[float] | np.ndarray) -> MeanWithCI:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_with_ci needs at least one value.")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return MeanWithCI(float(values.mean()), 1.96 * std / math.sqrt(values.size), int(values.size))


def recall_at_fpr(benign_scores: np.ndarray, attack_scores: np.ndarray, max_fpr: float) -> float:
    """Fraction of attacks scored above the lowest threshold that keeps benign FPR <= max_fpr.

    Ties at the threshold count against the detector (strict ">"), so the reported recall is
    never flattered by a degenerate score.
    """
    if not 0.0 <= max_fpr < 1.0:
        raise ValueError("max_fpr must be in [0, 1).")
    benign = np.sort(np.asarray(benign_scores, dtype=np.float64))[::-1]
    allowed = int(math.floor(max_fpr * benign.size))
    threshold = benign[allowed] if allowed < benign.size else -np.inf
    return float(np.mean(np.asarray(attack_scores) > threshold))


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: MeanWithCI
    per_episode: np.ndarray
    seconds: float


def evaluate_accuracy(
    method: FewShotMethod,
    x: np.ndarray,
    y: np.ndarray,
    plans: Sequence[EpisodePlan],
    *,
    label: str = "",
    progress_every: int = 200,
) -> AccuracyResult:
    started = time.perf_counter()
    accuracies = np.empty(len(plans))
    for i, plan in enumerate(plans):
        episode = materialise(plan, x, y)
        model = method.adapt(episode.support_x, episode.support_y)
        predicted = np.argmax(model.predict_proba(episode.query_x), axis=1)
        accuracies[i] = np.mean(predicted == episode.query_y)
        if progress_every and (i + 1) % progress_every == 0:
            logger.info(
                "  %s: %d/%d episodes, running acc %.3f",
                label,
                i + 1,
                len(plans),
                accuracies[: i + 1].mean(),
            )
    return AccuracyResult(mean_with_ci(accuracies), accuracies, time.perf_counter() - started)


def accuracy_by_task(method: FewShotMethod, x: np.ndarray, y: np.ndarray,
                     plans: Mapping[str, Sequence[EpisodePlan]]) -> dict[str, float]:
    """Mean episode accuracy per task (e.g. ``5w1s``), every task's plans drawn from ``x``."""
    return {task: evaluate_accuracy(method, x, y, task_plans, progress_every=0).accuracy.mean
            for task, task_plans in plans.items()}


@dataclass(frozen=True)
class BaseRateResult:
    """Attack recall at benign FPR <= max_fpr, and accuracy of naming the attack class."""

    recall_at_fpr: MeanWithCI
    auc: MeanWithCI
    attack_class_accuracy: MeanWithCI
    max_fpr: float


def _auc(benign: np.ndarray, attack: np.ndarray) -> float:
    """Probability an attack outscores a benign record (ties count half); rank-based ROC AUC."""
    scores = np.concatenate([benign, attack])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    attack_ranks = ranks[benign.size :].sum()
    return float((attack_ranks - attack.size * (attack.size + 1) / 2) / (attack.size * benign.size))


def attack_log_odds(model: object, x: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """log(sum of attack-class probabilities / benign probability), from logits when exposed.

    ``1 - p(benign)`` saturates to exactly 0 in float64 once distances are large (embeddings
    do that), which turns a ranking into ties; the log-odds from logits keep the order.
    """
    logits_fn = getattr(model, "logits", None)
    if callable(logits_fn):
        logits = np.asarray(logits_fn(x), dtype=np.float64)
        attack = logits[:, 1:]
        peak = attack.max(axis=1)
        return peak + np.log(np.exp(attack - peak[:, None]).sum(axis=1)) - logits[:, 0]
    clipped = np.clip(proba.astype(np.float64), 1e-300, 1.0)
    return np.log(np.clip(1.0 - clipped[:, 0], 1e-300, 1.0)) - np.log(clipped[:, 0])


def evaluate_base_rate(
    method: FewShotMethod,
    x: np.ndarray,
    y: np.ndarray,
    plans: Sequence[EpisodePlan],
    *,
    max_fpr: float = 0.01,
) -> BaseRateResult:
    """Episodes whose label 0 is the benign class; the attack score is log p(attack)/p(benign)."""
    recalls, aucs, class_accuracy = [], [], []
    for plan in plans:
        episode = materialise(plan, x, y)
        model = method.adapt(episode.support_x, episode.support_y)
        proba = model.predict_proba(episode.query_x)
        attack_score = attack_log_odds(model, episode.query_x, proba)
        is_benign = episode.query_y == 0
        recalls.append(recall_at_fpr(attack_score[is_benign], attack_score[~is_benign], max_fpr))
        aucs.append(_auc(attack_score[is_benign], attack_score[~is_benign]))
        attack_pred = 1 + np.argmax(proba[~is_benign, 1:], axis=1)
        class_accuracy.append(float(np.mean(attack_pred == episode.query_y[~is_benign])))
    return BaseRateResult(
        mean_with_ci(recalls), mean_with_ci(aucs), mean_with_ci(class_accuracy), max_fpr
    )


@dataclass(frozen=True)
class LatencyResult:
    p50_ms: float
    p95_ms: float
    repeats: int


def measure_latency(
    adapt_and_predict: Callable[[Episode], object],
    episodes: Sequence[Episode],
    *,
    warmup: int = 3,
) -> LatencyResult:
    """Wall time of adapt + first predict per episode, after a few warm-up calls (tracing)."""
    if len(episodes) <= warmup:
        raise ValueError("Need more episodes than warm-up calls.")
    for episode in episodes[:warmup]:
        adapt_and_predict(episode)
    timings = []
    for episode in episodes[warmup:]:
        started = time.perf_counter()
        adapt_and_predict(episode)
        timings.append(1000.0 * (time.perf_counter() - started))
    p50, p95 = np.percentile(timings, [50, 95])
    return LatencyResult(float(p50), float(p95), len(timings))
