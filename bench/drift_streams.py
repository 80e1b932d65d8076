"""Data of the drift benchmark: the NSL-KDD window protocol, Elec2 with injected shifts, and the
river synthetic streams' error series.

Everything here is numpy and the project's own encoder (no pandas), because the benchmark and
the project's tests both import it.

**NSL-KDD** (:func:`nsl_kdd_protocol`). Records are encoded the way the agent encodes them: the
``schema:`` of the shipped ``agent.yaml`` (38 numeric features, ``log1p`` and z-scored, and the
three categorical ones one-hot over the reference's vocabulary plus an unknown bucket), fitted
on the reference by :class:`agent.schema.Encoder`. The reference is 2,000 records drawn from
KDDTrain+_20Percent; *no-shift* windows are drawn from the other 23,192 records of that file
(the full KDDTrain+ is not in the data folder), *shifted* windows from KDDTest+ (a different
traffic mix, 17 attack types the training file never has). For each window size (30, 100, 500)
there are 40 windows of each kind, disjoint within a kind and size; every draw is seeded.

**Elec2** (:func:`load_elec2`, :func:`inject`). The normalised electricity-market stream, one
record every 30 minutes from 1996-05-07 00:00 (the file has no time column; it is rebuilt from
the row number, so ``timestamps`` are epoch seconds of that local wall-clock time read as UTC;
45,312 records are 944 whole days, so the last is 1998-12-06 23:30, a day after the "to 5 December
1998" the data's descriptions give).
Numeric features: ``nswprice, nswdemand, vicprice, vicdemand, transfer``. Categorical features:
``period`` (the half-hour slot, ``"0"``..``"47"``, from the file's ``period`` column) and ``day``
(the day of the week, ``"Mon"``..``"Sun"``, derived from the rebuilt timestamp). ``class`` (price
up/down) is kept as the label and is not monitored. The Victorian columns are a constant fill
for the first 17,424 rows, so placements that need them vary (:data:`ELEC2_VIC_START`).

:func:`inject` writes one known shift into a block ``[start, start + length)`` and records it in
the stream's ``injections``:

``mean``
    each named numeric feature plus ``magnitude`` reference standard deviations;
``variance``
    each named numeric feature's deviations from its block mean multiplied by ``magnitude`` (the
    block mean is kept; the standard deviation is multiplied by ``magnitude``);
``new_category``
    a share ``magnitude`` of the block's records (seeded) take the value ``"new:<feature>"``,
    which no reference record has, in the named categorical feature (``day`` by default);
``correlation``
    for two numeric features ``(a, b)``, within each consecutive chunk of ``chunk`` records (one
    day by default) ``b``'s values are reassigned in the *reverse* rank order of ``a``: every
    chunk keeps exactly the values it had (so any window made of whole chunks has the very
    marginal it had, and no per-feature test can see anything), while the two features, which
    move together in the real stream (nswdemand and vicdemand: r = 0.84 after row 17,424), now
    move against each other. ``magnitude`` is not used (the reversal is complete).

**River streams** (:func:`load_error_streams`). SEA and Agrawal concept drift is a change of the
*labelling function*: the features' distribution does not move at all, so the natural monitored
signal is a classifier's per-record error. The river side (``bench/drift_peers.py``, in the
peers' venv) generates the streams with ``river.datasets.synth``, trains a Hoeffding tree on the
first records, freezes it, and writes the 0/1 error series it makes on the rest to an ``.npz``
that this module reads; change detectors are compared on those series.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from detectors.base import FeatureBatch

REPO = Path(__file__).resolve().parents[1]
NSL_TRAIN_FILE = "KDDTrain+_20Percent.txt"
NSL_TEST_FILE = "KDDTest+.txt"
ELEC2_FILE = "elec.csv"

NSL_WINDOW_SIZES = (30, 100, 500)
NSL_WINDOWS = 40
NSL_REFERENCE = 2000

ELEC2_START = (1996, 5, 7, 0, 0, 0)  # row 0, local wall-clock time
ELEC2_STEP_SECONDS = 1800
ELEC2_RECORDS_PER_DAY = 48
ELEC2_NUMERIC = ("nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")
ELEC2_CATEGORICAL = ("period", "day")
ELEC2_VIC_START = 17424  # first row where the Victorian columns stop being a constant fill
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
TIME_FIELD = "time"

InjectionKind = Literal["mean", "variance", "new_category", "correlation"]
INJECTION_KINDS: tuple[str, ...] = ("mean", "variance", "new_category", "correlation")


def data_root() -> Path:
    """``$METASENTRY_DATA``, else the shared data folder beside the repository."""
    from bench.fewshot_data import data_root as shared_root

    return shared_root()


# --------------------------------------------------------------------------- NSL-KDD


def agent_schema() -> Any:
    """The ``schema:`` section of the shipped ``agent.yaml``, validated."""
    from agent.config import SchemaConfig

    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    return SchemaConfig.model_validate(data["schema"])


def read_csv_records(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """A headerless CSV file as one dict of text cells per row, keyed by ``columns``."""
    with path.open(newline="") as handle:
        return [dict(zip(columns, row, strict=True)) for row in csv.reader(handle) if row]


@dataclass(frozen=True)
class NslKddProtocol:
    """Reference, no-shift and shifted windows of the NSL-KDD protocol, encoded.

    ``no_shift[w]`` and ``shifted[w]`` hold the windows of ``w`` records; ``*_index[w]`` their
    rows (``[n_windows, w]``) in KDDTrain+_20Percent and KDDTest+ respectively, and
    ``reference_index`` the reference's rows in KDDTrain+_20Percent. ``train_pool`` (the
    training-file records outside the reference) and ``test_pool`` (all of KDDTest+) feed the
    online protocol's streams.
    """

    reference: FeatureBatch
    no_shift: Mapping[int, tuple[FeatureBatch, ...]]
    shifted: Mapping[int, tuple[FeatureBatch, ...]]
    reference_index: np.ndarray
    no_shift_index: Mapping[int, np.ndarray]
    shifted_index: Mapping[int, np.ndarray]
    train_pool: FeatureBatch
    test_pool: FeatureBatch
    seed: int


def nsl_kdd_protocol(root: Path | None = None, *, n_reference: int = NSL_REFERENCE,
                     window_sizes: Sequence[int] = NSL_WINDOW_SIZES,
                     n_windows: int = NSL_WINDOWS, seed: int = 0) -> NslKddProtocol:
    """Build the NSL-KDD protocol (see the module docstring) from the data folder."""
    from agent.schema import Encoder

    folder = (root or data_root()) / "nsl-kdd"
    schema = agent_schema()
    columns = schema.columns or [f.name for f in schema.features]
    train = read_csv_records(folder / NSL_TRAIN_FILE, columns)
    test = read_csv_records(folder / NSL_TEST_FILE, columns)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    reference_index = np.sort(order[:n_reference])
    pool_index = np.sort(order[n_reference:])
    encoder = Encoder(schema).fit([train[i] for i in reference_index], textual=True)

    def encode(records: list[dict[str, str]]) -> FeatureBatch:
        encoded = encoder.encode(records, textual=True)
        if encoded.errors:
            raise ValueError(f"NSL-KDD: {len(encoded.errors)} records failed to encode, e.g. "
                             f"{encoded.errors[0].detail}")
        return encoded.features

    reference = encode([train[i] for i in reference_index])
    train_all = encode(train)
    test_all = encode(test)
    no_shift: dict[int, tuple[FeatureBatch, ...]] = {}
    shifted: dict[int, tuple[FeatureBatch, ...]] = {}
    no_shift_index: dict[int, np.ndarray] = {}
    shifted_index: dict[int, np.ndarray] = {}
    for size in window_sizes:
        if n_windows * size > min(len(pool_index), len(test)):
            raise ValueError(f"{n_windows} disjoint windows of {size} records do not fit in the "
                             f"{len(pool_index)} training / {len(test)} test records.")
        size_rng = np.random.default_rng([seed, size])
        rows = size_rng.permutation(pool_index)[: n_windows * size].reshape(n_windows, size)
        test_rows = size_rng.permutation(len(test))[: n_windows * size].reshape(n_windows, size)
        no_shift_index[size], shifted_index[size] = rows, test_rows
        no_shift[size] = tuple(train_all.take(r) for r in rows)
        shifted[size] = tuple(test_all.take(r) for r in test_rows)
    return NslKddProtocol(
        reference=reference, no_shift=no_shift, shifted=shifted,
        reference_index=reference_index, no_shift_index=no_shift_index,
        shifted_index=shifted_index, train_pool=train_all.take(pool_index),
        test_pool=test_all, seed=seed)


# --------------------------------------------------------------------------- Elec2


@dataclass(frozen=True)
class Injection:
    """Where one injected shift lies in a stream, and what it is."""

    kind: str
    start: int
    length: int
    magnitude: float
    features: tuple[str, ...]
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def stop(self) -> int:
        return self.start + self.length

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "length": self.length,
                "magnitude": self.magnitude, "features": list(self.features),
                "detail": dict(self.detail)}


@dataclass(frozen=True)
class Stream:
    """A tabular stream in time order: raw numeric columns, categorical values as text.

    ``categorical`` is an object array of ``str`` (so an injected category of any length fits);
    ``timestamps`` are epoch seconds (int64); ``labels`` one entry per record, or ``None``.
    """

    numeric: np.ndarray
    numeric_names: tuple[str, ...]
    categorical: np.ndarray
    categorical_names: tuple[str, ...]
    timestamps: np.ndarray
    labels: np.ndarray | None = None
    injections: tuple[Injection, ...] = ()

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def column(self, name: str) -> np.ndarray:
        """One feature's values (a view for numeric features)."""
        if name in self.numeric_names:
            return self.numeric[:, self.numeric_names.index(name)]
        if name in self.categorical_names:
            return self.categorical[:, self.categorical_names.index(name)]
        raise KeyError(f"no feature {name!r}; use one of "
                       f"{list(self.numeric_names + self.categorical_names)}.")

    def slice(self, start: int, stop: int) -> Stream:
        """Records ``[start, stop)``, with injections moved into the slice's positions (those
        that do not overlap it are dropped)."""
        kept = tuple(dataclasses.replace(i, start=i.start - start)
                     for i in self.injections if i.start < stop and i.stop > start)
        return Stream(self.numeric[start:stop].copy(), self.numeric_names,
                      self.categorical[start:stop].copy(), self.categorical_names,
                      self.timestamps[start:stop].copy(),
                      None if self.labels is None else self.labels[start:stop].copy(), kept)

    def reorder(self, index: np.ndarray) -> Stream:
        """The records in the order ``index`` gives (a permutation; injections are dropped,
        their positions would no longer mean anything)."""
        index = np.asarray(index)
        return Stream(self.numeric[index].copy(), self.numeric_names,
                      self.categorical[index].copy(), self.categorical_names,
                      self.timestamps[index].copy(),
                      None if self.labels is None else self.labels[index].copy())

    def records(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Records ``[start, stop)`` as dicts, the form the agent's encoder reads, with the
        timestamp (epoch seconds) under ``"time"``."""
        stop = len(self) if stop is None else stop
        names = (*self.numeric_names, *self.categorical_names, TIME_FIELD)
        rows = zip(self.numeric[start:stop].tolist(), self.categorical[start:stop].tolist(),
                   self.timestamps[start:stop].tolist(), strict=True)
        return [dict(zip(names, [*numbers, *texts, time], strict=True))
                for numbers, texts, time in rows]


def elec2_schema() -> Any:
    """The agent schema of an Elec2 record: five numeric features z-scored, two categorical,
    and the rebuilt timestamp as the schema's ``timestamp:`` field (for time-aware detectors)."""
    from agent.config import SchemaConfig

    features = [{"name": name, "type": "numeric"} for name in ELEC2_NUMERIC]
    features += [{"name": name, "type": "categorical"} for name in ELEC2_CATEGORICAL]
    return SchemaConfig.model_validate({"features": features, "timestamp": TIME_FIELD})


def elec2_timestamps(n: int) -> np.ndarray:
    """Epoch seconds of rows ``0..n-1``: row i is 30·i minutes after 1996-05-07 00:00."""
    return calendar.timegm(ELEC2_START) + ELEC2_STEP_SECONDS * np.arange(n, dtype=np.int64)


def load_elec2(root: Path | None = None) -> Stream:
    """The Elec2 stream with rebuilt timestamps and the derived ``day`` column."""
    path = (root or data_root()) / "elec2" / ELEC2_FILE
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        table = np.array([[float(cell) for cell in row] for row in reader if row])
    columns = {name: table[:, j] for j, name in enumerate(header)}
    n = len(table)
    timestamps = elec2_timestamps(n)
    slots = np.rint(columns["period"] * (ELEC2_RECORDS_PER_DAY - 1)).astype(np.int64)
    days = (timestamps // 86400 + 3) % 7  # 1970-01-01 was a Thursday: index 3 of WEEKDAYS
    categorical = np.empty((n, 2), dtype=object)
    categorical[:, 0] = slots.astype(str).astype(object)
    categorical[:, 1] = np.asarray(WEEKDAYS, dtype=object)[days]
    return Stream(
        numeric=np.column_stack([columns[name] for name in ELEC2_NUMERIC]),
        numeric_names=ELEC2_NUMERIC, categorical=categorical,
        categorical_names=ELEC2_CATEGORICAL, timestamps=timestamps,
        labels=np.where(columns["class"] > 0.5, "up", "down").astype(object))


def inject(stream: Stream, kind: str, start: int, length: int, magnitude: float,
           features: str | Sequence[str], rng: np.random.Generator, *,
           reference: slice | None = None, chunk: int = ELEC2_RECORDS_PER_DAY) -> Stream:
    """A copy of ``stream`` with one shift of ``kind`` in ``[start, start + length)``.

    ``reference`` is the slice whose standard deviation a ``mean`` shift is measured in (the
    records before ``start`` by default); ``chunk`` is the ``correlation`` kind's unit of
    reassignment. See the module docstring for each kind.
    """
    if kind not in INJECTION_KINDS:
        raise ValueError(f"unknown injection kind {kind!r}; use one of {list(INJECTION_KINDS)}.")
    if length <= 0 or start < 0 or start + length > len(stream):
        raise ValueError(f"the block [{start}, {start + length}) must lie in the stream's "
                         f"{len(stream)} records with a positive length.")
    names = (features,) if isinstance(features, str) else tuple(features)
    out = stream.slice(0, len(stream))
    block = slice(start, start + length)
    detail: dict[str, Any] = {}
    if kind in ("mean", "variance"):
        for name in names:
            if name not in out.numeric_names:
                raise ValueError(f"{kind} needs numeric features, got {name!r}.")
            column = out.column(name)
            if kind == "mean":
                sd = float(np.std(column[reference or slice(0, start)]))
                column[block] += magnitude * sd
                detail[name] = {"reference_sd": sd, "shift": magnitude * sd}
            else:
                centre = float(column[block].mean())
                column[block] = centre + magnitude * (column[block] - centre)
                detail[name] = {"block_mean": centre}
    elif kind == "new_category":
        if len(names) != 1 or names[0] not in out.categorical_names:
            raise ValueError("new_category needs exactly one categorical feature, got "
                             f"{list(names)}.")
        if not 0.0 < magnitude <= 1.0:
            raise ValueError(f"new_category's magnitude is a share in (0, 1], got {magnitude}.")
        column = out.column(names[0])
        count = max(1, int(round(magnitude * length)))
        rows = start + rng.choice(length, size=count, replace=False)
        value = f"new:{names[0]}"
        column[rows] = value
        detail = {"value": value, "records": int(count)}
    else:
        if len(names) != 2 or any(name not in out.numeric_names for name in names):
            raise ValueError(f"correlation needs two numeric features, got {list(names)}.")
        lead, follower = out.column(names[0]), out.column(names[1])
        for begin in range(start, start + length, chunk):
            end = min(begin + chunk, start + length)
            lead_order = np.argsort(lead[begin:end], kind="stable")
            reassigned = np.empty(end - begin)
            # The follower's largest value goes to the lead's smallest, and so on down.
            reassigned[lead_order] = np.sort(follower[begin:end])[::-1]
            follower[begin:end] = reassigned
        detail = {"chunk": chunk}
    record = Injection(kind, start, length, float(magnitude), names, detail)
    return dataclasses.replace(out, injections=(*out.injections, record))


# --------------------------------------------------------------------------- river streams


@dataclass(frozen=True)
class ErrorStreams:
    """A classifier's per-record 0/1 errors on river's synthetic streams.

    ``errors[name]`` is ``uint8 [n_runs, length]`` (the monitored part, after the records the
    classifier was trained on); ``change[name]`` the position in it of the concept change
    (the centre of a gradual one; ``-1`` for a stream without drift), ``width[name]`` its width
    in records (1 for an abrupt change).
    """

    errors: Mapping[str, np.ndarray]
    change: Mapping[str, int]
    width: Mapping[str, int]
    meta: Mapping[str, Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.errors)


def load_error_streams(path: Path) -> ErrorStreams:
    """The error streams the river side wrote (``errors__<name>`` arrays, ``change``/``width``
    arrays in the order of ``names``, and a JSON ``meta`` string); no pickle."""
    import json

    with np.load(path, allow_pickle=False) as data:
        names = [str(name) for name in data["names"]]
        errors = {name: np.asarray(data[f"errors__{name}"], dtype=np.uint8) for name in names}
        change = {name: int(c) for name, c in zip(names, data["change"], strict=True)}
        width = {name: int(w) for name, w in zip(names, data["width"], strict=True)}
        meta = json.loads(str(data["meta"]))
    return ErrorStreams(errors, change, width, meta)


def fit_encoder(schema: Any, records: Sequence[Mapping[str, Any]]) -> Any:
    """The agent's encoder for ``schema``, fitted on ``records``."""
    from agent.schema import Encoder

    return Encoder(schema).fit(list(records))


def encode(encoder: Any, records: Sequence[Mapping[str, Any]]) -> FeatureBatch:
    """Records encoded as the agent does; any record that fails is an error here."""
    encoded = encoder.encode(list(records))
    if encoded.errors:
        raise ValueError(f"{len(encoded.errors)} records failed to encode, e.g. "
                         f"{encoded.errors[0].detail}")
    return encoded.features
