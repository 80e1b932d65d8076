"""Screening analyst labels before they teach the model: feedback is an attack surface.

A label that teaches the model something false is a planted training record: an insider (or a
careless analyst) who labels attack records ``benign`` teaches the agent to wave that attack
through. Every new label is checked before it is used, and held (with the reason, until
``metasentry labels release ID``) when:

* **another actor labelled the same record differently** — the label from the actor with the
  lower agreement score is held (both, when they are level);
* **its neighbours contradict it** — most of its nearest labelled records (the model's support
  set and other actors' pending labels), in the model's representation *and* in the raw
  encoded features, carry one other class, and the record sits well inside that class (closer
  to it than most of the class's own records are to each other). A record far from everything
  labelled is a new kind of record and any label may teach it; a record deep inside the
  ``normal`` cloud labelled as a new attack class, or deep inside an attack class labelled
  ``benign``, is not. For kinds of record the reference never held, the analyst labels close
  by (used ones, and other actors' pending ones) decide: two thirds of them saying another
  class holds the label;
* **its actor's agreement score is low** — once an actor has had ``min_actor_labels`` labels
  screened, one whose labels passed less often than ``min_actor_agreement`` has the rest held
  (a labeller answering at random is stopped after a few labels).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.config import ScreeningConfig
from detectors.label_consistency import neighbour_votes
from meta.live import AlertModel

log = logging.getLogger(__name__)

_INSIDE_QUANTILE = 0.75  # "well inside a class": closer than 3 in 4 of its records are
_MIN_FEEDBACK_NEIGHBOURS = 2  # analyst labels close by needed before they can outvote a label


@dataclass(frozen=True)
class Candidate:
    """One label awaiting screening, with its encoded record."""

    label_id: int
    label: str
    actor: str
    record_id: int
    x: np.ndarray  # encoded record (model input)
    released: bool = False


@dataclass(frozen=True)
class ScreeningResult:
    accepted: tuple[int, ...]
    held: dict[int, str]
    actor_agreement: dict[str, float] = field(default_factory=dict)


@dataclass
class ActorRecord:
    """How an actor's labels fared in screening so far."""

    screened: int = 0
    passed: int = 0

    @property
    def agreement(self) -> float:
        """Laplace-smoothed share of labels that passed: 0.5 before any evidence."""
        return (self.passed + 1.0) / (self.screened + 2.0)


def screen(candidates: Sequence[Candidate], model: AlertModel, config: ScreeningConfig, *,
           history: dict[str, ActorRecord] | None = None,
           other_labels: dict[int, list[tuple[str, str]]] | None = None) -> ScreeningResult:
    """Accept or hold each candidate, in label order.

    ``history`` is each actor's record over earlier screenings (updated in place);
    ``other_labels`` maps a record id to the (actor, label) pairs other accepted labels gave it.
    """
    history = history if history is not None else defaultdict(ActorRecord)
    held: dict[int, str] = {}
    accepted: list[int] = []
    ordered = sorted(candidates, key=lambda c: c.label_id)
    if not config.enabled or not ordered:
        return ScreeningResult(accepted=tuple(c.label_id for c in ordered), held={})
    conflicts = _record_conflicts(ordered, other_labels or {}, history)
    contradictions = _neighbour_contradictions(ordered, model, config)
    for candidate in ordered:
        actor = history.setdefault(candidate.actor, ActorRecord())
        if candidate.released:
            accepted.append(candidate.label_id)
            continue
        reason = conflicts.get(candidate.label_id) or contradictions.get(candidate.label_id)
        if reason is None and actor.screened >= config.min_actor_labels and (
                actor.agreement < config.min_actor_agreement):
            reason = (f"actor {candidate.actor!r}: only {actor.passed} of {actor.screened} "
                      f"screened labels passed (agreement {actor.agreement:.2f} < "
                      f"{config.min_actor_agreement:.2f})")
        actor.screened += 1
        if reason is None:
            actor.passed += 1
            accepted.append(candidate.label_id)
        else:
            held[candidate.label_id] = reason
    if held:
        log.warning("screening held %d of %d new label(s): %s", len(held), len(ordered),
                    dict(Counter(r.split(":")[0] for r in held.values())))
    return ScreeningResult(accepted=tuple(accepted), held=held,
                           actor_agreement={a: r.agreement for a, r in history.items()})


def _record_conflicts(candidates: Sequence[Candidate],
                      other_labels: dict[int, list[tuple[str, str]]],
                      history: dict[str, ActorRecord]) -> dict[int, str]:
    """Labels that disagree with another actor's label on the very same record."""
    by_record: dict[int, list[tuple[str, str, int | None]]] = defaultdict(list)
    for record_id, pairs in other_labels.items():
        by_record[record_id].extend((actor, label, None) for actor, label in pairs)
    for c in candidates:
        by_record[c.record_id].append((c.actor, c.label, c.label_id))
    reasons: dict[int, str] = {}
    for entries in by_record.values():
        if len({label for _, label, _ in entries}) < 2:
            continue
        for actor, label, label_id in entries:
            if label_id is None:
                continue
            rivals = [(a, lab) for a, lab, _ in entries if lab != label and a != actor]
            if not rivals:
                continue
            mine = history.get(actor, ActorRecord()).agreement
            best_rival = max(history.get(a, ActorRecord()).agreement for a, _ in rivals)
            if mine <= best_rival:
                rival_actor, rival_label = rivals[0]
                reasons[label_id] = (f"conflict: {rival_actor!r} labelled the same record "
                                     f"{rival_label!r}")
    return reasons


