"""Seeded N-way K-shot episodes from labelled arrays, and class-disjoint splits.

Few-shot evaluation is only honest when the classes used to meta-train, to stop early and to
report accuracy never overlap, and when every episode can be reproduced from a seed. Security
data adds two twists handled here: many attack types have only a handful of records (they are
excluded explicitly, never silently), and real alert streams are dominated by benign traffic, so
episodes can always contain the benign class and draw queries at a realistic base rate.

Example
-------
>>> import numpy as np
>>> x = np.arange(60, dtype=np.float32).reshape(30, 2)
>>> y = np.repeat(np.array(["a", "b", "c"]), 10)
>>> sampler = EpisodeSampler(x, y, ways=2, shots=1, queries=2, seed=0)
>>> episode = sampler.sample()
>>> episode.support_x.shape, episode.query_y.shape
((2, 2), (4,))
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

QueryMode = Literal["balanced", "base_rate"]


@dataclass(frozen=True)
class Episode:
    """One few-shot task; labels are episode-local indices into ``classes``."""

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: tuple[Any, ...]


@dataclass(frozen=True)
class EpisodeBatch:
    """``T`` episodes of identical shapes stacked on a leading task axis."""

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: tuple[tuple[Any, ...], ...]

    @property
    def tasks(self) -> int:
        return int(self.support_x.shape[0])


@dataclass(frozen=True)
class ClassSplit:
    """Class-disjoint train/validation/test label sets plus the classes too small to use."""

    train: tuple[Any, ...]
    val: tuple[Any, ...]
    test: tuple[Any, ...]
    excluded: tuple[Any, ...]


def class_counts(y: np.ndarray) -> dict[Any, int]:
    """Record count per label, in sorted label order (so results do not depend on row order)."""
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    return {_plain(label): int(count) for label, count in zip(labels, counts, strict=True)}


def split_classes(
    y: np.ndarray,
    *,
    val: int | float,
    test: int | float,
    seed: int,
    min_count: int = 1,
    always_train: Sequence[Hashable] = (),
) -> ClassSplit:
    """Split the labels of ``y`` into class-disjoint train/val/test sets.

    ``val`` and ``test`` are class counts (int) or fractions of the usable classes (float in
    (0, 1)). Classes with fewer than ``min_count`` records are reported in ``excluded`` rather
    than dropped silently. ``always_train`` pins classes (e.g. the benign class) to training.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}.")
    counts = class_counts(y)
    usable = sorted((c for c, n in counts.items() if n >= min_count), key=str)
    excluded = tuple(sorted((c for c, n in counts.items() if n < min_count), key=str))
    pinned = [c for c in usable if c in set(always_train)]
    free = [c for c in usable if c not in set(always_train)]
    n_val = _as_class_count(val, len(usable), "val")
    n_test = _as_class_count(test, len(usable), "test")
    if n_val + n_test >= len(free):
        raise ValueError(
            f"cannot hold out {n_val} validation and {n_test} test classes from {len(free)} "
            f"usable classes (min_count={min_count}); lower val/test or min_count."
        )
    order = np.random.default_rng(seed).permutation(len(free))
    shuffled = [free[i] for i in order]
    test_classes = tuple(sorted(shuffled[:n_test], key=str))
    val_classes = tuple(sorted(shuffled[n_test : n_test + n_val], key=str))
    train_classes = tuple(sorted(shuffled[n_test + n_val :] + pinned, key=str))
    if excluded:
        logger.info("split_classes excluded %d classes with < %d records", len(excluded), min_count)
    return ClassSplit(train_classes, val_classes, test_classes, excluded)


