"""End-to-end throughput of the agent on the bundled sample, and the drift test's own cost.

Measures ``metasentry replay`` (the same pipeline and store as ``run``) on the bundled
NSL-KDD stream with SQLite: records/s end to end and per-batch latency p50/p95, over several
fresh databases. Then times the windowed drift test alone against the straightforward scipy
way of doing the same tests (``ks_2samp`` and ``chi2_contingency`` per feature), on the same
windows, and prints the ratio.

Usage: python bench/throughput.py [--repeats N] [--batch-size N] [--out docs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.config import parse_config  # noqa: E402
from agent.service import fit_reference  # noqa: E402

SAMPLE = REPO / "examples" / "nsl-kdd"


def _config(tmp: Path, batch_size: int, model: dict[str, str] | None = None) -> object:
    """agent.yaml on the sample; the live model off (drift only) unless ``model`` is given.

    ``model`` (``{"path", "sha256"}``) serves a model trained once beforehand, so every run
    measures streaming and scoring, not meta-training.
    """
    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
    data["sources"][0]["path"] = str(SAMPLE / "stream.csv.gz")
    data["storage"]["url"] = f"sqlite:///{tmp / 'bench.db'}"
    data["pipeline"]["batch_size"] = batch_size
    data["metrics"]["enabled"] = data["api"]["enabled"] = False
    data["logging"]["level"] = "WARNING"
    data["model"]["cache_dir"] = str(tmp / "models")
    data["model"]["device"] = "cpu"
    if model is None:
        data["model"]["enabled"] = False
        data["detectors"] = [d for d in data["detectors"] if d["type"] != "classifier"]
    else:
        data["model"].update(path=model["path"], sha256=model["sha256"], bootstrap=False)
    return parse_config(yaml.safe_dump(data), base_dir=REPO)


def trained_model(directory: Path) -> dict[str, str]:
    """Bootstrap the default model once (as the agent's first start does) for the runs."""
    from agent.service import Agent

    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
    data["storage"]["url"] = f"sqlite:///{directory / 'bootstrap.db'}"
    data["model"].update(cache_dir=str(directory / "models"), device="cpu")
    data["metrics"]["enabled"] = data["api"]["enabled"] = False
    config = parse_config(yaml.safe_dump(data), base_dir=REPO)
    agent = Agent(config)  # type: ignore[arg-type]
    agent.prepare()
    assert agent.runtime is not None and agent.runtime.version is not None
    sha = str(agent.runtime.version.base_sha256)
    agent.close()
    return {"path": str(directory / "models" / sha), "sha256": sha}


def bench_replay(repeats: int, batch_size: int, copies: int,
                 model: dict[str, str] | None = None) -> dict[str, float]:
    """Stream the sample (``copies`` times over) through a fresh agent and database.

    Start-up (migrations, reading and fitting the reference) is timed apart from streaming:
    a daemon pays it once, a replay of a small file mostly pays start-up.
    """
    from agent.datafile import open_file_source
    from agent.service import Agent, tune_garbage_collector

    stream_rates, cli_rates, startups, p50s, p95s = [], [], [], [], []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            config = _config(Path(tmp), batch_size, model)
            # Concatenated gzip members are one valid gzip stream: a longer run, same records.
            stream = Path(tmp) / "stream.csv.gz"
            stream.write_bytes((SAMPLE / "stream.csv.gz").read_bytes() * copies)
            t0 = time.perf_counter()
            agent = Agent(config)  # type: ignore[arg-type]
            agent.prepare()
            agent.attach(open_file_source("bench", stream,
                                          columns=config.schema.columns,  # type: ignore[attr-defined]
                                          header=False))
            tune_garbage_collector()  # as `metasentry run` and `replay` do
            t1 = time.perf_counter()
            totals = agent.run_sources(stop_when_exhausted=True)
            t2 = time.perf_counter()
            agent.close()
        latencies = np.asarray(totals.batch_seconds) * 1000
        stream_rates.append(totals.received / (t2 - t1))
        cli_rates.append(totals.received / (t2 - t0))
        startups.append(t1 - t0)
        p50s.append(float(np.percentile(latencies, 50)))
        p95s.append(float(np.percentile(latencies, 95)))
        print(f"  run {i + 1}/{repeats}: {totals.received} records, streaming "
              f"{stream_rates[-1]:,.0f} records/s (fetch, parse, encode, detect, commit), "
              f"start-up {startups[-1]:.2f} s, batch p50 {p50s[-1]:.1f} ms p95 {p95s[-1]:.1f} ms, "
              f"{sum(totals.incidents.values())} incidents", flush=True)
    return {"records_per_s_streaming": float(np.median(stream_rates)),
            "records_per_s_incl_startup": float(np.median(cli_rates)),
            "startup_s": float(np.median(startups)),
            "batch_p50_ms": float(np.median(p50s)), "batch_p95_ms": float(np.median(p95s)),
            "batch_size": batch_size, "records": totals.received, "repeats": repeats}


def bench_drift_test() -> dict[str, float]:
    """The feature-drift detector vs per-feature scipy calls on identical windows."""
    from scipy import stats

    from agent.datafile import read_records
    from detectors.feature_drift import FeatureDriftDetector

    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp), 1000)
        encoder, reference = fit_reference(config)  # type: ignore[arg-type]
    data = read_records(SAMPLE / "stream.csv.gz", columns=config.schema.columns, header=False)
    stream = encoder.encode(data.records, textual=True).features
    size = 1000
    windows = [stream.take(np.arange(s, s + size)) for s in range(0, len(stream) - size + 1, size)]

    detector = FeatureDriftDetector(window=size, step=size, alpha=0.01)
    detector.fit(reference)
    t0 = time.perf_counter()
    reports = [r for w in windows for r in detector.update(w)]
    ours_s = (time.perf_counter() - t0) / len(windows)

    t0 = time.perf_counter()
    for w in windows:
        for j in range(reference.numeric.shape[1]):
            stats.ks_2samp(reference.numeric[:, j], w.numeric[:, j])
        for j in range(reference.categorical.shape[1]):
            k = len(reference.categorical_vocab[j]) + 1
            table = np.stack([np.bincount(reference.categorical[:, j], minlength=k),
                              np.bincount(w.categorical[:, j], minlength=k)])
            table = table[:, table.sum(axis=0) > 0]
            if table.shape[1] > 1:
                stats.chi2_contingency(table)
    scipy_s = (time.perf_counter() - t0) / len(windows)
    rejected = sum(r.rejected for r in reports)
    print(f"  drift test per window of {size}: MetaSentry {ours_s * 1000:.2f} ms, scipy "
          f"per-feature calls {scipy_s * 1000:.2f} ms, ratio {scipy_s / ours_s:.1f}x "
          f"({rejected}/{len(reports)} windows rejected)", flush=True)
    return {"ours_ms": ours_s * 1000, "scipy_ms": scipy_s * 1000, "speedup": scipy_s / ours_s,
            "windows": len(reports), "rejected": rejected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=3,
                        help="Stream the 10,000-record sample this many times per run.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--all-cores", action="store_true",
                        help="Do not pin the process to one CPU core.")
    args = parser.parse_args()
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # the target is per core
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cores} used), Python "
          f"{platform.python_version()}", flush=True)
    print("end-to-end replay of examples/nsl-kdd/stream.csv.gz (SQLite), drift only:",
          flush=True)
    results = {"replay": bench_replay(args.repeats, args.batch_size, args.copies)}
    print("the same with the live model (memory learner, classifier on every record):",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = trained_model(Path(tmp))
        results["replay_live_model"] = bench_replay(args.repeats, args.batch_size, args.copies,
                                                    model)
    print("windowed drift test:", flush=True)
    results["drift_test"] = bench_drift_test()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(results, indent=2))
    live = results["replay_live_model"]
    print(f"\nwith the live model: {live['records_per_s_streaming']:,.0f} records/s "
          f"streaming, batch p50 {live['batch_p50_ms']:.1f} ms, p95 {live['batch_p95_ms']:.1f} ms")
    r = results["replay"]
    print(f"\nreplay: {r['records_per_s_streaming']:,.0f} records/s streaming, "
          f"{r['records_per_s_incl_startup']:,.0f} records/s including {r['startup_s']:.1f} s "
          f"start-up (batch {r['batch_size']}), batch p50 {r['batch_p50_ms']:.1f} ms, "
          f"p95 {r['batch_p95_ms']:.1f} ms")
    _plot(results, args.out / "throughput.png")


def _plot(results: dict[str, dict[str, float]], path: Path) -> None:
    """Bars of records/s and of the drift test's per-window cost beside scipy's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, d = results["replay"], results["drift_test"]
    live = results["replay_live_model"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.barh(["drift only", "drift only, incl. start-up", "with the live model"],
              [r["records_per_s_streaming"], r["records_per_s_incl_startup"],
               live["records_per_s_streaming"]], color="tab:blue")
    left.axvline(20_000, color="red", linestyle="--", label="target 20k/s")
    left.set_xlabel("records/s, one core (bundled sample, SQLite)")
    left.legend(loc="lower right")
    right.barh(["MetaSentry", "scipy per feature"], [d["ours_ms"], d["scipy_ms"]],
               color=["tab:blue", "tab:gray"])
    right.set_xscale("log")
    right.set_xlabel("ms per 1000-record window, 41 features")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
