"""Ideas for moving few-shot accuracy on novel attacks, as harness methods around a trained
memory learner (or several): each is measured by ``bench/fewshot_ideas.py`` beside the plain
learner and the raw-feature baselines on the same episodes, and kept only if it helps.

- :class:`SeedEnsemble`: average the log-probabilities of learners meta-trained from different
  seeds, optionally with a raw-feature 1-NN expert. A single model's 1-shot accuracy moves by
  several points between training seeds; averaging is the classic cure for that variance.
- :class:`TransductiveSlots`: label propagation in the memory's key space: the queries join
  the memory as soft slots weighted by the current posterior (semi-supervised prototypical
  networks' idea, for a slot memory). Transductive: it uses the unlabelled records scored with
  it, which the agent does see, but rarely class-balanced as in an episode.
- :class:`PrototypeFineTune`: a linear head on the memory keys initialised at the prototype
  classifier and fine-tuned on the support set, pulled towards its start (first order).
- :class:`ShrunkMahalanobis`: class covariance shrunk towards the episode's covariance (Simple
  CNAPS's metric), on raw features or on memory keys: a metric fitted to each episode, where
  the learners' metric is fixed after meta-training.
- :class:`WithTrees`: the memory read plus extra trees fitted on the episode's support set
  (log-probabilities summed, the trees weighted): the strongest baseline chooses features per
  episode, and the learned metric can order what the trees' coarse vote shares leave tied.
- :func:`pseudo_classes`: the training classes split into their modes by k-means, so that
  meta-training sees many more, finer classes.
- :func:`with_pseudo_classes`: the k-means clusters of an unlabelled stream added as classes
  (self-supervision on what the agent sees; transductive when the stream holds the test
  records).
- :func:`with_classes`: other labelled classes added as training classes (more distinct tasks
  from real attack types rather than from clusters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp

from bench.fewshot_baselines import (
    ClassScores,
    ExtraTrees,
    NearestNeighbour,
    softmax,
    squared_distances,
)
from bench.fewshot_data import LabelledSet


def l2_normalise(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


class SeedEnsemble:
    """Mean log-probability of several adapted learners, plus ``raw_weight`` times a 1-NN
    expert on L2-normalised raw features (softmax over minus distance / ``raw_temperature``)."""

    def __init__(self, learners: Sequence[Any], *, raw_weight: float = 0.0,
                 raw_temperature: float = 0.1) -> None:
        if not learners:
            raise ValueError("an ensemble needs at least one learner.")
        self.learners = tuple(learners)
        self.raw_weight = raw_weight
        self.raw_temperature = raw_temperature

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        adapted = [learner.adapt(support_x, support_y) for learner in self.learners]
        raw = NearestNeighbour().adapt(l2_normalise(support_x), support_y)

        def scores(x: np.ndarray) -> np.ndarray:
            total = np.mean([log_softmax(a.logits(x), axis=1) for a in adapted], axis=0)
            if self.raw_weight:
                total += self.raw_weight * log_softmax(
                    raw.logits(l2_normalise(x)) / self.raw_temperature, axis=1)
            return total

        return ClassScores(scores)


class WithTrees:
    """The learner's log-probabilities plus ``weight`` times those of extra trees fitted on
    the support set (:class:`bench.fewshot_baselines.ExtraTrees`)."""

    def __init__(self, learner: Any, *, weight: float) -> None:
        if weight < 0:
            raise ValueError("weight must be >= 0.")
        self.learner = learner
        self.weight = weight

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        adapted = self.learner.adapt(support_x, support_y)
        trees = ExtraTrees().adapt(support_x, support_y)

        def scores(x: np.ndarray) -> np.ndarray:
            return log_softmax(adapted.logits(x), axis=1) + self.weight * trees.logits(x)

        return ClassScores(scores)


class TransductiveSlots:
    """A memory read whose slots are the support records (hard labels) and, after ``steps``
    rounds, the queries themselves (soft labels from the previous round; a query never reads
    its own slot)."""

    def __init__(self, learner: Any, *, steps: int = 1) -> None:
        if steps < 0:
            raise ValueError("steps must be >= 0.")
        self.learner = learner
        self.steps = steps

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        keys = self.learner.project(support_x)
        ways = int(support_y.max()) + 1
        labels = np.eye(ways)[support_y]
        temperature = self.learner.temperature

        def read(queries: np.ndarray, slots: np.ndarray, weights: np.ndarray,
                 own: np.ndarray | None) -> np.ndarray:
            scores = -squared_distances(queries, slots) / temperature
            if own is not None:
                scores[np.arange(len(queries)), own] = -np.inf
            with np.errstate(divide="ignore"):
                log_weights = np.log(weights)
            # One [n, slots] log-sum-exp per class: no [n, slots, classes] array.
            return np.stack([logsumexp(scores + log_weights[:, c], axis=1)
                             for c in range(weights.shape[1])], axis=1)

        def scores(x: np.ndarray) -> np.ndarray:
            queries = self.learner.project(x)
            logits = read(queries, keys, labels, None)
            for _ in range(self.steps):
                logits = read(queries, np.vstack([keys, queries]),
                              np.vstack([labels, softmax(logits)]),
                              len(keys) + np.arange(len(queries)))
            return logits

        return ClassScores(scores)


class PrototypeFineTune:
    """Softmax head on memory keys started at the prototype classifier (``2 p / T``,
    ``-|p|^2 / T``) and fitted to the support set with an L2 pull of ``strength`` to its
    start: a few labels refine, rather than replace, what meta-training put in the prototypes."""

    def __init__(self, learner: Any, *, strength: float = 1.0, max_iter: int = 50) -> None:
        if strength < 0:
            raise ValueError("strength must be >= 0.")
        self.learner = learner
        self.strength = strength
        self.max_iter = max_iter

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        keys = self.learner.project(support_x)
        ways = int(support_y.max()) + 1
        temperature = self.learner.temperature
        prototypes = np.stack([keys[support_y == c].mean(0) for c in range(ways)])
        start = np.concatenate([(2.0 * prototypes.T / temperature).ravel(),
                                -(prototypes * prototypes).sum(1) / temperature])
        onehot = np.eye(ways)[support_y]
        dim, n = keys.shape[1], len(keys)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            weights, bias = theta[:-ways].reshape(dim, ways), theta[-ways:]
            log_proba = log_softmax(keys @ weights + bias, axis=1)
            pull = theta - start
            loss = -(onehot * log_proba).sum() / n + 0.5 * self.strength * (pull @ pull) / pull.size
            residual = (np.exp(log_proba) - onehot) / n
            grad = np.concatenate([(keys.T @ residual).ravel(), residual.sum(0)])
            return float(loss), grad + self.strength * pull / pull.size

        theta = minimize(objective, start, jac=True, method="L-BFGS-B",
                         options={"maxiter": self.max_iter}).x
        weights, bias = theta[:-ways].reshape(dim, ways), theta[-ways:]
        return ClassScores(lambda x: self.learner.project(x) @ weights + bias)


class ShrunkMahalanobis:
    """Class score = minus the squared Mahalanobis distance to the class mean under
    ``Q_k = l_k S_k + (1 - l_k) S_task + beta s I`` with ``l_k = n_k / (n_k + 1)`` (Simple
    CNAPS): with one shot a class has no covariance of its own and borrows the episode's, and
    the ridge ``beta`` times the mean feature variance ``s`` keeps ``Q_k`` invertible when the
    support set spans fewer dimensions than the features (always, here). ``project`` maps
    records to the space the metric is fitted in (raw features when ``None``)."""

    def __init__(self, project: Any = None, *, beta: float = 1.0) -> None:
        if beta <= 0:
            raise ValueError("beta must be > 0.")
        self.project = project
        self.beta = beta

    def _features(self, x: np.ndarray) -> np.ndarray:
        z = x if self.project is None else self.project(x)
        return np.asarray(z, np.float64).reshape(len(z), -1)

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> ClassScores:
        z = self._features(support_x)
        ways, dim = int(support_y.max()) + 1, z.shape[1]
        ridge = self.beta * float(z.var(axis=0).mean() + 1e-12) * np.eye(dim)
        task = np.cov(z, rowvar=False)
        means, inverses = [], []
        for c in range(ways):
            own = z[support_y == c]
            share = len(own) / (len(own) + 1.0)
            covariance = np.cov(own, rowvar=False) if len(own) > 1 else np.zeros((dim, dim))
            means.append(own.mean(axis=0))
            inverses.append(np.linalg.inv(share * covariance + (1 - share) * task + ridge))

        def scores(x: np.ndarray) -> np.ndarray:
            q = self._features(x)
            return -np.stack([((q - m) @ inverse * (q - m)).sum(axis=1)
                              for m, inverse in zip(means, inverses, strict=True)], axis=1)

        return ClassScores(scores)


def with_pseudo_classes(data: LabelledSet, stream: np.ndarray, *, clusters: int,
                        min_records: int = 20, seed: int = 0) -> LabelledSet:
    """``data`` plus the unlabelled ``stream`` cut into ``clusters`` k-means clusters, each
    cluster of at least ``min_records`` records a new class (``stream#i``)."""
    from sklearn.cluster import MiniBatchKMeans

    assignment = MiniBatchKMeans(clusters, random_state=seed, n_init=3,
                                 batch_size=4096).fit_predict(stream)
    sizes = np.bincount(assignment, minlength=clusters)
    kept = np.flatnonzero(sizes >= min_records)
    member = np.isin(assignment, kept)
    new_label = np.full(clusters, -1, np.int64)
    new_label[kept] = np.arange(len(kept))
    clustered = LabelledSet(stream[member], new_label[assignment[member]],
                            tuple(f"stream#{c}" for c in kept))
    return with_classes(data, clustered)


def with_classes(data: LabelledSet, extra: LabelledSet) -> LabelledSet:
    """``data`` plus the classes of ``extra`` as new classes after it; a class name in both
    is refused, since merging two sources of one class is a different experiment."""
    shared = set(data.class_names) & set(extra.class_names)
    if shared:
        raise ValueError(f"Classes {sorted(shared)} are in both sets.")
    return LabelledSet(np.concatenate([data.x, extra.x.astype(data.x.dtype)]),
                       np.concatenate([data.y, extra.y + len(data.class_names)]),
                       (*data.class_names, *extra.class_names))


def pseudo_classes(data: LabelledSet, *, records_per_mode: int = 60, max_modes: int = 10,
                   min_records: int = 20, seed: int = 0) -> LabelledSet:
    """Each class split by k-means into up to ``max_modes`` modes (one per ``records_per_mode``
    records); modes smaller than ``min_records`` are dropped (too few for an episode)."""
    from sklearn.cluster import KMeans

    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    names: list[str] = []
    for c, name in enumerate(data.class_names):
        x = data.x[data.y == c]
        k = int(np.clip(len(x) // records_per_mode, 1, max_modes))
        modes = (KMeans(k, n_init=3, random_state=seed).fit_predict(x) if k > 1
                 else np.zeros(len(x), np.int64))
        for mode in range(k):
            member = modes == mode
            if member.sum() >= min_records:
                xs.append(x[member])
                ys.append(np.full(int(member.sum()), len(names), np.int64))
                names.append(f"{name}#{mode}")
    return LabelledSet(np.concatenate(xs), np.concatenate(ys), tuple(names))
