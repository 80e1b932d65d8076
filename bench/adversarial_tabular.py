"""Adversarial NSL-KDD connections against the agent's own tabular model, and what catches them.

The agent meta-trains a prototypical network (MLP encoder) on a stratified sample of
KDDTrain+_20Percent, as its bootstrap does, serves it as an :class:`AlertModel` and runs the
:class:`AdversarialDetector` beside it, calibrated on a disjoint part of the same file. This
benchmark measures, on one seeded run:

* **throughput**: ``detector.score`` on KDDTest+ records in batches of 2,000, against the
  model's own forward pass (``model.layers``) on the same batches, on this machine's CPU;
* **false alarms**: the flag rate at ``alpha`` on training-file records used nowhere else
  (exchangeable with the calibration records: these flags *are* false alarms), and, labelled
  apart, the flag rate on KDDTest+, whose new services and attack types are a real shift;
* **a constrained evasion attack**: malicious KDDTest+ connections the model calls attacks are
  pushed towards ``normal`` by changing only what the attacker controls in its own connection;
* **an adaptive attacker** that also knows the detector and descends a differentiable
  surrogate of its Mahalanobis components while fooling the model.

The subtle part is the attack space. Raw byte counts span ten orders of magnitude, so one
raw-unit budget is meaningless; the attack runs in ``log1p`` space (the encoder's own first
step): a budget ``eps`` lets each mutable count ``c`` become anything in
``[(c + 1) e^-eps - 1, (c + 1) e^eps - 1]``, i.e. be multiplied or divided by up to ``e^eps``.
The model is reached through a TensorFlow copy of the encoder (log1p values -> z-score, one-hot
columns unchanged), so gradients flow from the model's logits to the log counts. The result is
mapped back with ``expm1``, rounded to integers *inside* the budget and the domain
``[0, max seen in the training file]``, and judged again by the numpy encoder and the model:
only what still evades after rounding counts as an evasion.

Run: ``python -m bench.adversarial_tabular`` (writes ``docs/bench/adversarial_tabular.json``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.fewshot_data import (
    BENIGN_LABEL,
    NSL_TEST_FILE,
    NSL_TRAIN_FILE,
    NslKddEncoder,
    NslKddRecords,
    data_root,
    read_field_names,
    read_nsl_kdd,
)
from bench.machine import cpu_model

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "bench" / "adversarial_tabular.json"
ALPHA = 0.01

# What the attacker writes into its own connection. Window statistics (count, srv_count, the
# *_rate fields, dst_host_*) are computed by the monitoring side over many connections, and the
# symbolic fields (protocol_type, service, flag) fix which protocol and service the attack uses
# and how the connection ended: changing them is a different attack, not an evasion of this one.
# The binary outcome fields (land, logged_in, root_shell, su_attempted, is_host_login,
# is_guest_login) record what the server decided or what the attack achieved, so they stay too.
MUTABLE_FEATURES: tuple[str, ...] = (
    "duration", "src_bytes", "dst_bytes", "wrong_fragment", "urgent", "hot",
    "num_failed_logins", "num_compromised", "num_root", "num_file_creations", "num_shells",
    "num_access_files",
)


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; :meth:`quick` is the test's."""

    episodes: int = 2000
    support: int = 6000
    reference: int = 4000
    heldout: int | None = None  # None: every training-file record left over
    throughput_records: int = 20_000
    throughput_batch: int = 2000
    throughput_repeats: int = 3
    attacked: int = 2000
    eps: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)
    steps: int = 50
    adaptive_weights: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    clean_normal: int = 2000

    @classmethod
    def quick(cls) -> Settings:
        return cls(episodes=60, support=2500, reference=1000, heldout=5000,
                   throughput_records=4000, throughput_batch=2000, throughput_repeats=1,
                   attacked=64, eps=(1.0, 2.0), steps=20, adaptive_weights=(1.0,),
                   clean_normal=300)


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    train: NslKddRecords
    test: NslKddRecords
    encoder: NslKddEncoder
    train_x: np.ndarray
    test_x: np.ndarray
    numeric_names: tuple[str, ...]
    mutable: np.ndarray  # bool [n_numeric]
    train_max: np.ndarray  # float [n_numeric]: largest raw value in the training file


