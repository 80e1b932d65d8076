"""The peers' side of the drift benchmark (alibi-detect and river), run in their own venv.

Usage (from the repository root, after ``bench/drift_env.sh``)::

    .venv-drift/bin/python bench/drift_peers.py alibi-windows --input task.npz --output out.json
    .venv-drift/bin/python bench/drift_peers.py alibi-online  --input task.npz --output out.json
    .venv-drift/bin/python bench/drift_peers.py river --output-dir DIR [--runs 10 ...]

This file imports only the standard library, numpy, alibi-detect (with its PyTorch backend),
torch and river: the peers' venv has no MetaSentry installed, and neither library is ever a
dependency of the project. Data goes both ways through ``.npz`` (read with
``allow_pickle=False``) and JSON files; the project side (``bench/drift.py``) writes the tasks
and reads the answers.

``alibi-windows``: ``task.npz`` holds ``n_refs`` and reference arrays ``ref__0``, ``ref__1``...
(float32 ``[n, d]``), the windows concatenated in ``windows`` with ``offsets`` (``[n_windows +
1]``) and ``window_ref`` (which reference each window is tested against), and ``detectors``
(names out of ``ks``, ``mmd``). KSDrift: one KS test per column, Bonferroni across columns
(alibi's default), at ``--p-val``. MMDDrift: PyTorch backend, Gaussian kernel with its bandwidth
set by alibi's median heuristic on the reference, ``--n-permutations`` permutations; the
reference is subsampled to ``--mmd-reference`` records (seeded) when it is larger, because a
permutation test over the full 2,000-record NSL-KDD reference costs seconds per window on two
CPU cores. The answer lists, per detector, the set-up seconds per reference and for every window
``is_drift``, the p-value (the smallest per-feature one for KSDrift) and the seconds it took.

``bench/drift.py`` runs this file with ``MALLOC_MMAP_THRESHOLD_=1048576``: under glibc's adaptive
threshold, MMDDriftOnline's threshold configuration (a 15 MB temporary per bootstrap sample on a
2,000-record reference) can fragment the heap to tens of GB; run it by hand the same way.

PyTorch runs on ``--threads`` threads (1 by default: on the two shared cores of the machines the
figures come from, one thread was as fast as two for these sizes, and steadier).

``alibi-online``: ``task.npz`` holds ``ref`` and streams concatenated in ``streams`` with
``offsets``. MMDDriftOnline (PyTorch backend) at ``--ert`` and ``--window``, thresholds
configured with ``--n-bootstraps`` bootstrap samples (alibi's set-up; its documentation asks for
many more than the ERT). Each stream is fed one record at a time from a freshly reset detector;
after each alarm the detector is reset (alibi's advice) and the alarm position recorded.

``river``: SEA (variant 0 to 3, 10 % label noise) and Agrawal (classification function 0 to 2)
with abrupt (width 1) and gradual (``--width``) concept drift built with
``river.datasets.synth.ConceptDriftStream`` (an abrupt change is the two concepts end to end:
``ConceptDriftStream(width=1)`` overflows in river 0.23), and each without drift. A Hoeffding tree
(river's defaults) learns the first ``--train`` records and is then frozen; its 0/1 error on
the next ``--length`` records is the monitored series, written to ``error_streams.npz``. River's
ADWIN, KSWIN and PageHinkley (their defaults; KSWIN seeded) run over each series and every alarm
position is written to ``river_alarms.json`` with the records/s of each detector. The drift
sits at ``--change`` records into the monitored part (the centre of a gradual drift).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

STREAM_NAMES = ("sea_abrupt", "sea_gradual", "sea_none",
                "agrawal_abrupt", "agrawal_gradual", "agrawal_none")
RIVER_DETECTORS = ("ADWIN", "KSWIN", "PageHinkley")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("alibi_detect", "torch", "river"):
        try:
            out[module] = __import__(module).__version__
        except ImportError:
            out[module] = "missing"
    return out


def _windows(data: Any) -> list[np.ndarray]:
    windows = np.asarray(data["windows"], dtype=np.float32)
    offsets = np.asarray(data["offsets"], dtype=np.int64)
    return [windows[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


# --------------------------------------------------------------------------- alibi, windows


def alibi_windows(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from alibi_detect.cd import KSDrift, MMDDrift

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    with np.load(args.input, allow_pickle=False) as data:
        refs = [np.asarray(data[f"ref__{i}"], dtype=np.float32) for i in range(int(data["n_refs"]))]
        windows = _windows(data)
        window_ref = np.asarray(data["window_ref"], dtype=np.int64)
        detectors = [str(name) for name in data["detectors"]]
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {"versions": _versions(), "detectors": {}}
    for name in detectors:
        setup: list[float] = []
        results: list[dict[str, Any]] = [{} for _ in windows]
        n_reference = []
        for r, ref in enumerate(refs):
            if name == "mmd" and len(ref) > args.mmd_reference:
                ref = ref[np.sort(rng.choice(len(ref), args.mmd_reference, replace=False))]
            n_reference.append(len(ref))
            started = time.perf_counter()
            if name == "ks":
                detector: Any = KSDrift(ref, p_val=args.p_val)
            elif name == "mmd":
                detector = MMDDrift(ref, backend="pytorch", p_val=args.p_val,
                                    n_permutations=args.n_permutations, device="cpu")
            else:
                raise ValueError(f"unknown detector {name!r}; use ks or mmd.")
            setup.append(time.perf_counter() - started)
            for w in np.flatnonzero(window_ref == r):
                started = time.perf_counter()
                prediction = detector.predict(windows[w])["data"]
                seconds = time.perf_counter() - started
                p_value = np.min(np.atleast_1d(prediction["p_val"]))
                results[w] = {"is_drift": bool(prediction["is_drift"]),
                              "p_value": float(p_value), "seconds": seconds}
        out["detectors"][name] = {"setup_seconds": setup, "windows": results,
                                  "n_reference": n_reference,
                                  "params": _window_params(name, args)}
        _progress(f"alibi {name}: {len(windows)} windows against {len(refs)} reference(s)")
    return out


def _window_params(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "ks":
        return {"p_val": args.p_val, "correction": "bonferroni"}
    return {"p_val": args.p_val, "backend": "pytorch", "n_permutations": args.n_permutations,
            "reference_subsample": args.mmd_reference, "kernel": "GaussianRBF, median heuristic"}


# --------------------------------------------------------------------------- alibi, online


def alibi_online(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from alibi_detect.cd import MMDDriftOnline

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    with np.load(args.input, allow_pickle=False) as data:
        ref = np.asarray(data["ref"], dtype=np.float32)
        streams = _windows({"windows": data["streams"], "offsets": data["offsets"]})
    started = time.perf_counter()
    detector = MMDDriftOnline(ref, ert=args.ert, window_size=args.window, backend="pytorch",
                              n_bootstraps=args.n_bootstraps, device="cpu", verbose=False)
    setup = time.perf_counter() - started
    results = []
    total_seconds, total_records = 0.0, 0
    for stream in streams:
        detector.reset_state()
        alarms: list[int] = []
        started = time.perf_counter()
        for t, x in enumerate(stream):
            if detector.predict(x)["data"]["is_drift"]:
                alarms.append(t)
                detector.reset_state()
        seconds = time.perf_counter() - started
        total_seconds += seconds
        total_records += len(stream)
        results.append({"alarms": alarms, "seconds": seconds, "records": len(stream)})
    _progress(f"alibi MMDDriftOnline: {len(streams)} streams, set-up {setup:.1f} s")
    return {"versions": _versions(), "setup_seconds": setup, "streams": results,
            "records_per_second": total_records / max(total_seconds, 1e-9),
            "params": {"ert": args.ert, "window_size": args.window, "backend": "pytorch",
                       "n_bootstraps": args.n_bootstraps, "n_reference": len(ref),
                       "reset_after_alarm": True}}


# --------------------------------------------------------------------------- river


def _synthetic(name: str, seed: int, args: argparse.Namespace) -> Any:
    from river.datasets import synth

    family, drift = name.split("_")
    if family == "sea":
        def make(concept: int, s: int) -> Any:
            return synth.SEA(variant=concept, noise=0.1, seed=s)
        before, after = 0, 3
    else:
        def make(concept: int, s: int) -> Any:
            return synth.Agrawal(classification_function=concept, seed=s)
        before, after = 0, 2
    total = args.train + args.length
    if drift == "none":
        return make(before, seed).take(total)
    if drift == "abrupt":
        # ConceptDriftStream(width=1) overflows math.exp in river 0.23 once a record lies more
        # than ~180 positions before the change, so an abrupt change is the two concepts end to
        # end, which is what width 1 means.
        position = args.train + args.change
        return itertools.chain(make(before, seed).take(position),
                               make(after, seed + 7919).take(total - position))
    stream = synth.ConceptDriftStream(stream=make(before, seed),
                                      drift_stream=make(after, seed + 7919),
                                      position=args.train + args.change, width=args.width,
                                      seed=seed)
    return stream.take(total)


def _error_series(name: str, seed: int, args: argparse.Namespace) -> np.ndarray:
    from river import tree

    model = tree.HoeffdingTreeClassifier()
    errors = np.zeros(args.length, dtype=np.uint8)
    for i, (x, y) in enumerate(_synthetic(name, seed, args)):
        if i < args.train:
            model.learn_one(x, y)
        else:
            errors[i - args.train] = model.predict_one(x) != y
    return errors


def _river_detector(name: str, seed: int) -> Any:
    from river import drift

    if name == "ADWIN":
        return drift.ADWIN()
    if name == "KSWIN":
        return drift.KSWIN(seed=seed)
    return drift.PageHinkley()


def river_streams(args: argparse.Namespace) -> dict[str, Any]:
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    for name in STREAM_NAMES:
        arrays[f"errors__{name}"] = np.stack(
            [_error_series(name, args.seed + run, args) for run in range(args.runs)])
        rates = arrays[f"errors__{name}"].mean(axis=0)
        change = args.change if not name.endswith("none") else args.length // 2
        _progress(f"river {name}: error rate {rates[:change].mean():.3f} before, "
                  f"{rates[change:].mean():.3f} after position {change}")
    change = [args.change if not n.endswith("none") else -1 for n in STREAM_NAMES]
    width = [1 if n.endswith("abrupt") else args.width if n.endswith("gradual") else 0
             for n in STREAM_NAMES]
    meta = {"train": args.train, "length": args.length, "runs": args.runs, "seed": args.seed,
            "classifier": "river.tree.HoeffdingTreeClassifier() (defaults), frozen after "
                          f"{args.train} records",
            "streams": {"sea": "SEA variant 0 -> 3 (threshold 8 -> 9.5), noise 0.1",
                        "agrawal": "Agrawal classification_function 0 -> 2"},
            "versions": _versions()}
    arrays.update(names=np.array(STREAM_NAMES), change=np.array(change), width=np.array(width),
                  meta=np.array(json.dumps(meta)))
    np.savez(out_dir / "error_streams.npz", **arrays)
    alarms: dict[str, Any] = {}
    for detector_name in RIVER_DETECTORS:
        per_stream: dict[str, Any] = {}
        seconds, records = 0.0, 0
        for name in STREAM_NAMES:
            runs = []
            for run, series in enumerate(arrays[f"errors__{name}"]):
                detector = _river_detector(detector_name, args.seed + run)
                positions = []
                started = time.perf_counter()
                for t, value in enumerate(series.tolist()):
                    detector.update(value)
                    if detector.drift_detected:
                        positions.append(t)
                seconds += time.perf_counter() - started
                records += len(series)
                runs.append(positions)
            per_stream[name] = runs
        alarms[detector_name] = {"alarms": per_stream,
                                 "records_per_second": records / max(seconds, 1e-9),
                                 "params": _river_params(detector_name)}
        _progress(f"river {detector_name}: {records} records")
    result = {"versions": _versions(), "meta": meta, "detectors": alarms}
    return result


def _river_params(name: str) -> dict[str, Any]:
    detector = _river_detector(name, 0)
    params = detector._get_params() if hasattr(detector, "_get_params") else {}
    return {key: value for key, value in params.items()
            if isinstance(value, int | float | str | bool) or value is None}


# --------------------------------------------------------------------------- command line


def _progress(message: str) -> None:
    print(f"[drift_peers] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    windows = sub.add_parser("alibi-windows")
    windows.add_argument("--input", required=True)
    windows.add_argument("--output", required=True)
    windows.add_argument("--p-val", type=float, default=0.01)
    windows.add_argument("--n-permutations", type=int, default=100)
    windows.add_argument("--mmd-reference", type=int, default=1000)
    windows.add_argument("--seed", type=int, default=0)
    windows.add_argument("--threads", type=int, default=1)
    online = sub.add_parser("alibi-online")
    online.add_argument("--input", required=True)
    online.add_argument("--output", required=True)
    online.add_argument("--ert", type=float, default=500)
    online.add_argument("--window", type=int, default=20)
    online.add_argument("--n-bootstraps", type=int, default=3000)
    online.add_argument("--seed", type=int, default=0)
    online.add_argument("--threads", type=int, default=1)
    river = sub.add_parser("river")
    river.add_argument("--output-dir", required=True)
    river.add_argument("--runs", type=int, default=10)
    river.add_argument("--train", type=int, default=1000)
    river.add_argument("--length", type=int, default=8000)
    river.add_argument("--change", type=int, default=4000)
    river.add_argument("--width", type=int, default=1000)
    river.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "alibi-windows": alibi_windows, "alibi-online": alibi_online, "river": river_streams}
    result = commands[args.command](args)
    output = Path(args.output) if args.command != "river" else (
        Path(args.output_dir) / "river_alarms.json")
    output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
