"""Poisoned training data: MetaSentry's labelled-stream checks beside IBM ART's defences.

Run with ``make bench`` or ``.venv/bin/python -m bench.poisoning`` (``--quick`` for a small
run). Two poisonings, each scored as recall and precision of the planted records:

* **MNIST backdoor** (BadNets-style, dirty label): a 4-pixel trigger in the bottom-right corner
  (ART's ``add_pattern_bd``) stamped on images of other digits, relabelled to 7, replacing them
  in the 5,000-image training part of bench/mnist_data.py. Two sizes: 5 % of the final class 7
  (the goal) and 250 images (ART's notebook). The CNN of bench/mnist_cnn.py is trained
  on the poisoned set (the trigger's success rate on test images says whether the backdoor took
  hold). MetaSentry's ``spectral_signature``, ``activation_clustering`` and
  ``label_consistency`` detectors see the training set as a labelled stream (batches of 500,
  sliding window of 2,000, calibrated on 1,000 clean detector images) through two
  representations: the victim model's penultimate layer (what ART's defences read) and that of
  the agent's own model, a CNN of the same shape trained on the other 1,000 clean detector
  images — the deployment case, where the agent watches data flowing into someone else's
  training; ``label_consistency`` also runs on raw pixels. ART's
  ``ActivationDefence`` and ``SpectralSignatureDefense`` see the whole set at once, in its own
  venv (bench/art_side.py).
* **NSL-KDD label flips**: 10 % of a stream of KDDTrain+ records get a random other label;
  MetaSentry's ``label_consistency`` (and the two spectral checks) judge the stream, calibrated
  on clean records of the same file. No threshold is tuned: every detector runs at
  ``alpha = 0.01``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.adversarial import ROOT, _Handle, publish, run_art
from bench.machine import cpu_model

WORK = ROOT / "var" / "bench" / "poisoning"
ALPHA = 0.01
TARGET = 7
BATCH = 500


def _labelled(x: np.ndarray, labels: np.ndarray, embeddings: np.ndarray | None = None) -> Any:
    from detectors.base import FeatureBatch

    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    return FeatureBatch(numeric=np.zeros((len(flat), 0)), numeric_names=(),
                        categorical=np.zeros((len(flat), 0)), categorical_names=(),
                        categorical_vocab=(), encoded=flat,
                        labels=np.asarray(labels, dtype=object), embeddings=embeddings)


def scores(flagged: np.ndarray, planted: np.ndarray, seconds: float) -> dict[str, Any]:
    hits = int((flagged & planted).sum())
    return {"planted": int(planted.sum()), "flagged": int(flagged.sum()), "true_positives": hits,
            "recall": hits / max(int(planted.sum()), 1),
            "precision": hits / int(flagged.sum()) if flagged.any() else None,
            "clean_flagged_share": float(flagged[~planted].mean()),
            "records_per_second": len(flagged) / seconds}


def run_stream(detector: Any, x: np.ndarray, labels: np.ndarray, planted: np.ndarray,
               embed: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, Any]:
    """Feed the labelled stream in batches; score every record's verdict."""
    flagged = np.zeros(len(x), dtype=bool)
    started = time.perf_counter()
    for start in range(0, len(x), BATCH):
        rows = slice(start, start + BATCH)
        embeddings = None if embed is None else embed(x[rows])
        verdict = detector.inspect(_labelled(x[rows], labels[rows], embeddings))
        flagged[rows] = verdict.flagged
    return scores(flagged, planted, time.perf_counter() - started)


