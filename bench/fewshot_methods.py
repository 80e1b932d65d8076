"""Few-shot methods built on an embedding: the learners' own adaptation, and embedding + raw.

A meta-learned embedding alone does not beat 1-NN on raw NSL-KDD features (the classes are few
and multi-modal), but the two make different mistakes; concatenating them keeps the raw
features' fine detail and adds what the embedding learned about attack structure. The weight of
the embedding is a hyperparameter and is chosen on validation classes only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.fewshot_baselines import NearestNeighbour
from bench.fewshot_harness import AdaptedModel, EpisodePlan, FewShotMethod, evaluate_accuracy


@dataclass(frozen=True)
class LearnerMethod:
    """A meta-learner seen through the harness protocol (its adapt is the method)."""

    learner: object
    name: str

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> AdaptedModel:
        return self.learner.adapt(support_x, support_y)  # type: ignore[attr-defined]


def embedding_scale(raw: np.ndarray, embedded: np.ndarray) -> float:
    """Factor that gives the embedding the same total variance as the raw features."""
    raw_var = float(raw.reshape(len(raw), -1).var(axis=0).sum())
    emb_var = float(embedded.var(axis=0).sum())
    return float(np.sqrt(raw_var / max(emb_var, 1e-12)))


def concatenate_features(
    raw: np.ndarray, embedded: np.ndarray, *, scale: float, weight: float
) -> np.ndarray:
    """[raw, weight * scale * embedding]: weight 0 is raw 1-NN, large weights the embedding's."""
    return np.concatenate([raw.reshape(len(raw), -1), (weight * scale) * embedded], axis=1)


@dataclass(frozen=True)
class WeightChoice:
    weight: float
    validation_accuracy: dict[float, float]


def choose_weight(
    raw: np.ndarray,
    embedded: np.ndarray,
    y: np.ndarray,
    plans: Sequence[EpisodePlan],
    *,
    scale: float,
    weights: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0),
    method_factory: Callable[[], FewShotMethod] = NearestNeighbour,
) -> WeightChoice:
    """Pick the embedding weight with the best accuracy on validation-class episodes."""
    scores = {}
    for weight in weights:
        features = concatenate_features(raw, embedded, scale=scale, weight=weight)
        result = evaluate_accuracy(method_factory(), features, y, plans, progress_every=0)
        scores[float(weight)] = result.accuracy.mean
    best = max(scores, key=lambda w: (scores[w], -w))
    return WeightChoice(best, scores)
