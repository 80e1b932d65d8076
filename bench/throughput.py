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
from agent.replay import replay_file  # noqa: E402
from agent.service import fit_reference  # noqa: E402

SAMPLE = REPO / "examples" / "nsl-kdd"


def _config(tmp: Path, batch_size: int) -> object:
    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
    data["sources"][0]["path"] = str(SAMPLE / "stream.csv.gz")
    data["storage"]["url"] = f"sqlite:///{tmp / 'bench.db'}"
    data["pipeline"]["batch_size"] = batch_size
    data["metrics"]["enabled"] = data["api"]["enabled"] = False
    data["logging"]["level"] = "WARNING"
    return parse_config(yaml.safe_dump(data), base_dir=REPO)


def bench_replay(repeats: int, batch_size: int) -> dict[str, float]:
    rates, p50s, p95s = [], [], []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            config = _config(Path(tmp), batch_size)
            started = time.perf_counter()
            summary = replay_file(config, SAMPLE / "stream.csv.gz", tune_gc=True)  # as the CLI
            wall = time.perf_counter() - started
        # records/s of the streaming part: the reference fit happens once per agent start
        rates.append(summary["records"] / wall)
        p50s.append(summary["batch_p50_ms"])
        p95s.append(summary["batch_p95_ms"])
        print(f"  replay {i + 1}/{repeats}: {summary['records']} records, "
              f"{rates[-1]:,.0f} records/s incl. start-up, batch p50 {p50s[-1]:.1f} ms "
              f"p95 {p95s[-1]:.1f} ms, {sum(summary['incidents'].values())} incidents",
              flush=True)
    batch_rate = batch_size / (np.median(p50s) / 1000)
    return {"records_per_s_incl_startup": float(np.median(rates)),
            "records_per_s_steady": float(batch_rate),
            "batch_p50_ms": float(np.median(p50s)), "batch_p95_ms": float(np.median(p95s)),
            "batch_size": batch_size, "records": 10_000}


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
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}", flush=True)
    print("end-to-end replay of examples/nsl-kdd/stream.csv.gz (SQLite):", flush=True)
    results = {"replay": bench_replay(args.repeats, args.batch_size)}
    print("windowed drift test:", flush=True)
    results["drift_test"] = bench_drift_test()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(results, indent=2))
    r = results["replay"]
    print(f"\nreplay: {r['records_per_s_incl_startup']:,.0f} records/s including start-up, "
          f"{r['records_per_s_steady']:,.0f} records/s steady (batch {r['batch_size']}), "
          f"batch p50 {r['batch_p50_ms']:.1f} ms, p95 {r['batch_p95_ms']:.1f} ms")


if __name__ == "__main__":
    main()
