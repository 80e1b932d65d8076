"""Gaussian-kernel two-sample tests of a window against a fixed reference, batched in TensorFlow.

Every test here is a permutation test on the pooled sample (the reference's records, then the
window's; see :mod:`detectors._permutation`), exact for any reference size, window size and
kernel. The permuted statistics come out of a few batched TensorFlow graph calls (on a GPU when
TensorFlow sees one), batch after batch until the decision is settled; TensorFlow is imported
on first use, so that importing the detectors stays cheap.

* :class:`QuadraticMMD` is the exact unbiased MMD². The reference block of the kernel matrix is
  computed at fit, and with it the part of every relabelling that the reference alone decides;
  a window then costs its cross block (``O(n·m·d)``) and two matrix products per batch.
* :class:`FeatureMapMMD` works in an explicit feature space (``D`` landmark kernels, the
  "linear" estimator, or random Fourier features): the statistic is the squared distance of
  the two feature means and a permutation costs ``O(m·D)``, so references of any size fit.
* :class:`KnockoutMMD` attributes an MMD² to features (see :mod:`detectors._attribution`).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detectors._attribution import nearest_on_other_features, per_feature_distances
from detectors._distances import squared_distances
from detectors._permutation import (
    permutation_batches,
    permutation_subsets,
    sequential_p_value,
)

__all__ = [
    "FeatureMapMMD",
    "KnockoutMMD",
    "QuadraticMMD",
    "median_bandwidth",
]

_BANDWIDTH_ROWS = 1000  # rows the median heuristic looks at: 500,000 pairs are plenty
_CHUNK_ELEMENTS = 1 << 22  # kernel entries computed at once, to bound memory


def median_bandwidth(rows: np.ndarray, scale: float) -> float:
    """``scale`` times the median heuristic: ``sqrt(median squared distance / 2)``.

    With ``k(x, y) = exp(-|x - y|² / (2σ²))`` and ``scale = 1`` the median pair of reference
    records has kernel value ``1/e``. Heavily duplicated data can make the median distance 0;
    the mean then stands in (and 1 for a constant reference).
    """
    sample = np.asarray(rows[:_BANDWIDTH_ROWS], np.float64)
    upper = squared_distances(sample, sample)[np.triu_indices(sample.shape[0], 1)]
    typical = float(np.median(upper)) if upper.size else 0.0
    if typical <= 0.0:
        typical = float(upper.mean()) if upper.size else 0.0
    if typical <= 0.0:
        typical = 1.0
    return float(scale * np.sqrt(typical / 2.0))


@functools.cache
def _tf() -> Any:
    import tensorflow as tf

    return tf


def _gaussian(tf: Any, a: Any, b: Any, gamma: Any) -> Any:
    """``exp(-gamma |a_i - b_j|²)`` for the last two axes (batched when a, b are 3-D)."""
    squared = (tf.reduce_sum(a * a, -1)[..., :, None] + tf.reduce_sum(b * b, -1)[..., None, :]
               - 2.0 * tf.matmul(a, b, transpose_b=True))
    return tf.exp(-gamma * tf.maximum(squared, 0.0))


@functools.cache
def _compiled() -> Any:
    """The per-window and per-batch computations as TensorFlow graphs (one trace each).

    Traced once with unknown sizes, so a window costs a handful of graph calls rather than
    dozens of eager operations.
    """
    tf = _tf()
    f32, f64, i32 = tf.float32, tf.float64, tf.int32

    def spec(dtype: Any, rank: int) -> Any:
        return tf.TensorSpec([None] * rank, dtype)

    @tf.function(input_signature=[spec(f32, 2), spec(f64, 1), spec(f32, 2), spec(f32, 0)])
    def quadratic_window(reference: Any, reference_row_sums: Any, x: Any, gamma: Any) -> Any:
        cross = _gaussian(tf, reference, x, gamma)  # [n, m]
        within = _gaussian(tf, x, x, gamma)
        row_sums = tf.concat([reference_row_sums + tf.cast(tf.reduce_sum(cross, 1), f64),
                              tf.cast(tf.reduce_sum(cross, 0) + tf.reduce_sum(within, 1), f64)],
                             axis=0)
        return cross, within, row_sums, tf.reduce_sum(row_sums)

    @tf.function(input_signature=[spec(f32, 2), spec(f32, 2), spec(i32, 2), spec(f64, 1),
                                  spec(f32, 2), spec(f32, 2), spec(f64, 1), spec(f64, 0)])
    def quadratic_batch(on_reference: Any, on_window: Any, subsets: Any, reference_sums: Any,
                        cross: Any, within: Any, row_sums: Any, total: Any) -> Any:
        n = tf.cast(tf.shape(on_reference)[1], f64)
        m = tf.cast(tf.shape(on_window)[1], f64)
        a = tf.reduce_sum(tf.gather(row_sums, subsets), axis=1)
        mixed = tf.reduce_sum(tf.matmul(on_reference, cross) * on_window, axis=1)
        own = tf.reduce_sum(tf.matmul(on_window, within) * on_window, axis=1)
        b = reference_sums + tf.cast(2.0 * mixed + own, f64)
        return ((total - 2.0 * a + b - n) / (n * (n - 1.0)) + (b - m) / (m * (m - 1.0))
                - 2.0 * (a - b) / (n * m))

    @tf.function(input_signature=[spec(f32, 2), spec(i32, 2), spec(f64, 1)])
    def feature_batch(pool: Any, subsets: Any, total: Any) -> Any:
        m = tf.cast(tf.shape(subsets)[1], f64)
        n = tf.cast(tf.shape(pool)[0], f64) - m
        sums = tf.cast(tf.reduce_sum(tf.gather(pool, subsets), axis=1), f64)
        difference = sums / m - (total - sums) / n
        return tf.reduce_sum(difference * difference, axis=1)

    return quadratic_window, quadratic_batch, feature_batch


class _PermutationTest(ABC):
    """A permutation test whose relabellings come in batches (see :func:`sequential_p_value`)."""

    permutations: int
    bandwidth: float

    def test(self, window: np.ndarray, alpha: float) -> tuple[float, float]:
        """``(statistic, p_value)`` of ``window`` (``[m, d]`` rows in the test space)."""
        prepared, n_batches = self._prepare(np.asarray(window, np.float32))
        return sequential_p_value(lambda batch: self._statistics(prepared, batch), n_batches,
                                  self.permutations, alpha)

    @abstractmethod
    def _prepare(self, window: np.ndarray) -> tuple[Any, int]:
        """What every batch of ``window``'s relabellings needs, and how many batches."""

    @abstractmethod
    def _statistics(self, prepared: Any, batch: int) -> np.ndarray:
        """The statistics of one batch of relabellings (the first starts with the observed)."""




