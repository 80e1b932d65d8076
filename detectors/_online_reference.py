"""What :class:`detectors.online_drift.OnlineDriftDetector` derives from its reference.

The feature space (robust-scaled, ``asinh``-compressed numerics and one-hot categoricals, or
the encoder's rows), the random Fourier features that approximate a Gaussian kernel, the
calibrated threshold with its null distribution, and the per-feature baseline that alarms are
attributed against: all plain arrays, so that a detector saves without pickle.

Two details keep a record's statistic bit-for-bit independent of how the stream is cut into
batches: projections run in blocks of one shape (a BLAS call on one row and on many may round
differently), and features are quantised to int32 so that window sums are exact integer sums
(wrapping harmlessly: every true window sum fits in int32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from detectors._distances import squared_distances
from detectors._feature_tests import CategoryShift
from detectors._multiple_testing import adjust_p_values
from detectors.base import FeatureBatch
from detectors.change_detectors import RunLengthFit, calibrate, run_length_threshold

__all__ = ["FeatureShift", "OnlineReference", "Space", "fit_reference"]

Space = Literal["raw", "encoded"]
_BLOCK = 64  # records per projection call
_POOL = 1000  # reference records the bootstrap streams are drawn from
_NULL_WINDOWS = 2000  # null windows behind the per-feature p-values (at least)
_MAX_NULL_WINDOWS = 50_000
_BANDWIDTH_SAMPLE = 1000
_CATEGORY_SHIFTS = 3
_TRANSPOSE_BLOCK = 64
_SINGLE_THREAD_MACS = 2**18  # OpenBLAS runs a GEMM of at most this many multiply-adds on one thread


@dataclass(frozen=True, slots=True)
class FeatureShift:
    """How one feature moved in a reported window, against the reference, in raw units.

    ``contribution`` is the feature's standardised shift in the window: for a numeric feature
    ``(window mean - reference mean) / (reference std / sqrt(window))``; for a categorical one,
    of the category (or the unseen bucket) whose share moved most, the signed root of its
    binomial likelihood-ratio statistic (a z-score when the window is large). ``p_value``
    is the share of null windows, drawn from the reference, whose ``|contribution|`` is at
    least this one's; ``rejected`` says the report is an alarm and this feature's
    Benjamini–Hochberg adjusted p-value is at most the detector's ``feature_alpha``.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    contribution: float
    p_value: float
    rejected: bool
    reference_mean: float | None = None
    window_mean: float | None = None
    reference_std: float | None = None
    window_std: float | None = None
    unseen_fraction: float | None = None
    reference_unseen_fraction: float | None = None
    category_shifts: tuple[CategoryShift, ...] = ()

    def describe_movement(self) -> str:
        """A few words on how the feature moved, for one-line summaries."""
        if self.kind == "numeric":
            ref_mean, win_mean = self.reference_mean or 0.0, self.window_mean or 0.0
            ref_std, win_std = self.reference_std or 0.0, self.window_std or 0.0
            mean_move = abs(win_mean - ref_mean) / max(ref_std, win_std, 1e-12)
            if abs(math.log((win_std + 1e-12) / (ref_std + 1e-12))) > mean_move:
                return f"{self.name} std {ref_std:.4g}→{win_std:.4g}"
            return f"{self.name} mean {ref_mean:.4g}→{win_mean:.4g}"
        unseen, was = self.unseen_fraction or 0.0, self.reference_unseen_fraction or 0.0
        top = self.category_shifts[0] if self.category_shifts else None
        if top is None or abs(unseen - was) >= abs(top.change):
            return f"{self.name}: unseen categories {was:.1%}→{unseen:.1%}"
        return (f"{self.name}: {top.category} {top.reference_fraction:.1%}"
                f"→{top.window_fraction:.1%}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "contribution": self.contribution,
                "p_value": self.p_value, "rejected": self.rejected,
                "reference_mean": self.reference_mean, "window_mean": self.window_mean,
                "reference_std": self.reference_std, "window_std": self.window_std,
                "unseen_fraction": self.unseen_fraction,
                "reference_unseen_fraction": self.reference_unseen_fraction,
                "category_shifts": [shift.to_dict() for shift in self.category_shifts]}


