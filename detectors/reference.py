"""How a window detector's reference may move: fixed, rolling under a speed cap, or approved.

Windows are tested against a reference; on a stream whose normal behaviour drifts (load that
grows, prices that follow the seasons) a fixed reference turns every window into a false
alarm. Two ways out, both bounded so that moving the reference cannot become the attack:

* **rolling** — the reference follows the stream with windows that raised no alarm. Each
  accepted window may replace at most ``follow_rate`` of the reference (``last_n``: the oldest
  records go; ``reservoir``: a uniform sample of everything accepted so far, slowed by the
  same cap), so a shift faster than the cap stays ahead of the reference and is tested against
  it. And the rolling reference is itself watched: when it would move further than
  ``anchor_limit`` (KS or total-variation distance, per feature) from its anchor — the last
  reference a person or the configuration vouched for — it stops following and the agent
  raises a ``reference_drift`` incident, so slow poisoning of the reference is detected.
* **approved** — an analyst labels a drift incident ``benign_drift``; its window's records
  join the reference as a new version (the newest ``max_records`` records are kept).

This module is pure numpy over :class:`~detectors.base.FeatureBatch`: what to keep and how to
store it (``pack``/``unpack``, an npz archive without pickle, checked by sha256). Where
versions are kept and when they are applied is the agent's business (:mod:`agent.references`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detectors.base import FeatureBatch, FeatureSchemaError

__all__ = [
    "AnchorDistance",
    "RollingPolicy",
    "anchor_distance",
    "merge_approved",
    "pack",
    "summarise",
    "unpack",
]

_FORMAT = 1


def pack(batch: FeatureBatch) -> tuple[bytes, str]:
    """An npz archive of the records (no pickle) and its sha256."""
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {
        "format": np.asarray(_FORMAT),
        "numeric": batch.numeric,
        "categorical": batch.categorical,
        "encoded": batch.encoded,
        "numeric_names": np.array(batch.numeric_names, dtype=np.str_),
        "categorical_names": np.array(batch.categorical_names, dtype=np.str_),
        "vocab_sizes": np.array([len(v) for v in batch.categorical_vocab], dtype=np.int64),
        "vocab": np.array([c for v in batch.categorical_vocab for c in v], dtype=np.str_),
    }
    if batch.times is not None:
        arrays["times"] = batch.times
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def unpack(data: bytes, like: FeatureBatch) -> FeatureBatch:
    """Records packed by :func:`pack`, refused unless their schema is ``like``'s.

    A version stored under another encoder (features renamed, a vocabulary refitted) would
    have its codes read as other categories; refusing it keeps the detectors honest.
    """
    with np.load(io.BytesIO(data), allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    if int(arrays["format"]) != _FORMAT:
        raise ValueError(f"reference archive format {int(arrays['format'])} is not {_FORMAT}.")
    sizes = arrays["vocab_sizes"].astype(np.int64)
    flat = [str(c) for c in arrays["vocab"].tolist()]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
    vocab = tuple(tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    names = (tuple(str(n) for n in arrays["numeric_names"].tolist()),
             tuple(str(n) for n in arrays["categorical_names"].tolist()))
    if (names != (like.numeric_names, like.categorical_names) or vocab != like.categorical_vocab
            or arrays["encoded"].shape[1] != like.encoded.shape[1]):
        raise FeatureSchemaError("the stored reference was made with other features or "
                                 "vocabularies than the encoder's; roll back or start afresh.")
    return FeatureBatch(numeric=arrays["numeric"], numeric_names=like.numeric_names,
                        categorical=arrays["categorical"],
                        categorical_names=like.categorical_names,
                        categorical_vocab=like.categorical_vocab, encoded=arrays["encoded"],
                        times=arrays.get("times"))


def summarise(batch: FeatureBatch) -> dict[str, Any]:
    """What ``metasentry reference show`` prints: size and per-feature centre and spread."""
    numeric = {
        name: {"mean": float(batch.numeric[:, j].mean()), "std": float(batch.numeric[:, j].std())}
        for j, name in enumerate(batch.numeric_names)
    } if len(batch) else {}
    categorical: dict[str, dict[str, float]] = {}
    for j, name in enumerate(batch.categorical_names):
        vocab = (*batch.categorical_vocab[j], "<unknown>")
        counts = np.bincount(batch.categorical[:, j], minlength=len(vocab))
        top = np.argsort(-counts, kind="stable")[:5]
        categorical[name] = {vocab[i]: float(counts[i] / max(len(batch), 1))
                             for i in top if counts[i]}
    return {"n_records": len(batch), "numeric": numeric, "categorical": categorical}


@dataclass(frozen=True)
class AnchorDistance:
    """How far a proposed reference lies from its anchor: the worst feature and its distance."""

    feature: str
    distance: float
    movement: str

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "distance": self.distance, "movement": self.movement}


def anchor_distance(anchor: FeatureBatch, proposal: FeatureBatch) -> AnchorDistance:
    """The largest per-feature KS (numeric) or total-variation (categorical) distance."""
    best = AnchorDistance(feature="", distance=0.0, movement="")
    for j, name in enumerate(anchor.numeric_names):
        a, b = np.sort(anchor.numeric[:, j]), np.sort(proposal.numeric[:, j])
        grid = np.concatenate([a, b])
        gap = np.abs(np.searchsorted(a, grid, side="right") / a.size
                     - np.searchsorted(b, grid, side="right") / b.size)
        distance = float(gap.max()) if gap.size else 0.0
        if distance > best.distance:
            best = AnchorDistance(name, distance,
                                  f"{name} mean {a.mean():.4g}→{b.mean():.4g}, "
                                  f"std {a.std():.4g}→{b.std():.4g}")
    for j, name in enumerate(anchor.categorical_names):
        size = len(anchor.categorical_vocab[j]) + 1
        share_a = np.bincount(anchor.categorical[:, j], minlength=size) / max(len(anchor), 1)
        share_b = np.bincount(proposal.categorical[:, j], minlength=size) / max(len(proposal), 1)
        distance = 0.5 * float(np.abs(share_a - share_b).sum())
        if distance > best.distance:
            moved = int(np.argmax(np.abs(share_a - share_b)))
            category = (*anchor.categorical_vocab[j], "<unknown>")[moved]
            best = AnchorDistance(name, distance, f"{name}: {category} "
                                  f"{share_a[moved]:.1%}→{share_b[moved]:.1%}")
    return best


@dataclass(frozen=True)
class RollingPolicy:
    """How fast, and how far, a rolling reference may follow the stream.

    ``follow_rate`` caps the share of the reference one accepted window may replace;
    ``anchor_limit`` caps how far (per-feature KS or total-variation distance) the reference
    may end up from its anchor before following stops and a person is asked.
    """

    follow_rate: float = 0.05
    anchor_limit: float = 0.3
    strategy: Literal["last_n", "reservoir"] = "last_n"

    def __post_init__(self) -> None:
        if not 0.0 < self.follow_rate <= 1.0:
            raise ValueError(f"follow_rate must be in (0, 1], got {self.follow_rate!r}.")
        if not 0.0 < self.anchor_limit <= 1.0:
            raise ValueError(f"anchor_limit must be in (0, 1], got {self.anchor_limit!r}.")
        if self.strategy not in ("last_n", "reservoir"):
            raise ValueError(f"strategy must be last_n or reservoir, got {self.strategy!r}.")

    def follow(self, reference: FeatureBatch, accepted: FeatureBatch, *, accepted_before: int,
               seed: int) -> FeatureBatch:
        """The reference after one accepted window's new records (``accepted``).

        ``accepted_before`` counts the records accepted into this reference before (the
        reservoir's sampling probability); ``seed`` makes the choice reproducible, so a
        restarted agent that re-tests the same window makes the same reference.
        """
        n = len(reference)
        cap = max(1, int(self.follow_rate * n))
        if len(accepted) == 0:
            return reference
        rng = np.random.default_rng(seed)
        if self.strategy == "last_n":
            take = np.linspace(0, len(accepted) - 1, num=min(cap, len(accepted))).round()
            chosen = accepted.take(np.unique(take.astype(np.int64)))
            keep = reference.take(slice(len(chosen), None))
            return FeatureBatch.concat([keep, chosen])
        seen = accepted_before + np.arange(1, len(accepted) + 1) + n
        kept = np.flatnonzero(rng.random(len(accepted)) < n / seen)[:cap]
        if kept.size == 0:
            return reference
        slots = rng.choice(n, size=kept.size, replace=False)
        return _replace_rows(reference, slots, accepted.take(kept))


def _replace_rows(batch: FeatureBatch, slots: np.ndarray, rows: FeatureBatch) -> FeatureBatch:
    """``batch`` with the records at ``slots`` replaced by ``rows`` (the others stay put)."""
    arrays: dict[str, Any] = {}
    for name in ("numeric", "categorical", "encoded", "times"):
        current, new = getattr(batch, name), getattr(rows, name)
        if current is None or new is None:
            continue
        copy = np.array(current, copy=True)
        copy[slots] = new
        arrays[name] = copy
    return dataclasses.replace(batch, **arrays)


def merge_approved(reference: FeatureBatch, window: FeatureBatch,
                   max_records: int) -> FeatureBatch:
    """The reference with an approved window's records added; the newest ``max_records`` kept."""
    merged = FeatureBatch.concat([reference, window])
    if len(merged) > max_records:
        merged = merged.take(slice(len(merged) - max_records, None))
    return merged
