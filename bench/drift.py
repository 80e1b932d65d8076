"""Distribution shift: MetaSentry's drift detectors beside alibi-detect's and river's.

Run with ``make bench`` or ``nice -n 10 .venv/bin/python -m bench.drift`` (``--quick`` for a
smoke run of a minute or two). The peers run in their own venv (``bench/drift_env.sh``, made
by ``make drift-env``) through ``bench/drift_peers.py``; a missing venv is reported in the
output and the MetaSentry side still runs. Data and injections: :mod:`bench.drift_streams`.

Three parts, each side by side on the same records:

**NSL-KDD windows.** A reference of 2,000 KDDTrain+_20Percent records; for windows of 30, 100
and 500 records, 40 no-shift windows (other records of the same file) and 40 shifted windows
(KDDTest+). Per contender: false alarms and detections out of 40, records/s (window tests only)
and set-up seconds. Every MetaSentry contender is a ``detectors:`` entry built through
:func:`detectors.build_detector` with ``window = step =`` the window size, so every window is
tested once, in order (no-shift windows first); alibi-detect's KSDrift (one KS test per encoded
column, Bonferroni) and MMDDrift (PyTorch backend, 100 permutations, reference subsampled to
1,000 records for time) get the same encoded matrices (``FeatureBatch.encoded``: the agent's
model input, ``log1p`` + z-score and one-hot). Everything runs at a false-alarm level of 1 %.

**NSL-KDD online.** Online detectors (alibi's MMDDriftOnline at ERT 500, window 20; MetaSentry's
online contenders) on record-by-record streams: *no-shift* streams of 1,000 training-file records
give the run length to the first false alarm (mean run length estimated as exposure / alarms,
censored streams included), *shifted* streams (100 no-shift records, then 400 KDDTest+ records)
the detection delay after the change. Set-up seconds and records/s.

**Elec2 with injected shifts.** Segments of the electricity stream (from row 17,424, where the
Victorian columns are real): the reference is the 4 weeks (1,344 records) before the segment,
the monitored part 1,296 records (27 days) tested in one-week windows (336 records) every two
days (96 records), i.e. 11 windows per segment, all starting at midnight. Benign segments give
false alarms per 100 windows; in the others one shift is injected for two weeks (672 records)
from the end of the first window on: a mean moved by 0.5 and 1 reference standard deviation,
the standard deviation doubled, 5 % and 15 % of records with a new ``day`` category, and the
nswdemand / vicdemand correlation reversed with every day's marginals kept. Two orders: the
stream as it is (*time*), and each segment's records shuffled before the split and the injection
(*shuffled*), where benign windows are exchangeable with the reference. Detection: an alarm in
a window overlapping the block; delay: that window's end minus the block's start (records; 2 per
hour).
The chance of "detecting" by false alarms alone is reported beside it. The *envelope* part
(:mod:`bench.drift_envelope`, no detector) measures how often benign windows already move a
feature's mean by the goal's smallest shift, for several reference lengths.

**River streams.** Concept drift (SEA, Agrawal; abrupt and gradual, and without drift) seen
through a frozen Hoeffding tree's 0/1 error series (see :mod:`bench.drift_streams`): delay and
false alarms of MetaSentry's change detectors (``detectors.change_detectors``) against river's
ADWIN, KSWIN and PageHinkley on the same series.

Contenders are listed in :data:`WINDOW_CONTENDERS` and :data:`ONLINE_CONTENDERS` as plain
``detectors:`` entries; a type not registered in ``detectors.DETECTOR_TYPES`` (or an entry its
config model rejects) is reported "not available", and is picked up as soon as it exists.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import drift_streams as ds
from bench.drift_envelope import benign_envelope
from bench.drift_envelope import markdown as envelope_markdown
from bench.machine import cpu_model
from detectors.base import FeatureBatch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench"
WORK = ROOT / "var" / "bench" / "drift"
DRIFT_PYTHON = Path(os.environ.get("DRIFT_VENV", ROOT / ".venv-drift")) / "bin" / "python"
PEERS = ROOT / "bench" / "drift_peers.py"
ALPHA = 0.01
ONLINE_ERT = 500
ONLINE_WINDOW = 20

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; :meth:`quick` is the smoke run."""

    n_windows: int = ds.NSL_WINDOWS
    window_sizes: tuple[int, ...] = ds.NSL_WINDOW_SIZES
    online_runs: int = 15
    online_h0_length: int = 1000
    online_pre: int = 100
    online_post: int = 400
    online_chunk: int = 10
    n_bootstraps: int = 3000
    mmd_reference: int = 1000
    elec_mmd_reference: int = 500
    n_permutations: int = 100
    elec_reference: int = 1344      # 4 weeks
    elec_window: int = 336          # 1 week
    elec_step: int = 96             # 2 days
    elec_windows: int = 11
    elec_block_length: int = 672    # 2 weeks
    elec_placements: int = 4        # per injected kind
    elec_benign: int = 8
    river_runs: int = 6
    river_train: int = 1000
    river_length: int = 6000
    river_change: int = 3000
    river_width: int = 1000

    @classmethod
    def quick(cls) -> Settings:
        return cls(n_windows=10, online_runs=3, online_h0_length=600, n_bootstraps=1000,
                   elec_placements=1, elec_benign=2, river_runs=2, river_length=3000,
                   river_change=1500, river_width=500)

    @property
    def elec_monitored(self) -> int:
        return self.elec_window + (self.elec_windows - 1) * self.elec_step

    @property
    def elec_block_start(self) -> int:
        """Where a block starts in the monitored part: right after the first window."""
        return self.elec_window


# --------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Contender:
    """One MetaSentry row: a ``detectors:`` entry (a function of window and step) and an
    optional wrapper (``"rolling_reference"``: the agent's rolling reference mode)."""

    label: str
    entry: Callable[[int, int], dict[str, Any]]
    wrap: str | None = None
    note: str = ""


def _feature_drift(**extra: Any) -> Callable[[int, int], dict[str, Any]]:
    def entry(window: int, step: int) -> dict[str, Any]:
        return {"type": "feature_drift", "name": "feature_drift", "window": window, "step": step,
                "alpha": ALPHA, "min_window": min(100, window), **extra}
    return entry


def _windowed(kind: str, **extra: Any) -> Callable[[int, int], dict[str, Any]]:
    def entry(window: int, step: int) -> dict[str, Any]:
        return {"type": kind, "name": kind, "window": window, "step": step, "alpha": ALPHA,
                "min_window": min(100, window), **extra}
    return entry


WINDOW_CONTENDERS: tuple[Contender, ...] = (
    Contender("feature_drift", _feature_drift()),
    Contender("feature_drift, min_effect 0.1", _feature_drift(min_effect=0.1)),
    Contender("mmd_drift", _windowed("mmd_drift")),
    Contender("classifier_drift", _windowed("classifier_drift")),
    # The hook for references that move: the same entry, wrapped by RollingReference (the
    # agent's `reference.mode: rolling`, detectors.reference.RollingPolicy defaults).
    Contender("feature_drift, rolling reference", _feature_drift(), wrap="rolling_reference"),
)


# Elec2 records carry timestamps: contenders that need them join there only.
ELEC2_EXTRA_CONTENDERS: tuple[Contender, ...] = (
    Contender("feature_drift, seasonal (hour of day)",
              _feature_drift(seasonality="hour_of_day", timezone="UTC")),
)


