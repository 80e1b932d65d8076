"""The analyst loop on a real stream: alarms, labels, and what the model learns from them.

Protocol (fixed before any number was looked at, and the same for every loop):

- Encoding: the agent's own encoder, fitted on the bundled reference (``agent.yaml``).
- Enrolment: the labelled reference records the agent enrols (its canary split held out).
- Stream: KDDTest+ (every record, file order; the bundled 10k sample when the full file is
  absent), in chunks of 500. An alarm is an ``attack`` finding (predicted class not benign) or
  a ``novel`` one (calibrated novelty p-value at most 1%).
- Analyst: labels the first N alarms with their true class, each chunk's labels enrolled
  before the next chunk is scored; N = 0, 20, 100, 500.
- Figures, over the whole stream: benign alarm rate, attack alarm rate, alarm rate and
  correctly-named rate of novel-type records (attack types the reference never holds), the
  share of alarms given an attack name that name the wrong type, and the open-set AUROC of
  the novelty score (novel-type records against known-class records).

The baseline loop is the simplest strong one: 1-NN on the encoded features against the
labelled reference, an alarm when the nearest label is not ``normal`` or the nearest distance
exceeds the 99th percentile of normal reference records' leave-one-out nearest-neighbour
distances, analyst labels added to the memory at once. A second baseline is a supervised
classifier, extremely randomised trees on the encoded features, refitted on the reference and
the labels after every chunk that brought labels; it alarms when it predicts an attack class
and has no novelty verdict (its open-set score is one minus its top vote share).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig
from agent.datafile import read_records
from agent.schema import Encoder
from agent.support import ReferenceSplit, split_reference
from bench.fewshot_baselines import extra_trees
from bench.fewshot_data import data_root
from meta.live import AlertModel, SupportSet
from meta.openset import auroc

log = logging.getLogger(__name__)

CHUNK = 500
BENIGN = "normal"
ALPHA = 0.01


@dataclass(frozen=True)
class Stream:
    """Encoded stream records with their true labels."""

    name: str
    x: np.ndarray
    y: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray
    novel: np.ndarray  # bool: type absent from the labelled reference

    def support(self, rows: np.ndarray) -> SupportSet:
        return SupportSet(x=self.x[rows], y=self.y[rows],
                          origin=np.array([f"stream:{i}" for i in rows], dtype=str),
                          numeric=self.numeric[rows], categorical=self.categorical[rows])


def load(config: AgentConfig) -> tuple[Encoder, ReferenceSplit, Stream]:
    """The agent's encoder and reference split, and the test stream encoded with them."""
    ref = read_records(config.resolve(config.reference.path), columns=config.schema.columns,
                       header=config.reference.header)
    encoder = Encoder(config.schema).fit(ref.records, textual=ref.textual)
    reference = encoder.encode(ref.records, textual=ref.textual).features
    split = split_reference(reference, canary_fraction=config.model.canary_fraction,
                            seed=config.model.seed)
    full = data_root() / "nsl-kdd" / "KDDTest+.txt"
    path = full if full.is_file() else config.resolve(config.sources[0].path)
    data = read_records(path, columns=config.schema.columns, header=False)
    encoded = encoder.encode(data.records, textual=data.textual)
    assert encoded.labels is not None
    y = encoded.labels.astype(str)
    known = set(reference.labels.astype(str).tolist()) if reference.labels is not None else set()
    novel = np.array([label not in known for label in y])
    return encoder, split, Stream(path.name, encoded.x, y, encoded.features.numeric,
                                  encoded.features.categorical, novel)


