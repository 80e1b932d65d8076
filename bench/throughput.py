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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.config import AgentConfig, parse_config  # noqa: E402
from agent.service import fit_reference  # noqa: E402
from bench.machine import cpu_model  # noqa: E402
from bench.throughput_limits import (  # noqa: E402
    decompressed,
    parse_limits,
    report_storage,
    stage_profile,
    year_on_disk,
)

SAMPLE = REPO / "examples" / "nsl-kdd"


def _config(tmp: Path, batch_size: int, model: dict[str, str] | None = None) -> AgentConfig:
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


def trained_model(directory: Path, members: int | None = None) -> dict[str, str]:
    """Bootstrap the default model once (as the agent's first start does) for the runs;
    ``members`` overrides the memory learner's ensemble size."""
    from agent.service import Agent

    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
    data["storage"]["url"] = f"sqlite:///{directory / 'bootstrap.db'}"
    data["model"].update(cache_dir=str(directory / "models"), device="cpu")
    if members is not None:
        data["model"]["members"] = members
    data["metrics"]["enabled"] = data["api"]["enabled"] = False
    config = parse_config(yaml.safe_dump(data), base_dir=REPO)
    agent = Agent(config)  # type: ignore[arg-type]
    started = time.perf_counter()
    agent.prepare()
    print(f"  bootstrap of the live model ({config.model.members} member(s)): "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    assert agent.runtime is not None and agent.runtime.version is not None
    sha = str(agent.runtime.version.base_sha256)
    agent.close()
    return {"path": str(directory / "models" / sha), "sha256": sha}


def _replay_once(tmp: Path, batch_size: int, copies: int, model: dict[str, str] | None,
                 stream_file: Path = SAMPLE / "stream.csv.gz",
                 wrap: Callable[[Callable[[], Any]], Any] | None = None,
                 ) -> tuple[Any, float, float]:
    """One fresh agent and database streaming ``stream_file`` ``copies`` times over.

    Returns the run's totals, its start-up and its streaming seconds; ``wrap`` runs the
    streaming part (a profiler) and its result is ignored.
    """
    from agent.datafile import open_file_source
    from agent.service import Agent, tune_garbage_collector

    config = _config(tmp, batch_size, model)
    # Concatenated gzip members are one valid gzip stream: a longer run, same records.
    stream = tmp / "stream.csv.gz"
    stream.write_bytes(stream_file.read_bytes() * copies)
    t0 = time.perf_counter()
    agent = Agent(config)  # type: ignore[arg-type]
    agent.prepare()
    agent.attach(open_file_source("bench", stream,
                                  columns=config.schema.columns,  # type: ignore[attr-defined]
                                  header=False))
    tune_garbage_collector()  # as `metasentry run` and `replay` do
    t1 = time.perf_counter()
    totals: list[Any] = []

    def run() -> None:
        totals.append(agent.run_sources(stop_when_exhausted=True))

    if wrap is None:
        run()
    else:
        wrap(run)
    t2 = time.perf_counter()
    agent.close()
    return totals[0], t1 - t0, t2 - t1


def bench_replay(repeats: int, batch_size: int, copies: int,
                 model: dict[str, str] | None = None) -> dict[str, float]:
    """Stream the sample (``copies`` times over) through a fresh agent and database.

    Start-up (migrations, reading and fitting the reference) is timed apart from streaming:
    a daemon pays it once, a replay of a small file mostly pays start-up.
    """
    stream_rates, cli_rates, startups, p50s, p95s = [], [], [], [], []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            totals, startup, streaming = _replay_once(Path(tmp), batch_size, copies, model)
        t0, t1, t2 = 0.0, startup, startup + streaming
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


def bench_profile(batch_size: int, copies: int,
                  model: dict[str, str] | None = None) -> dict[str, float]:
    """Where one streaming run's time goes, stage by stage (cProfile, so a little slower)."""
    shares: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _replay_once(Path(tmp), batch_size, copies, model,
                     wrap=lambda run: shares.update(stage_profile(run)))
    for stage, share in shares.items():
        print(f"    {stage:<34} {share:6.1%}", flush=True)
    return shares


def bench_report_storage(batch_size: int) -> dict[str, dict[str, float]]:
    """Bytes per stored drift report: quiet windows (the reference replayed against itself)
    and alarming ones (the sample stream), and what a year at 10,000 records/s stores."""
    out: dict[str, dict[str, float]] = {}
    for label, stream_file, copies in (("quiet", SAMPLE / "reference.csv.gz", 3),
                                       ("alarming", SAMPLE / "stream.csv.gz", 1)):
        with tempfile.TemporaryDirectory() as tmp:
            _replay_once(Path(tmp), batch_size, copies, None, stream_file=stream_file)
            figures = report_storage(Path(tmp) / "bench.db")
        figures["year_gb_at_10k_per_s"] = year_on_disk(figures["bytes_per_report"]) / 1e9
        out[label] = figures
        print(f"  {label} windows: {figures['reports']:.0f} reports "
              f"({figures['rejected']:.0f} rejected), {figures['bytes_per_report']:,.0f} bytes "
              f"each on disk (features JSON {figures['features_json_bytes']:,.0f} bytes); "
              f"a year at 10,000 records/s, window 1,000: "
              f"{figures['year_gb_at_10k_per_s']:,.0f} GB", flush=True)
    return out


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
    parser.add_argument("--members", type=int, default=None,
                        help="Ensemble size of the live model's memory learner [agent default].")
    parser.add_argument("--all-cores", action="store_true",
                        help="Do not pin the process to one CPU core.")
    args = parser.parse_args()
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # the target is per core
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs ({cores} "
          f"used), Python {platform.python_version()}", flush=True)
    print("end-to-end replay of examples/nsl-kdd/stream.csv.gz (SQLite), drift only:",
          flush=True)
    results: dict[str, Any] = {
        "cpu": cpu_model(),
        "replay": bench_replay(args.repeats, args.batch_size, args.copies)}
    print("the same with the live model (memory learner, classifier on every record):",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = trained_model(Path(tmp), args.members)
        results["replay_live_model"] = bench_replay(args.repeats, args.batch_size, args.copies,
                                                    model)
        print("where the time goes, drift only:", flush=True)
        results["profile"] = bench_profile(args.batch_size, args.copies)
        print("where the time goes, with the live model:", flush=True)
        results["profile_live_model"] = bench_profile(args.batch_size, args.copies, model)
    print("the fastest single-threaded readers of the same records (best of 5):", flush=True)
    limits = parse_limits(decompressed(SAMPLE / "stream.csv.gz", args.copies), repeats=5)
    results["parse_limits"] = limits
    print(f"  pyarrow.csv (one thread): {limits['pyarrow_csv_records_per_s']:,.0f} records/s; "
          f"csv.reader + float(): {limits['csv_reader_float_records_per_s']:,.0f} records/s",
          flush=True)
    for key, label in (("replay", "drift only"), ("replay_live_model", "with the live model")):
        r = results[key]
        r["ratio_to_pyarrow"] = r["records_per_s_streaming"] / limits["pyarrow_csv_records_per_s"]
        r["ratio_to_csv_reader"] = (r["records_per_s_streaming"]
                                    / limits["csv_reader_float_records_per_s"])
        print(f"  pipeline {label}: {r['ratio_to_pyarrow']:.1%} of pyarrow's rate, "
              f"{r['ratio_to_csv_reader']:.1%} of csv.reader + float() (goal: 25 % of the "
              f"fastest)", flush=True)
    print("drift report storage:", flush=True)
    results["report_storage"] = bench_report_storage(args.batch_size)
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


def _plot(results: dict[str, Any], path: Path) -> None:
    """Rates beside the parsing limits, where the time goes, and the drift test beside scipy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, d, limits = results["replay"], results["drift_test"], results["parse_limits"]
    live = results["replay_live_model"]
    fig, (rates, stages, drift) = plt.subplots(1, 3, figsize=(15, 3.8))
    rates.barh(["pyarrow.csv, one thread", "csv.reader + float()", "MetaSentry, drift only",
                "MetaSentry, live model"],
               [limits["pyarrow_csv_records_per_s"] / 1000,
                limits["csv_reader_float_records_per_s"] / 1000,
                r["records_per_s_streaming"] / 1000, live["records_per_s_streaming"] / 1000],
               color=["tab:gray", "tab:gray", "tab:blue", "tab:blue"])
    rates.axvline(0.25 * limits["pyarrow_csv_records_per_s"] / 1000, color="red",
                  linestyle="--", label="goal: 25 % of the fastest reader")
    rates.set_xlabel("thousand records/s, one core (same records, same run)")
    rates.legend(loc="lower right", fontsize=8)
    left = [0.0, 0.0]
    for stage in results["profile"]:
        shares = [results["profile"][stage], results["profile_live_model"][stage]]
        stages.barh(["drift only", "live model"], shares, left=left, label=stage)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    stages.set_xlabel("share of streaming time (cProfile)")
    stages.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    drift.barh(["MetaSentry", "scipy per feature"], [d["ours_ms"], d["scipy_ms"]],
               color=["tab:blue", "tab:gray"])
    drift.set_xscale("log")
    drift.set_xlabel("ms per 1000-record window, 41 features")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