def _online(**extra: Any) -> Callable[[int, int], dict[str, Any]]:
    def entry(window: int, step: int) -> dict[str, Any]:
        del window, step  # online detectors run at their own ERT and window
        return {"type": "online_drift", "name": "online_drift", "ert": ONLINE_ERT,
                "window": ONLINE_WINDOW, **extra}
    return entry


ONLINE_CONTENDERS: tuple[Contender, ...] = (
    Contender("online_drift", _online()),
    Contender("online_drift, CUSUM", _online(method="cusum")),
    Contender("online_drift, Page-Hinkley", _online(method="page_hinkley")),
    Contender("online_drift, ADWIN", _online(method="adwin")),
)

CHANGE_DETECTORS = ("Cusum", "PageHinkley", "Adwin")


class Unavailable(Exception):
    """A contender that cannot be built here; the message says why."""


def build(contender: Contender, window: int, step: int, reference: FeatureBatch) -> Any:
    """The contender's detector, built and fitted through the registry, or :class:`Unavailable`."""
    from pydantic import ValidationError

    from detectors import DETECTOR_TYPES, DetectorContext, build_detector

    entry = contender.entry(window, step)
    detector_class = DETECTOR_TYPES.get(entry["type"])
    if detector_class is None:
        raise Unavailable(f"type {entry['type']!r} is not registered in "
                          "detectors.DETECTOR_TYPES")
    try:
        config = detector_class.Config.model_validate(entry)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in error.errors())
        raise Unavailable(f"its config rejects {entry}: {problems}") from None
    try:
        detector = build_detector(config, DetectorContext(reference=reference))
    except Exception as error:  # a detector that needs what the benchmark lacks (a model)
        raise Unavailable(f"build failed: {type(error).__name__}: {error}") from None
    if contender.wrap == "rolling_reference":
        return RollingReference.around(detector, reference)
    if contender.wrap is not None:
        raise Unavailable(f"unknown wrapper {contender.wrap!r}")
    return detector


def _alarms(reports: Sequence[Any]) -> list[tuple[int, bool]]:
    return [(int(r.records_seen), bool(r.rejected)) for r in reports]


def feed(detector: Any, batch: FeatureBatch) -> list[tuple[int, bool]]:
    """``(records_seen, alarm)`` for each window the batch completed."""
    if isinstance(detector, RollingReference):
        return detector.update(batch)
    return _alarms(detector.update(batch))


class RollingReference:
    """A window detector whose reference follows the stream as the agent's rolling mode does.

    After each window without an alarm, the records new since the previous report join the
    reference through :class:`detectors.reference.RollingPolicy` (defaults: at most 5 % of the
    reference per window, newest kept) and the detector gets it by ``set_reference`` (the
    window and schedule are kept). A move that would take the reference further than
    ``anchor_limit`` from the initial one is held back and counted as an alarm (the agent's
    ``reference_drift`` incident), and the reference stops following.
    """

    def __init__(self, detector: Any, reference: FeatureBatch, policy: Any,
                 distance: Callable[[FeatureBatch, FeatureBatch], Any]) -> None:
        self.detector, self.reference, self.anchor = detector, reference, reference
        self.policy, self.distance = policy, distance
        self.accepted, self.held = 0, False
        self.moves = 0
        self._recent: list[FeatureBatch] = []
        self._recent_start = 0
        self._fed = 0

    @classmethod
    def around(cls, detector: Any, reference: FeatureBatch) -> RollingReference:
        try:
            from detectors.reference import RollingPolicy, anchor_distance
        except ImportError as error:
            raise Unavailable(f"detectors.reference has no rolling policy yet ({error})") from None
        if not hasattr(detector, "set_reference"):
            raise Unavailable(f"{type(detector).__name__} has no set_reference yet")
        return cls(detector, reference, RollingPolicy(), anchor_distance)

    def update(self, batch: FeatureBatch) -> list[tuple[int, bool]]:
        self._recent.append(batch)
        self._fed += len(batch)
        out = []
        for report in self.detector.update(batch):
            alarm = bool(report.rejected)
            if not alarm and not self.held:
                alarm = self._follow(report)
            out.append((int(report.records_seen), alarm))
        self._trim()
        return out

    def _follow(self, report: Any) -> bool:
        step = int(getattr(self.detector, "step", 0) or report.n_window)
        records = FeatureBatch.concat(self._recent)
        stop = report.records_seen - self._recent_start
        new = records.take(slice(max(0, stop - step), stop))
        proposal = self.policy.follow(self.reference, new, accepted_before=self.accepted,
                                      seed=int(report.records_seen))
        if self.distance(self.anchor, proposal).distance > self.policy.anchor_limit:
            self.held = True
            return True
        self.accepted += len(new)
        self.reference = proposal
        self.moves += 1
        self.detector.set_reference(proposal)
        return False

    def _trim(self) -> None:
        keep = int(getattr(self.detector, "window", 0)) + 2 * max(
            (len(b) for b in self._recent), default=0)
        while self._recent and self._fed - self._recent_start - len(self._recent[0]) >= keep:
            self._recent_start += len(self._recent.pop(0))


# --------------------------------------------------------------------------- peers


@dataclass
class Peers:
    """The peers' venv, and why it could not be used when it could not."""

    python: Path = DRIFT_PYTHON
    skip: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return not self.skip and self.python.exists()

    def why_not(self) -> str:
        if self.skip:
            return "peers skipped (--skip-peers)"
        return f"peers' venv missing ({self.python}): run bench/drift_env.sh (make drift-env)"

    def run(self, args: Sequence[str], progress: Progress) -> bool:
        command = [str(self.python), str(PEERS), *args]
        progress(f"peers: {' '.join(args[:1])} in {self.python.parent.parent.name}")
        # A fixed mmap threshold: with glibc's adaptive one, alibi's MMDDriftOnline set-up (a
        # 15 MB temporary per bootstrap between small long-lived tensors) fragmented the heap
        # up to 23 GB on a 2,000-record reference and was killed; fixed, it peaks near 1 GB.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        for line in completed.stderr.splitlines():
            if line.startswith("[drift_peers]"):
                progress("  " + line)
        if completed.returncode != 0:
            tail = completed.stderr.strip().splitlines()[-3:]
            self.problems.append(f"{args[0]} failed (exit {completed.returncode}): "
                                 + " | ".join(tail))
            progress(f"  peers failed: {self.problems[-1]}")
            return False
        return True


def _save_windows(path: Path, refs: Sequence[np.ndarray], windows: Sequence[np.ndarray],
                  window_ref: Sequence[int], detectors: Sequence[str]) -> None:
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in windows])]).astype(np.int64)
    arrays: dict[str, Any] = {f"ref__{i}": np.asarray(r, np.float32) for i, r in enumerate(refs)}
    arrays.update(n_refs=np.asarray(len(refs)), offsets=offsets,
                  windows=np.concatenate(windows).astype(np.float32),
                  window_ref=np.asarray(window_ref, np.int64), detectors=np.asarray(detectors))
    np.savez(path, **arrays)