@dataclass(frozen=True)
class LoopResult:
    loop: str
    labels: int
    benign_alarm_rate: float
    attack_alarm_rate: float
    novel_alarm_rate: float
    novel_named: float
    wrong_names: float  # of the alarms that carry an attack name (not novel), the share misnamed
    auroc: float | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def run_loop(name: str, stream: Stream, budget: int,
             score: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
             enrol: Callable[[np.ndarray], None], timer: Callable[[], float]) -> LoopResult:
    """Drive one loop: ``score(rows)`` gives (predicted, alarm, novelty) for stream rows."""
    n = len(stream.y)
    predicted = np.empty(n, dtype=object)
    alarm = np.zeros(n, dtype=bool)
    novelty = np.zeros(n)
    used = 0
    started = timer()
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n))
        predicted[rows], alarm[rows], novelty[rows] = score(rows)
        if used < budget:
            chosen = rows[alarm[rows]][: budget - used]
            if chosen.size:
                enrol(chosen)
                used += chosen.size
    benign = stream.y == BENIGN
    known = ~stream.novel
    area = auroc(novelty[known], novelty[stream.novel]) if budget == 0 else None
    named = alarm & (predicted != "<novel>") & (predicted != BENIGN)
    return LoopResult(
        loop=name, labels=used,
        benign_alarm_rate=float(alarm[benign].mean()),
        attack_alarm_rate=float(alarm[~benign].mean()),
        novel_alarm_rate=float(alarm[stream.novel].mean()),
        novel_named=float((predicted[stream.novel] == stream.y[stream.novel]).mean()),
        wrong_names=float((predicted[named] != stream.y[named]).mean()) if named.any() else 0.0,
        auroc=area, seconds=timer() - started)


