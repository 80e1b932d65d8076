"""Canary evaluation: what a candidate model version must show before it may go live.

A version is judged on records it was never adapted to: the held-out canary part of the
labelled reference (known-class accuracy, and the share of benign canary records that would
raise an ``attack`` or ``novel`` finding), and the analyst labels accepted for earlier versions,
each classified with its own record left out of the memory (so a version that unlearned an
earlier label cannot hide behind remembering that very record). A candidate goes live only if
it is no worse than the version serving now by more than the configured margins; otherwise it
is rejected with the reasons, and the serving version stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from meta.live import AlertModel, SupportSet


@dataclass(frozen=True)
class CanaryReport:
    """One version's figures on the canary records."""

    known_accuracy: float
    benign_false_alarm_rate: float
    records: int
    benign_records: int
    earlier_label_accuracy: float | None = None
    earlier_labels: int = 0
    new_label_accuracy: float | None = None
    new_labels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CanaryLimits:
    max_known_drop: float
    max_benign_increase: float


def evaluate(model: AlertModel, canary: SupportSet, *, alpha: float,
             earlier_label_ids: set[int] | frozenset[int] = frozenset(),
             new_label_ids: set[int] | frozenset[int] = frozenset(),
             embeddings: np.ndarray | None = None) -> CanaryReport:
    """Figures of ``model`` on the canary set and, leave-one-out, on its analyst labels.

    A model's figures do not change, so they are computed once per model and kept in
    ``model.evaluations``: comparing a candidate with the serving version then costs one
    evaluation, not two. ``embeddings`` are the canary records' (``model.embed``), which
    every version built on the same learner shares.
    """
    key = f"canary:{id(canary)}:{alpha}"
    base = model.evaluations.get(key)
    if base is None:
        out = model.classify(canary.x, embeddings)
        predicted = np.asarray(out.predicted).astype(str)
        correct = predicted == canary.y
        benign = canary.y == model.benign_class
        alarms = out.novel(alpha) | (predicted != model.benign_class)
        base = (float(correct.mean()) if correct.size else 1.0,
                float(alarms[benign].mean()) if benign.any() else 0.0,
                int(len(canary)), int(benign.sum()))
        model.evaluations[key] = base
    earlier_accuracy, n_earlier = _label_accuracy(model, earlier_label_ids)
    new_accuracy, n_new = _label_accuracy(model, new_label_ids)
    return CanaryReport(
        known_accuracy=base[0], benign_false_alarm_rate=base[1], records=base[2],
        benign_records=base[3], earlier_label_accuracy=earlier_accuracy,
        earlier_labels=n_earlier, new_label_accuracy=new_accuracy, new_labels=n_new,
    )


def _label_accuracy(model: AlertModel, label_ids: set[int] | frozenset[int]
                    ) -> tuple[float | None, int]:
    """Share of the labelled records the model names right with the record left out."""
    if not label_ids:
        return None, 0
    known: dict[int, bool] = model.evaluations.setdefault("labels", {})
    # Label rows are few among thousands of reference rows: find them once per model.
    labelled = model.evaluations.get("label_rows")
    if labelled is None:
        rows = np.flatnonzero(np.char.startswith(model.support.origin, "label:"))
        labelled = [(int(i), int(model.support.origin[i][6:])) for i in rows]
        model.evaluations["label_rows"] = labelled
    missing = [(i, label_id) for i, label_id in labelled
               if label_id in label_ids and label_id not in known]
    if missing:
        rows = np.array([i for i, _ in missing])
        out = model.classify(model.support.x[rows], exclude=rows)
        right = np.asarray(out.predicted).astype(str) == model.support.y[rows]
        known.update({label_id: bool(ok) for (_, label_id), ok in zip(missing, right,
                                                                        strict=True)})
    scored = [known[i] for i in label_ids if i in known]
    if not scored:
        return None, 0
    return float(np.mean(scored)), len(scored)


def failed_limits(candidate: CanaryReport, serving: CanaryReport | None,
                  limits: CanaryLimits) -> list[str]:
    """Why ``candidate`` may not replace ``serving`` (empty: it may)."""
    if serving is None:
        return []
    reasons = []
    drop = serving.known_accuracy - candidate.known_accuracy
    if drop > limits.max_known_drop:
        reasons.append(
            f"known-class accuracy on the canary set fell from {serving.known_accuracy:.1%} to "
            f"{candidate.known_accuracy:.1%} (limit: {limits.max_known_drop:.1%} lower)")
    rise = candidate.benign_false_alarm_rate - serving.benign_false_alarm_rate
    if rise > limits.max_benign_increase:
        reasons.append(
            f"benign false-alarm rate on the canary set rose from "
            f"{serving.benign_false_alarm_rate:.2%} to {candidate.benign_false_alarm_rate:.2%} "
            f"(limit: {limits.max_benign_increase:.2%} higher)")
    if (candidate.earlier_label_accuracy is not None
            and serving.earlier_label_accuracy is not None):
        fall = serving.earlier_label_accuracy - candidate.earlier_label_accuracy
        if fall > limits.max_known_drop:
            reasons.append(
                f"accuracy on earlier accepted labels fell from "
                f"{serving.earlier_label_accuracy:.1%} to {candidate.earlier_label_accuracy:.1%}"
                f" (limit: {limits.max_known_drop:.1%} lower)")
    return reasons