@dataclass(frozen=True)
class _Batch:
    """One batch of relabellings of a window size, and what the reference alone decides of it."""

    subsets: Any  # int32 [B, m]: pool positions playing the window
    on_reference: Any  # float32 [B, n]: 1 where a reference record plays the window
    on_window: Any  # float32 [B, m]: 1 where a window record does
    reference_sums: Any  # float64 [B]: sum of K over the pairs of those reference records


class QuadraticMMD(_PermutationTest):
    """The unbiased MMD² of a window against ``reference`` rows, with its permutation p-value.

    With the pool's kernel matrix ``K`` (``N = n + m``), its row sums ``r``, their total ``T``
    and a relabelling ``s`` (``m`` positions), the statistic needs only ``a = sum(r[s])`` and
    ``b = sum(K[s, s])``::

        MMD²(s) = (T - 2a + b - n) / (n(n-1)) + (b - m) / (m(m-1)) - 2 (a - b) / (n·m)

    (the diagonal of a Gaussian kernel is 1). The relabellings depend on the sizes only, so
    the part of ``b`` among reference records is computed once per window size, from the
    reference block kept since fit; a window adds its cross block (``n × m``) and its own
    (``m × m``), and each batch of relabellings costs two matrix products.
    """

    def __init__(self, reference: np.ndarray, bandwidth: float, *, permutations: int,
                 seed: int) -> None:
        tf = _tf()
        self.bandwidth = float(bandwidth)
        self.permutations = int(permutations)
        self.seed = int(seed)
        self.n = int(reference.shape[0])
        self._gamma = tf.constant(1.0 / (2.0 * self.bandwidth**2), tf.float32)
        self._reference = tf.constant(reference, tf.float32)
        rows = max(1, _CHUNK_ELEMENTS // max(self.n, 1))
        blocks = [_gaussian(tf, self._reference[i:i + rows], self._reference, self._gamma)
                  for i in range(0, self.n, rows)]
        self._block = tf.concat(blocks, axis=0)
        self._row_sums = tf.cast(tf.reduce_sum(self._block, axis=1), tf.float64)
        self._plans: dict[int, tuple[_Batch, ...]] = {}

    def plan(self, m: int) -> tuple[_Batch, ...]:
        """The relabellings of windows of ``m`` records (made once; fit makes the usual one)."""
        if m not in self._plans:
            tf = _tf()
            subsets = permutation_subsets(self.n, m, self.permutations, self.seed)
            rows = np.broadcast_to(np.arange(subsets.shape[0])[:, None], subsets.shape)
            on_reference = np.zeros((subsets.shape[0], self.n), np.float32)
            on_window = np.zeros((subsets.shape[0], m), np.float32)
            in_reference = subsets < self.n
            on_reference[rows[in_reference], subsets[in_reference]] = 1.0
            on_window[rows[~in_reference], subsets[~in_reference] - self.n] = 1.0
            batches = []
            for part in permutation_batches(subsets.shape[0]):
                chosen = tf.constant(on_reference[part])
                batches.append(_Batch(tf.constant(subsets[part]), chosen,
                                      tf.constant(on_window[part]),
                                      self._reference_sums(subsets[part], chosen)))
            if len(self._plans) >= 4:
                self._plans.pop(next(iter(self._plans)))
            self._plans[m] = tuple(batches)
        return self._plans[m]

    def _reference_sums(self, subsets: np.ndarray, chosen: Any) -> Any:
        """``float64 [B]``: per relabelling, ``K`` summed over its reference records' pairs.

        Windows much smaller than the reference (``m < n/30``) gather their ``m²`` entries from
        the reference block; larger ones take one product with it (``n²`` per row, which dense
        matrix products do tens of times faster per entry than gathers).
        """
        tf = _tf()
        m = subsets.shape[1]
        if 1000 * m * m >= self.n * self.n:
            return tf.cast(tf.reduce_sum(tf.matmul(chosen, self._block) * chosen, axis=1),
                           tf.float64)
        flat = tf.reshape(self._block, [-1])
        positions = subsets.astype(np.int64)
        sums = []
        rows = max(1, _CHUNK_ELEMENTS // (m * m))
        for start in range(0, subsets.shape[0], rows):
            part = positions[start:start + rows]
            inside = part < self.n
            pairs = inside[:, :, None] & inside[:, None, :]
            index = np.where(pairs, part[:, :, None] * self.n + part[:, None, :], 0)
            values = tf.gather(flat, index) * tf.constant(pairs, tf.float32)
            sums.append(tf.reduce_sum(tf.cast(values, tf.float64), axis=[1, 2]))
        return tf.concat(sums, axis=0)

    def _prepare(self, window: np.ndarray) -> tuple[Any, int]:
        quadratic_window = _compiled()[0]
        plan = self.plan(int(window.shape[0]))
        pieces = quadratic_window(self._reference, self._row_sums, window, self._gamma)
        return (plan, pieces), len(plan)

    def _statistics(self, prepared: Any, batch: int) -> np.ndarray:
        quadratic_batch = _compiled()[1]
        plan, (cross, within, row_sums, total) = prepared
        part = plan[batch]
        values = quadratic_batch(part.on_reference, part.on_window, part.subsets,
                                 part.reference_sums, cross, within, row_sums, total)
        return np.asarray(values.numpy(), np.float64)


class FeatureMapMMD(_PermutationTest):
    """MMD² in an explicit feature space, ``|mean_window φ - mean_reference φ|²``.

    ``kind="linear"``: ``φ(x) = k(x, landmark_j) / sqrt(D)`` for ``D`` landmark records drawn
    from the reference (the kernel mean embeddings compared at those points);
    ``kind="rff"``: random Fourier features ``sqrt(2/D) cos(ω_j·x + b_j)``, ``ω ~ N(0, σ⁻²I)``,
    whose inner products approximate the Gaussian kernel. Either way a window costs
    ``O(m·D·d)`` and each permutation ``O(m·D)``, whatever the reference size.
    """

    def __init__(self, reference: np.ndarray, bandwidth: float, *,
                 kind: Literal["linear", "rff"], n_features: int, permutations: int,
                 seed: int) -> None:
        tf = _tf()
        self.bandwidth = float(bandwidth)
        self.permutations = int(permutations)
        self.seed = int(seed)
        self.n = int(reference.shape[0])
        self._kind = kind
        rng = np.random.default_rng([seed, 1])
        d = reference.shape[1]
        self._gamma = tf.constant(1.0 / (2.0 * self.bandwidth**2), tf.float32)
        if kind == "linear":
            count = min(n_features, self.n)
            landmarks = reference[np.sort(rng.choice(self.n, count, replace=False))]
            self._landmarks = tf.constant(landmarks, tf.float32)
            self._scale = tf.constant(1.0 / np.sqrt(count), tf.float32)
        else:
            self._omega = tf.constant(rng.normal(0.0, 1.0 / self.bandwidth, (d, n_features)),
                                      tf.float32)
            self._phase = tf.constant(rng.uniform(0.0, 2.0 * np.pi, n_features), tf.float32)
            self._scale = tf.constant(np.sqrt(2.0 / n_features), tf.float32)
        self._reference_features = self._features(tf.constant(reference, tf.float32))
        self._reference_total = tf.reduce_sum(tf.cast(self._reference_features, tf.float64), 0)
        self._plans: dict[int, tuple[Any, ...]] = {}

    def plan(self, m: int) -> tuple[Any, ...]:
        """The relabellings of windows of ``m`` records, in batches (made once per size)."""
        if m not in self._plans:
            tf = _tf()
            subsets = permutation_subsets(self.n, m, self.permutations, self.seed)
            if len(self._plans) >= 4:
                self._plans.pop(next(iter(self._plans)))
            self._plans[m] = tuple(tf.constant(subsets[part])
                                   for part in permutation_batches(subsets.shape[0]))
        return self._plans[m]

    def _features(self, x: Any) -> Any:
        tf = _tf()
        if self._kind == "linear":
            return _gaussian(tf, x, self._landmarks, self._gamma) * self._scale
        return tf.cos(tf.matmul(x, self._omega) + self._phase) * self._scale

    def _prepare(self, window: np.ndarray) -> tuple[Any, int]:
        tf = _tf()
        plan = self.plan(int(window.shape[0]))
        features = self._features(tf.constant(window))
        pool = tf.concat([self._reference_features, features], axis=0)
        total = self._reference_total + tf.reduce_sum(tf.cast(features, tf.float64), 0)
        return (plan, pool, total), len(plan)

    def _statistics(self, prepared: Any, batch: int) -> np.ndarray:
        feature_batch = _compiled()[2]
        plan, pool, total = prepared
        return np.asarray(feature_batch(pool, plan[batch], total).numpy(), np.float64)


class KnockoutMMD:
    """How much of a window's MMD² each feature carries: the drop when it is knocked out.

    Knocking feature ``j`` out of a window record gives it the value ``j`` has in the reference
    record nearest on all the *other* features: a draw from the reference given the rest of the
    record. A feature whose marginal moved is pulled back, and so is a feature whose relation
    to another one changed (its value is replaced by the one that goes with the other's in the
    reference), while an unremarkable feature changes little. Replacing a value by an
    unconditional reference draw instead would make records the reference never holds (a
    login with the byte counts of a flood) and blame whatever breaks such ties.

    Distances decompose over features (numeric features are one design column each; a
    categorical feature contributes 1 when the codes differ), so every knock-out's MMD² comes
    from the per-feature distances among ``n`` reference records (kept from fit) and between
    them and the window, with no kernel recomputed: a window costs ``O(n·m·F)``.
    """

    def __init__(self, numeric: np.ndarray, codes: np.ndarray, bandwidth: float) -> None:
        self._numeric = np.asarray(numeric, np.float32)
        self._codes = np.asarray(codes, np.int64)
        self._gamma = np.float32(1.0 / (2.0 * bandwidth**2))
        self._among_reference = per_feature_distances(self._numeric, self._codes,
                                                      self._numeric, self._codes)  # [n, n, F]
        n = self._numeric.shape[0]
        kernel = np.exp(-self._gamma * self._among_reference.sum(axis=-1))
        self._reference_term = float(kernel[~np.eye(n, dtype=bool)].mean()) if n > 1 else 0.0

    def contributions(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``[F]``: MMD² minus the MMD² with each feature knocked out of the window."""
        numeric = np.asarray(numeric, np.float32)
        codes = np.asarray(codes, np.int64)
        m, features = numeric.shape[0], np.arange(self._among_reference.shape[2])
        gamma, among = self._gamma, self._among_reference
        cross = per_feature_distances(self._numeric, self._codes, numeric, codes)  # [n, m, F]
        cross_total = cross.sum(axis=-1, keepdims=True)
        nearest, others = nearest_on_other_features(cross)
        cross_knocked = others + among[:, nearest, features[None, :]]
        within = per_feature_distances(numeric, codes, numeric, codes)  # [m, m, F]
        within_total = within.sum(axis=-1, keepdims=True)
        within_knocked = (np.maximum(within_total - within, 0.0)
                          + among[nearest[:, None, :], nearest[None, :, :], features])
        off_diagonal = ~np.eye(m, dtype=bool)
        full = (self._reference_term
                + float(np.exp(-gamma * within_total[..., 0])[off_diagonal].mean())
                - 2.0 * float(np.exp(-gamma * cross_total).mean()))
        knocked = (self._reference_term
                   + np.exp(-gamma * within_knocked)[off_diagonal].mean(axis=0)
                   - 2.0 * np.exp(-gamma * cross_knocked).mean(axis=(0, 1)))
        return np.asarray(full - knocked, np.float64)

