"""What the live model is adapted to: the labelled reference, split once, plus accepted labels.

The labelled reference records are divided, per class and with a fixed seed, into the part the
model enrols (``support``) and a held-out ``canary`` part that no model version ever sees in
training or enrolment: every candidate version is judged on it before it may go live. Classes
too small to spare a record stay whole in the support.

Analyst labels reach the support as the records they were given on: each incident keeps the
parsed fields of its example records, which are encoded again with the live encoder, so a
label means the same features whatever batch the record first arrived in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from agent.schema import Encoder
from detectors.base import FeatureBatch
from meta.live import SupportSet
from storage import LabelledRecord

MIN_CLASS_FOR_CANARY = 5


@dataclass(frozen=True)
class ReferenceSplit:
    """The labelled reference, divided into enrolment support and the canary set."""

    support: SupportSet
    canary: SupportSet
    unlabelled: int


def split_reference(reference: FeatureBatch, *, canary_fraction: float, seed: int
                    ) -> ReferenceSplit:
    """Divide the labelled reference records into support and canary, stratified by class."""
    if reference.labels is None:
        raise ValueError("the reference carries no labels; name the label field in "
                         "`schema.label`.")
    labels = np.array([None if v is None else str(v) for v in reference.labels], dtype=object)
    labelled = np.flatnonzero([v is not None and v != "" for v in labels])
    rng = np.random.default_rng(seed)
    canary_rows: list[np.ndarray] = []
    for label in sorted({str(labels[i]) for i in labelled}):
        rows = labelled[labels[labelled] == label]
        if rows.size < MIN_CLASS_FOR_CANARY:
            continue
        take = max(1, int(round(canary_fraction * rows.size)))
        canary_rows.append(np.sort(rng.choice(rows, take, replace=False)))
    canary = np.sort(np.concatenate(canary_rows)) if canary_rows else np.zeros(0, np.int64)
    support = np.setdiff1d(labelled, canary)
    return ReferenceSplit(support=_support_of(reference, labels, support),
                          canary=_support_of(reference, labels, canary),
                          unlabelled=int(len(labels) - labelled.size))


def _support_of(reference: FeatureBatch, labels: np.ndarray, rows: np.ndarray) -> SupportSet:
    return SupportSet(
        x=reference.encoded[rows], y=labels[rows].astype(str),
        origin=np.array([f"reference:{i}" for i in rows], dtype=str),
        numeric=reference.numeric[rows], categorical=reference.categorical[rows],
    )


def label_support(records: Sequence[LabelledRecord], encoder: Encoder) -> SupportSet:
    """The labelled records encoded with ``encoder``; records it refuses are left out."""
    width = encoder.dim
    n_numeric = len([f for f in encoder.schema.features if f.type == "numeric"])
    n_categorical = len([f for f in encoder.schema.features
                         if f.type in ("categorical", "boolean")])
    parts: list[SupportSet] = []
    for textual in (True, False):
        chosen = [r for r in records if r.textual == textual]
        if not chosen:
            continue
        encoded = encoder.encode([r.fields for r in chosen], textual=textual)
        kept = [r for r, ok in zip(chosen, encoded.ok, strict=True) if ok]
        if not kept:
            continue
        parts.append(SupportSet(
            x=encoded.x, y=np.array([r.label for r in kept], dtype=str),
            origin=np.array([f"label:{r.label_id}" for r in kept], dtype=str),
            numeric=encoded.features.numeric, categorical=encoded.features.categorical,
        ))
    if not parts:
        return SupportSet(x=np.zeros((0, width), np.float32), y=np.zeros(0, str),
                          origin=np.zeros(0, str), numeric=np.zeros((0, n_numeric)),
                          categorical=np.zeros((0, n_categorical), np.int32))
    support = parts[0]
    for part in parts[1:]:
        support = support.extend(part)
    order = np.argsort([int(o.split(":", 1)[1]) for o in support.origin], kind="stable")
    return support.take(order)


def labels_digest(records: Sequence[LabelledRecord]) -> list[list[Any]]:
    """What identifies the labels of a version: id, class and the record's content hash."""
    return [[r.label_id, r.label, record_fingerprint(r.fields)]
            for r in sorted(records, key=lambda r: r.label_id)]


def record_fingerprint(fields: dict[str, Any]) -> str:
    """sha256 of a record's parsed fields, as canonical JSON."""
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()