def mnist_backdoor(poisons: str, *, quick: bool, seed: int,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    from bench.mnist_cnn import KerasModelView, TrainingConfig, accuracy, save_cnn, train_cnn
    from bench.mnist_data import load_mnist_split
    from detectors import (
        ActivationClusteringDetector,
        LabelConsistencyDetector,
        SpectralSignatureDetector,
    )
    from meta.poisons import backdoor_images, stamp_trigger

    split = load_mnist_split(seed=seed)
    x, y = split.train.x, split.train.y
    clean_target = int((y == TARGET).sum())
    share = 0.05 if poisons == "5pct" else 250 / (clean_target + 250)
    poisoned = backdoor_images(x, y, target=TARGET, share=share, pattern="pixels", seed=seed)
    planted = np.asarray(poisoned.poisoned, dtype=bool)
    progress(f"MNIST backdoor ({poisons}): {planted.sum()} poisoned images relabelled {TARGET}")
    model = train_cnn(poisoned.x, poisoned.y, TrainingConfig(epochs=3 if quick else 10,
                                                             seed=seed))
    work = WORK / f"mnist-{poisons}"
    sha = save_cnn(model, work / "model.keras")
    view = KerasModelView(model, version=sha)
    others = split.test.y != TARGET
    triggered = stamp_trigger(split.test.x[others], "pixels")
    took_hold = float(np.mean(view.class_probabilities(triggered).argmax(1) == TARGET))
    result: dict[str, Any] = {
        "poisons": int(planted.sum()), "share_of_target_class": share,
        "clean_test_accuracy": accuracy(model, split.test.x, split.test.y),
        "trigger_success_rate": took_hold, "detectors": {}}
    progress(f"  poisoned CNN: clean accuracy {result['clean_test_accuracy']:.2%}, trigger "
             f"flips {took_hold:.1%} of test images of other digits to {TARGET}")
    # The agent's clean reference is the 2,000 detector images: its own model is trained on
    # half of them and the detectors calibrate on the other half, which that model never saw
    # (a model's own training records look cleaner than new ones). The victim's model is the
    # one trained on the poisoned set (what ART's defences read).
    half = len(split.detector.x) // 2
    reference = _labelled(split.detector.x[half:], split.detector.y[half:].astype(str))
    labels = np.asarray(poisoned.y).astype(str)
    own = train_cnn(split.detector.x[:half], split.detector.y[:half],
                    TrainingConfig(epochs=3 if quick else 10, seed=seed))
    own_view = KerasModelView(own, version="agent-reference-cnn")
    for representation, seen in (("victim model", view), ("agent's own model", own_view)):
        for detector in (SpectralSignatureDetector(alpha=ALPHA, model=_Handle(seen)),
                         ActivationClusteringDetector(alpha=ALPHA, model=_Handle(seen)),
                         LabelConsistencyDetector(alpha=ALPHA, representation="embeddings",
                                                  model=_Handle(seen))):
            detector.fit(reference)
            row = run_stream(detector, poisoned.x, labels, planted, seen.embed)
            result["detectors"][f"{detector.name} ({representation})"] = row
            progress(f"  MetaSentry {detector.name} on the {representation}: recall "
                     f"{row['recall']:.2f}, precision {row['precision'] or 0:.2f} "
                     f"({row['flagged']} flagged)")
    # Neighbours from the clean reference only: earlier poisons in the stream cannot vote.
    detector = LabelConsistencyDetector(alpha=ALPHA, window=0, representation="embeddings",
                                        model=_Handle(own_view))
    detector.fit(reference)
    result["detectors"]["label_consistency, window 0 (agent's own model)"] = run_stream(
        detector, poisoned.x, labels, planted, own_view.embed)
    detector = LabelConsistencyDetector(alpha=ALPHA)  # raw pixels, no model
    detector.fit(reference)
    result["detectors"]["label_consistency (raw pixels)"] = run_stream(
        detector, poisoned.x, labels, planted, None)
    np.savez_compressed(work / "data.npz", x_train=poisoned.x, y_train=poisoned.y,
                        is_poison=planted, y_train_clean=y)
    result["art"] = run_art("poisoning", work, progress)
    return result


def nsl_kdd_flips(*, quick: bool, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench.fewshot_data import NslKddEncoder, data_root, read_field_names, read_nsl_kdd
    from detectors import (
        ActivationClusteringDetector,
        LabelConsistencyDetector,
        SpectralSignatureDetector,
    )
    from meta.poisons import flip_labels_random

    root = data_root()
    records = read_nsl_kdd(root / "nsl-kdd" / "KDDTrain+_20Percent.txt", root)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records.labels))
    n_reference, n_stream = (2000, 3000) if quick else (5000, 15000)
    reference_rows, stream_rows = order[:n_reference], order[n_reference:n_reference + n_stream]
    encoder = NslKddEncoder(*read_field_names(root)).fit(records)
    x = encoder.transform(records)
    flips = flip_labels_random(records.labels[stream_rows], 0.10, seed=seed)
    planted = np.asarray(flips.flipped, dtype=bool)
    progress(f"NSL-KDD: {planted.sum()} of {len(stream_rows)} stream labels flipped")
    reference = _labelled(x[reference_rows], records.labels[reference_rows])
    out: dict[str, Any] = {"stream": len(stream_rows), "reference": n_reference,
                           "flipped_share": 0.10, "detectors": {}}
    for detector in (LabelConsistencyDetector(alpha=ALPHA),
                     SpectralSignatureDetector(alpha=ALPHA),
                     ActivationClusteringDetector(alpha=ALPHA)):
        detector.fit(reference)
        row = run_stream(detector, x[stream_rows], np.asarray(flips.y), planted, None)
        out["detectors"][detector.name] = row
        progress(f"  MetaSentry {detector.name}: recall {row['recall']:.2f}, precision "
                 f"{row['precision'] or 0:.2f}")
    return out


