"""Pairwise Euclidean distances, the arithmetic several detectors share."""

from __future__ import annotations

import numpy as np

__all__ = ["distances", "squared_distances"]


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` squared distances in float64, clipped at 0 (rounding)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.maximum((a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` Euclidean distances in float64."""
    return np.sqrt(squared_distances(a, b))
