"""Adversarial inputs on MNIST: MetaSentry's detector beside IBM ART's, same model, same data.

Run with ``make bench`` or ``.venv/bin/python -m bench.adversarial`` (``--quick`` for a small
run). Protocol (bench/mnist_data.py): MNIST t10k split with a fixed seed into 5,000 training
images (the CNN of bench/mnist_cnn.py is trained on them), 2,000 detector images (MetaSentry
fits and calibrates on them; ART's BinaryInputDetector trains on them and on PGD versions of
them) and 3,000 test images (attacked; every figure is on them).

Attacks (meta/attacks.py, white-box on the CNN): FGSM ε=0.1, PGD L∞ ε=0.3, PGD L2 ε=2,
Carlini–Wagner L2, and two **adaptive** PGD L∞ ε=0.3 attacks that know the detector: one
also minimises its Mahalanobis distances (every layer, each in units of its calibration
median); the other does the same while touching only the pixels where clean images have ink
(so the per-pixel tails see familiar values). No detector here is trained on any adversarial
example except ART's BinaryInputDetector, which gets PGD examples (it cannot work without
them).

Figures: AUROC of clean test images against the attack's *successful* adversarial images;
detection rate at 5 % and 1 % false alarms with thresholds set on the clean test scores
(an oracle calibration, the same for every detector), and MetaSentry's detection and false
alarms at its own calibrated alpha (no oracle); records per second. ART runs in its own venv
(``bench/art_env.sh``) through ``bench/art_side.py`` on the same saved model and arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench"
WORK = ROOT / "var" / "bench" / "adversarial"
ART_PYTHON = Path(os.environ.get("ART_VENV", ROOT / ".venv-art")) / "bin" / "python"
ALPHA = 0.01
RULES = ("fisher", "harmonic")  # the default combination first


class _Handle:
    """A model handle around a model that never changes (the detector's view of it)."""

    novel_false_alarm_rate = ALPHA

    def __init__(self, model: Any) -> None:
        self.model = model

    def current(self) -> Any:
        return self.model


def _batch(x: np.ndarray) -> Any:
    from detectors.base import FeatureBatch

    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    return FeatureBatch(numeric=np.zeros((len(flat), 0)), numeric_names=(),
                        categorical=np.zeros((len(flat), 0)), categorical_names=(),
                        categorical_vocab=(), encoded=flat)


def metrics(clean: np.ndarray, adversarial: np.ndarray) -> dict[str, float]:
    """AUROC and detection at oracle 5 % / 1 % false alarms (higher score = adversarial)."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
    out = {"auroc": float(roc_auc_score(labels, np.r_[clean, adversarial]))}
    for rate, tag in ((0.05, "5pct"), (0.01, "1pct")):
        threshold = float(np.quantile(clean, 1.0 - rate))
        out[f"detection_at_{tag}_fa_oracle"] = float(np.mean(adversarial > threshold))
    return out


def adaptive_penalty(view: Any, detector: Any) -> Callable[[Any], Any]:
    """The adaptive attacker's extra loss: the detector's Mahalanobis distance in every layer
    it reads (the input, then the CNN's layers), each divided by its calibration median."""
    import tensorflow as tf

    fitted = detector._fitted
    terms = []
    for j, (method, layer) in enumerate(fitted.components):
        if method == "mahalanobis":
            gaussians = fitted.gaussians[layer]
            median = float(np.median(fitted.calibration.columns[j]))
            terms.append((layer, tf.constant(gaussians.whitening, tf.float32),
                          tf.constant(gaussians.means, tf.float32), max(median, 1e-6)))
    features = view._features

    def penalty(x: Any) -> Any:
        flat = tf.reshape(tf.cast(x, tf.float32), (-1, 784))
        layers = [flat, *features(tf.reshape(flat, (-1, 28, 28)), training=False)[:-1]]
        total = tf.zeros(tf.shape(flat)[0])
        for layer, whitening, means, median in terms:
            white = tf.matmul(layers[layer], whitening)
            squared = (tf.reduce_sum(white * white, 1)[:, None]
                       - 2.0 * tf.matmul(white, means, transpose_b=True)
                       + tf.reduce_sum(means * means, 1)[None, :])
            total += tf.reduce_min(squared, axis=1) / median
        return total

    return penalty


def masked(function: Callable[[Any], Any], clean: np.ndarray, mask: np.ndarray
           ) -> Callable[[Any], Any]:
    """``function`` seen through a pixel mask: outside it every image keeps its clean pixels,
    so gradients there are zero and the attack leaves them alone. The attack must run the
    images as one batch, in order (``batch_size=len(clean)``)."""
    import tensorflow as tf

    fixed = tf.constant(clean.reshape(len(clean), -1), tf.float32)
    keep = tf.constant(mask.reshape(1, -1), tf.float32)

    def through(x: Any) -> Any:
        if x.shape[0] != len(clean):  # the attack's probe of the function's output shape
            return function(x)
        flat = tf.reshape(tf.cast(x, tf.float32), tf.shape(fixed))
        return function(fixed + keep * (flat - fixed))

    return through


def craft(view: Any, x: np.ndarray, y: np.ndarray, detector: Any, quick: bool,
          progress: Callable[[str], None], ink: np.ndarray) -> dict[str, Any]:
    """Every attack on the test images. The adaptive ones know the detector: one lowers its
    Mahalanobis distances while fooling the model; the masked one also only touches pixels
    where at least a tenth of clean reference images have ink, so no pixel takes a value the
    per-pixel tails have never seen."""
    from meta import attacks

    logits = view.logits_fn
    steps = 10 if quick else 40
    box = {"clip_min": 0.0, "clip_max": 1.0}
    plan: dict[str, Callable[[], Any]] = {
        "fgsm_linf_0.1": lambda: attacks.fgsm(logits, x, y, eps=0.1, **box),
        "pgd_linf_0.3": lambda: attacks.pgd(logits, x, y, eps=0.3, norm="linf", steps=steps,
                                            **box),
        "pgd_l2_2.0": lambda: attacks.pgd(logits, x, y, eps=2.0, norm="l2", steps=steps, **box),
        "cw_l2": lambda: attacks.carlini_wagner_l2(
            logits, x, y, c=1.0, steps=30 if quick else 100,
            binary_search_steps=2 if quick else 4, lr=0.05, **box),
        "adaptive_pgd_linf_0.3": lambda: attacks.pgd(
            logits, x, y, eps=0.3, norm="linf", steps=steps, extra_loss=adaptive_penalty(
                view, detector), extra_weight=1.0, **box),
        "adaptive_masked_pgd_linf_0.3": lambda: attacks.pgd(
            masked(logits, x, ink), x, y, eps=0.3, norm="linf", steps=steps,
            extra_loss=masked(adaptive_penalty(view, detector), x, ink), extra_weight=1.0,
            batch_size=len(x), **box),
    }
    out = {}
    for name, run in plan.items():
        started = time.perf_counter()
        result = run()
        out[name] = result
        progress(f"{name}: {np.mean(result.success):.1%} of test images fooled the model "
                 f"({time.perf_counter() - started:.0f}s)")
    return out


def run(*, quick: bool = False, seed: int = 0,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    from bench.mnist_cnn import KerasModelView, TrainingConfig, accuracy, save_cnn, train_cnn
    from bench.mnist_data import load_mnist_split
    from detectors.adversarial import AdversarialDetector
    from detectors.base import TensorLayout
    from meta import attacks

    split = load_mnist_split(seed=seed)
    n_test = 600 if quick else len(split.test)
    x_test, y_test = split.test.x[:n_test], split.test.y[:n_test]
    WORK.mkdir(parents=True, exist_ok=True)
    progress(f"training the CNN on {len(split.train)} images")
    model = train_cnn(split.train.x, split.train.y,
                      TrainingConfig(epochs=3 if quick else 10, seed=seed))
    sha = save_cnn(model, WORK / "model.keras")
    view = KerasModelView(model, version=sha)
    clean_accuracy = accuracy(model, x_test, y_test)
    progress(f"CNN clean test accuracy {clean_accuracy:.2%}")

    layout = TensorLayout(name="image", shape=(28, 28), start=0, center=0.0, scale=1.0,
                          low=0.0, high=1.0)
    detectors = {rule: AdversarialDetector(alpha=ALPHA, combine=rule, model=_Handle(view),
                                           tensors=(layout,), seed=seed)
                 for rule in RULES}
    clean_verdicts = {}
    for rule, detector in detectors.items():
        detector.fit(_batch(split.detector.x))
        clean_verdicts[rule] = detector.score(_batch(x_test))
    detector = detectors[RULES[0]]
    # One calibration set moves the false-alarm rate around alpha by its quantiles' spread
    # (conformal validity is on average over calibration sets): measure it over several.
    rates = {rule: [] for rule in RULES}
    for split_seed in range(1, 3 if quick else 6):
        for rule in RULES:
            other = AdversarialDetector(alpha=ALPHA, combine=rule, model=_Handle(view),
                                        tensors=(layout,), seed=split_seed)
            other.fit(_batch(split.detector.x))
            rates[rule].append(float(other.score(_batch(x_test)).flagged.mean()))
    for rule in RULES:
        rates[rule].insert(0, float(clean_verdicts[rule].flagged.mean()))
        progress(f"clean false alarms at alpha {ALPHA} ({rule}), per calibration split: "
                 + ", ".join(f"{r:.2%}" for r in rates[rule]))
    ink = np.quantile(split.detector.x.reshape(len(split.detector.x), -1), 0.9, axis=0) > 0
    adversarial = craft(view, x_test, y_test, detector, quick, progress, ink)
    x_detector_adv = attacks.pgd(view.logits_fn, split.detector.x, split.detector.y, eps=0.3,
                                 norm="linf", steps=10 if quick else 40, clip_min=0.0,
                                 clip_max=1.0).x

    rows: list[dict[str, Any]] = []
    components = detector._fitted.components
    clean_parts, _ = detector._component_scores(view, detector._fitted, _batch(x_test).encoded)
    correct = view.class_probabilities(x_test).argmax(1) == y_test
    for name, result in adversarial.items():
        fooled = np.asarray(result.success) & correct
        parts, _ = detector._component_scores(view, detector._fitted, _batch(result.x).encoded)
        for rule, each in detectors.items():
            started = time.perf_counter()
            verdict = each.score(_batch(result.x))
            seconds = time.perf_counter() - started
            clean_verdict = clean_verdicts[rule]
            row = {"detector": "MetaSentry adversarial", "setting": f"{rule}, alpha={ALPHA}",
                   "combine": rule, "attack": name,
                   "attack_success": float(np.mean(result.success)),
                   "n_adversarial": int(fooled.sum()),
                   **metrics(clean_verdict.score, verdict.score[fooled]),
                   f"detection_at_alpha_{ALPHA}": float(np.mean(verdict.flagged[fooled])),
                   f"false_alarms_at_alpha_{ALPHA}": float(np.mean(clean_verdict.flagged)),
                   "records_per_second": len(result.x) / seconds,
                   "components_auroc": {
                       f"{m}@{layer}" if m == "mahalanobis" else m: metrics(
                           clean_parts[:, j], parts[fooled, j])["auroc"]
                       for j, (m, layer) in enumerate(components)}}
            rows.append(row)
            progress(f"MetaSentry ({rule}) on {name}: AUROC {row['auroc']:.3f}, detected at "
                     f"alpha {row[f'detection_at_alpha_{ALPHA}']:.1%}")

    np.savez_compressed(
        WORK / "data.npz", x_train=split.train.x, y_train=split.train.y,
        x_detector=split.detector.x, x_detector_adv=x_detector_adv, x_test=x_test,
        y_test=y_test, attacks=np.array(list(adversarial)),
        **{f"adv_{name}": result.x for name, result in adversarial.items()})
    art = run_art("adversarial", WORK, progress)
    return {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "command": "python -m bench.adversarial" + (" --quick" if quick else ""),
        "data": {"train": len(split.train), "detector": len(split.detector), "test": n_test,
                 "seed": seed, "cnn_sha256": sha, "clean_accuracy": clean_accuracy},
        "metasentry": rows,
        "false_alarms_by_calibration_split": rates,
        "art": art,
    }


def run_art(mode: str, work: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """ART's side in its own venv; a missing venv is reported, never silently skipped."""
    if not ART_PYTHON.exists():
        message = f"ART venv missing ({ART_PYTHON}): run bench/art_env.sh"
        progress(message)
        return {"error": message}
    output = work / f"art-{mode}.json"
    progress(f"running ART ({mode}) in {ART_PYTHON.parent.parent}")
    completed = subprocess.run(
        [str(ART_PYTHON), str(ROOT / "bench" / "art_side.py"), mode, "--input", str(work),
         "--output", str(output)], cwd=ROOT, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-5:]
        progress(f"ART failed: {' | '.join(tail)}")
        return {"error": "\n".join(tail)}
    loaded: dict[str, Any] = json.loads(output.read_text())
    return loaded


def report(results: dict[str, Any]) -> str:
    """The markdown tables of docs/bench/adversarial.md."""
    lines = [
        "# Adversarial inputs on MNIST: MetaSentry beside IBM ART",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores. "
        f"Command: `{results['command']}`. CNN clean test accuracy "
        f"{results['data']['clean_accuracy']:.2%} ({results['data']['train']} training, "
        f"{results['data']['detector']} detector, {results['data']['test']} test images).",
        "",
        "AUROC: clean test images against the attack's successful adversarial images. "
        "Detection @5 % / @1 %: thresholds at the clean test scores' quantiles (oracle, same "
        "for every detector). MetaSentry @alpha: its own calibrated decision (no oracle).",
        "",
        "| detector | attack | AUROC | det. @5 % FA | det. @1 % FA | own decision: det. / FA "
        "| records/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["metasentry"]:
        lines.append(
            f"| MetaSentry, {row['combine']} (no adversarial training) | {row['attack']} | "
            f"{row['auroc']:.3f} | "
            f"{row['detection_at_5pct_fa_oracle']:.1%} | {row['detection_at_1pct_fa_oracle']:.1%}"
            f" | {row[f'detection_at_alpha_{ALPHA}']:.1%} / "
            f"{row[f'false_alarms_at_alpha_{ALPHA}']:.1%} | {row['records_per_second']:,.0f} |")
    lines.append("")
    lines.append(f"MetaSentry's false-alarm rate on the {results['data']['test']} clean test "
                 f"images at alpha = {ALPHA}, for different random fit/calibration splits of the "
                 "detector images (seeds 0, 1, ...): " + "; ".join(
                     f"{rule}: " + ", ".join(f"{r:.2%}" for r in values) + f" (mean "
                     f"{np.mean(values):.2%})"
                     for rule, values in results["false_alarms_by_calibration_split"].items()))
    lines.append("")
    lines.append("| detector | attack | AUROC | det. @5 % FA | det. @1 % FA | own decision: det. / "
                 "FA | records/s |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    art = results.get("art") or {}
    if "error" in art:
        lines.append(f"| ART | — | — | — | — | — | {art['error']} |")
    for row in art.get("results", []):
        if row["detector"] == "SubsetScanningDetector":
            continue
        lines.append(_art_line(row))
    for best in art.get("best", []):
        match = [r for r in art.get("results", []) if r["detector"] == best["detector"]
                 and r["attack"] == best["attack"] and r["setting"] == best["setting"]]
        if match:
            lines.append(_art_line(match[0], note=" (best layer, chosen on test)"))
    return "\n".join(lines) + "\n"


def _art_line(row: dict[str, Any], note: str = "") -> str:
    detected = {tag: row.get(f"detection_of_successful_at_{tag}_fa_oracle",
                             row[f"detection_at_{tag}_fa_oracle"]) for tag in ("5pct", "1pct")}
    return (f"| ART {row['detector']} {row['setting']}{note} | {row['attack']} | "
            f"{row.get('auroc_successful', row['auroc']):.3f} | {detected['5pct']:.1%} | "
            f"{detected['1pct']:.1%} | {row['detection_art_rule']:.1%} / "
            f"{row['false_alarms_art_rule']:.1%} (ART's rule) | "
            f"{row['records_per_second']:,.0f} |")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = [row for row in results["metasentry"] if row["combine"] == RULES[0]]
    attacks = [row["attack"] for row in default]
    series = {f"MetaSentry ({RULES[0]})": [row["auroc"] for row in default]}
    art_rows = (results.get("art") or {}).get("results", [])
    for detector in ("BinaryInputDetector",):
        values = {r["attack"]: r.get("auroc_successful", r["auroc"]) for r in art_rows
                  if r["detector"] == detector}
        if values:
            series[f"ART {detector} (PGD-trained)"] = [values.get(a, np.nan) for a in attacks]
    best = {b["attack"]: b["auroc"] for b in (results.get("art") or {}).get("best", [])}
    if best:
        series["ART SubsetScanning (best layer)"] = [best.get(a, np.nan) for a in attacks]
    figure, axis = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        axis.bar(np.arange(len(attacks)) + k * width, values, width, label=label)
    axis.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2, attacks, rotation=15)
    axis.set_ylabel("AUROC (clean vs successful adversarial)")
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("Adversarial-input detection on MNIST")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def publish(name: str, results: dict[str, Any], render: Callable[[dict[str, Any]], str],
            draw: Callable[[dict[str, Any], Path], None], quick: bool) -> None:
    """docs/bench/<name>.json, .md and .png (``_quick`` suffixed for smoke runs); prints the
    tables."""
    suffix = "_quick" if quick else ""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / f"{name}{suffix}.md").write_text(render(results))
    draw(results, OUT / f"{name}{suffix}.png")
    print(render(results))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (smoke test)")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, progress=lambda line: print(line, flush=True))
    publish("adversarial", results, report, plot, args.quick)


if __name__ == "__main__":
    sys.exit(main())