def _load(root: Path) -> _Data:
    numeric_names, symbolic_names = read_field_names(root)
    train = read_nsl_kdd(root / "nsl-kdd" / NSL_TRAIN_FILE, root)
    test = read_nsl_kdd(root / "nsl-kdd" / NSL_TEST_FILE, root)
    encoder = NslKddEncoder(numeric_names, symbolic_names).fit(train)
    missing = [name for name in MUTABLE_FEATURES if name not in numeric_names]
    if missing:
        raise ValueError(f"mutable features {missing} are not numeric NSL-KDD fields; use some "
                         f"of {list(numeric_names)}.")
    mutable = np.isin(np.asarray(numeric_names), MUTABLE_FEATURES)
    return _Data(train=train, test=test, encoder=encoder, train_x=encoder.transform(train),
                 test_x=encoder.transform(test), numeric_names=tuple(numeric_names),
                 mutable=mutable, train_max=train.numeric.max(axis=0))


def _stratified(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """About ``size`` rows with every class in proportion (each class at least one row)."""
    share = size / len(labels)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        take = min(rows.size, max(1, int(round(share * rows.size))))
        chosen.append(rng.choice(rows, take, replace=False))
    return np.sort(np.concatenate(chosen))


def _split_training_file(labels: np.ndarray, settings: Settings, rng: np.random.Generator
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (support, reference, held-out) rows of the training file."""
    support = _stratified(labels, settings.support, rng)
    rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), support))
    reference = np.sort(rest[:settings.reference])
    heldout = rest[settings.reference:]
    if settings.heldout is not None:
        heldout = heldout[:settings.heldout]
    return support, reference, np.sort(heldout)


def _batch(x: np.ndarray) -> Any:
    from detectors.base import FeatureBatch

    return FeatureBatch(numeric=np.zeros((len(x), 0)), numeric_names=(),
                        categorical=np.zeros((len(x), 0)), categorical_names=(),
                        categorical_vocab=(), encoded=np.asarray(x, np.float32))


@dataclass(frozen=True)
class _Handle:
    """The detector's view of the live model: always this one version."""

    model: Any
    novel_false_alarm_rate: float = ALPHA

    def current(self) -> Any:
        return self.model


# --- the model and the detector ---------------------------------------------------------------


def _train_model(data: _Data, support: np.ndarray, settings: Settings, seed: int
                 ) -> tuple[Any, dict[str, Any]]:
    from agent.training import TrainingPlan, train_learner
    from meta.live import AlertModel, SupportSet

    x = data.train_x[support]
    y = data.train.labels[support].astype(str)
    plan = TrainingPlan(algorithm="protonet", episodes=settings.episodes,
                        benign_class=BENIGN_LABEL, seed=seed, device="cpu")
    trained = train_learner(x, y, plan)
    codes = np.zeros((len(support), 0), np.int32)
    model = AlertModel.build("protonet", trained.learner,
                             SupportSet(x, y, np.array([f"reference:{i}" for i in support]),
                                        data.train.numeric[support], codes),
                             benign_class=BENIGN_LABEL, seed=seed)
    model.version = "bench"
    return model, trained.description


# --- throughput -------------------------------------------------------------------------------


def _cpu() -> dict[str, Any]:
    name = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": name, "cores": os.cpu_count(), "usable_cores": usable}


def _best_time(work: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process-CPU seconds of ``repeats`` runs of ``work``.

    CPU seconds (every thread of this process) barely move when other jobs share the machine;
    wall time does, so both are reported.
    """
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu


def _throughput(detector: Any, model: Any, x: np.ndarray, settings: Settings) -> dict[str, Any]:
    size = settings.throughput_batch
    batches = [_batch(x[s:s + size]) for s in range(0, len(x), size)]
    detector.score(batches[0])  # warm-up: traces the model, fits the detector for the version
    model.layers(batches[0].encoded)

    def detect() -> None:
        for batch in batches:
            detector.score(batch)

    def forward() -> None:
        for batch in batches:
            model.layers(batch.encoded)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    detector_s, detector_cpu = _best_time(detect, settings.throughput_repeats)
    forward_s, forward_cpu = _best_time(forward, settings.throughput_repeats)
    detector_rate = len(x) / detector_s
    return {
        "records": int(len(x)), "batch_size": size, "repeats": settings.throughput_repeats,
        "timing": "best of repeats, after one warm-up batch; wall clock, and process CPU "
                  "time over every thread",
        "detector_records_per_s": round(detector_rate, 1),
        "forward_records_per_s": round(len(x) / forward_s, 1),
        "detector_over_forward_time": round(detector_s / forward_s, 3),
        "detector_records_per_cpu_s": round(len(x) / max(detector_cpu, 1e-9), 1),
        "forward_records_per_cpu_s": round(len(x) / max(forward_cpu, 1e-9), 1),
        "goal_records_per_s": 20_000,
        "meets_goal": bool(detector_rate >= 20_000),
        "cpu": {**_cpu(), "load_average_1m_before": None if load is None else round(load, 2)},
    }


# --- false alarms -----------------------------------------------------------------------------


def _rate(flags: np.ndarray) -> dict[str, Any]:
    from scipy import stats

    n, k = int(flags.size), int(np.sum(flags))
    low, high = stats.binomtest(k, n).proportion_ci(0.95, method="exact") if n else (0.0, 1.0)
    return {"n": n, "flagged": k, "rate": k / n if n else float("nan"),
            "ci95": [round(float(low), 5), round(float(high), 5)]}


def _false_alarms(detector: Any, data: _Data, heldout: np.ndarray) -> dict[str, Any]:
    from detectors.checks import false_alarm_budget

    flags = detector.score(_batch(data.train_x[heldout])).flagged
    labels = data.train.labels[heldout]
    overall = _rate(flags)
    budget = false_alarm_budget(overall["n"], ALPHA)
    heldout_part = {
        "what": "training-file records used for neither the model nor the detector: "
                "exchangeable with the calibration records, so every flag is a false alarm",
        **overall, "budget": budget, "within_budget": bool(overall["flagged"] <= budget),
        "normal": _rate(flags[labels == BENIGN_LABEL]),
        "attacks": _rate(flags[labels != BENIGN_LABEL]),
    }
    test_flags = detector.score(_batch(data.test_x)).flagged
    known = set(data.train.labels.tolist())
    test_labels = data.test.labels
    novel = ~np.isin(test_labels, list(known))
    shifted = {
        "what": "KDDTest+: new services and 17 attack types absent from the training file; "
                "flags here measure shift, they are not false alarms in the calibrated sense",
        "all": _rate(test_flags),
        "normal": _rate(test_flags[test_labels == BENIGN_LABEL]),
        "known_attack_types": _rate(test_flags[(test_labels != BENIGN_LABEL) & ~novel]),
        "novel_attack_types": _rate(test_flags[novel]),
    }
    return {"alpha": ALPHA, "heldout_training_file": heldout_part, "shifted_test_file": shifted}


# --- the attack space: log1p counts ------------------------------------------------------------


@dataclass(frozen=True)
class LogSpace:
    """Records as the attacker moves them: ``log1p`` of every numeric field, then the one-hots.

    ``encode`` is the :class:`NslKddEncoder` transform from here, in TensorFlow.
    """

    mean: np.ndarray  # [n_numeric], of log1p values in the training file
    std: np.ndarray
    n_numeric: int

    @classmethod
    def of(cls, records: NslKddRecords) -> LogSpace:
        """The statistics :class:`NslKddEncoder` fits on ``records`` (it keeps its own private;
        ``surrogate_fidelity`` in the results checks the two encodings agree)."""
        logged = np.log1p(np.maximum(records.numeric, 0.0))
        std = logged.std(axis=0)
        return cls(mean=logged.mean(axis=0), std=np.where(std > 0, std, 1.0),
                   n_numeric=records.numeric.shape[1])

    def points(self, numeric: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        """Attack-space rows from raw numeric values and the encoded one-hots."""
        return np.concatenate([np.log1p(np.maximum(numeric, 0.0)),
                               encoded[:, self.n_numeric:]], axis=1).astype(np.float32)

    def encode(self, points: Any) -> Any:
        import tensorflow as tf

        points = tf.cast(points, tf.float32)
        numeric = (points[:, :self.n_numeric] - tf.constant(self.mean, tf.float32)) / tf.constant(
            self.std, tf.float32)
        return tf.concat([numeric, points[:, self.n_numeric:]], axis=1)


def _frozen(logits_or_loss: Callable[[Any], Any], movable: np.ndarray) -> Callable[[Any], Any]:
    """``f`` with no gradient through the columns the attacker may not move.

    A sign step of a zero gradient is zero, so an L-infinity PGD without random start never
    moves those columns: the immutable features of each record stay exactly as they were.
    """
    import tensorflow as tf

    mask = tf.constant(movable.astype(np.float32))

    def wrapped(points: Any) -> Any:
        points = tf.cast(points, tf.float32)
        return logits_or_loss(mask * points + (1.0 - mask) * tf.stop_gradient(points))

    return wrapped


def _log_logits(model: Any, space: LogSpace) -> Callable[[Any], Any]:
    logits = model.logits_function()
    return lambda points: logits(space.encode(points))


def _mahalanobis_surrogate(model: Any, space: LogSpace, detector: Any, layers: Sequence[int],
                           scales: Sequence[float]) -> Callable[[Any], Any]:
    """The detector's Mahalanobis score in ``layers`` (each over its clean median), in TF.

    Layer 0 is the encoded input, then the encoder's blocks (as the detector counts them).
    """
    import tensorflow as tf

    learner = model.learner
    fitted = detector._fitted
    whitening = [tf.constant(fitted.gaussians[layer].whitening, tf.float32) for layer in layers]
    means = [tf.constant(fitted.gaussians[layer].means, tf.float32) for layer in layers]

    def loss(points: Any) -> Any:
        encoded = space.encode(points)
        outputs = [encoded, *learner.encoder.forward_layers(learner.encoder_params(), encoded)]
        total = tf.zeros([tf.shape(encoded)[0]], tf.float32)
        for layer, w, m, scale in zip(layers, whitening, means, scales, strict=True):
            white = tf.matmul(outputs[layer], w)
            squared = (tf.reduce_sum(tf.square(white), axis=1)[:, None]
                       - 2.0 * tf.matmul(white, m, transpose_b=True)
                       + tf.reduce_sum(tf.square(m), axis=1)[None, :])
            total += tf.maximum(tf.reduce_min(squared, axis=1), 0.0) / scale
        return total

    return loss


def round_into_budget(clean: np.ndarray, moved_log: np.ndarray, mutable: np.ndarray,
                      upper: np.ndarray, eps: float, *, mode: str = "nearest") -> np.ndarray:
    """Raw integer counts from ``expm1(moved_log)`` that respect the budget and the domain.

    For each mutable feature the allowed integers are those within ``eps`` of the clean count in
    ``log1p`` space and inside ``[0, upper]``; ``mode`` ``nearest`` rounds to the nearest one,
    ``away`` away from the clean count (up where the attack raised a count, down where it
    lowered one), which keeps the direction of a small move that nearest rounding would undo.
    Immutable features are copied from ``clean``.
    """
    if mode not in ("nearest", "away"):
        raise ValueError(f"mode must be 'nearest' or 'away', got {mode!r}.")
    clean = np.asarray(clean, np.float64)
    low = np.maximum(np.ceil((clean + 1.0) * np.exp(-eps) - 1.0 - 1e-9), 0.0)
    high = np.minimum(np.floor((clean + 1.0) * np.exp(eps) - 1.0 + 1e-9), upper[None, :])
    value = np.expm1(np.asarray(moved_log, np.float64))
    if mode == "nearest":
        rounded = np.round(value)
    else:
        rounded = np.where(value > clean, np.ceil(value),
                           np.where(value < clean, np.floor(value), clean))
    return np.where(mutable[None, :], np.clip(rounded, low, high), clean)


def constraint_violations(clean: np.ndarray, adversarial: np.ndarray, mutable: np.ndarray,
                          upper: np.ndarray, eps: float) -> dict[str, int]:
    """Records breaking each rule of the threat model (all zero for a valid attack).

    ``clean``/``adversarial`` are raw numeric values ``[n, n_numeric]``.
    """
    clean = np.asarray(clean, np.float64)
    adversarial = np.asarray(adversarial, np.float64)
    moved = adversarial[:, mutable]
    step = np.abs(np.log1p(np.maximum(moved, 0.0)) - np.log1p(clean[:, mutable]))
    return {
        "immutable_changed": int(np.any(adversarial[:, ~mutable] != clean[:, ~mutable],
                                        axis=1).sum()),
        "non_integer": int(np.any(moved != np.round(moved), axis=1).sum()),
        "out_of_bounds": int(np.any((moved < 0) | (moved > upper[None, mutable]), axis=1).sum()),
        "over_budget": int(np.any(step > eps + 1e-6, axis=1).sum()),
    }


# --- judging an attack ------------------------------------------------------------------------


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if positive.size == 0 or negative.size == 0:
        return None
    truth = np.r_[np.ones(positive.size), np.zeros(negative.size)]
    return round(float(roc_auc_score(truth, np.r_[positive, negative])), 4)


@dataclass(frozen=True)
class _Targets:
    """The attacked records and the clean scores attacks are compared with."""

    rows: np.ndarray  # KDDTest+ rows
    numeric: np.ndarray  # raw
    encoded: np.ndarray
    points: np.ndarray  # attack space
    clean_score: np.ndarray  # detector statistic of the clean attacked records
    clean_flagged: np.ndarray
    normal_test_score: np.ndarray
    normal_heldout_score: np.ndarray


@dataclass(frozen=True)
class _Judged:
    """One attack's figures, and per attacked record whether it fooled both model and detector."""

    figures: dict[str, Any]
    undetected_evasion: np.ndarray  # bool [n]


def _judge(name: str, model: Any, detector: Any, data: _Data, targets: _Targets,
           moved_log: np.ndarray, continuous_success: np.ndarray, eps: float) -> _Judged:
    """Round the attack's points to valid records, then score them like the pipeline would.

    Each record is rounded to the nearest valid integers first; where that no longer fools the
    model the attacker tries rounding away from the clean counts (it can query the model).
    """
    candidates, evading = [], []
    for mode in ("nearest", "away"):
        raw = round_into_budget(targets.numeric, moved_log, data.mutable, data.train_max, eps,
                                mode=mode)
        records = NslKddRecords(numeric=raw, symbolic=data.test.symbolic[targets.rows],
                                labels=data.test.labels[targets.rows])
        encoded = data.encoder.transform(records)
        candidates.append((raw, encoded))
        evading.append(model.classify(encoded).predicted.astype(str) == BENIGN_LABEL)
    use_away = ~evading[0] & evading[1]
    raw = np.where(use_away[:, None], candidates[1][0], candidates[0][0])
    encoded = np.where(use_away[:, None], candidates[1][1], candidates[0][1])
    evades = evading[0] | evading[1]
    verdict = detector.score(_batch(encoded))
    score, flagged = np.asarray(verdict.score), np.asarray(verdict.flagged)
    changed = raw[:, data.mutable] != targets.numeric[:, data.mutable]
    n = len(targets.rows)
    continuous = int(np.sum(continuous_success))
    figures: dict[str, Any] = {
        "attack": name, "eps_log1p": eps, "max_factor": round(float(np.exp(eps)), 3),
        "attacked": n,
        "success_before_rounding": continuous / n,
        "success_nearest_rounding": float(evading[0].mean()),
        "success_rate": float(evades.mean()),
        "still_evading_after_rounding": (float(np.sum(evades & continuous_success)) / continuous
                                         if continuous else None),
        "mutable_features_changed_mean": round(float(changed.sum(axis=1).mean()), 3),
        "detection_rate": float(flagged[evades].mean()) if evades.any() else None,
        "evades_model_and_detector": float(np.mean(evades & ~flagged)),
        "clean_flag_rate_same_records": (float(targets.clean_flagged[evades].mean())
                                         if evades.any() else None),
        "auroc_vs_clean_attack": _auroc(score[evades], targets.clean_score),
        "auroc_vs_clean_normal_test": _auroc(score[evades], targets.normal_test_score),
        "auroc_vs_clean_normal_heldout": _auroc(score[evades], targets.normal_heldout_score),
        "components_firing": _components_firing(detector, encoded, np.flatnonzero(evades)),
        "constraints": constraint_violations(targets.numeric, raw, data.mutable,
                                             data.train_max, eps),
    }
    return _Judged(figures, evades & ~flagged)


def _components_firing(detector: Any, encoded: np.ndarray, rows: np.ndarray
                       ) -> dict[str, float]:
    """Share of the evading records on which each component's own p-value is <= alpha."""
    if rows.size == 0:
        return {}
    counts: dict[str, int] = {}
    for explained in detector.explain(_batch(encoded), rows):
        for component in explained["components"]:
            key = (component["method"] if component["method"] != "mahalanobis"
                   else f"mahalanobis@{component['layer']}")
            counts[key] = counts.get(key, 0) + int(component["p_value"] <= detector.alpha)
    return {key: round(value / rows.size, 4) for key, value in sorted(counts.items())}


def _targets(model: Any, detector: Any, data: _Data, heldout: np.ndarray, settings: Settings,
             space: LogSpace, rng: np.random.Generator) -> tuple[_Targets, dict[str, Any]]:
    labels = data.test.labels
    predicted = model.classify(data.test_x).predicted.astype(str)
    malicious = labels != BENIGN_LABEL
    caught = malicious & (predicted != BENIGN_LABEL)
    in_domain = np.all(data.test.numeric[:, data.mutable] <= data.train_max[data.mutable],
                       axis=1)
    pool = np.flatnonzero(caught & in_domain)
    rows = np.sort(rng.choice(pool, min(settings.attacked, pool.size), replace=False))
    numeric = data.test.numeric[rows]
    encoded = data.test_x[rows]
    clean = detector.score(_batch(encoded))
    normal_test = rng.choice(np.flatnonzero(~malicious), settings.clean_normal, replace=False)
    heldout_normal = heldout[data.train.labels[heldout] == BENIGN_LABEL]
    heldout_normal = rng.choice(heldout_normal, min(settings.clean_normal, heldout_normal.size),
                                replace=False)
    targets = _Targets(
        rows=rows, numeric=numeric, encoded=encoded, points=space.points(numeric, encoded),
        clean_score=np.asarray(clean.score), clean_flagged=np.asarray(clean.flagged),
        normal_test_score=np.asarray(detector.score(_batch(data.test_x[normal_test])).score),
        normal_heldout_score=np.asarray(
            detector.score(_batch(data.train_x[heldout_normal])).score))
    summary = {
        "test_attacks": int(malicious.sum()),
        "test_attacks_classified_attack": int(caught.sum()),
        "test_attack_recall": round(float(caught.sum() / malicious.sum()), 4),
        "in_domain": int(pool.size),
        "attacked": int(rows.size),
        "clean_flag_rate": float(targets.clean_flagged.mean()),
        "all_mutable_counts_zero": float(np.mean(~numeric[:, data.mutable].any(axis=1))),
        "attacked_by_type": {str(k): int(v) for k, v in
                             zip(*np.unique(labels[rows], return_counts=True), strict=True)},
    }
    return targets, summary


def _attack_box(data: _Data, space: LogSpace, width: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """(movable columns, lower, upper) in the attack space; only movable bounds bind."""
    movable = np.zeros(width, bool)
    movable[:space.n_numeric] = data.mutable
    lower = np.zeros(width, np.float32)
    upper = np.full(width, 1e6, np.float32)
    upper[:space.n_numeric][data.mutable] = np.log1p(data.train_max[data.mutable])
    return movable, lower, upper


def _constrained(model: Any, detector: Any, data: _Data, space: LogSpace, targets: _Targets,
                 settings: Settings, seed: int, progress: Callable[[str], None]
                 ) -> list[_Judged]:
    from meta.attacks import constrained_tabular

    movable, lower, upper = _attack_box(data, space, targets.points.shape[1])
    target = np.full(len(targets.rows), list(model.probability_classes).index(BENIGN_LABEL))
    out = []
    for eps in settings.eps:
        started = time.perf_counter()
        result = constrained_tabular(
            _log_logits(model, space), targets.points, target, mutable=movable, lower=lower,
            upper=upper, eps=eps, steps=settings.steps, seed=seed, target=target)
        judged = _judge("constrained_pgd", model, detector, data, targets,
                        result.x[:, :space.n_numeric], np.asarray(result.success), eps)
        judged.figures["seconds"] = round(time.perf_counter() - started, 2)
        progress(f"constrained eps={eps}: {_summary(judged.figures)}")
        out.append(judged)
    return out


def _summary(figures: dict[str, Any]) -> str:
    return (f"success {figures['success_rate']:.3f} (before rounding "
            f"{figures['success_before_rounding']:.3f}, nearest rounding "
            f"{figures['success_nearest_rounding']:.3f}), detected "
            f"{_fmt(figures['detection_rate'])}, AUROC vs clean attack "
            f"{_fmt(figures['auroc_vs_clean_attack'])}, evades both "
            f"{figures['evades_model_and_detector']:.3f}")


def _adaptive(model: Any, detector: Any, data: _Data, space: LogSpace, targets: _Targets,
              reference: np.ndarray, constrained: list[_Judged], settings: Settings,
              seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from meta.attacks import pgd

    last = max(detector._fitted.gaussians)  # the detector counts the encoded input as layer 0
    movable, lower, upper = _attack_box(data, space, targets.points.shape[1])
    target = np.full(len(targets.rows), list(model.probability_classes).index(BENIGN_LABEL))
    logits = _frozen(_log_logits(model, space), movable)
    # Scale each layer's distance by its median on clean reference records, so a weight of 1
    # trades one typical clean distance against one nat of the targeted cross-entropy.
    every = [reference, *model.layers(reference)]
    variants = {"last_layer": (last,), "hidden_layers": tuple(range(1, last + 1)),
                "every_layer": tuple(range(last + 1))}
    scales = {layer: float(np.median(detector._fitted.gaussians[layer].score(every[layer])))
              for layer in range(last + 1)}
    fidelity = _surrogate_fidelity(model, space, detector, targets, last)
    runs: list[_Judged] = []
    plans = [("none", 0.0)] + [(v, w) for v in variants for w in settings.adaptive_weights]
    for eps in settings.eps:
        for variant, weight in plans:
            surrogate = None
            if variant != "none":
                chosen = variants[variant]
                surrogate = _frozen(_mahalanobis_surrogate(
                    model, space, detector, chosen, [scales[c] for c in chosen]), movable)
            started = time.perf_counter()
            result = pgd(logits, targets.points, target, eps=eps, norm="linf",
                         clip_min=lower, clip_max=upper, steps=settings.steps,
                         random_start=False, seed=seed, target=target,
                         extra_loss=surrogate, extra_weight=weight)
            judged = _judge("adaptive_pgd", model, detector, data, targets,
                            result.x[:, :space.n_numeric], np.asarray(result.success), eps)
            judged.figures.update(surrogate=variant, weight=weight,
                                  seconds=round(time.perf_counter() - started, 2))
            progress(f"adaptive {variant} w={weight} eps={eps}: {_summary(judged.figures)}")
            runs.append(judged)
    best = []
    for eps, non_adaptive in zip(settings.eps, constrained, strict=True):
        same = [r for r in runs if r.figures["eps_log1p"] == eps]
        any_run = np.logical_or.reduce([non_adaptive.undetected_evasion,
                                        *(r.undetected_evasion for r in same)])
        best.append({"eps_log1p": eps, "configurations": 1 + len(same),
                     "evades_model_and_detector": float(any_run.mean())})
        progress(f"best of every attack at eps={eps}: {any_run.mean():.3f} of the attacked "
                 "records fool the model without being flagged")
    return {
        "attacker": "white-box: knows the model and the detector's fitted class means and "
                    "whitening; targeted L-inf PGD (meta.attacks.pgd) in log1p space, no "
                    "random start (so, with no gradient through immutable columns, they never "
                    "move), minimising CE(normal) + weight * surrogate, where surrogate = sum "
                    "over the chosen layers of the detector's squared Mahalanobis distance to "
                    "the nearest class, each over its median on clean reference records; "
                    "surrogate 'none' is the same PGD without it (the control)",
        "layers": {name: list(chosen) for name, chosen in variants.items()},
        "median_scales": {str(k): round(v, 4) for k, v in scales.items()},
        "surrogate_fidelity": fidelity,
        "runs": [r.figures for r in runs],
        "best_of_all": {
            "what": "an attacker who may also query the detector: per record, any of the "
                    "attacks above at this eps (constrained, control and every surrogate and "
                    "weight) that fools the model without being flagged",
            "per_eps": best,
        },
    }


def _surrogate_fidelity(model: Any, space: LogSpace, detector: Any, targets: _Targets,
                        last: int) -> dict[str, float]:
    """Largest relative gap between the TF surrogate and the detector's own score."""
    import tensorflow as tf

    surrogate = _mahalanobis_surrogate(model, space, detector, (last,), (1.0,))
    ours = surrogate(tf.constant(targets.points)).numpy().astype(np.float64)
    theirs = detector._fitted.gaussians[last].score(model.layers(targets.encoded)[-1])
    encoded = space.encode(tf.constant(targets.points)).numpy()
    return {
        "encoder_max_abs_error": float(np.abs(encoded - targets.encoded).max()),
        "mahalanobis_max_rel_error": float(np.max(np.abs(ours - theirs)
                                                  / np.maximum(theirs, 1e-6))),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# --- the run ----------------------------------------------------------------------------------


def run(*, seed: int = 0, progress: Callable[[str], None] = print, quick: bool = False
        ) -> dict[str, Any]:
    """The whole benchmark; returns JSON-ready results (see the module docstring)."""
    import tensorflow as tf

    from detectors.adversarial import AdversarialDetector

    settings = Settings.quick() if quick else Settings()
    started = time.perf_counter()
    np.random.seed(seed)
    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    root = data_root()
    data = _load(root)
    support, reference, heldout = _split_training_file(data.train.labels, settings, rng)
    progress(f"NSL-KDD: {len(data.train.labels)} training-file records (support {support.size}, "
             f"reference {reference.size}, held out {heldout.size}); {len(data.test.labels)} "
             f"KDDTest+ records")

    model, description = _train_model(data, support, settings, seed)
    heldout_accuracy = float(np.mean(model.classify(data.train_x[heldout]).predicted.astype(str)
                                     == data.train.labels[heldout]))
    progress(f"model: protonet, {description['episodes']['run']} episodes, held-out accuracy "
             f"{heldout_accuracy:.3f} ({time.perf_counter() - started:.0f}s)")

    detector = AdversarialDetector(alpha=ALPHA, model=_Handle(model), seed=seed)
    detector.fit(_batch(data.train_x[reference]))
    sample = rng.permutation(len(data.test_x))[:settings.throughput_records]
    throughput = _throughput(detector, model, data.test_x[sample], settings)
    progress(f"throughput: detector {throughput['detector_records_per_s']:.0f} records/s "
             f"({throughput['detector_records_per_cpu_s']:.0f} per CPU-second), forward pass "
             f"{throughput['forward_records_per_s']:.0f} records/s "
             f"(x{throughput['detector_over_forward_time']} the forward time; load "
             f"{throughput['cpu']['load_average_1m_before']})")

    false_alarms = _false_alarms(detector, data, heldout)
    held = false_alarms["heldout_training_file"]
    progress(f"false alarms at alpha={ALPHA}: {held['rate']:.4f} on {held['n']} held-out "
             f"records (budget {held['budget']}); KDDTest+ flag rate "
             f"{false_alarms['shifted_test_file']['all']['rate']:.4f}")

    space = LogSpace.of(data.train)
    targets, target_summary = _targets(model, detector, data, heldout, settings, space, rng)
    progress(f"attacking {target_summary['attacked']} KDDTest+ attacks the model catches "
             f"(clean flag rate {target_summary['clean_flag_rate']:.3f})")
    constrained = _constrained(model, detector, data, space, targets, settings, seed, progress)
    adaptive = _adaptive(model, detector, data, space, targets, data.train_x[reference],
                         constrained, settings, seed, progress)

    return {
        "benchmark": "adversarial_tabular",
        "seed": seed, "quick": quick, "alpha": ALPHA,
        "data": {"root": str(root), "train_file": NSL_TRAIN_FILE, "test_file": NSL_TEST_FILE,
                 "support": int(support.size), "reference": int(reference.size),
                 "heldout": int(heldout.size), "test": int(len(data.test_x)),
                 "encoded_width": int(data.train_x.shape[1])},
        "model": {"algorithm": "protonet", "encoder": "mlp", **description,
                  "classes": list(model.probability_classes),
                  "heldout_accuracy": round(heldout_accuracy, 4)},
        "detector": {"class": "AdversarialDetector", "alpha": ALPHA,
                     "components": detector.score(_batch(data.test_x[:1])).explanation[
                         "components"],
                     "calibration": "random half of the reference, inside the detector"},
        "throughput": throughput,
        "false_alarms": false_alarms,
        "attack": {
            "mutable_features": list(MUTABLE_FEATURES),
            "why_these": "counts the attacker writes into its own connection; window "
                         "statistics (count, srv_count, *_rate, dst_host_*) are computed by "
                         "the monitor over many connections, symbolic fields fix the "
                         "protocol, service and how the connection ended, and the binary "
                         "outcome fields record what the server decided",
            "space": "log1p of the raw counts; eps bounds |log1p(c') - log1p(c)|, i.e. each "
                     "count is multiplied or divided by at most e^eps",
            "domain": "non-negative integers in [0, max seen in the training file]; records "
                      "already outside it are not attacked",
            "rounding": "expm1, rounded to the nearest integer inside the budget and the "
                        "domain, re-encoded with the numpy encoder and judged again; where "
                        "that no longer fools the model, rounded away from the clean count "
                        "instead (success_nearest_rounding: the first rounding alone)",
            "attacker": "targeted (class normal), meta.attacks.constrained_tabular, random "
                        "start, L-inf sign steps",
            "targets": target_summary,
            "per_eps": [judged.figures for judged in constrained],
        },
        "adaptive": adaptive,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    results = run()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUTPUT.relative_to(REPO)} ({results['elapsed_s']}s)")


if __name__ == "__main__":
    main()