class EpisodeSampler:
    """Reproducible N-way K-shot Q-query episodes drawn from labelled arrays.

    Parameters
    ----------
    x, y:
        Features ``[n, ...]`` and labels ``[n]`` (any hashable label type).
    ways, shots, queries:
        Classes per episode, support records per class, query records per class (balanced mode).
    seed:
        Seed of the sampler's own generator; the same seed yields the same episode sequence.
    classes:
        Restrict episodes to these labels (e.g. one side of :func:`split_classes`).
    benign_class:
        When given, every episode contains this class as episode label 0 plus ``ways - 1``
        other classes, mirroring an alert stream where benign traffic is always present.
    query_mode:
        ``"balanced"``: ``queries`` per class. ``"base_rate"``: ``benign_queries`` benign and
        ``attack_queries_per_class`` per other class, so benign dominates as it does in
        production (requires ``benign_class``).

    Classes with too few records for ``shots`` + their query count are excluded and listed in
    :attr:`excluded`; a ``ValueError`` is raised if fewer than ``ways`` classes remain.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        ways: int,
        shots: int,
        queries: int,
        seed: int,
        classes: Sequence[Hashable] | None = None,
        benign_class: Hashable | None = None,
        query_mode: QueryMode = "balanced",
        benign_queries: int | None = None,
        attack_queries_per_class: int | None = None,
    ) -> None:
        x = np.asarray(x)
        y = np.asarray(y)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]} labels.")
        if y.size == 0:
            raise ValueError("cannot sample episodes from zero labelled records.")
        if ways < 2:
            raise ValueError(f"ways must be at least 2, got {ways}.")
        if shots < 1:
            raise ValueError(f"shots must be at least 1, got {shots}.")
        if queries < 1:
            raise ValueError(f"queries must be at least 1, got {queries}.")
        if query_mode not in ("balanced", "base_rate"):
            raise ValueError(f"query_mode must be 'balanced' or 'base_rate', got {query_mode!r}.")
        if query_mode == "base_rate" and benign_class is None:
            raise ValueError("query_mode='base_rate' needs benign_class to be set.")
        self.ways = ways
        self.shots = shots
        self.queries = queries
        self.seed = seed
        self.benign_class = _plain(benign_class) if benign_class is not None else None
        self.query_mode = query_mode
        self.benign_queries = benign_queries if benign_queries is not None else queries
        self.attack_queries_per_class = (
            attack_queries_per_class if attack_queries_per_class is not None else queries
        )
        if query_mode == "base_rate" and benign_queries is None:
            self.benign_queries = 10 * queries
        if query_mode == "base_rate" and attack_queries_per_class is None:
            self.attack_queries_per_class = 1
        if self.benign_queries < 1 or self.attack_queries_per_class < 1:
            raise ValueError("benign_queries and attack_queries_per_class must be at least 1.")

        self._x = x
        self._index_by_class = _index_by_class(y)
        wanted = (
            list(self._index_by_class)
            if classes is None
            else [_plain(c) for c in classes]
        )
        missing = [c for c in wanted if c not in self._index_by_class]
        if missing:
            raise ValueError(f"classes not present in y: {missing[:10]}.")
        if self.benign_class is not None and self.benign_class not in self._index_by_class:
            raise ValueError(f"benign_class {self.benign_class!r} does not occur in y.")

        eligible: list[Any] = []
        excluded: list[Any] = []
        for label in wanted:
            if label == self.benign_class:
                continue
            needed = shots + self._query_count(label)
            (eligible if len(self._index_by_class[label]) >= needed else excluded).append(label)
        if self.benign_class is not None:
            needed = shots + self._query_count(self.benign_class)
            if len(self._index_by_class[self.benign_class]) < needed:
                raise ValueError(
                    f"benign class {self.benign_class!r} has "
                    f"{len(self._index_by_class[self.benign_class])} records; {needed} are needed."
                )
        self.classes: tuple[Any, ...] = tuple(sorted(eligible, key=str))
        self.excluded: tuple[Any, ...] = tuple(sorted(excluded, key=str))
        other_ways = ways - 1 if self.benign_class is not None else ways
        if len(self.classes) < other_ways:
            raise ValueError(
                f"only {len(self.classes)} classes have enough records for {shots}-shot episodes "
                f"(excluded: {list(self.excluded)[:10]}); {other_ways} are needed for "
                f"{ways}-way episodes."
            )
        if self.excluded:
            logger.warning(
                "EpisodeSampler excluded %d classes with too few records: %s",
                len(self.excluded),
                list(self.excluded)[:10],
            )
        self._rng = np.random.default_rng(seed)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._x.shape[1:])

    @property
    def query_size(self) -> int:
        """Number of query records per episode (fixed, so compiled steps trace once)."""
        if self.query_mode == "balanced":
            return self.ways * self.queries
        return self.benign_queries + (self.ways - 1) * self.attack_queries_per_class

    @property
    def all_classes(self) -> tuple[Any, ...]:
        """Every label an episode can contain, benign included."""
        extra = () if self.benign_class is None else (self.benign_class,)
        return tuple(sorted(set(self.classes) | set(extra), key=str))

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable generator state, so interrupted training resumes the same sequence."""
        return dict(self._rng.bit_generator.state)

    def set_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state

    def sample(self) -> Episode:
        labels = self._draw_classes()
        support_idx, query_idx, query_y = self._draw_indices(labels)
        return Episode(
            support_x=self._x[support_idx],
            support_y=np.repeat(np.arange(self.ways, dtype=np.int32), self.shots),
            query_x=self._x[query_idx],
            query_y=query_y,
            classes=labels,
        )

    def sample_batch(self, tasks: int) -> EpisodeBatch:
        if tasks < 1:
            raise ValueError(f"tasks must be at least 1, got {tasks}.")
        episodes = [self.sample() for _ in range(tasks)]
        return EpisodeBatch(
            support_x=np.stack([e.support_x for e in episodes]),
            support_y=np.stack([e.support_y for e in episodes]),
            query_x=np.stack([e.query_x for e in episodes]),
            query_y=np.stack([e.query_y for e in episodes]),
            classes=tuple(e.classes for e in episodes),
        )

    def _query_count(self, label: Any) -> int:
        if self.query_mode == "balanced":
            return self.queries
        return self.benign_queries if label == self.benign_class else self.attack_queries_per_class

    def _draw_classes(self) -> tuple[Any, ...]:
        if self.benign_class is None:
            chosen = self._rng.choice(len(self.classes), size=self.ways, replace=False)
            return tuple(self.classes[i] for i in chosen)
        chosen = self._rng.choice(len(self.classes), size=self.ways - 1, replace=False)
        return (self.benign_class, *(self.classes[i] for i in chosen))

    def _draw_indices(self, labels: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        support: list[np.ndarray] = []
        query: list[np.ndarray] = []
        query_counts: list[int] = []
        for label in labels:
            n_query = self._query_count(label)
            pool = self._index_by_class[label]
            picked = pool[self._rng.choice(len(pool), size=self.shots + n_query, replace=False)]
            support.append(picked[: self.shots])
            query.append(picked[self.shots :])
            query_counts.append(n_query)
        query_y = np.repeat(np.arange(len(labels), dtype=np.int32), query_counts)
        return np.concatenate(support), np.concatenate(query), query_y


def _index_by_class(y: np.ndarray) -> dict[Any, np.ndarray]:
    labels, inverse = np.unique(y, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(labels)))[:-1]
    groups = np.split(order, bounds)
    return {_plain(label): group for label, group in zip(labels, groups, strict=True)}


def _as_class_count(value: int | float, total: int, name: str) -> int:
    if isinstance(value, float) and not value.is_integer():
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} as a fraction must lie in (0, 1), got {value}.")
        return max(1, int(round(value * total)))
    if int(value) < 0:
        raise ValueError(f"{name} must be a non-negative class count, got {value}.")
    return int(value)


def _plain(label: Any) -> Any:
    """numpy scalars become Python scalars so labels compare, hash and serialise predictably."""
    return label.item() if isinstance(label, np.generic) else label