def alibi_windows(peers: Peers, name: str, refs: Sequence[np.ndarray],
                  windows: Sequence[np.ndarray], window_ref: Sequence[int], mmd_reference: int,
                  settings: Settings, progress: Progress) -> dict[str, Any] | None:
    if not peers.available:
        return None
    WORK.mkdir(parents=True, exist_ok=True)
    task, answer = WORK / f"{name}-windows.npz", WORK / f"{name}-alibi-windows.json"
    _save_windows(task, refs, windows, window_ref, ("ks", "mmd"))
    ok = peers.run(["alibi-windows", "--input", str(task), "--output", str(answer),
                    "--p-val", str(ALPHA), "--mmd-reference", str(mmd_reference),
                    "--n-permutations", str(settings.n_permutations)], progress)
    return json.loads(answer.read_text()) if ok else None


# --------------------------------------------------------------------------- NSL-KDD


def _rate(count: int, total: int) -> str:
    return f"{count}/{total}"


def run_nsl_windows(protocol: ds.NslKddProtocol, settings: Settings, peers: Peers,
                    progress: Progress) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for contender in WINDOW_CONTENDERS:
        for size in settings.window_sizes:
            row: dict[str, Any] = {"side": "MetaSentry", "detector": contender.label,
                                   "entry": contender.entry(size, size), "window": size}
            try:
                started = time.perf_counter()
                detector = build(contender, size, size, protocol.reference)
                row["setup_seconds"] = time.perf_counter() - started
            except Unavailable as why:
                del row["window"]
                rows.append({**row, "available": False, "why": str(why)})
                progress(f"NSL-KDD {contender.label}: not available ({why})")
                break
            seconds, counts = 0.0, {}
            for kind, windows in (("no_shift", protocol.no_shift[size]),
                                  ("shifted", protocol.shifted[size])):
                alarms = 0
                for window in windows:
                    started = time.perf_counter()
                    events = feed(detector, window)
                    seconds += time.perf_counter() - started
                    alarms += any(alarm for _, alarm in events)
                counts[kind] = alarms
            n = len(protocol.no_shift[size])
            row.update(available=True, false_alarms=counts["no_shift"],
                       detections=counts["shifted"], n_windows=n,
                       records_per_second=2 * n * size / max(seconds, 1e-9))
            rows.append(row)
            progress(f"NSL-KDD {contender.label} w={size}: false alarms "
                     f"{_rate(counts['no_shift'], n)}, detections {_rate(counts['shifted'], n)}")
    rows += _nsl_alibi_windows(protocol, settings, peers, progress)
    return {"rows": rows}


def _nsl_alibi_windows(protocol: ds.NslKddProtocol, settings: Settings, peers: Peers,
                       progress: Progress) -> list[dict[str, Any]]:
    labels = {"ks": "KSDrift", "mmd": "MMDDrift (torch)"}
    if not peers.available:
        return [{"side": "alibi-detect", "detector": label, "available": False,
                 "why": peers.why_not()} for label in labels.values()]
    windows, tags = [], []
    for size in settings.window_sizes:
        for kind, group in (("no_shift", protocol.no_shift[size]),
                            ("shifted", protocol.shifted[size])):
            windows += [w.encoded for w in group]
            tags += [(size, kind)] * len(group)
    answer = alibi_windows(peers, "nsl", [protocol.reference.encoded], windows,
                           [0] * len(windows), settings.mmd_reference, settings, progress)
    if answer is None:
        return [{"side": "alibi-detect", "detector": label, "available": False,
                 "why": peers.problems[-1]} for label in labels.values()]
    rows = []
    for key, label in labels.items():
        result = answer["detectors"][key]
        for size in settings.window_sizes:
            picked = [(kind, w) for (s, kind), w in zip(tags, result["windows"], strict=True)
                      if s == size]
            seconds = sum(w["seconds"] for _, w in picked)
            row = {"side": "alibi-detect", "detector": label, "window": size, "available": True,
                   "false_alarms": sum(w["is_drift"] for k, w in picked if k == "no_shift"),
                   "detections": sum(w["is_drift"] for k, w in picked if k == "shifted"),
                   "n_windows": len(picked) // 2,
                   "records_per_second": len(picked) * size / max(seconds, 1e-9),
                   "setup_seconds": result["setup_seconds"][0],
                   "params": result["params"], "n_reference": result["n_reference"][0]}
            rows.append(row)
            progress(f"NSL-KDD {label} w={size}: false alarms "
                     f"{_rate(row['false_alarms'], row['n_windows'])}, detections "
                     f"{_rate(row['detections'], row['n_windows'])}")
    return rows


def online_streams(protocol: ds.NslKddProtocol, settings: Settings
                   ) -> tuple[list[FeatureBatch], list[FeatureBatch]]:
    """No-shift streams (run length) and shifted streams (delay after ``online_pre``)."""
    rng = np.random.default_rng([protocol.seed, 7])
    train, test = protocol.train_pool, protocol.test_pool
    quiet = [train.take(rng.choice(len(train), settings.online_h0_length, replace=False))
             for _ in range(settings.online_runs)]
    shifted = [FeatureBatch.concat([
        train.take(rng.choice(len(train), settings.online_pre, replace=False)),
        test.take(rng.choice(len(test), settings.online_post, replace=False))])
        for _ in range(settings.online_runs)]
    return quiet, shifted


def online_summary(quiet_alarms: Sequence[Sequence[int]], shifted_alarms: Sequence[Sequence[int]],
                   settings: Settings) -> dict[str, Any]:
    """Run length (exposure / alarms, the exponential estimate with censored runs) and delay."""
    firsts = [a[0] if a else None for a in quiet_alarms]
    exposure = sum(settings.online_h0_length if f is None else f + 1 for f in firsts)
    alarmed = sum(f is not None for f in firsts)
    delays, early = [], 0
    for alarms in shifted_alarms:
        early += any(a < settings.online_pre for a in alarms)
        after = [a for a in alarms if a >= settings.online_pre]
        if after:
            delays.append(after[0] - settings.online_pre + 1)
    return {
        "mean_run_length": exposure / alarmed if alarmed else None,
        "run_length_censored_at": settings.online_h0_length,
        "runs_without_alarm": len(firsts) - alarmed, "runs": len(firsts),
        "median_first_alarm": float(np.median([f + 1 for f in firsts if f is not None]))
        if alarmed else None,
        "detection_rate": len(delays) / max(len(shifted_alarms), 1),
        "median_delay": float(np.median(delays)) if delays else None,
        "mean_delay": float(np.mean(delays)) if delays else None,
        "early_alarm_rate": early / max(len(shifted_alarms), 1),
    }