def _neighbour_contradictions(candidates: Sequence[Candidate], model: AlertModel,
                              config: ScreeningConfig) -> dict[int, str]:
    """Labels whose record sits well inside one other class, in both representations."""
    support = model.support
    x = np.stack([c.x for c in candidates]).astype(np.float32)
    labels = np.array([c.label for c in candidates], dtype=object)
    actors = np.array([c.actor for c in candidates], dtype=object)
    keys = model.embed(x)
    # Memory: the support set plus the other candidates (another actor's pending label on a
    # nearby record is evidence too; one's own labels are not).
    memory_keys = np.concatenate([model.support_keys, keys])
    memory_x = np.concatenate([support.x, x])
    memory_y = np.concatenate([support.y.astype(object), labels])
    n_support = len(support)
    visible = np.ones((len(candidates), n_support + len(candidates)), dtype=bool)
    visible[:, n_support:] = actors[None, :] != actors[:, None]
    k = config.neighbours
    in_keys = neighbour_votes(keys, labels, memory_keys, memory_y, k, visible=visible)
    in_raw = neighbour_votes(x, labels, memory_x, memory_y, k, visible=visible)
    radius = _class_radii(model)
    reasons = _feedback_contradictions(candidates, keys, model, visible[:, n_support:],
                                       radius["*"])
    for i, c in enumerate(candidates):
        if c.label_id in reasons:
            continue
        majority = in_keys.majority[i]
        if majority is None or majority == c.label or in_raw.majority[i] != majority:
            continue
        if in_keys.majority_share[i] <= 0.5 or in_raw.majority_share[i] <= 0.5:
            continue  # no single other class dominates the neighbourhood
        inside = radius.get(str(majority), radius["*"])
        # Inside means close to the class's established records (the support set), not to
        # another actor's pending label, which the feedback rule weighs instead.
        members = [j for j in in_keys.index[i] if j < n_support and memory_y[j] == majority]
        if not members:
            continue
        closest = float(np.sqrt(((memory_keys[members] - keys[i]) ** 2).sum(axis=1).min()))
        if closest > inside:
            continue  # the majority class is around, but the record is not inside it
        share = in_keys.majority_share[i]
        reasons[c.label_id] = (
            f"neighbours: {share:.0%} of the {k} nearest labelled records are "
            f"{majority!r} (raw features agree), and the record sits inside that class "
            f"(nearest at {closest:.3g} <= {inside:.3g})")
    return reasons


def _feedback_contradictions(candidates: Sequence[Candidate], keys: np.ndarray,
                             model: AlertModel, other_actor: np.ndarray,
                             radius: float) -> dict[int, str]:
    """Labels outvoted by the *analyst labels* close by.

    Reference records say little about a kind of record the reference never held; the labels
    analysts gave on records right next to this one do. Close by means at least as close as
    the nearest reference record (for a new kind of record, that is far) and never less than
    the usual spacing of records. A label is held when another class has at least twice its
    votes there (and at least two), one of them from another actor: a benign label amid a new
    attack class that others labelled, or the reverse, is held; two actors disagreeing evenly
    are both kept, and the canary judges.
    """
    is_label = np.char.startswith(model.support.origin.astype(str), "label:")
    used = np.flatnonzero(is_label)
    feedback_keys = np.concatenate([model.support_keys[used], keys])
    feedback_labels = np.concatenate([model.support.y[used].astype(str),
                                      np.array([c.label for c in candidates], dtype=str)])
    from_other = np.concatenate([np.ones((len(candidates), used.size), dtype=bool),
                                 other_actor], axis=1)
    reference = model.support_keys[~is_label]
    nearest_reference = (_distances(keys, reference).min(axis=1) if len(reference)
                         else np.full(len(keys), np.inf))
    reach = np.maximum(nearest_reference, radius)
    near = _distances(keys, feedback_keys) <= reach[:, None]
    near[np.arange(len(candidates)), used.size + np.arange(len(candidates))] = False
    reasons: dict[int, str] = {}
    for i, candidate in enumerate(candidates):
        labels = feedback_labels[near[i]]
        own = 1 + int((labels == candidate.label).sum())
        rivals = labels[labels != candidate.label]
        if rivals.size == 0:
            continue
        values, counts = np.unique(rivals, return_counts=True)
        best = int(np.argmax(counts))
        backed_by_others = (near[i] & from_other[i]
                            & (feedback_labels == values[best])).any()
        if counts[best] >= max(_MIN_FEEDBACK_NEIGHBOURS, 2 * own) and backed_by_others:
            reasons[candidate.label_id] = (
                f"neighbours: {counts[best]} analyst labels on records closer than any "
                f"reference record say {str(values[best])!r}, {own} say {candidate.label!r}")
    return reasons


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = ((a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :])
    return np.sqrt(np.maximum(squared.astype(np.float64), 0.0))


def _class_radii(model: AlertModel) -> dict[str, float]:
    """How close a record must be to a class to count as well inside it, per class.

    Measured like the neighbour distances it is compared with: each support record's distance
    to its nearest other support record, in the model's representation.
    """
    spacing = model.neighbour_spacing
    labels = model.support.y
    minimum = model.calibration.min_class_records
    radii = {str(label): float(np.quantile(spacing[labels == label], _INSIDE_QUANTILE))
             for label in np.unique(labels) if (labels == label).sum() >= minimum}
    radii["*"] = float(np.quantile(spacing, _INSIDE_QUANTILE)) if spacing.size else 0.0
    return radii
