"""IBM ART's side of the adversarial and poisoning benchmarks, run in ART's own venv.

Usage (from the repository root, after ``bench/art_env.sh``)::

    .venv-art/bin/python -m bench.art_side adversarial --input DIR --output art-adv.json
    .venv-art/bin/python -m bench.art_side poisoning   --input DIR --output art-poison.json
    .venv-art/bin/python bench/art_side.py ...          # the same, as a plain script

This file imports only the standard library, numpy, scikit-learn, TensorFlow/Keras and ART: the
ART venv has no MetaSentry installed, and ART is never a dependency of the project. Everything it
scores comes from ``DIR``, written by the project side (``bench/mnist_data.py``,
``bench/mnist_cnn.py`` and the attack/poison code):

``DIR/model.keras``
    The CNN of ``bench/mnist_cnn.py`` (a ``keras.Sequential`` with logits output). For
    ``poisoning``, the model trained on the poisoned ``x_train, y_train``.
``DIR/data.npz`` for ``adversarial``
    ``x_train`` [n, 28, 28] float32 in [0, 1], ``y_train`` int; ``x_detector`` (clean) and
    ``x_detector_adv`` (adversarial versions of them, e.g. PGD: BinaryInputDetector's training
    set); ``x_test`` (clean), optional ``y_test``; ``attacks`` (names) and for each name ``A`` an
    array ``adv_A``, adversarial versions of ``x_test`` in the same order.
``DIR/data.npz`` for ``poisoning``
    ``x_train``, ``y_train`` (the poisoned training set and its labels), ``is_poison`` (bool; only
    for scoring), optional ``y_train_clean`` (the labels before poisoning, to score ART's
    relabelling).

What is measured, and the choices ART leaves to the user:

- **SubsetScanningDetector** is run on every layer of the model (ART names them by index in
  ``classifier.layer_names``); its background (null) model is ``--ss-background`` images of
  ``x_train`` (seeded), Berk-Jones scoring. The best layer per attack is chosen on the test set
  itself, which flatters ART: a deployment would have to choose it beforehand.
- **BinaryInputDetector** needs a detector network trained on clean vs adversarial inputs: here a
  copy of the CNN's architecture with two outputs, trained (ART's ``fit``, ``--bid-epochs``) on
  ``x_detector`` (label 0) and ``x_detector_adv`` (label 1). Its score is the logit margin of the
  "adversarial" class. It has therefore seen the attack it was trained on, and no other.
- Neither detector is calibrated to a false-alarm rate by ART. Each row reports (a) AUROC of clean
  ``x_test`` against ``adv_A``; (b) the detection rate at thresholds set at the 95 % / 99 %
  quantiles of the *clean test scores themselves* (an oracle calibration: false alarms are 5 % /
  1 % by construction); (c) for SubsetScanning, thresholds from the clean ``x_detector`` scores
  (held-out calibration) with the false-alarm rate they really give on ``x_test``; and (d) ART's
  own decision rule (SubsetScanning: score above the background's maximum; BinaryInputDetector:
  arg-max of its two outputs) with its false-alarm rate.
- **ActivationDefence** (activation clustering) with its defaults (2 clusters, PCA to 10 dims,
  MiniBatchKMeans, "smaller" cluster analysis) and with exclusionary reclassification
  ``ex_re_threshold`` (see ``--ex-re-thresholds``). What the threshold means in ART 1.20.1: a fresh
  copy of the model (``clone_for_refitting``) is trained on the records not flagged; for each
  suspicious cluster of label ``c`` it predicts the cluster's records, and with ``n_c`` of them
  predicted as ``c`` and ``n_o`` as the most frequent other class, the cluster is cleared (its
  records unflagged) when ``n_o == 0`` or ``n_c / n_o > ex_re_threshold``; otherwise it stays
  flagged and its records are relabelled to that other class (``y_train_relabelled``).
  Exclusionary reclassification only ever clears flags. **SpectralSignatureDefense** with its
  defaults and with ``expected_pp_poison`` set to the true poison share (an oracle setting,
  reported as such); it flags the top ``min(1, eps_multiplier * expected_pp_poison)`` share of
  *every* label's scores (defaults: 1.5 * 0.33 = 49.5 %), and ART 1.20.1 scores the *uncentred*
  activations' projection on the top singular vector of the centred ones (Tran et al. project the
  centred ones). Both defences read the activations of the *last* entry of
  ``classifier.layer_names``, which depends on the wrapper: ``KerasClassifier`` lists hidden
  layers only (so the penultimate dense layer, as the papers intend), ``TensorFlowV2Classifier``
  lists every layer (so the logits).
  Both wrappers are run and each row names its wrapper. ART's MiniBatchKMeans takes no seed; the
  global numpy seed is set before each run so that the runs repeat.

Output JSON: ``{"art_version", "tensorflow_version", "mode", "input", "data": {...},
"results": [rows], "best": [...]}``; each row names ``detector``, ``setting``, ``attack`` (or
null), ``wrapper`` and ``params`` (the exact arguments passed to ART) beside its metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import art
import numpy as np
import tensorflow as tf
from art.defences.detector.evasion import BinaryInputDetector, SubsetScanningDetector
from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
from art.estimators.classification import KerasClassifier, TensorFlowV2Classifier
from sklearn.metrics import roc_auc_score

logger = logging.getLogger("bench.art_side")

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10
FALSE_ALARM_RATES = (0.05, 0.01)
SCORE_CHUNK = 500  # SubsetScanning builds [n, nodes, 2] float64 p-value ranges: keep n bounded
DEFAULT_EX_RE_THRESHOLDS = (0.98, 0.996)
WRAPPERS = ("keras", "tfv2")


# --------------------------------------------------------------------------- loading


def _images(array: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(array, dtype=np.float32)
    if x.ndim == 2 and x.shape[1] == IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        x = x.reshape(-1, *IMAGE_SHAPE)
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{name} must be images [n, 28, 28] or [n, 784], got shape {x.shape}.")
    return x


def _require(data: Any, names: Sequence[str], path: Path) -> None:
    missing = [name for name in names if name not in data.files]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; it holds {sorted(data.files)}.")


def _one_hot(y: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]


def _load_model(path: Path) -> tf.keras.Model:
    """The saved CNN, compiled: exclusionary reclassification (clone_for_refitting) needs it."""
    model = tf.keras.models.load_model(path, compile=False)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _wrap(model: tf.keras.Model, wrapper: str) -> Any:
    if wrapper == "tfv2":
        return TensorFlowV2Classifier(
            model=model, nb_classes=N_CLASSES, input_shape=IMAGE_SHAPE,
            loss_object=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
            optimizer=tf.keras.optimizers.Adam(1e-3), clip_values=(0.0, 1.0))
    if wrapper == "keras":
        return KerasClassifier(model=model, use_logits=True, clip_values=(0.0, 1.0))
    raise ValueError(f"wrapper must be one of {list(WRAPPERS)}, got {wrapper!r}.")


def _predict_labels(classifier: Any, x: np.ndarray) -> np.ndarray:
    return np.argmax(classifier.predict(x, batch_size=512), axis=1)


# --------------------------------------------------------------------------- metrics


def _detection_metrics(
    clean: np.ndarray,
    adv: np.ndarray,
    calibration: np.ndarray | None,
    native_clean: np.ndarray,
    native_adv: np.ndarray,
    adv_success: np.ndarray | None,
) -> dict[str, Any]:
    """AUROC and detection rates of scores where higher means more adversarial."""
    labels = np.concatenate([np.zeros(len(clean)), np.ones(len(adv))])
    out: dict[str, Any] = {
        "n_clean": int(len(clean)),
        "n_adversarial": int(len(adv)),
        "auroc": float(roc_auc_score(labels, np.concatenate([clean, adv]))),
    }
    if adv_success is not None and adv_success.any():
        # The figure MetaSentry's side reports: only adversarial images that fool the model.
        chosen = adv[adv_success]
        out["auroc_successful"] = float(roc_auc_score(
            np.concatenate([np.zeros(len(clean)), np.ones(len(chosen))]),
            np.concatenate([clean, chosen])))
    for rate in FALSE_ALARM_RATES:
        tag = f"{round(rate * 100)}pct"
        threshold = float(np.quantile(clean, 1.0 - rate))
        out[f"detection_at_{tag}_fa_oracle"] = float(np.mean(adv > threshold))
        out[f"false_alarms_at_{tag}_fa_oracle"] = float(np.mean(clean > threshold))
        if adv_success is not None and adv_success.any():
            out[f"detection_of_successful_at_{tag}_fa_oracle"] = float(
                np.mean(adv[adv_success] > threshold))
        if calibration is not None:
            held_out = float(np.quantile(calibration, 1.0 - rate))
            out[f"detection_at_{tag}_fa_heldout"] = float(np.mean(adv > held_out))
            out[f"false_alarms_at_{tag}_fa_heldout"] = float(np.mean(clean > held_out))
    out["detection_art_rule"] = float(np.mean(native_adv))
    out["false_alarms_art_rule"] = float(np.mean(native_clean))
    return out


def _poison_metrics(is_clean: Sequence[int], is_poison: np.ndarray) -> dict[str, Any]:
    flagged = np.asarray(is_clean, dtype=np.int64) == 0
    true_positives = int(np.sum(flagged & is_poison))
    return {
        "n_train": int(len(is_poison)),
        "n_poison": int(is_poison.sum()),
        "flagged": int(flagged.sum()),
        "true_positives": true_positives,
        "recall": true_positives / int(is_poison.sum()) if is_poison.any() else None,
        "precision": true_positives / int(flagged.sum()) if flagged.any() else None,
        "false_positive_rate": float(np.mean(flagged[~is_poison])) if (~is_poison).any() else None,
    }


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


# --------------------------------------------------------------------------- adversarial


def _subset_scores(
    detector: SubsetScanningDetector, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and ART's own verdicts, in chunks to bound the p-value-range memory."""
    scores, flags = [], []
    for start in range(0, len(x), SCORE_CHUNK):
        report, is_adversarial = detector.detect(x[start:start + SCORE_CHUNK])
        scores.append(np.asarray(report["scores"], dtype=np.float64))
        flags.append(np.asarray(is_adversarial, dtype=bool))
    return np.concatenate(scores), np.concatenate(flags)