def run_nsl_online(protocol: ds.NslKddProtocol, settings: Settings, peers: Peers,
                   progress: Progress) -> dict[str, Any]:
    quiet, shifted = online_streams(protocol, settings)
    rows: list[dict[str, Any]] = []
    for contender in ONLINE_CONTENDERS:
        row: dict[str, Any] = {"side": "MetaSentry", "detector": contender.label,
                               "entry": contender.entry(0, 0)}
        try:
            started = time.perf_counter()
            detector = build(contender, 0, 0, protocol.reference)
            row["setup_seconds"] = time.perf_counter() - started
        except Unavailable as why:
            row.update(available=False, why=str(why))
            rows.append(row)
            progress(f"NSL-KDD online {contender.label}: not available ({why})")
            continue
        seconds, records = 0.0, 0
        outcomes: list[list[list[int]]] = [[], []]
        for group, streams in enumerate((quiet, shifted)):
            for stream in streams:
                if hasattr(detector, "reset"):
                    detector.reset()
                else:
                    detector.fit(protocol.reference)  # fit starts afresh (the contract)
                alarms: list[int] = []
                for begin in range(0, len(stream), settings.online_chunk):
                    chunk = stream.take(slice(begin, begin + settings.online_chunk))
                    started = time.perf_counter()
                    events = feed(detector, chunk)
                    seconds += time.perf_counter() - started
                    alarms += [seen - 1 for seen, alarm in events if alarm]
                records += len(stream)
                outcomes[group].append(alarms)
        row.update(available=True, records_per_second=records / max(seconds, 1e-9),
                   **online_summary(outcomes[0], outcomes[1], settings))
        rows.append(row)
        progress(f"NSL-KDD online {contender.label}: {_online_line(row)}")
    rows.append(_nsl_alibi_online(protocol, quiet, shifted, settings, peers, progress))
    return {"rows": rows, "ert": ONLINE_ERT, "window": ONLINE_WINDOW,
            "h0_length": settings.online_h0_length, "pre": settings.online_pre,
            "post": settings.online_post, "runs": settings.online_runs}


def _online_line(row: Mapping[str, Any]) -> str:
    return (f"mean run length {_num(row.get('mean_run_length'))}, detection "
            f"{row['detection_rate']:.0%}, median delay {_num(row.get('median_delay'))}, "
            f"{row['records_per_second']:,.0f} records/s, set-up {row['setup_seconds']:.1f} s")


def _nsl_alibi_online(protocol: ds.NslKddProtocol, quiet: Sequence[FeatureBatch],
                      shifted: Sequence[FeatureBatch], settings: Settings, peers: Peers,
                      progress: Progress) -> dict[str, Any]:
    row: dict[str, Any] = {"side": "alibi-detect", "detector": "MMDDriftOnline (torch)"}
    if not peers.available:
        return {**row, "available": False, "why": peers.why_not()}
    WORK.mkdir(parents=True, exist_ok=True)
    task, answer = WORK / "nsl-online.npz", WORK / "nsl-alibi-online.json"
    streams = [s.encoded for s in (*quiet, *shifted)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in streams])]).astype(np.int64)
    np.savez(task, ref=protocol.reference.encoded, streams=np.concatenate(streams),
             offsets=offsets)
    ok = peers.run(["alibi-online", "--input", str(task), "--output", str(answer),
                    "--ert", str(ONLINE_ERT), "--window", str(ONLINE_WINDOW),
                    "--n-bootstraps", str(settings.n_bootstraps)], progress)
    if not ok:
        return {**row, "available": False, "why": peers.problems[-1]}
    result = json.loads(answer.read_text())
    alarms = [s["alarms"] for s in result["streams"]]
    row.update(available=True, setup_seconds=result["setup_seconds"],
               records_per_second=result["records_per_second"], params=result["params"],
               **online_summary(alarms[: len(quiet)], alarms[len(quiet):], settings))
    progress(f"NSL-KDD online {row['detector']}: {_online_line(row)}")
    return row


# --------------------------------------------------------------------------- Elec2


@dataclass(frozen=True)
class Scenario:
    """One kind of injected shift on Elec2."""

    label: str
    kind: str
    magnitude: float
    features: tuple[str, ...] | None  # None: one numeric feature drawn per placement


ELEC2_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("mean +0.5 sd", "mean", 0.5, None),
    Scenario("mean +1 sd", "mean", 1.0, None),
    Scenario("sd x2", "variance", 2.0, None),
    Scenario("new category (5 %)", "new_category", 0.05, ("day",)),
    Scenario("new category (15 %)", "new_category", 0.15, ("day",)),
    Scenario("correlation reversed", "correlation", 1.0, ("nswdemand", "vicdemand")),
)


ELEC2_ORDERS = ("time", "shuffled")
PARTS = ("nsl", "elec2", "envelope", "river")


@dataclass(frozen=True)
class Segment:
    """One Elec2 segment: reference, monitored part, and the injection (None: benign)."""

    scenario: str
    start: int                      # row of the stream where the monitored part starts
    reference: FeatureBatch
    monitored: FeatureBatch
    injection: ds.Injection | None  # positions relative to the monitored part