def model_loop(model: AlertModel, stream: Stream, budget: int, name: str,
               timer: Callable[[], float]) -> LoopResult:
    """The agent's loop: classify with the model, enrol labelled alarms as the agent does."""
    holder = {"model": model}

    def score(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = holder["model"].classify(stream.x[rows])
        novel = out.novel(ALPHA)
        predicted = np.where(novel, "<novel>", out.predicted.astype(str)).astype(object)
        alarm = novel | (out.predicted.astype(str) != BENIGN)
        return predicted, alarm, -np.log(out.novelty_p)

    def enrol(rows: np.ndarray) -> None:
        holder["model"] = holder["model"].with_records(stream.support(rows))

    return run_loop(name, stream, budget, score, enrol, timer)


def nearest_neighbour_loop(support: SupportSet, stream: Stream, budget: int,
                           timer: Callable[[], float]) -> LoopResult:
    """The baseline: 1-NN on encoded features, 99th-percentile distance threshold."""
    memory = {"x": support.x.astype(np.float32), "y": support.y.astype(object)}
    normal = memory["x"][support.y == BENIGN]
    threshold = float(np.percentile(_leave_one_out(normal), 99))

    def score(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        distance = _distances(stream.x[rows], memory["x"])
        nearest = distance.argmin(axis=1)
        gap = distance[np.arange(len(rows)), nearest]
        label = memory["y"][nearest]
        far = gap > threshold
        predicted = np.where(far, "<novel>", label.astype(str)).astype(object)
        return predicted, far | (label != BENIGN), gap

    def enrol(rows: np.ndarray) -> None:
        memory["x"] = np.concatenate([memory["x"], stream.x[rows]])
        memory["y"] = np.concatenate([memory["y"], stream.y[rows].astype(object)])

    return run_loop("1-NN raw (baseline)", stream, budget, score, enrol, timer)


def trees_loop(support: SupportSet, stream: Stream, budget: int,
               timer: Callable[[], float]) -> LoopResult:
    """The supervised baseline: extra trees refitted on the reference plus the labels."""
    state = {"x": support.x, "y": support.y.astype(object)}
    state["trees"] = extra_trees(state["x"], state["y"], jobs=2)

    def score(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        proba = state["trees"].predict_proba(stream.x[rows])
        label = state["trees"].classes_[proba.argmax(axis=1)].astype(object)
        return label, label != BENIGN, 1.0 - proba.max(axis=1)

    def enrol(rows: np.ndarray) -> None:
        state["x"] = np.concatenate([state["x"], stream.x[rows]])
        state["y"] = np.concatenate([state["y"], stream.y[rows].astype(object)])
        state["trees"] = extra_trees(state["x"], state["y"], jobs=2)

    return run_loop("extra trees (supervised baseline)", stream, budget, score, enrol, timer)


@dataclass(frozen=True)
class FewLabelResult:
    method: str
    labels: int
    types: int
    recall: float  # mean over novel types of recall on that type's later records
    benign_false_alarm_rate: float
    # The agent's models only: recall counting only records not also flagged novel (those go
    # to a "novel" incident, not the type's named one). Baselines have no novelty verdict.
    named_not_novel: float | None = None


def few_label_recall(model: AlertModel, support: SupportSet, stream: Stream,
                     shots: tuple[int, ...] = (1, 5, 10), min_records: int = 100,
                     name: str | None = None, baselines: bool = True,
                     ) -> list[FewLabelResult]:
    """Recall of a newly labelled type after k labels, and the benign false-alarm rate.

    For each novel type with at least ``min_records`` records: its first k records in stream
    order are labelled and enrolled, and the type's remaining records are classified (recall =
    predicted as that type); the benign records of the stream give the false-alarm rate.
    Baselines get the same labels: 1-NN on raw features, and a logistic head and extra trees
    retrained on the reference plus the labels. ``name`` names the model's rows (default:
    "<algorithm> (agent)").
    """
    from sklearn.linear_model import LogisticRegression

    types = [t for t in np.unique(stream.y[stream.novel])
             if (stream.y == t).sum() >= min_records]
    benign_rows = np.flatnonzero(stream.y == BENIGN)
    agent = name or f"{model.algorithm} (agent)"
    results = []
    for k in shots:
        per_method: dict[str, list[tuple[float, ...]]] = {}
        for label in types:
            rows = np.flatnonzero(stream.y == label)
            labelled, rest = rows[:k], rows[k:]
            extra = stream.support(labelled)
            adapted = model.with_records(extra)
            evaluate_rows = np.concatenate([rest, benign_rows])
            out = adapted.classify(stream.x[evaluate_rows])
            novel = out.novel(ALPHA)
            flagged = novel | (out.predicted.astype(str) != BENIGN)
            named = out.predicted[: rest.size].astype(str) == label
            per_method.setdefault(agent, []).append(
                (float(named.mean()), float(flagged[rest.size:].mean()),
                 float((named & ~novel[: rest.size]).mean())))
            if not baselines:
                continue
            x = np.concatenate([support.x, stream.x[labelled]])
            y = np.concatenate([support.y, stream.y[labelled]])
            distance = _distances(stream.x[evaluate_rows], x)
            nearest = y[distance.argmin(axis=1)]
            per_method.setdefault("1-NN raw", []).append(
                (float((nearest[: rest.size] == label).mean()),
                 float((nearest[rest.size:] != BENIGN).mean())))
            head = LogisticRegression(max_iter=300, C=10.0)
            head.fit(x, y)
            guess = head.predict(stream.x[evaluate_rows])
            per_method.setdefault("logistic head", []).append(
                (float((guess[: rest.size] == label).mean()),
                 float((guess[rest.size:] != BENIGN).mean())))
            guess = extra_trees(x, y, jobs=2).predict(stream.x[evaluate_rows])
            per_method.setdefault("extra trees", []).append(
                (float((guess[: rest.size] == label).mean()),
                 float((guess[rest.size:] != BENIGN).mean())))
        for method, values in per_method.items():
            array = np.asarray(values)
            results.append(FewLabelResult(
                method=method, labels=k, types=len(types), recall=float(array[:, 0].mean()),
                benign_false_alarm_rate=float(array[:, 1].mean()),
                named_not_novel=float(array[:, 2].mean()) if array.shape[1] > 2 else None))
    return results


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    squared = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(squared, 0.0))


def _leave_one_out(x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x))
    for start in range(0, len(x), 2048):
        distance = _distances(x[start:start + 2048], x)
        distance[np.arange(distance.shape[0]), start + np.arange(distance.shape[0])] = np.inf
        out[start:start + 2048] = distance.min(axis=1)
    return out


def default_config(repo: Path) -> AgentConfig:
    from agent.config import load_config

    return load_config(repo / "agent.yaml", check_environment=False)