@dataclass(frozen=True)
class OnlineReference:
    """Feature map, calibration and attribution baseline of one reference."""

    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    vocab: tuple[tuple[str, ...], ...]
    n: int
    space: Space
    center: np.ndarray  # robust centre of each numeric feature (raw space)
    scale: np.ndarray  # robust scale of each numeric feature (raw space)
    frequencies: np.ndarray  # float32 [kernel_features / 2, d]
    quantum: float  # integer units per unit of a cos/sin feature
    mean_features: np.ndarray  # float64 [kernel_features]: the kernel mean embedding
    fit: RunLengthFit  # the alarm statistic's threshold and null
    classic: dict[str, Any]  # calibrated change-detector parameters (method != "mmd")
    numeric_mean: np.ndarray
    numeric_std: np.ndarray
    category_counts: tuple[np.ndarray, ...]  # per categorical feature, unknown bucket last
    feature_null: np.ndarray  # [null windows, features]: sorted |contribution| per column
    _derived: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Lay out once what every batch reads: frequencies by input column, category
        baselines side by side (``offsets`` into one flat axis), null keys for one search."""
        d = len(self.numeric_names) if self.space == "raw" else self.frequencies.shape[1]
        counts = np.concatenate([np.zeros(0, np.int64), *self.category_counts])
        expected = (counts + 0.5) / (self.n + 1.0)  # smoothed: a share of 0 stays finite
        null = self.feature_null
        # One sorted array for every feature's null: feature f's keys lie in [f, f + 1).
        keys = (np.arange(null.shape[1])[:, None] + _unit(null.T)).ravel()
        object.__setattr__(self, "_derived", {
            "dense": np.ascontiguousarray(self.frequencies[:, :d].T),
            "categorical": np.ascontiguousarray(self.frequencies[:, d:].T),
            "offsets": np.concatenate([[0], np.cumsum([c.size for c in self.category_counts])
                                       ]).astype(np.int64),
            "mean32": self.mean_features.astype(np.float32),
            "share": counts / self.n, "expected": expected, "log_expected": np.log(expected),
            "log_unexpected": np.log1p(-expected), "null_keys": keys})

    def matches(self, batch: FeatureBatch) -> bool:
        return ((batch.numeric_names, batch.categorical_names, batch.categorical_vocab)
                == (self.numeric_names, self.categorical_names, self.vocab)
                and (self.space == "raw" or batch.encoded.shape[1] == self.frequencies.shape[1]))

    # -- the statistic ---------------------------------------------------------------------------

    def inputs(self, numeric: np.ndarray, categorical: np.ndarray, encoded: np.ndarray
               ) -> np.ndarray:
        """float32 rows the kernel sees: robust-scaled, asinh-compressed numerics then one-hot
        categoricals (the unseen bucket a column of its own), or the encoder's rows."""
        if self.space == "encoded":
            return np.asarray(encoded, dtype=np.float32)
        widths = [len(v) + 1 for v in self.vocab]
        x = np.zeros((numeric.shape[0], numeric.shape[1] + sum(widths)), dtype=np.float32)
        x[:, : numeric.shape[1]] = np.arcsinh((numeric - self.center) / self.scale)
        start = numeric.shape[1]
        for j, width in enumerate(widths):
            x[np.arange(len(x)), start + categorical[:, j]] = 1.0
            start += width
        return x

    def features(self, numeric: np.ndarray, categorical: np.ndarray, encoded: np.ndarray
                 ) -> np.ndarray:
        """int32 ``[kernel_features, n]``: quantised ``cos``/``sin`` features, a column a record.

        One-hot columns are projected by picking each record's categories' frequencies (added
        in a fixed order); the dense part goes through BLAS in blocks of one shape, small
        enough that OpenBLAS keeps each call on one thread (threaded calls stall on a busy
        machine).
        """
        if self.space == "encoded":
            dense = np.asarray(encoded, dtype=np.float32)
        else:
            dense = np.arcsinh((numeric - self.center) / self.scale).astype(np.float32)
        n, d = dense.shape
        half = self.frequencies.shape[0]
        block = int(np.clip(_SINGLE_THREAD_MACS // (half * max(d, 1)), 1, 64))
        blocks = -(-n // block)
        padded = np.zeros((blocks * block, d), dtype=np.float32)
        padded[:n] = dense
        projection = np.matmul(padded.reshape(blocks, block, d),
                               self._derived["dense"]).reshape(-1, half)[:n]
        if self.space == "raw":
            by_category, offsets = self._derived["categorical"], self._derived["offsets"]
            for j in range(len(self.vocab)):
                projection += by_category[offsets[j] + categorical[:, j]]
        both = np.concatenate([np.cos(projection), np.sin(projection)], axis=1)
        rows = np.rint(both * np.float32(self.quantum)).astype(np.int32)
        columns = np.empty((2 * half, n), dtype=np.int32)
        for start in range(0, n, _TRANSPOSE_BLOCK):  # blockwise: a cache-friendly transpose
            columns[:, start:start + _TRANSPOSE_BLOCK] = rows[start:start + _TRANSPOSE_BLOCK].T
        return columns

    def window_mmd(self, features: np.ndarray, window: int) -> np.ndarray:
        """MMD² from the reference of every run of ``window`` consecutive columns.

        float32 is plenty for a distance between means of features in [-1, 1]; the gaps are
        summed along contiguous rows, whose (pairwise) order does not depend on how many rows
        there are.
        """
        # The first window's sum, then each next one by the entering minus the leaving
        # record: int32 arithmetic wraps, but every true window sum fits, so all are exact.
        sums = np.empty((features.shape[0], features.shape[1] - window + 1), dtype=np.int32)
        sums[:, 0] = features[:, :window].sum(axis=1, dtype=np.int32)
        np.cumsum(features[:, window:] - features[:, :-window], axis=1, dtype=np.int32,
                  out=sums[:, 1:])
        sums[:, 1:] += sums[:, :1]
        window_sums = np.ascontiguousarray(sums.T, dtype=np.float32)
        gap = self._derived["mean32"] - window_sums * np.float32(1.0 / (window * self.quantum))
        return (gap * gap).sum(axis=1, dtype=np.float64) / (self.mean_features.size / 2)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Each record's squared distance to the kernel mean embedding."""
        gap = features * (1.0 / self.quantum) - self.mean_features[:, None]
        return _column_sums(gap * gap) / (self.mean_features.size / 2)

    # -- attribution -------------------------------------------------------------------------------

    def contributions(self, numeric: np.ndarray, categorical: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Signed standardised shift per feature of windows ``[k, w, ...]``, and the windows'
        category shares (all categorical features side by side, ``offsets`` apart)."""
        k, w = numeric.shape[:2]
        derived = self._derived
        offsets, expected = derived["offsets"], derived["expected"]
        std = np.where(self.numeric_std > 0, self.numeric_std, 1e-12)
        z = (numeric.mean(axis=1) - self.numeric_mean) / (std / math.sqrt(w))
        if not self.category_counts:
            return z, np.zeros((k, 0))
        codes = (categorical + offsets[:-1]).reshape(k, -1) + offsets[-1] * np.arange(k)[:, None]
        share = np.bincount(codes.ravel(), minlength=k * offsets[-1]).reshape(k, -1) / w
        # Each category's binomial likelihood-ratio statistic, as a signed root (a z-score
        # scale): unlike a standardised share, one record of a rare category is no surge.
        inside = share * (np.log(np.where(share > 0, share, 1.0)) - derived["log_expected"])
        outside = (1 - share) * (np.log(np.where(share < 1, 1 - share, 1.0))
                                 - derived["log_unexpected"])
        signed = np.sign(share - expected) * np.sqrt(np.maximum(2 * w * (inside + outside), 0))
        high = np.maximum.reduceat(signed, offsets[:-1], axis=1)
        low = np.minimum.reduceat(signed, offsets[:-1], axis=1)
        return np.concatenate([z, np.where(high >= -low, high, low)], axis=1), share

    def explain(self, numeric: np.ndarray, categorical: np.ndarray, alarms: np.ndarray,
                feature_alpha: float) -> list[tuple[FeatureShift, ...]]:
        """Per window ``[k, w, ...]``, how each feature moved; features are named as moved
        (``rejected``) only in alarms."""
        contribution, share = self.contributions(numeric, categorical)
        k, n_features = contribution.shape
        n_null = self.feature_null.shape[0]
        query = (np.arange(n_features) + _unit(np.abs(contribution))).ravel()
        below = np.searchsorted(self._derived["null_keys"], query, side="left").reshape(k, -1)
        p_values = (1.0 + n_null * (np.arange(n_features) + 1) - below) / (1.0 + n_null)
        rejected = np.zeros(p_values.shape, dtype=bool)
        for alarm in np.flatnonzero(alarms):
            rejected[alarm] = adjust_p_values(p_values[alarm], "bh") <= feature_alpha
        # Python scalars in bulk (tolist) and positional arguments: reports come every
        # window, so building them is on the hot path.
        n_numeric = len(self.numeric_names)
        numeric_reference = list(zip(self.numeric_names, self.numeric_mean.tolist(),
                                     self.numeric_std.tolist(), strict=True))
        offsets, was = self._derived["offsets"], self._derived["share"]
        change = np.abs(share - was)
        # One row-wise sort for every feature: each feature's categories by falling change,
        # its unseen bucket after them (it is reported on its own).
        segment = np.repeat(np.arange(len(self.vocab)), np.diff(offsets)) * 3.0
        last = np.zeros(offsets[-1])
        last[offsets[1:] - 1] = 2.0
        order = np.argsort(segment + last + 1.0 - change, axis=1, kind="stable").tolist()
        offsets = offsets.tolist()
        categorical_moves = [
            (self.categorical_names[j], self.vocab[j], a, b)
            for j, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True))]
        was_list, share_list, change_list = was.tolist(), share.tolist(), change.tolist()
        out: list[tuple[FeatureShift, ...]] = []
        for r, (z, p, moved, means, stds) in enumerate(zip(
                contribution.tolist(), p_values.tolist(), rejected.tolist(),
                numeric.mean(axis=1).tolist(), numeric.std(axis=1).tolist(), strict=True)):
            row = [FeatureShift(name, "numeric", z[j], p[j], moved[j], mean, means[j], std,
                                stds[j])
                   for j, (name, mean, std) in enumerate(numeric_reference)]
            now, changed, ranked = share_list[r], change_list[r], order[r]
            for j, (name, vocab, a, b) in enumerate(categorical_moves):
                f = n_numeric + j
                top = [i for i in ranked[a:min(a + _CATEGORY_SHIFTS, b - 1)] if changed[i] > 0]
                row.append(FeatureShift(
                    name, "categorical", z[f], p[f], moved[f], unseen_fraction=now[b - 1],
                    reference_unseen_fraction=was_list[b - 1],
                    category_shifts=tuple(CategoryShift(vocab[i - a], was_list[i], now[i])
                                          for i in top)))
            out.append(tuple(row))
        return out

    # -- persistence -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, np.ndarray]:
        state = {
            "numeric_names": np.array(self.numeric_names, dtype=np.str_),
            "categorical_names": np.array(self.categorical_names, dtype=np.str_),
            "vocab_sizes": np.array([len(v) for v in self.vocab], dtype=np.int64),
            "vocab": np.array([c for v in self.vocab for c in v], dtype=np.str_),
            "n": np.asarray(self.n), "space": np.asarray(self.space),
            "center": self.center, "scale": self.scale, "frequencies": self.frequencies,
            "quantum": np.asarray(self.quantum), "mean_features": self.mean_features,
            "fit.threshold": np.asarray(self.fit.threshold),
            "fit.mean_run_length": np.asarray(self.fit.mean_run_length),
            "fit.horizon": np.asarray(self.fit.horizon),
            "fit.n_streams": np.asarray(self.fit.n_streams),
            "fit.null_statistics": self.fit.null_statistics,
            "numeric_mean": self.numeric_mean, "numeric_std": self.numeric_std,
            "category_counts": np.concatenate([np.zeros(0, np.int64), *self.category_counts]),
            "feature_null": self.feature_null,
        }
        state.update({f"classic.{k}": np.asarray(v) for k, v in self.classic.items()})
        return {key: np.array(value, copy=True) for key, value in state.items()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> OnlineReference:
        sizes = np.asarray(state["vocab_sizes"], dtype=np.int64)
        flat = [str(c) for c in np.asarray(state["vocab"]).tolist()]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        count_bounds = np.concatenate([[0], np.cumsum(sizes + 1)]).tolist()
        counts = np.asarray(state["category_counts"], dtype=np.int64)

        def spans(values: Any, edges: list[int]) -> tuple[Any, ...]:
            return tuple(values[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True))

        return cls(
            numeric_names=tuple(str(n) for n in np.asarray(state["numeric_names"]).tolist()),
            categorical_names=tuple(str(n) for n in
                                    np.asarray(state["categorical_names"]).tolist()),
            vocab=tuple(tuple(v) for v in spans(flat, bounds)), n=int(state["n"]),
            space="encoded" if str(state["space"]) == "encoded" else "raw",
            center=state["center"], scale=state["scale"],
            frequencies=np.asarray(state["frequencies"], dtype=np.float32),
            quantum=float(state["quantum"]), mean_features=state["mean_features"],
            fit=RunLengthFit(threshold=float(state["fit.threshold"]),
                             mean_run_length=float(state["fit.mean_run_length"]),
                             horizon=int(state["fit.horizon"]),
                             n_streams=int(state["fit.n_streams"]),
                             null_statistics=state["fit.null_statistics"]),
            classic={k[8:]: v.item() for k, v in state.items() if k.startswith("classic.")},
            numeric_mean=state["numeric_mean"], numeric_std=state["numeric_std"],
            category_counts=spans(counts, count_bounds), feature_null=state["feature_null"])


def fit_reference(reference: FeatureBatch, *, window: int, ert: float, method: str,
                  space: Space, kernel_features: int, calibration_streams: int, drift: float,
                  feature_alpha: float, seed: int) -> OnlineReference:
    """Feature map, calibrated threshold and attribution null for ``reference``, seeded so
    that a refit on the same reference gives the same detector."""
    rng = np.random.default_rng(seed)
    n = len(reference)
    center, scale = _robust_scale(reference.numeric)
    base = OnlineReference(
        numeric_names=reference.numeric_names, categorical_names=reference.categorical_names,
        vocab=reference.categorical_vocab, n=n, space=space, center=center, scale=scale,
        frequencies=np.zeros((0, 0), np.float32),
        # Window sums of ``window`` features must fit in int32 (float32 cos has 24 bits).
        quantum=2.0 ** min(24, 30 - math.ceil(math.log2(window))), mean_features=np.zeros(0),
        fit=RunLengthFit(0.0, 0.0, 0, 0, np.zeros(1)), classic={},
        numeric_mean=reference.numeric.mean(axis=0), numeric_std=reference.numeric.std(axis=0),
        category_counts=tuple(np.bincount(reference.categorical[:, j], minlength=len(v) + 1)
                              .astype(np.int64)
                              for j, v in enumerate(reference.categorical_vocab)),
        feature_null=np.zeros((0, 0)))
    sample = rng.choice(n, size=min(n, _BANDWIDTH_SAMPLE), replace=False)
    sample = base.inputs(reference.numeric[sample], reference.categorical[sample],
                         reference.encoded[sample])
    squared = squared_distances(sample, sample)[np.triu_indices(len(sample), k=1)]
    # The median heuristic as alibi-detect applies it: k(x, y) = exp(-|x - y|² / median |.|²).
    median = float(np.median(squared)) or float(squared.mean()) or 1.0
    frequencies = rng.normal(size=(kernel_features // 2, sample.shape[1]))
    base = replace(base, frequencies=(frequencies / math.sqrt(median / 2.0)).astype(np.float32))
    features = base.features(reference.numeric, reference.categorical, reference.encoded)
    base = replace(base, mean_features=features.sum(axis=1, dtype=np.int64)
                   / (n * base.quantum))
    if method == "mmd":
        fit, classic = _calibrate_mmd(base, features, window, ert, calibration_streams, rng), {}
    else:
        # Held out of the mean embedding, a reference record is as far from it as a new one.
        null_scores = (n / (n - 1.0)) ** 2 * base.scores(features)
        extra = {} if method == "adwin" else {"drift": drift}
        calibration = calibrate(method, null_scores, ert,  # type: ignore[arg-type]
                                n_streams=calibration_streams, seed=seed,
                                grace_period=window, **extra)
        fit, classic = calibration.fit, calibration.params
    # Enough null windows that the strongest of F features can pass Benjamini–Hochberg:
    # its p-value is at least 1 / (windows + 1) and must reach feature_alpha / F.
    n_features = len(reference.numeric_names) + len(reference.categorical_names)
    n_windows = min(_MAX_NULL_WINDOWS, max(_NULL_WINDOWS, math.ceil(
        4 * n_features / feature_alpha)))
    idx = rng.integers(0, n, size=(n_windows, window))
    null, _ = base.contributions(reference.numeric[idx], reference.categorical[idx])
    return replace(base, fit=fit, classic=classic, feature_null=np.sort(np.abs(null), axis=0))


def _unit(values: np.ndarray) -> np.ndarray:
    """A monotone map of ``[0, inf]`` into ``[0, 1)``, to put every feature's null in one
    sorted array (``feature + unit(value)``)."""
    return np.minimum(np.arctan(values) * (2.0 / math.pi), 1.0 - 2.0**-30)


def _column_sums(values: np.ndarray) -> np.ndarray:
    """Column sums by a fixed pairwise tree of row additions: the same bits for a column
    whatever the other columns (numpy's own reduction order depends on the array's shape)."""
    while values.shape[0] > 1:
        if values.shape[0] % 2:
            values = np.concatenate([values, np.zeros((1, values.shape[1]), values.dtype)])
        values = values[0::2] + values[1::2]
    return values[0]


def _robust_scale(numeric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR/1.349 per column; the standard deviation where the IQR is 0 (zero-inflated
    counts), 1 where the column is constant."""
    if numeric.shape[1] == 0:
        return np.zeros(0), np.ones(0)
    q25, center, q75 = np.percentile(numeric, [25, 50, 75], axis=0)
    std = numeric.std(axis=0)
    scale = np.where(q75 > q25, (q75 - q25) / 1.349, np.where(std > 0, std, 1.0))
    return center, scale


def _calibrate_mmd(reference: OnlineReference, features: np.ndarray, window: int, ert: float,
                   n_streams: int, rng: np.random.Generator) -> RunLengthFit:
    """Threshold of the window MMD² for a mean run length of ``ert`` records from a restart.

    Null streams are concatenated random permutations of a pool of reference records (a
    window never holds one record twice). With ``G`` the pool's Gram matrix in feature space
    and ``a`` each record's inner product with the mean embedding, a window's MMD² is
    ``|m|² - 2 mean(a) + mean(G over the window's pairs)``. A window's pair sum changes, as it
    slides, by the entering record's pairs with the ``w - 1`` before it minus the leaving
    record's with the ``w - 1`` after it: both are sums along the diagonal bands of ``G``, so
    every window of every stream costs ``w - 1`` gathers. Each window is held out of the mean
    embedding, as new records are: that scales its MMD² by ``(n / (n - w))²``.
    """
    n, half = features.shape[1], features.shape[0] / 2
    pool = rng.choice(n, size=min(n, _POOL), replace=False)
    pooled = features[:, pool].T / reference.quantum
    gram = (pooled @ pooled.T / half).astype(np.float32)
    flat_gram = gram.ravel()
    inner = pooled @ reference.mean_features / half
    norm = float(reference.mean_features @ reference.mean_features) / half
    held_out = (n / (n - window)) ** 2
    horizon = window + math.ceil(4 * ert)
    per_block = max(1, 500_000 // horizon)
    ends = np.arange(window - 1, horizon)

    def paths() -> Any:
        for start in range(0, n_streams, per_block):
            count = min(per_block, n_streams - start)
            order = np.broadcast_to(np.arange(pool.size, dtype=np.int32),
                                    (count, -(-horizon // pool.size), pool.size))
            idx = rng.permuted(order, axis=2).reshape(count, -1)[:, :horizon]
            entering = np.zeros((count, horizon))  # pairs with the w - 1 records before
            leaving = np.zeros((count, horizon))  # pairs with the w - 1 records after
            for lag in range(1, window):
                band = flat_gram.take(idx[:, lag:] * pool.size + idx[:, :-lag])
                entering[:, lag:] += band
                leaving[:, :-lag] += band
            diagonal = _prefix(np.diagonal(gram)[idx])
            pair_sums = (2.0 * (_prefix(entering)[:, ends + 1]
                                - _prefix(leaving)[:, ends + 1 - window])
                         + diagonal[:, ends + 1] - diagonal[:, ends + 1 - window])
            inner_sums = _prefix(inner[idx])
            stat = np.full((count, horizon), -np.inf)
            stat[:, window - 1:] = held_out * (
                norm - 2.0 * (inner_sums[:, ends + 1] - inner_sums[:, ends + 1 - window]) / window
                + pair_sums / window**2)
            yield stat

    return run_length_threshold(paths(), ert, seed=int(rng.integers(2**31)))


def _prefix(values: np.ndarray) -> np.ndarray:
    out = np.zeros((values.shape[0], values.shape[1] + 1))
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out