def elec2_segments(stream: ds.Stream, settings: Settings, seed: int, order: str = "time"
                   ) -> list[Segment]:
    """The benign and injected segments; ``order="shuffled"`` permutes each segment's records
    (reference and monitored part together) before the split and the injection, so that benign
    windows are exchangeable with the reference. Placements and injections are the same for
    both orders."""
    if order not in ELEC2_ORDERS:
        raise ValueError(f"order must be one of {list(ELEC2_ORDERS)}, got {order!r}.")
    rng = np.random.default_rng([seed, 2])
    r, m = settings.elec_reference, settings.elec_monitored
    day = ds.ELEC2_RECORDS_PER_DAY
    low = -(-(ds.ELEC2_VIC_START + r) // day)
    high = (len(stream) - m) // day
    schema = ds.elec2_schema()
    plan: list[tuple[Scenario | None, int]] = [
        (None, int(rng.integers(low, high + 1)) * day) for _ in range(settings.elec_benign)]
    for kind in ELEC2_SCENARIOS:
        plan += [(kind, int(rng.integers(low, high + 1)) * day)
                 for _ in range(settings.elec_placements)]
    segments = []
    scenario: Scenario | None
    for number, (scenario, start) in enumerate(plan):
        part = stream.slice(start - r, start + m)
        if order == "shuffled":
            part = part.reorder(np.random.default_rng([seed, 3, number]).permutation(r + m))
        if scenario is not None:
            features = scenario.features or (str(rng.choice(ds.ELEC2_NUMERIC)),)
            part = ds.inject(part, scenario.kind, r + settings.elec_block_start,
                             settings.elec_block_length, scenario.magnitude, features, rng,
                             reference=slice(0, r))
        encoder = ds.fit_encoder(schema, part.records(0, r))
        injection = None
        if part.injections:
            injection = part.injections[0]
            injection = ds.Injection(injection.kind, injection.start - r, injection.length,
                                     injection.magnitude, injection.features, injection.detail)
        segments.append(Segment(scenario.label if scenario else "benign", start,
                                ds.encode(encoder, part.records(0, r)),
                                ds.encode(encoder, part.records(r, r + m)), injection))
    return segments


def window_ends(settings: Settings) -> list[int]:
    return [settings.elec_window + k * settings.elec_step for k in range(settings.elec_windows)]


def elec2_summary(segments: Sequence[Segment], alarms: Sequence[Sequence[int]],
                  settings: Settings) -> dict[str, Any]:
    """Benign false alarms per 100 windows; per scenario detection, delay, early alarms.

    ``alarms[i]`` are the window ends (in the monitored part) of segment i's alarmed windows.
    """
    benign = [a for s, a in zip(segments, alarms, strict=True) if s.injection is None]
    n_benign_windows = len(benign) * settings.elec_windows
    false_alarms = sum(len(a) for a in benign)
    rate = false_alarms / max(n_benign_windows, 1)
    out: dict[str, Any] = {"false_alarms_per_100_windows": 100 * rate,
                           "benign_windows": n_benign_windows, "scenarios": {}}
    for scenario in ELEC2_SCENARIOS:
        picked = [(s, a) for s, a in zip(segments, alarms, strict=True)
                  if s.scenario == scenario.label]
        if not picked:
            out["scenarios"][scenario.label] = None  # not run
            continue
        delays, early = [], 0
        overlapping = 0
        for segment, ends in picked:
            block = segment.injection
            assert block is not None
            hits = [e for e in ends if e > block.start and e - settings.elec_window < block.stop]
            overlapping = sum(1 for e in window_ends(settings)
                              if e > block.start and e - settings.elec_window < block.stop)
            early += any(e <= block.start for e in ends)
            if hits:
                delays.append(min(hits) - block.start)
        n = max(len(picked), 1)
        out["scenarios"][scenario.label] = {
            "placements": len(picked), "detection_rate": len(delays) / n,
            "median_delay_records": float(np.median(delays)) if delays else None,
            "mean_delay_records": float(np.mean(delays)) if delays else None,
            "early_alarm_rate": early / n,
            "chance_detection": 1 - (1 - rate) ** overlapping if picked else None,
        }
    return out


def run_elec2(settings: Settings, peers: Peers, seed: int, progress: Progress) -> dict[str, Any]:
    stream = ds.load_elec2()
    out: dict[str, Any] = {
        "reference_records": settings.elec_reference, "window": settings.elec_window,
        "step": settings.elec_step, "windows_per_segment": settings.elec_windows,
        "block_length": settings.elec_block_length, "orders": {}}
    for order in ELEC2_ORDERS:
        out["orders"][order] = _run_elec2_order(stream, order, settings, peers, seed, progress)
    return out


def _run_elec2_order(stream: ds.Stream, order: str, settings: Settings, peers: Peers, seed: int,
                     progress: Progress) -> dict[str, Any]:
    segments = elec2_segments(stream, settings, seed, order)
    progress(f"Elec2 ({order} order): {len(segments)} segments ({settings.elec_benign} benign)")
    rows: list[dict[str, Any]] = []
    w, step = settings.elec_window, settings.elec_step
    # Online contenders are calibrated per segment (a second or so each): the default only.
    for contender in (*WINDOW_CONTENDERS, *ELEC2_EXTRA_CONTENDERS, *ONLINE_CONTENDERS[:1]):
        online = contender in ONLINE_CONTENDERS
        row: dict[str, Any] = {"side": "MetaSentry", "detector": contender.label,
                               "entry": contender.entry(w, step), "online": online}
        alarms: list[list[int]] = []
        setup, seconds = 0.0, 0.0
        try:
            for segment in segments:
                started = time.perf_counter()
                detector = build(contender, w, step, segment.reference)
                setup += time.perf_counter() - started
                chunk = settings.online_chunk if online else step
                ends: list[int] = []
                for begin in range(0, len(segment.monitored), chunk):
                    started = time.perf_counter()
                    events = feed(detector, segment.monitored.take(slice(begin, begin + chunk)))
                    seconds += time.perf_counter() - started
                    ends += [seen for seen, alarm in events if alarm]
                alarms.append(ends)
        except Unavailable as why:
            rows.append({**row, "available": False, "why": str(why)})
            progress(f"Elec2 ({order}) {contender.label}: not available ({why})")
            continue
        records = len(segments) * settings.elec_monitored
        summary = (_elec2_online_summary(segments, alarms, settings) if online
                   else elec2_summary(segments, alarms, settings))
        rows.append({**row, "available": True, "setup_seconds": setup / len(segments),
                     "records_per_second": records / max(seconds, 1e-9), **summary})
        progress(f"Elec2 ({order}) {contender.label}: {_elec2_line(rows[-1])}")
    rows += _elec2_alibi(segments, order, settings, peers, progress)
    return {"rows": rows, "segments": [
        {"scenario": s.scenario, "start_row": s.start,
         "start_time": int(stream.timestamps[s.start]),
         "injection": None if s.injection is None else s.injection.to_dict()}
        for s in segments]}


def _elec2_online_summary(segments: Sequence[Segment], alarms: Sequence[Sequence[int]],
                          settings: Settings) -> dict[str, Any]:
    """For online detectors: benign alarms per 1,000 records; first alarm in the block."""
    benign = [a for s, a in zip(segments, alarms, strict=True) if s.injection is None]
    records = len(benign) * settings.elec_monitored
    out: dict[str, Any] = {"false_alarms_per_1000_records":
                           1000 * sum(len(a) for a in benign) / max(records, 1),
                           "scenarios": {}}
    for scenario in ELEC2_SCENARIOS:
        picked = [(s, a) for s, a in zip(segments, alarms, strict=True)
                  if s.scenario == scenario.label]
        delays = []
        for segment, ends in picked:
            block = segment.injection
            assert block is not None
            hits = [e for e in ends if block.start < e <= block.stop]
            if hits:
                delays.append(min(hits) - block.start)
        n = max(len(picked), 1)
        out["scenarios"][scenario.label] = {
            "placements": len(picked), "detection_rate": len(delays) / n,
            "median_delay_records": float(np.median(delays)) if delays else None,
            "mean_delay_records": float(np.mean(delays)) if delays else None}
    return out


def _elec2_line(row: Mapping[str, Any]) -> str:
    if "false_alarms_per_100_windows" in row:
        head = f"{row['false_alarms_per_100_windows']:.0f} false alarms / 100 windows"
    else:
        head = f"{row['false_alarms_per_1000_records']:.1f} alarms / 1000 benign records"
    parts = [f"{label}: {s['detection_rate']:.0%} (delay {_num(s['median_delay_records'])})"
             for label, s in row["scenarios"].items() if s is not None]
    return head + "; " + ", ".join(parts)


def _elec2_alibi(segments: Sequence[Segment], order: str, settings: Settings, peers: Peers,
                 progress: Progress) -> list[dict[str, Any]]:
    labels = {"ks": "KSDrift", "mmd": "MMDDrift (torch)"}
    if not peers.available:
        return [{"side": "alibi-detect", "detector": label, "available": False,
                 "why": peers.why_not()} for label in labels.values()]
    if order == "time":
        # Against a fixed month-old reference every window is an alarm already (see the
        # MetaSentry rows); the peers' permutation tests are spent on the benign windows only.
        segments = [s for s in segments if s.injection is None]
    windows, window_ref = [], []
    for i, segment in enumerate(segments):
        for end in window_ends(settings):
            windows.append(segment.monitored.encoded[end - settings.elec_window:end])
            window_ref.append(i)
    answer = alibi_windows(peers, f"elec2-{order}", [s.reference.encoded for s in segments],
                           windows, window_ref, settings.elec_mmd_reference, settings, progress)
    if answer is None:
        return [{"side": "alibi-detect", "detector": label, "available": False,
                 "why": peers.problems[-1]} for label in labels.values()]
    rows = []
    ends = window_ends(settings)
    for key, label in labels.items():
        result = answer["detectors"][key]
        alarms: list[list[int]] = [[] for _ in segments]
        for (i, end), window in zip([(i, e) for i in range(len(segments)) for e in ends],
                                    result["windows"], strict=True):
            if window["is_drift"]:
                alarms[i].append(end)
        seconds = sum(w["seconds"] for w in result["windows"])
        row = {"side": "alibi-detect", "detector": label, "available": True, "online": False,
               "setup_seconds": float(np.mean(result["setup_seconds"])),
               "records_per_second": len(windows) * settings.elec_window / max(seconds, 1e-9),
               "params": result["params"], **elec2_summary(segments, alarms, settings)}
        rows.append(row)
        progress(f"Elec2 ({order}) {label}: {_elec2_line(row)}")
    return rows


# --------------------------------------------------------------------------- river streams


def change_summary(alarms: Sequence[Sequence[int]], change: int, width: int, length: int
                   ) -> dict[str, Any]:
    """Detection, delay (from the change, or its centre) and false alarms per 10,000 records
    before the drift begins (the whole series when there is none)."""
    if change < 0:
        total = sum(len(a) for a in alarms)
        return {"false_alarms_per_10k": 1e4 * total / max(len(alarms) * length, 1),
                "runs": len(alarms)}
    begins = change - width // 2
    false_alarms = sum(sum(1 for a in run if a < begins) for run in alarms)
    delays = []
    for run in alarms:
        after = [a for a in run if a >= begins]
        if after:
            delays.append(after[0] - change)
    return {"false_alarms_per_10k": 1e4 * false_alarms / max(len(alarms) * begins, 1),
            "detection_rate": len(delays) / max(len(alarms), 1),
            "median_delay": float(np.median(delays)) if delays else None,
            "mean_delay": float(np.mean(delays)) if delays else None, "runs": len(alarms)}


def run_river(settings: Settings, peers: Peers, seed: int, progress: Progress
              ) -> dict[str, Any]:
    if not peers.available:
        return {"available": False, "why": peers.why_not(), "rows": []}
    out_dir = WORK / "river"
    ok = peers.run(["river", "--output-dir", str(out_dir), "--runs", str(settings.river_runs),
                    "--train", str(settings.river_train), "--length", str(settings.river_length),
                    "--change", str(settings.river_change), "--width", str(settings.river_width),
                    "--seed", str(seed)], progress)
    if not ok:
        return {"available": False, "why": peers.problems[-1], "rows": []}
    streams = ds.load_error_streams(out_dir / "error_streams.npz")
    river = json.loads((out_dir / "river_alarms.json").read_text())
    rows: list[dict[str, Any]] = []
    for name, result in river["detectors"].items():
        rows.append(_river_row("river", name, result["alarms"], streams,
                               result["records_per_second"], result["params"]))
    rows += _metasentry_change_rows(streams, progress)
    for row in rows:
        if row.get("available", True):
            progress(f"river streams {_name(row)}: " + ", ".join(
                f"{s}: {_change_line(v)}" for s, v in row["streams"].items()))
    error_rates = {name: {"before": float(e[:, : max(streams.change[name], 0)].mean())
                          if streams.change[name] > 0 else float(e.mean()),
                          "after": float(e[:, streams.change[name]:].mean())
                          if streams.change[name] > 0 else None}
                   for name, e in streams.errors.items()}
    return {"available": True, "rows": rows, "meta": streams.meta, "error_rates": error_rates,
            "change": dict(streams.change), "width": dict(streams.width)}


def _river_row(side: str, name: str, alarms: Mapping[str, Sequence[Sequence[int]]],
               streams: ds.ErrorStreams, records_per_second: float,
               params: Mapping[str, Any]) -> dict[str, Any]:
    length = next(iter(streams.errors.values())).shape[1]
    return {"side": side, "detector": name, "available": True,
            "records_per_second": records_per_second, "params": dict(params),
            "streams": {stream: change_summary(alarms[stream], streams.change[stream],
                                               streams.width[stream], length)
                        for stream in streams.names}}


def _metasentry_change_rows(streams: ds.ErrorStreams, progress: Progress
                            ) -> list[dict[str, Any]]:
    try:
        change_detectors = importlib.import_module("detectors.change_detectors")
    except ImportError as error:
        progress(f"river streams MetaSentry change detectors: not available ({error})")
        return [{"side": "MetaSentry", "detector": name, "available": False,
                 "why": f"detectors.change_detectors is missing ({error})"}
                for name in CHANGE_DETECTORS]
    rows = []
    for name in CHANGE_DETECTORS:
        detector_class = getattr(change_detectors, name, None)
        if detector_class is None:
            rows.append({"side": "MetaSentry", "detector": name, "available": False,
                         "why": f"detectors.change_detectors has no {name}"})
            continue
        alarms: dict[str, list[list[int]]] = {}
        seconds, records = 0.0, 0
        params: dict[str, Any] = {}
        for stream in streams.names:
            alarms[stream] = []
            for series in streams.errors[stream]:
                detector = detector_class()
                params = detector.get_params() if hasattr(detector, "get_params") else {}
                started = time.perf_counter()
                positions = detector.update(series.astype(np.float64))
                seconds += time.perf_counter() - started
                records += len(series)
                alarms[stream].append([int(p) for p in np.asarray(positions).ravel()])
        rows.append(_river_row("MetaSentry", name, alarms, streams,
                               records / max(seconds, 1e-9),
                               {k: v for k, v in params.items()
                                if isinstance(v, int | float | str | bool) or v is None}))
    return rows


def _change_line(summary: Mapping[str, Any]) -> str:
    if "detection_rate" not in summary:
        return f"{summary['false_alarms_per_10k']:.1f} FA/10k"
    return (f"{summary['detection_rate']:.0%} delay {_num(summary['median_delay'])} "
            f"FA/10k {summary['false_alarms_per_10k']:.1f}")


# --------------------------------------------------------------------------- report


def _name(row: Mapping[str, Any]) -> str:
    """``side detector`` as the tables print it (older results named alibi twice)."""
    return f"{row['side']} {str(row['detector']).removeprefix('alibi ')}"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def cpu() -> dict[str, Any]:
    name = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": name, "cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(), "numpy": np.__version__}