def run(*, quick: bool = False, seed: int = 0,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    return {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "command": "python -m bench.poisoning" + (" --quick" if quick else ""),
        "alpha": ALPHA,
        "mnist_backdoor": {size: mnist_backdoor(size, quick=quick, seed=seed, progress=progress)
                           for size in ("5pct", "250")},
        "nsl_kdd_label_flips": nsl_kdd_flips(quick=quick, seed=seed, progress=progress),
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "# Poisoned training data: MetaSentry beside IBM ART",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores. Command: "
        f"`{results['command']}`. MetaSentry runs at alpha = {results['alpha']} (no tuning).",
        "",
        "| data | detector | setting | recall | precision | flagged | records/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for size, part in results["mnist_backdoor"].items():
        data = (f"MNIST backdoor, {part['poisons']} poisons ({size}; trigger took hold on "
                f"{part['trigger_success_rate']:.0%})")
        for name, row in part["detectors"].items():
            lines.append(_line(data, f"MetaSentry {name}", "stream, alpha 0.01", row))
        art = part.get("art") or {}
        if "error" in art:
            lines.append(f"| {data} | ART | — | — | — | — | {art['error']} |")
        for row in art.get("results", []):
            if "error" in row:
                lines.append(f"| {data} | ART {row['detector']} | {row['setting']}, "
                             f"{row['wrapper']} | failed: {row['error'][:60]} | | | |")
                continue
            rate = row["n_train"] / row["seconds"] if row.get("seconds") else float("nan")
            lines.append(_line(data, f"ART {row['detector']}",
                               f"{row['setting']}, {row['wrapper']}", {**row,
                                                                      "records_per_second": rate}))
    flips = results["nsl_kdd_label_flips"]
    for name, row in flips["detectors"].items():
        lines.append(_line(f"NSL-KDD, 10 % random label flips ({flips['stream']} records)",
                           f"MetaSentry {name}", "stream", row))
    return "\n".join(lines) + "\n"


def _line(data: str, detector: str, setting: str, row: dict[str, Any]) -> str:
    precision = "—" if row.get("precision") is None else f"{row['precision']:.2f}"
    recall = "—" if row.get("recall") is None else f"{row['recall']:.2f}"
    return (f"| {data} | {detector} | {setting} | {recall} | {precision} | {row['flagged']} | "
            f"{row['records_per_second']:,.0f} |")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for size, part in results["mnist_backdoor"].items():
        for name, row in part["detectors"].items():
            points.append((f"MetaSentry {name} ({size})", row, "o"))
        for row in (part.get("art") or {}).get("results", []):
            if "error" not in row and row.get("wrapper") == "keras":
                points.append((f"ART {row['detector']} {row['setting']} ({size})", row, "x"))
    for name, row in results["nsl_kdd_label_flips"]["detectors"].items():
        points.append((f"MetaSentry {name} (NSL-KDD flips)", row, "s"))
    figure, axis = plt.subplots(figsize=(12, 6))
    colours = plt.get_cmap("tab20").colors
    for k, (label, row, marker) in enumerate(points):
        axis.scatter(row.get("recall") or 0.0, row.get("precision") or 0.0, marker=marker,
                     label=label, color=colours[k % len(colours)], s=40)
    axis.set_xlabel("recall of planted records")
    axis.set_ylabel("precision")
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.axvline(0.9, color="grey", lw=0.5)
    axis.axhline(0.9, color="grey", lw=0.5)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axis.set_title("Finding planted records (goal: upper right of the grey lines)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (smoke test)")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, progress=lambda line: print(line, flush=True))
    publish("poisoning", results, report, plot, args.quick)


if __name__ == "__main__":
    sys.exit(main())
