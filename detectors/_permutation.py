"""Permutation tests computed batch by batch, with exact p-values and early stopping.

Both multivariate drift tests (:mod:`detectors._kernels`, :mod:`detectors.classifier_drift`)
compare a window with a reference sample by relabelling the pooled records: under no drift the
pool is exchangeable, so the observed statistic ranks uniformly among those of random
relabellings, whatever the statistic. The relabellings are drawn from a seed and the sizes only
(never from the data or the stream position), so the same records get the same p-value however
the stream was batched, and they are evaluated in fixed batches so that the arithmetic, too,
is the same every time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = ["permutation_batches", "permutation_subsets", "sequential_p_value"]

_BATCH_ROWS = 256  # relabellings per batch


@functools.lru_cache(maxsize=8)
def permutation_subsets(n: int, m: int, permutations: int, seed: int) -> np.ndarray:
    """``int32 [1 + permutations, m]``: pool positions of the window, observed first.

    The pool is ``n`` reference records followed by ``m`` window records; each further row is
    a uniformly random ``m``-subset, drawn from ``seed`` and the sizes only.
    """
    rng = np.random.default_rng([seed, n, m])
    keys = rng.random((permutations, n + m))
    random_sets = np.argpartition(keys, m - 1, axis=1)[:, :m]
    observed = np.arange(n, n + m)[None, :]
    subsets = np.concatenate([observed, np.sort(random_sets, axis=1)]).astype(np.int32)
    subsets.setflags(write=False)
    return subsets


def permutation_batches(rows: int) -> list[slice]:
    """The batches ``1 + P`` relabellings (the observed one first) are computed in."""
    return [slice(start, min(rows, start + _BATCH_ROWS)) for start in range(0, rows, _BATCH_ROWS)]


def sequential_p_value(statistics: Callable[[int], np.ndarray], n_batches: int,
                       permutations: int, alpha: float) -> tuple[float, float]:
    """``(observed statistic, p-value)`` of a permutation test, batch by batch.

    ``statistics(i)`` gives batch ``i`` of the statistics (batch 0 starts with the observed
    one; see :func:`permutation_batches`). Besag and Clifford's sequential rule (1991):
    relabellings are drawn until ``h`` of them reach the observed statistic, or all ``P`` were
    drawn. Stopped after ``l`` relabellings the p-value is ``h / l``, otherwise
    ``(1 + g) / (1 + P)`` with ``g < h`` exceedances; both are exact p-values. With
    ``h = floor(alpha (P + 1)) + 1`` a stopped test has ``p > alpha``, so the decision is the one
    all ``P`` relabellings would give, while a window like the reference usually stops after
    the first batch: the relabellings are spent where their number decides, near and past the
    threshold.
    """
    stop_at = int(np.floor(alpha * (permutations + 1))) + 1
    observed, exceeded, drawn = 0.0, 0, 0
    for batch in range(n_batches):
        values = statistics(batch)
        if batch == 0:
            observed, values = float(values[0]), values[1:]
        hits = np.flatnonzero(values >= observed)
        if exceeded + hits.size >= stop_at:
            drawn += int(hits[stop_at - exceeded - 1]) + 1
            return observed, stop_at / drawn
        exceeded, drawn = exceeded + hits.size, drawn + values.size
    return observed, (exceeded + 1) / (permutations + 1)