def _binary_detector_model(seed: int) -> tf.keras.Sequential:
    """The CNN's architecture with two outputs (clean, adversarial), for BinaryInputDetector."""
    keras = tf.keras
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape=IMAGE_SHAPE),
        keras.layers.Reshape((*IMAGE_SHAPE, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(2),
    ], name="binary_input_detector")


def run_adversarial(input_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    data_path = input_dir / "data.npz"
    data = np.load(data_path, allow_pickle=False)
    _require(data, ["x_train", "y_train", "x_detector", "x_detector_adv", "x_test", "attacks"],
             data_path)
    attacks = [str(name) for name in data["attacks"]]
    _require(data, [f"adv_{name}" for name in attacks], data_path)
    x_train = _images(data["x_train"], "x_train")
    x_detector = _images(data["x_detector"], "x_detector")
    x_detector_adv = _images(data["x_detector_adv"], "x_detector_adv")
    x_test = _images(data["x_test"], "x_test")
    adv = {name: _images(data[f"adv_{name}"], f"adv_{name}") for name in attacks}
    for name, x_adv in adv.items():
        if len(x_adv) != len(x_test):
            raise ValueError(f"adv_{name} has {len(x_adv)} images, x_test {len(x_test)}; each "
                             "adversarial set must be the test set attacked, in its order.")
    y_test = np.asarray(data["y_test"], dtype=np.int64) if "y_test" in data.files else None

    model = _load_model(input_dir / "model.keras")
    classifier = _wrap(model, "tfv2")
    summary: dict[str, Any] = {
        "n_train": len(x_train), "n_detector": len(x_detector),
        "n_detector_adv": len(x_detector_adv), "n_test": len(x_test), "attacks": attacks,
        "layer_names": list(classifier.layer_names),
    }
    success: dict[str, np.ndarray | None] = {name: None for name in attacks}
    if y_test is not None:
        predicted = _predict_labels(classifier, x_test)
        summary["clean_test_accuracy"] = float(np.mean(predicted == y_test))
        for name in attacks:
            fooled = _predict_labels(classifier, adv[name]) != y_test
            success[name] = fooled
            summary[f"attack_success_rate_{name}"] = float(np.mean(fooled))

    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(args.seed)
    n_background = min(args.ss_background, len(x_train))
    background = x_train[np.sort(rng.choice(len(x_train), n_background, replace=False))]
    layers = (range(len(classifier.layer_names)) if args.ss_layers is None
              else [int(i) for i in args.ss_layers.split(",")])
    for layer in layers:
        layer_name = classifier.layer_names[layer]
        params = {"layer": layer, "layer_name": layer_name, "scoring_function": args.ss_scoring,
                  "bgd_data": f"x_train[{n_background} seeded sample]"}
        logger.info("SubsetScanningDetector on layer %d (%s)", layer, layer_name)
        detector, fit_seconds = _timed(
            SubsetScanningDetector, classifier, bgd_data=background, layer=layer,
            scoring_function=args.ss_scoring, verbose=False)
        (clean, clean_flags), clean_seconds = _timed(_subset_scores, detector, x_test)
        calibration, _ = _subset_scores(detector, x_detector)
        for name in attacks:
            (scores, flags), adv_seconds = _timed(_subset_scores, detector, adv[name])
            rows.append({
                "detector": "SubsetScanningDetector", "setting": f"layer={layer}:{layer_name}",
                "attack": name, "wrapper": "tfv2", "params": params,
                **_detection_metrics(clean, scores, calibration, clean_flags, flags, success[name]),
                "fit_seconds": fit_seconds,
                "records_per_second": (len(clean) + len(scores)) / (clean_seconds + adv_seconds),
            })

    logger.info("BinaryInputDetector: training on %d clean + %d adversarial detector images",
                len(x_detector), len(x_detector_adv))
    detector_model = _binary_detector_model(args.seed)
    detector_classifier = TensorFlowV2Classifier(
        model=detector_model, nb_classes=2, input_shape=IMAGE_SHAPE,
        loss_object=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        optimizer=tf.keras.optimizers.Adam(1e-3), clip_values=(0.0, 1.0))
    binary = BinaryInputDetector(detector_classifier)
    x_fit = np.concatenate([x_detector, x_detector_adv])
    y_fit = _one_hot(np.concatenate([np.zeros(len(x_detector)), np.ones(len(x_detector_adv))]), 2)
    _, bid_fit_seconds = _timed(binary.fit, x_fit, y_fit, batch_size=args.bid_batch_size,
                                nb_epochs=args.bid_epochs)

    def bid_scores(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        report, is_adversarial = binary.detect(x, batch_size=512)
        logits = np.asarray(report["predictions"], dtype=np.float64)
        return logits[:, 1] - logits[:, 0], np.asarray(is_adversarial, dtype=bool)

    (clean, clean_flags), clean_seconds = _timed(bid_scores, x_test)
    bid_params = {"detector": "Sequential(Reshape, Conv2D(32,3,relu), MaxPool(2), "
                  "Conv2D(64,3,relu), MaxPool(2), Flatten, Dense(128,relu), Dense(2))",
                  "trained_on": "x_detector (label 0) vs x_detector_adv (label 1)",
                  "nb_epochs": args.bid_epochs, "batch_size": args.bid_batch_size,
                  "optimizer": "Adam(1e-3)", "score": "logit[adversarial] - logit[clean]"}
    for name in attacks:
        (scores, flags), adv_seconds = _timed(bid_scores, adv[name])
        rows.append({
            "detector": "BinaryInputDetector", "setting": "trained on x_detector_adv",
            "attack": name, "wrapper": "tfv2", "params": bid_params,
            **_detection_metrics(clean, scores, None, clean_flags, flags, success[name]),
            "fit_seconds": bid_fit_seconds,
            "records_per_second": (len(clean) + len(scores)) / (clean_seconds + adv_seconds),
            "note": "held-out calibration n/a: x_detector is this detector's training data",
        })

    best = []
    for name in attacks:
        candidates = [row for row in rows
                      if row["detector"] == "SubsetScanningDetector" and row["attack"] == name]
        if candidates:
            top = max(candidates, key=lambda row: row.get("auroc_successful", row["auroc"]))
            best.append({"detector": "SubsetScanningDetector", "attack": name,
                         "setting": top["setting"],
                         "auroc": top.get("auroc_successful", top["auroc"]),
                         "note": "layer chosen on the test set (optimistic for ART)"})
    return {"data": summary, "results": rows, "best": best}


# --------------------------------------------------------------------------- poisoning


def run_poisoning(input_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    data_path = input_dir / "data.npz"
    data = np.load(data_path, allow_pickle=False)
    _require(data, ["x_train", "y_train", "is_poison"], data_path)
    x_train = _images(data["x_train"], "x_train")
    y_train = np.asarray(data["y_train"], dtype=np.int64)
    is_poison = np.asarray(data["is_poison"], dtype=bool)
    if not len(x_train) == len(y_train) == len(is_poison):
        raise ValueError("x_train, y_train and is_poison must have one entry per training image.")
    y_clean = (np.asarray(data["y_train_clean"], dtype=np.int64)
               if "y_train_clean" in data.files else None)
    y_onehot = _one_hot(y_train)
    poison_share = float(is_poison.mean())
    summary: dict[str, Any] = {"n_train": len(x_train), "n_poison": int(is_poison.sum()),
                               "poison_share": poison_share,
                               "poison_labels": sorted({int(v) for v in y_train[is_poison]})}

    rows: list[dict[str, Any]] = []
    thresholds: list[float | None] = [None, *args.ex_re_thresholds]
    for wrapper in args.wrappers:
        model = _load_model(input_dir / "model.keras")
        classifier = _wrap(model, wrapper)
        layer_name = classifier.layer_names[-1]
        summary[f"layer_read_by_defences_{wrapper}"] = layer_name
        summary[f"training_accuracy_{wrapper}"] = float(
            np.mean(_predict_labels(classifier, x_train) == y_train))
        for threshold in thresholds:
            np.random.seed(args.seed)  # ART's MiniBatchKMeans draws from the global numpy state
            defence = ActivationDefence(classifier, x_train, y_onehot, ex_re_threshold=threshold)
            params = {"nb_clusters": defence.nb_clusters, "nb_dims": defence.nb_dims,
                      "reduce": defence.reduce, "clustering_method": defence.clustering_method,
                      "cluster_analysis": defence.cluster_analysis, "ex_re_threshold": threshold,
                      "layer": layer_name}
            if threshold is not None:
                params["ex_re_refit"] = ("clone_for_refitting() then fit() with ART's defaults "
                                         "(KerasClassifier: 20 epochs, TensorFlowV2Classifier: 10;"
                                         " batch 128) on the records not flagged")
            setting = "defaults" if threshold is None else f"ex_re_threshold={threshold}"
            try:
                (report, is_clean), seconds = _timed(defence.detect_poison)
            except (AttributeError, ValueError) as error:
                # ART 1.20.1's TensorFlowV2Classifier.clone_for_refitting calls
                # clone_model(input_tensors=model.input), which Keras 3 refuses for a Sequential
                # model that was loaded rather than called: record it as ART's result.
                if threshold is None:
                    raise
                logger.warning("ActivationDefence %s with the %s wrapper failed: %s",
                               setting, wrapper, error)
                rows.append({"detector": "ActivationDefence", "setting": setting, "attack": None,
                             "wrapper": wrapper, "params": params,
                             "error": f"{type(error).__name__}: {error}"})
                continue
            row = {"detector": "ActivationDefence", "setting": setting,
                   "attack": None, "wrapper": wrapper, "params": params,
                   **_poison_metrics(is_clean, is_poison), "seconds": seconds,
                   "suspicious_classes": sorted(
                       int(key.split("_")[1]) for key, value in report.items()
                       if key.startswith("Class_") and any(
                           isinstance(c, dict) and c.get("suspicious_cluster")
                           for c in value.values()))}
            relabelled = getattr(defence, "y_train_relabelled", None)
            if threshold is not None and relabelled is not None:
                new = np.argmax(relabelled, axis=1) if relabelled.ndim == 2 else relabelled
                changed = new != y_train
                row["relabelled"] = int(changed.sum())
                if y_clean is not None:
                    row["relabelled_to_true_label"] = int(np.sum(changed & (new == y_clean)))
            rows.append(row)

        settings = [("defaults", 0.33), ("expected_pp_poison=true share (oracle)", poison_share)]
        for setting, expected in settings:
            defence = SpectralSignatureDefense(classifier, x_train, y_onehot,
                                               expected_pp_poison=expected)
            (_, is_clean), seconds = _timed(defence.detect_poison)
            share_flagged = min(1.0, defence.eps_multiplier * expected)
            rows.append({
                "detector": "SpectralSignatureDefense", "setting": setting, "attack": None,
                "wrapper": wrapper,
                "params": {"expected_pp_poison": expected, "eps_multiplier": defence.eps_multiplier,
                           "batch_size": defence.batch_size, "layer": layer_name,
                           "flags_per_class": f"top {share_flagged:.3f} of each label's scores"},
                **_poison_metrics(is_clean, is_poison), "seconds": seconds})
    return {"data": summary, "results": rows}


# --------------------------------------------------------------------------- entry point


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="art_side", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["adversarial", "poisoning"])
    parser.add_argument("--input", type=Path, required=True,
                        help="folder with model.keras and data.npz")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ss-layers", default=None,
                        help="comma-separated layer indices for SubsetScanning (default: all)")
    parser.add_argument("--ss-background", type=int, default=2000,
                        help="x_train images in SubsetScanning's background model (default 2000)")
    parser.add_argument("--ss-scoring", default="BerkJones",
                        choices=["BerkJones", "HigherCriticism", "KolmarovSmirnov"])
    parser.add_argument("--bid-epochs", type=int, default=20,
                        help="BinaryInputDetector training epochs (ART's fit default: 20)")
    parser.add_argument("--bid-batch-size", type=int, default=128)
    parser.add_argument("--ex-re-thresholds", type=lambda s: [float(v) for v in s.split(",")],
                        default=list(DEFAULT_EX_RE_THRESHOLDS),
                        help="ActivationDefence exclusionary-reclassification thresholds")
    parser.add_argument("--wrappers", type=lambda s: s.split(","), default=list(WRAPPERS),
                        help="ART wrappers for the poisoning defences: keras,tfv2")
    args = parser.parse_args(argv)
    unknown = [w for w in args.wrappers if w not in WRAPPERS]
    if unknown:
        parser.error(f"--wrappers: unknown {unknown}; use some of {list(WRAPPERS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parse_args(argv)
    tf.keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    runner = run_adversarial if args.mode == "adversarial" else run_poisoning
    result = runner(args.input, args)
    output = {
        "art_version": art.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": tf.keras.__version__ if hasattr(tf.keras, "__version__") else None,
        "python": platform.python_version(),
        "mode": args.mode,
        "input": str(args.input),
        "seed": args.seed,
        "total_seconds": None,
        **result,
    }
    output["total_seconds"] = time.perf_counter() - start
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    logger.info("wrote %d result rows to %s in %.1f s", len(output["results"]), args.output,
                output["total_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
