"""Memory over a long follow run: does the agent's RSS stay flat over millions of records?

Starts `metasentry run` as its own process on a CSV file in follow mode (the drift detector on,
the live model too with ``--model``), appends the bundled NSL-KDD stream to that file again and
again while the agent tails it (never more than ``--ahead`` records ahead, so it is a live tail,
not a replay of a finished file), and samples the agent's resident memory (``VmRSS``) and its
processed-record counter (from its Prometheus endpoint) every ``--every`` seconds until it has
processed ``--records``. Prints progress, writes soak.json and a plot of RSS against records.

Usage: python -m bench.soak [--records 10000000] [--model] [--out docs/bench]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "nsl-kdd"
_PROCESSED = re.compile(rb"^metasentry_records_processed_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(tmp: Path, live: Path, port: int, model: bool) -> Path:
    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
    data["sources"] = [{"name": "soak", "type": "csv_file", "path": str(live), "mode": "follow",
                        "header": False}]
    data["storage"]["url"] = f"sqlite:///{tmp / 'soak.db'}"
    data["metrics"]["listen"] = f"127.0.0.1:{port}"
    data["api"]["enabled"] = False
    data["logging"]["level"] = "WARNING"
    data["model"]["cache_dir"] = str(tmp / "models")
    data["model"]["device"] = "cpu"
    if not model:
        data["model"]["enabled"] = False
        data["detectors"] = [d for d in data["detectors"] if d["type"] != "classifier"]
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _processed(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read()
    except OSError:
        return None  # not serving yet (fitting the reference, bootstrapping the model)
    return int(sum(float(value) for value in _PROCESSED.findall(text)))


def soak(records: int, model: bool, ahead: int, every_s: float) -> dict[str, Any]:
    """Run the agent until it processed ``records``; returns the samples and summary figures."""
    chunk = gzip.decompress((SAMPLE / "stream.csv.gz").read_bytes())
    per_chunk = chunk.count(b"\n")
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        live = tmp / "live.csv"
        live.write_bytes(b"")
        port = _free_port()
        config = _config(tmp, live, port, model)
        env = {**os.environ, "METASENTRY_API_TOKEN": "soak-not-served"}
        log = (tmp / "agent.log").open("wb")
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                 cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        written = processed = 0
        started = time.monotonic()
        next_sample = next_report = 0.0
        try:
            with live.open("ab") as out:
                while processed < records:
                    if agent.poll() is not None:
                        raise RuntimeError(f"the agent exited with {agent.returncode}; see "
                                           f"its log:\n{(tmp / 'agent.log').read_text()[-3000:]}")
                    while written < records and written - processed < ahead:
                        out.write(chunk)
                        out.flush()
                        written += per_chunk
                    now = time.monotonic() - started
                    if now >= next_sample:
                        seen = _processed(port)
                        if seen is not None:
                            processed = seen
                            samples.append({"seconds": now, "records": processed,
                                            "rss_mib": _rss_mib(agent.pid)})
                        next_sample = now + every_s
                    if now >= next_report and samples:
                        last = samples[-1]
                        print(f"  {last['records']:>12,.0f} records  RSS {last['rss_mib']:7.1f} MiB"
                              f"  {now:6.0f} s", flush=True)
                        next_report = now + 15
                    time.sleep(0.05)
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
            log.close()
    return {"records": processed, "model": model, "samples": samples,
            "seconds": samples[-1]["seconds"] if samples else 0.0, **_summary(samples)}


def _summary(samples: list[dict[str, float]]) -> dict[str, float]:
    """RSS once warm (first million records), at the end, and the growth between."""
    if not samples:
        return {}
    warm = next((s for s in samples if s["records"] >= 1_000_000), samples[0])
    tail = [s for s in samples if s["records"] >= warm["records"]]
    return {"rss_start_mib": samples[0]["rss_mib"], "rss_warm_mib": warm["rss_mib"],
            "rss_end_mib": samples[-1]["rss_mib"],
            "rss_max_after_warm_mib": max(s["rss_mib"] for s in tail),
            "growth_after_warm_mib": samples[-1]["rss_mib"] - warm["rss_mib"]}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    fig, axis = plt.subplots(figsize=(7, 3.4))
    axis.plot([s["records"] / 1e6 for s in samples], [s["rss_mib"] for s in samples])
    axis.set_xlabel("records processed (millions)")
    axis.set_ylabel("agent RSS (MiB)")
    label = "drift + live model" if result["model"] else "drift only"
    axis.set_title(f"metasentry run, CSV follow, {label}")
    axis.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--model", action="store_true", help="Run the live model as well.")
    parser.add_argument("--ahead", type=int, default=200_000,
                        help="Most records written and not yet processed.")
    parser.add_argument("--every", type=float, default=1.0, help="Seconds between samples.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    args = parser.parse_args()
    print(f"soak: {args.records:,} records through `metasentry run` following a CSV file "
          f"({'drift and live model' if args.model else 'drift only'})", flush=True)
    result = soak(args.records, args.model, args.ahead, args.every)
    name = "soak_model" if args.model else "soak"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    _plot(result, args.out / f"{name}.png")
    print(f"\n{result['records']:,} records in {result['seconds']:.0f} s; RSS "
          f"{result['rss_warm_mib']:.0f} MiB after the first million, {result['rss_end_mib']:.0f} "
          f"MiB at the end (growth {result['growth_after_warm_mib']:+.1f} MiB, peak "
          f"{result['rss_max_after_warm_mib']:.0f} MiB)", flush=True)


if __name__ == "__main__":
    main()