def markdown(result: Mapping[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# Distribution shift: MetaSentry beside alibi-detect and river", "",
        f"Machine: {machine['model']}, {machine['cores']} cores (shared, `nice -n 10`). "
        f"Command: `python -m bench.drift{' --quick' if result['quick'] else ''}` "
        f"({result['seconds']:.0f} s). False-alarm level 1 % everywhere (alpha / p_val); no "
        "tuning on the test data. Protocol: `bench/drift.py`'s docstring; data and injections: "
        "`bench/drift_streams.py`.", ""]
    if result["peers"]["problems"] or not result["peers"]["available"]:
        lines += [f"**Peers:** {result['peers']['note']}", ""]
    else:
        versions = result["peers"].get("versions") or {}
        lines += ["Peers (`.venv-drift`): " + ", ".join(f"{k} {v}" for k, v in versions.items()),
                  ""]
    nsl = result.get("nsl_kdd")
    if nsl:
        lines += ["## NSL-KDD: windows against a 2,000-record reference", "",
                  "False alarms: no-shift windows (other KDDTrain+_20Percent records) flagged; "
                  "detections: KDDTest+ windows flagged; both out of "
                  f"{nsl['n_windows']} per window size.", "",
                  "| detector | window | false alarms | detections | records/s | set-up s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in nsl["windows"]["rows"]:
            if not row.get("available"):
                lines.append(f"| {_name(row)} | | not available: "
                             f"{row['why'][:160]} | | | |")
                continue
            lines.append(
                f"| {_name(row)} | {row['window']} | "
                f"{row['false_alarms']}/{row['n_windows']} | {row['detections']}/{row['n_windows']}"
                f" | {_num(row['records_per_second'])} | {row['setup_seconds']:.2f} |")
        alibi = [r for r in nsl["windows"]["rows"] if r.get("available") and "params" in r]
        for row in {r["detector"]: r for r in alibi}.values():
            params = ", ".join(f"{k} {v}" for k, v in row["params"].items())
            lines.append(f"\n{_name(row)}: {params}; reference records used: "
                         f"{row.get('n_reference')}.")
        online = nsl["online"]
        lines += ["", f"## NSL-KDD: online detectors (ERT {online['ert']}, window "
                  f"{online['window']})", "",
                  f"Run length: {online['runs']} no-shift streams of {online['h0_length']} "
                  "records, mean run length = records watched / first alarms (streams without an "
                  f"alarm count their {online['h0_length']} records). Delay: {online['runs']} "
                  f"streams of {online['pre']} no-shift then {online['post']} KDDTest+ records, "
                  "records from the change to the first alarm at or after it.", "",
                  "| detector | mean run length | streams without alarm | detection | median "
                  "delay | mean delay | alarm before the change | records/s | set-up s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in online["rows"]:
            if not row.get("available"):
                lines.append(f"| {_name(row)} | not available: "
                             f"{row['why'][:160]} | | | | | | | |")
                continue
            lines.append(
                f"| {_name(row)} | {_num(row['mean_run_length'])} | "
                f"{row['runs_without_alarm']}/{row['runs']} | {row['detection_rate']:.0%} | "
                f"{_num(row['median_delay'])} | {_num(row['mean_delay'], 1)} | "
                f"{row['early_alarm_rate']:.0%} | {_num(row['records_per_second'])} | "
                f"{row['setup_seconds']:.1f} |")
    elec = result.get("elec2")
    if elec:
        lines += _elec2_markdown(elec)
    envelope = result.get("elec2_envelope")
    if envelope:
        lines += ([] if elec else ["", "## Elec2", ""]) + envelope_markdown(envelope) + [""]
    river = result.get("river")
    if river:
        lines += ["", "## River synthetic streams: change detectors on a classifier's errors", ""]
        if not river.get("available"):
            lines += [f"Not run: {river['why']}"]
        else:
            meta = river["meta"]
            lines += [f"{meta['classifier']}; {meta['runs']} runs per stream of {meta['length']} "
                      f"monitored records, change at {river['change'].get('sea_abrupt')} "
                      f"(gradual: centre, width {river['width'].get('sea_gradual')}). "
                      f"{meta['streams']['sea']}; {meta['streams']['agrawal']}. Error rate "
                      "before / after: " + ", ".join(
                          f"{k} {v['before']:.2f}" + (f" / {v['after']:.2f}" if v['after']
                                                      is not None else "")
                          for k, v in river["error_rates"].items()) + ".", "",
                      "Cells: detection rate, median delay (records after the change; negative: "
                      "before the centre of a gradual change), false alarms per 10,000 records "
                      "before the drift begins (for `*_none`, over the whole stream).", ""]
            names = list(river["change"])
            lines += ["| detector | " + " | ".join(names) + " | records/s |",
                      "|---|" + "---|" * len(names) + "---:|"]
            for row in river["rows"]:
                if not row.get("available"):
                    lines.append(f"| {_name(row)} | not available: "
                                 f"{row['why'][:160]} |" + " |" * len(names))
                    continue
                cells = []
                for name in names:
                    s = row["streams"][name]
                    if "detection_rate" in s:
                        cells.append(f"{s['detection_rate']:.0%}, {_num(s['median_delay'])}, "
                                     f"{s['false_alarms_per_10k']:.1f}")
                    else:
                        cells.append(f"FA {s['false_alarms_per_10k']:.1f}")
                lines.append(f"| {_name(row)} | " + " | ".join(cells)
                             + f" | {_num(row['records_per_second'])} |")
    lines += ["", "![drift](drift.png)", ""]
    return "\n".join(lines)


def _elec2_markdown(elec: Mapping[str, Any]) -> list[str]:
    labels = [s.label for s in ELEC2_SCENARIOS]
    lines = ["", "## Elec2: injected shifts", "",
             f"Reference: the {elec['reference_records']} records (4 weeks) before each "
             f"segment; windows of {elec['window']} records (1 week) every {elec['step']} "
             f"(2 days), {elec['windows_per_segment']} per segment; each shift lasts "
             f"{elec['block_length']} records (2 weeks) from the end of the first window. "
             "Cells: detection rate, median delay in records (2 records = 1 hour) from the "
             "block's start to the end of the first alarmed window overlapping it; in brackets "
             "the detection rate that false alarms alone would give (the benign rate over the "
             "windows overlapping the block).", ""]
    intro = {
        "time": "**Time order** (the stream as it is): the reference is the four weeks before, "
                "so benign windows differ from it by whatever a month of electricity prices "
                "and demand does. The peers run on the benign segments only here (\"not "
                "run\"): with every benign window an alarm, the injected ones say nothing more.",
        "shuffled": "**Shuffled within each segment** (reference and monitored part "
                    "permuted together before the split and the injection): benign windows are "
                    "exchangeable with the reference, so this isolates what each kind of shift "
                    "does to each detector; the block is a known set of positions as before."}
    for order, part in elec["orders"].items():
        lines += [intro.get(order, order), "",
                  "| detector | false alarms / 100 benign windows | " + " | ".join(labels)
                  + " | records/s |", "|---|---:|" + "---:|" * len(labels) + "---:|"]
        for row in part["rows"]:
            if not row.get("available"):
                lines.append(f"| {_name(row)} | not available: "
                             f"{row['why'][:160]} |" + " |" * (len(labels) + 1))
                continue
            if row.get("online"):
                head = f"{row['false_alarms_per_1000_records']:.1f} per 1,000 records"
            else:
                head = f"{row['false_alarms_per_100_windows']:.0f}"
            cells = []
            for label in labels:
                s = row["scenarios"][label]
                if s is None:
                    cells.append("not run")
                    continue
                chance = s.get("chance_detection")
                cells.append(f"{s['detection_rate']:.0%}, {_num(s['median_delay_records'])}"
                             + (f" ({chance:.0%})" if chance is not None else ""))
            lines.append(f"| {_name(row)} | {head} | " + " | ".join(cells)
                         + f" | {_num(row['records_per_second'])} |")
        segments = part["segments"]
        n_injected = sum(1 for s in segments if s["injection"] is not None)
        lines += ["", f"{n_injected} injected segments, "
                  f"{len(segments) - n_injected} benign; placements, features and magnitudes "
                  f"in `drift.json` (`elec2.orders.{order}.segments`).", ""]
    window, reference = elec["window"], elec["reference_records"]
    lines += [
        "What the design decides, whatever the figures: per-feature tests (feature_drift, "
        "KSDrift) cannot see the correlation reversal, since every window keeps exactly the "
        "marginals it had; and feature_drift's chi-squared test pools a category whose expected "
        "count is below 5 (`detectors/_chi2.py`), so a new category counts on its own only from "
        f"about 5 x ({reference} + {window}) / {window} = "
        f"{math.ceil(5 * (reference + window) / window)} records of a {window}-record window "
        "(a 5 % share brings about 17).", ""]
    return lines


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nsl: Mapping[str, Any] = result.get("nsl_kdd") or {}
    sizes = list(nsl.get("window_sizes", []))
    fig = plt.figure(figsize=(15, 10))
    grid = fig.add_gridspec(2, 6)
    axes = [fig.add_subplot(grid[0, 2 * i:2 * i + 2]) for i in range(len(sizes))]
    axes += [fig.add_subplot(grid[1, 0:3]), fig.add_subplot(grid[1, 3:6])]
    for ax, size in zip(axes, sizes, strict=False):
        rows = [r for r in nsl["windows"]["rows"] if r.get("available") and r["window"] == size]
        for i, row in enumerate(rows):
            # A small horizontal offset per detector, so that equal results stay visible.
            x = row["false_alarms"] + 0.25 * (i - (len(rows) - 1) / 2)
            marker = "o" if row["side"] == "MetaSentry" else "s"
            ax.scatter(x, row["detections"], marker=marker, label=_name(row))
        ax.legend(fontsize=6, loc="lower right")
        ax.set_title(f"NSL-KDD, window {size}")
        ax.set_xlabel(f"false alarms / {nsl['n_windows']}")
        ax.set_ylabel(f"detections / {nsl['n_windows']}")
        ax.set_xlim(-1, nsl["n_windows"] + 1)
        ax.set_ylim(-1, nsl["n_windows"] + 1)
        ax.grid(alpha=0.3)
    ax = axes[len(sizes)]
    elec = result.get("elec2")
    if elec:
        rows = [r for r in elec["orders"]["shuffled"]["rows"] if r.get("available")]
        labels = [s.label for s in ELEC2_SCENARIOS]
        width = 0.8 / max(len(rows), 1)
        for i, row in enumerate(rows):
            delays = [(row["scenarios"][label] or {}).get("median_delay_records")
                      for label in labels]
            values = [np.nan if d is None else d / 2 for d in delays]
            ax.bar(np.arange(len(labels)) + i * width, values, width, label=_name(row))
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("median delay (hours)")
        ax.set_title("Elec2 injected shifts (shuffled order): delay")
        ax.legend(fontsize=6)
    ax = axes[len(sizes) + 1]
    river = result.get("river")
    if river and river.get("available"):
        rows = [r for r in river["rows"] if r.get("available")]
        names = [n for n, c in river["change"].items() if c >= 0]
        width = 0.8 / max(len(rows), 1)
        for i, row in enumerate(rows):
            values = [row["streams"][n]["median_delay"] for n in names]
            ax.bar(np.arange(len(names)) + i * width,
                   [np.nan if v is None else v for v in values], width,
                   label=f"{_name(row)}")
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("median delay (records)")
        ax.set_title("River streams: delay on error series")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def run(*, quick: bool = False, seed: int = 0, skip_peers: bool = False,
        parts: Sequence[str] = PARTS, progress: Progress = print
        ) -> dict[str, Any]:
    started = time.perf_counter()
    settings = Settings.quick() if quick else Settings()
    peers = Peers(skip=skip_peers)
    if not peers.available:
        progress(f"peers not available: {peers.why_not()}; MetaSentry's side runs alone")
    result: dict[str, Any] = {"quick": quick, "seed": seed, "machine": cpu(),
                              "settings": dataclasses_asdict(settings), "alpha": ALPHA}
    if "nsl" in parts:
        protocol = ds.nsl_kdd_protocol(n_windows=settings.n_windows,
                                       window_sizes=settings.window_sizes, seed=seed)
        progress(f"NSL-KDD: reference {len(protocol.reference)}, "
                 f"{settings.n_windows} windows per kind and size")
        result["nsl_kdd"] = {"n_windows": settings.n_windows,
                             "window_sizes": list(settings.window_sizes),
                             "windows": run_nsl_windows(protocol, settings, peers, progress),
                             "online": run_nsl_online(protocol, settings, peers, progress)}
    if "elec2" in parts:
        result["elec2"] = run_elec2(settings, peers, seed, progress)
    if "river" in parts:
        result["river"] = run_river(settings, peers, seed, progress)
    if "envelope" in parts:
        result["elec2_envelope"] = benign_envelope(
            ds.load_elec2(), window=settings.elec_window, step=settings.elec_step,
            windows=settings.elec_windows, seed=seed)
        progress("Elec2 benign envelope: " + ", ".join(
            f"{row['reference_weeks']} weeks {row['share_any_feature']:.0%}"
            for row in result["elec2_envelope"]["orders"]["time"]))
    result["peers"] = {"available": peers.available, "problems": peers.problems,
                       "note": "; ".join(peers.problems) if peers.problems else (
                           "" if peers.available else peers.why_not()),
                       "versions": _peer_versions()}
    result["seconds"] = time.perf_counter() - started
    return result


PART_KEYS = {"nsl": "nsl_kdd", "elec2": "elec2", "envelope": "elec2_envelope",
             "river": "river"}


def merge_parts(previous: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict[str, Any]:
    """An earlier full run with the parts of a partial rerun replacing its own; the machine,
    settings and seconds of each run are kept per part (``part_runs``) so the report can say
    which figures came from which run."""
    merged = dict(previous)
    runs = dict(previous.get("part_runs", {}))
    for part, key in PART_KEYS.items():
        if key in fresh:
            merged[key] = fresh[key]
            runs[part] = {"machine": fresh["machine"], "seconds": fresh["seconds"],
                          "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    merged["part_runs"] = runs
    return merged


def dataclasses_asdict(settings: Settings) -> dict[str, Any]:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(settings).items()}


def _peer_versions() -> dict[str, str]:
    for name in ("nsl-alibi-windows.json", "elec2-alibi-windows.json", "river/river_alarms.json"):
        path = WORK / name
        if path.exists():
            try:
                return dict(json.loads(path.read_text())["versions"])
            except (ValueError, KeyError):
                continue
    return {}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-peers", action="store_true",
                        help="run MetaSentry's side only, even when the peers' venv exists")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run: {', '.join(PARTS)}; a subset "
                             "replaces those parts in an existing drift.json and keeps the rest")
    parser.add_argument("--output-dir", type=Path, default=OUT)
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite drift.md and drift.png from the output dir's drift.json")
    args = parser.parse_args(argv)
    if args.report_only:
        result = json.loads((args.output_dir / "drift.json").read_text())
        (args.output_dir / "drift.md").write_text(markdown(result))
        plot(result, args.output_dir / "drift.png")
        return
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; use {', '.join(PARTS)}")

    def progress(message: str) -> None:
        print(f"[drift {time.strftime('%H:%M:%S')}] {message}", flush=True)

    result = run(quick=args.quick, seed=args.seed, skip_peers=args.skip_peers, parts=parts,
                 progress=progress)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    previous = args.output_dir / "drift.json"
    seconds = result["seconds"]
    if set(parts) != set(PARTS) and previous.exists():
        result = merge_parts(json.loads(previous.read_text()), result)
    (args.output_dir / "drift.json").write_text(json.dumps(result, indent=1, default=str))
    (args.output_dir / "drift.md").write_text(markdown(result))
    plot(result, args.output_dir / "drift.png")
    progress(f"wrote {args.output_dir / 'drift.json'}, drift.md and drift.png "
             f"({seconds:.0f} s)")


if __name__ == "__main__":
    main()
