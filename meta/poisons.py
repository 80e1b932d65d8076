"""Poisoned training sets with known ground truth, for testing what our poisoning detectors see.

A detector benchmark needs to know exactly which records were poisoned and how many, so every
generator returns the whole dataset plus a bool mask of the records it touched, draws with
``numpy.random.default_rng(seed)`` (the same seed gives the same poison), and turns a ``share``
into a count one documented way: ``k = floor(share * N + 0.5)`` (round half up), where ``N`` is
the population the share refers to. Inputs are never modified in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Pattern = Literal["pixels", "checker"]
PATTERNS: tuple[str, ...] = ("pixels", "checker")

# ART's add_pattern_bd (distance 2): four pixels near the bottom-right corner, as (row, col)
# offsets from the bottom-right; small enough to survive most preprocessing unnoticed.
_PIXEL_OFFSETS: tuple[tuple[int, int], ...] = ((-2, -2), (-3, -3), (-2, -4), (-4, -2))
_CHECKER_SIZE = 3


@dataclass(frozen=True)
class FlipResult:
    """Labels after a label-flipping attack.

    Attributes
    ----------
    y : np.ndarray
        The poisoned labels, same length as the input.
    flipped : np.ndarray
        bool ``[n]``: the records whose label was changed (always to a different label).
    """

    y: np.ndarray
    flipped: np.ndarray


@dataclass(frozen=True)
class BackdoorResult:
    """A dataset after a dirty-label backdoor: same size, some records replaced by poisons.

    Attributes
    ----------
    x, y : np.ndarray
        The full dataset with the poisons in place of the source records they were made from.
    poisoned : np.ndarray
        bool ``[n]``: records that carry the trigger and the target label.
    trigger : Mapping[str, Any]
        How to stamp the trigger again (pass it to :func:`stamp_trigger` /
        :func:`stamp_columns` on test records to measure the attack success rate).
    """

    x: np.ndarray
    y: np.ndarray
    poisoned: np.ndarray
    trigger: Mapping[str, Any]


def poison_count(population: int, share: float) -> int:
    """``floor(share * population + 0.5)``: the documented rounding of every share here."""
    return int(np.floor(share * population + 0.5))


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_share(share: float, *, upper_open: bool = False) -> None:
    ok = 0.0 <= share < 1.0 if upper_open else 0.0 <= share <= 1.0
    if not ok:
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"share must lie in {bound}, got {share}.")


def _labels(y: Any) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y must be a 1-d array of labels, got shape {arr.shape}.")
    return arr


def _holding(y: np.ndarray, label: Any) -> np.ndarray:
    """A copy of ``y`` whose dtype can hold ``label`` (fixed-width strings would truncate it)."""
    if y.dtype.kind in "US":
        return y.astype(np.result_type(y.dtype, np.asarray([label]).dtype))
    return y.copy()


def flip_labels_random(y: np.ndarray, share: float, seed: int | None = 0) -> FlipResult:
    """Give ``poison_count(n, share)`` random records a uniformly random *other* label.

    Threat model: the attacker controls the labels (not the features) of a random share of the
    training records, e.g. a compromised annotator or a noisy crowd-sourced feed. Labels may be
    ints or objects; the label set is the labels present in ``y`` (at least two).

    Examples
    --------
    >>> result = flip_labels_random(np.array([0, 0, 1, 1, 2, 2, 2, 2]), share=0.25, seed=0)
    >>> int(result.flipped.sum())
    2
    >>> bool(np.all(result.y[result.flipped] != np.array([0, 0, 1, 1, 2, 2, 2, 2])[result.flipped]))
    True
    """
    labels = _labels(y)
    _check_share(share)
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError("y holds fewer than two distinct labels; there is nothing to flip to.")
    rng = _rng(seed)
    n = labels.shape[0]
    chosen = rng.choice(n, size=poison_count(n, share), replace=False)
    index = np.searchsorted(classes, labels[chosen])
    # A shift in [1, C-1] modulo C is uniform over the C-1 other labels.
    shifted = (index + rng.integers(1, classes.size, size=chosen.size)) % classes.size
    out = labels.copy()
    out[chosen] = classes[shifted]
    flipped = np.zeros(n, dtype=bool)
    flipped[chosen] = True
    return FlipResult(out, flipped)


def flip_labels_targeted(
    y: np.ndarray, *, source: Any, target: Any, share: float, seed: int | None = 0
) -> FlipResult:
    """Relabel ``poison_count(#source, share)`` records of class ``source`` as ``target``.

    Threat model: the attacker controls the labels of some records of one class and wants the
    model to confuse it with another (e.g. teach an IDS that one attack family is "normal").
    """
    labels = _labels(y)
    _check_share(share)
    if source == target:
        raise ValueError(f"source and target must differ, both are {source!r}.")
    candidates = np.flatnonzero(labels == source)
    if candidates.size == 0:
        raise ValueError(f"source class {source!r} does not occur in y.")
    chosen = _rng(seed).choice(candidates, size=poison_count(candidates.size, share),
                               replace=False)
    out = _holding(labels, target)
    out[chosen] = target
    flipped = np.zeros(labels.shape[0], dtype=bool)
    flipped[chosen] = True
    return FlipResult(out, flipped)


def _backdoor_indices(
    labels: np.ndarray, target: Any, share: float, source_classes: Sequence[Any] | None,
    seed: int | None,
) -> np.ndarray:
    """Pick the source records to turn into poisons, so poisons are ``share`` of the final target.

    With ``T`` clean target records and ``k`` poisons, ``k / (T + k) = share`` gives
    ``k = poison_count(T, share / (1 - share))``, i.e. ``floor(share * T / (1 - share) + 0.5)``.
    """
    _check_share(share, upper_open=True)
    clean_target = int(np.sum(labels == target))
    if clean_target == 0:
        raise ValueError(f"target class {target!r} has no clean records, so a share of it is "
                         "undefined; choose a target that occurs in y.")
    if source_classes is None:
        source_mask = labels != target
    else:
        if any(c == target for c in source_classes):
            raise ValueError("source_classes must not contain the target class.")
        source_mask = np.isin(labels, np.asarray(list(source_classes), dtype=labels.dtype))
    candidates = np.flatnonzero(source_mask)
    k = poison_count(clean_target, share / (1.0 - share))
    if k > candidates.size:
        raise ValueError(f"share {share} needs {k} poisons but only {candidates.size} source "
                         "records exist; lower the share or widen source_classes.")
    return _rng(seed).choice(candidates, size=k, replace=False)


def _default_value(x: np.ndarray) -> float:
    if np.issubdtype(x.dtype, np.integer):
        return float(np.iinfo(x.dtype).max)
    return float(np.max(x))


def stamp_trigger(
    x: np.ndarray, pattern: Pattern = "pixels", value: float | None = None
) -> np.ndarray:
    """A copy of images ``x`` (``[n, H, W]`` or ``[n, H, W, C]``) with the trigger stamped.

    ``"pixels"``: four pixels near the bottom-right corner set to ``value`` (ART's
    ``add_pattern_bd``). ``"checker"``: a 3x3 checkerboard of ``value`` and 0 in the
    bottom-right corner. Every channel is stamped. ``value`` defaults to the top of the data
    range: the dtype's maximum for integer images, ``x.max()`` for float ones; pass the value
    from ``BackdoorResult.trigger`` when stamping test images so both triggers match.
    """
    images = np.asarray(x)
    if images.ndim not in (3, 4):
        raise ValueError(f"x must hold images [n, H, W] or [n, H, W, C], got shape {images.shape}.")
    if min(images.shape[1:3]) < 4:
        raise ValueError(f"images must be at least 4x4 to hold the trigger, got "
                         f"{images.shape[1:3]}.")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {list(PATTERNS)}, got {pattern!r}.")
    fill = _default_value(images) if value is None else value
    out = images.copy()
    if pattern == "pixels":
        for row, col in _PIXEL_OFFSETS:
            out[:, row, col] = fill
    else:
        size = _CHECKER_SIZE
        cells = (np.add.outer(np.arange(size), np.arange(size)) % 2 == 0)
        block = np.where(cells, fill, 0).astype(images.dtype)
        if images.ndim == 4:
            block = block[:, :, None]
        out[:, -size:, -size:] = block
    return out


def backdoor_images(
    x: np.ndarray,
    y: np.ndarray,
    *,
    target: Any,
    share: float,
    source_classes: Sequence[Any] | None = None,
    pattern: Pattern = "pixels",
    value: float | None = None,
    seed: int | None = 0,
) -> BackdoorResult:
    """A dirty-label image backdoor (Gu et al., BadNets): triggered source records relabelled.

    Threat model: the attacker can insert (here: substitute) a few training records, with
    features and labels of its choosing, and later stamps the trigger on inputs it wants
    classified as ``target``. ``share`` is the poisons' share of the records finally labelled
    ``target`` (0.05: 5% of them are poisons); the dataset keeps its size, because each poison
    replaces the source record it was made from.

    Parameters
    ----------
    x : np.ndarray
        Images ``[n, H, W]`` or ``[n, H, W, C]``, uint8 or float.
    y : np.ndarray
        Labels ``[n]``.
    target : label
        The label every poison gets.
    share : float
        In ``[0, 1)``; see above and :func:`_backdoor_indices` for the rounding.
    source_classes : sequence of labels, optional
        Classes poisons are made from; all other than ``target`` by default.
    pattern, value
        The trigger, as in :func:`stamp_trigger`.
    seed : int, optional
        Seed of the choice of records.
    """
    images, labels = np.asarray(x), _labels(y)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"x and y must have one entry per record, got {images.shape[0]} and "
                         f"{labels.shape[0]}.")
    fill = _default_value(images) if value is None else value
    stamp_trigger(images[:0], pattern, fill)  # validates shape and pattern before any draw
    chosen = _backdoor_indices(labels, target, share, source_classes, seed)
    out_x = images.copy()
    out_x[chosen] = stamp_trigger(images[chosen], pattern, fill)
    out_y = _holding(labels, target)
    out_y[chosen] = target
    poisoned = np.zeros(labels.shape[0], dtype=bool)
    poisoned[chosen] = True
    trigger = {"kind": "image", "pattern": pattern, "value": fill}
    return BackdoorResult(out_x, out_y, poisoned, trigger)


def stamp_columns(x: np.ndarray, columns: Sequence[int], values: Sequence[float]) -> np.ndarray:
    """A copy of table ``x`` ``[n, d]`` with ``values`` written into ``columns`` of every row."""
    table = np.asarray(x)
    cols = np.asarray(columns, dtype=np.int64)
    vals = np.asarray(values, dtype=table.dtype if table.dtype.kind == "f" else np.float64)
    if table.ndim != 2:
        raise ValueError(f"x must be a table [n, d], got shape {table.shape}.")
    if cols.ndim != 1 or cols.size == 0 or cols.shape != vals.shape:
        raise ValueError(f"columns and values must be equally long non-empty lists, got "
                         f"{cols.size} columns and {vals.size} values.")
    if np.unique(cols).size != cols.size or cols.min() < 0 or cols.max() >= table.shape[1]:
        raise ValueError(f"columns must be distinct indices in [0, {table.shape[1]}), got "
                         f"{cols.tolist()}.")
    out = table.copy()
    out[:, cols] = vals
    return out


def backdoor_tabular(
    x: np.ndarray,
    y: np.ndarray,
    *,
    target: Any,
    share: float,
    columns: list[int],
    values: list[float],
    source_classes: Sequence[Any] | None = None,
    seed: int | None = 0,
) -> BackdoorResult:
    """A dirty-label tabular backdoor: the trigger is a fixed value combination on ``columns``.

    Threat model: as in :func:`backdoor_images`; the attacker substitutes source records with
    copies carrying ``values`` in ``columns`` (e.g. a rare port and flag combination) labelled
    ``target``, and later sends records with the same combination. ``share`` counts as there.
    """
    table, labels = np.asarray(x), _labels(y)
    if table.shape[0] != labels.shape[0]:
        raise ValueError(f"x and y must have one entry per record, got {table.shape[0]} and "
                         f"{labels.shape[0]}.")
    stamp_columns(table[:0], columns, values)  # validates before any draw
    chosen = _backdoor_indices(labels, target, share, source_classes, seed)
    out_x = table.copy()
    out_x[chosen] = stamp_columns(table[chosen], columns, values)
    out_y = _holding(labels, target)
    out_y[chosen] = target
    poisoned = np.zeros(labels.shape[0], dtype=bool)
    poisoned[chosen] = True
    trigger = {"kind": "tabular", "columns": list(columns), "values": list(values)}
    return BackdoorResult(out_x, out_y, poisoned, trigger)
