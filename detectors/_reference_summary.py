"""The reference, summarised once so that a window test never touches its records again.

Numeric features keep their distinct sorted values with cumulative counts (one binary search
per window value gives both ECDFs), categorical features their counts per code; both
serialise to plain arrays (``to_state``/``from_state``) for state files without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors.base import FeatureBatch

__all__ = ["CategoricalReference", "NumericReference", "Summary", "SummarySchema", "count_codes"]


@dataclass(frozen=True)
class NumericReference:
    """Per numeric feature: distinct sorted reference values and how many records lie at or below.

    Flat arrays with ``offsets`` (feature ``j`` owns ``[offsets[j], offsets[j + 1])``) let the
    window test gather ECDF values for every feature in one vectorised step. Each feature's run
    starts with a ``-inf`` sentinel counting 0 records, so every search lands on a valid entry.
    Distinct values keep the binary searches short for the heavily tied features security data
    is full of.
    """

    values: np.ndarray  # float64, -inf then the distinct sorted values, per feature, concatenated
    count_upto: np.ndarray  # int64, reference records <= value
    count_below: np.ndarray  # int64, reference records < value
    offsets: np.ndarray  # int64 [n_features + 1]
    n: int
    mean: np.ndarray
    std: np.ndarray
    _feature_values: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounds = self.offsets.tolist()
        views = tuple(self.values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        object.__setattr__(self, "_feature_values", views)

    @classmethod
    def summarise(cls, numeric: np.ndarray) -> NumericReference:
        n, n_features = numeric.shape
        columns = np.sort(numeric.T, axis=1)
        columns = np.concatenate([np.full((n_features, 1), -np.inf), columns], axis=1)
        is_last_of_run = np.ones_like(columns, dtype=bool)
        is_last_of_run[:, :-1] = columns[:, 1:] != columns[:, :-1]
        is_first_of_run = np.ones_like(columns, dtype=bool)
        is_first_of_run[:, 1:] = is_last_of_run[:, :-1]
        # Position p in a padded row is record p - 1 of the sorted column.
        positions = np.broadcast_to(np.arange(n + 1, dtype=np.int64), columns.shape)
        per_feature = is_last_of_run.sum(axis=1)
        offsets = np.concatenate([[0], np.cumsum(per_feature)]).astype(np.int64)
        return cls(
            values=columns[is_last_of_run],
            count_upto=positions[is_last_of_run],
            count_below=np.maximum(positions[is_first_of_run] - 1, 0),
            offsets=offsets,
            n=int(n),
            mean=numeric.mean(axis=0) if n_features else np.zeros(0),
            std=numeric.std(axis=0) if n_features else np.zeros(0),
        )

    @property
    def n_features(self) -> int:
        return int(self.offsets.size - 1)

    def ks_statistics(self, window: np.ndarray) -> np.ndarray:
        """KS distance of each window column from its reference column.

        Both ECDFs are step functions, and between two consecutive window values the window
        ECDF is flat while the reference ECDF only rises, so the largest gap is found at a window
        value or just below one. Evaluating both ECDFs there (on and just below) needs one
        binary search per window value instead of a merge of both samples.
        """
        m = window.shape[0]
        columns = np.sort(window.T, axis=1)
        nearest = np.empty(columns.shape, dtype=np.int64)
        for j, (values, start) in enumerate(
            zip(self._feature_values, self.offsets.tolist()[:-1], strict=True)
        ):
            nearest[j] = np.searchsorted(values, columns[j], side="right") + (start - 1)
        ref_upto = self.count_upto[nearest]
        ref_below = np.where(self.values[nearest] == columns, self.count_below[nearest], ref_upto)
        win_below, win_upto = _run_bounds(columns)
        gap_at = np.abs(ref_upto / self.n - win_upto / m)
        gap_below = np.abs(ref_below / self.n - win_below / m)
        return np.maximum(gap_at.max(axis=1), gap_below.max(axis=1))

    def to_state(self) -> dict[str, np.ndarray]:
        return {
            "values": self.values,
            "count_upto": self.count_upto,
            "count_below": self.count_below,
            "offsets": self.offsets,
            "n": np.asarray(self.n),
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> NumericReference:
        return cls(
            values=np.asarray(state["values"], dtype=np.float64),
            count_upto=np.asarray(state["count_upto"], dtype=np.int64),
            count_below=np.asarray(state["count_below"], dtype=np.int64),
            offsets=np.asarray(state["offsets"], dtype=np.int64),
            n=int(state["n"]),
            mean=np.asarray(state["mean"], dtype=np.float64),
            std=np.asarray(state["std"], dtype=np.float64),
        )


def _run_bounds(sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of row-sorted data: how many row entries are below it, and at or below it."""
    m = sorted_rows.shape[1]
    positions = np.broadcast_to(np.arange(m, dtype=np.int64), sorted_rows.shape)
    starts_run = np.ones(sorted_rows.shape, dtype=bool)
    starts_run[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    ends_run = np.ones(sorted_rows.shape, dtype=bool)
    ends_run[:, :-1] = starts_run[:, 1:]
    below = np.maximum.accumulate(np.where(starts_run, positions, 0), axis=1)
    upto = np.minimum.accumulate(np.where(ends_run, positions + 1, m)[:, ::-1], axis=1)[:, ::-1]
    return below, upto


@dataclass(frozen=True)
class CategoricalReference:
    """Per categorical feature: reference counts of each code, unknown bucket last."""

    counts: np.ndarray  # int64, per feature len(vocab) + 1 counts, concatenated
    offsets: np.ndarray  # int64 [n_features + 1]
    n: int

    @classmethod
    def summarise(
        cls, codes: np.ndarray, vocab: tuple[tuple[str, ...], ...]
    ) -> CategoricalReference:
        offsets = np.concatenate([[0], np.cumsum([len(v) + 1 for v in vocab])]).astype(np.int64)
        return cls(counts=count_codes(codes, offsets), offsets=offsets, n=int(codes.shape[0]))

    def feature_counts(self, j: int) -> np.ndarray:
        return self.counts[self.offsets[j] : self.offsets[j + 1]]

    def to_state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "offsets": self.offsets, "n": np.asarray(self.n)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> CategoricalReference:
        return cls(
            counts=np.asarray(state["counts"], dtype=np.int64),
            offsets=np.asarray(state["offsets"], dtype=np.int64),
            n=int(state["n"]),
        )


def count_codes(codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Counts of every code of every feature in one bincount, by shifting each column's codes."""
    shifted = codes.astype(np.int64) + offsets[:-1]
    return np.bincount(shifted.ravel(), minlength=int(offsets[-1])).astype(np.int64)


# A reference's summaries, as a seasonal window's selection of it is summarised.
Summary = tuple[NumericReference, CategoricalReference]


@dataclass(frozen=True)
class SummarySchema:
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    categorical_vocab: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, batch: FeatureBatch) -> SummarySchema:
        return cls(batch.numeric_names, batch.categorical_names, batch.categorical_vocab)

    def matches(self, batch: FeatureBatch) -> bool:
        return (
            self.numeric_names == batch.numeric_names
            and self.categorical_names == batch.categorical_names
            and self.categorical_vocab == batch.categorical_vocab
        )

    def to_state(self) -> dict[str, np.ndarray]:
        return {
            "numeric_names": np.array(self.numeric_names, dtype=np.str_),
            "categorical_names": np.array(self.categorical_names, dtype=np.str_),
            "vocab_sizes": np.array([len(v) for v in self.categorical_vocab], dtype=np.int64),
            "vocab": np.array([c for v in self.categorical_vocab for c in v], dtype=np.str_),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> SummarySchema:
        sizes = np.asarray(state["vocab_sizes"], dtype=np.int64)
        flat = [str(c) for c in np.asarray(state["vocab"]).tolist()]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        vocab = tuple(tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        return cls(
            numeric_names=tuple(str(n) for n in np.asarray(state["numeric_names"]).tolist()),
            categorical_names=tuple(
                str(n) for n in np.asarray(state["categorical_names"]).tolist()
            ),
            categorical_vocab=vocab,
        )
