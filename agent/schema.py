"""The encoder: records in, one float32 matrix out, and a named reason for every bad record.

Built from the ``schema:`` section of ``agent.yaml`` and fitted on reference data, it is the
one place that knows how a record becomes numbers. It works column by column over a whole
batch (numpy does the arithmetic), because a per-record loop here would cap the agent's
throughput. A record that cannot be encoded is never fatal: it is reported with the field and
the reason, the pipeline quarantines it, and the rest of the batch goes on.

Layout of an encoded row, in feature order within each group: numeric features (one column
each), categorical features (one-hot over the fitted vocabulary plus an unknown bucket),
boolean features (one 0/1 column), tensor features (flattened).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from adapters.columnar import ColumnarRecords
from agent.columns import (
    cast_floats,
    category_codes,
    is_arrow,
    numeric_matrix,
    python_values,
    record_columns,
    text_field,
)
from agent.config import FeatureSpec, SchemaConfig
from agent.grouping import record_time
from detectors.base import FeatureBatch, TensorLayout

_MISSING = object()
_TRUE = frozenset({"true", "1", "yes", "y", "t", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "f", "off"})
_NUMBER_TYPES = frozenset({int, float})
STATE_VERSION = 1

Records = Sequence[Mapping[str, Any]] | ColumnarRecords
"""What the encoder reads: records as dicts, or a clean CSV block kept as columns."""


class EncoderNotFitted(RuntimeError):
    """encode() was called before fit(): the scaling and vocabularies are not known yet."""


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why one record of a batch could not be encoded."""

    index: int
    reason: str  # bounded code: missing_field, wrong_type, non_finite, bad_shape
    detail: str


@dataclass(frozen=True)
class Encoded:
    """The encoded batch: rows for the good records, errors for the others."""

    x: np.ndarray  # float32 [n_ok, dim]
    ok: np.ndarray  # bool [n]; x row i belongs to record np.flatnonzero(ok)[i]
    errors: list[RecordError]
    features: FeatureBatch
    labels: np.ndarray | None  # object [n_ok] (str or None) when the schema names a label
    ids: np.ndarray | None = None  # object [n_ok], the schema's `id:` field, when it names one
    times: np.ndarray | None = None  # object [n_ok], the schema's `timestamp:` field, as given

    @property
    def n_ok(self) -> int:
        return int(self.x.shape[0])


@dataclass
class _Fitted:
    """Per-feature parameters learned from the reference data."""

    center: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)


class Encoder:
    """Turns batches of records (dicts) into model input, per the configured schema.

    Examples
    --------
    >>> from agent.config import SchemaConfig
    >>> schema = SchemaConfig(features=[{"name": "bytes", "type": "numeric", "transform": "log1p"},
    ...                                 {"name": "proto", "type": "categorical"}])
    >>> enc = Encoder(schema)
    >>> enc = enc.fit([{"bytes": 10, "proto": "tcp"}, {"bytes": 1000, "proto": "udp"}])
    >>> out = enc.encode([{"bytes": 100, "proto": "icmp"}, {"bytes": "x", "proto": "tcp"}])
    >>> out.x.shape, [e.reason for e in out.errors]
    ((1, 4), ['wrong_type'])
    """

    def __init__(self, schema: SchemaConfig) -> None:
        self.schema = schema
        self._fitted: _Fitted | None = None
        self._lookup: dict[str, dict[str, int]] = {}

    @classmethod
    def from_config(cls, schema: SchemaConfig) -> Encoder:
        return cls(schema)

    # --- introspection ---------------------------------------------------------------------

    def _by_type(self, *types: str) -> list[FeatureSpec]:
        return [f for f in self.schema.features if f.type in types]

    @property
    def is_fitted(self) -> bool:
        return self._fitted is not None

    @property
    def dim(self) -> int:
        """Width of an encoded row."""
        return sum(width for _, width in self.column_groups())

    def column_groups(self) -> list[tuple[str, int]]:
        """(feature name, number of columns) in row order: maps columns back to features."""
        fitted = self._require_fitted()
        groups: list[tuple[str, int]] = [(f.name, 1) for f in self._by_type("numeric")]
        groups += [(f.name, len(fitted.vocab[f.name]) + 1) for f in self._by_type("categorical")]
        groups += [(f.name, 1) for f in self._by_type("boolean")]
        groups += [(f.name, int(np.prod(f.shape or (1,)))) for f in self._by_type("tensor")]
        return groups

    def tensor_layouts(self, reference: np.ndarray) -> tuple[TensorLayout, ...]:
        """Where each tensor feature sits in encoded rows, with the raw range ``reference``
        (encoded rows) spans, for detectors that work on images."""
        fitted = self._require_fitted()
        start = 0
        layouts = []
        for name, width in self.column_groups():
            spec = next(f for f in self.schema.features if f.name == name)
            if spec.type == "tensor":
                center, scale = fitted.center[name], fitted.scale[name]
                values = np.asarray(reference[:, start:start + width], np.float64)
                raw = values * scale + center if values.size else np.zeros(1)
                layouts.append(TensorLayout(
                    name=name, shape=tuple(int(v) for v in spec.shape or (width,)), start=start,
                    center=center, scale=scale, low=float(raw.min()), high=float(raw.max())))
            start += width
        return tuple(layouts)

    def _require_fitted(self) -> _Fitted:
        if self._fitted is None:
            raise EncoderNotFitted("the encoder is not fitted: call fit() on reference data first")
        return self._fitted

    # --- fitting -----------------------------------------------------------------------------

    def fit(self, records: Sequence[Mapping[str, Any]], *, textual: bool = False) -> Encoder:
        """Learn scaling and vocabularies from reference records; bad ones are skipped."""
        if not records:
            raise ValueError("cannot fit the encoder on zero reference records")
        fitted = _Fitted()
        ok = np.ones(len(records), dtype=bool)
        raw = _cleaned(self.schema.features,
                       _columns(records, [f.name for f in self.schema.features]))
        columns: dict[str, np.ndarray] = {}
        for spec in self._by_type("numeric", "tensor"):
            values, bad = self._numeric_column(spec, raw[spec.name], textual)
            ok &= bad == ""
            columns[spec.name] = values
        for spec in self._by_type("categorical"):
            strings, bad = _category_column(raw[spec.name], textual)
            ok &= bad == ""
            counts = Counter(strings[bad == ""].tolist())
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            fitted.vocab[spec.name] = [name for name, _ in ranked[: spec.max_categories]]
        if not ok.any():
            raise ValueError(
                "no reference record could be encoded: check the schema against the data")
        for spec in self._by_type("numeric", "tensor"):
            values = columns[spec.name][ok]
            if spec.scale == "standard":
                center, scale = float(values.mean()), float(values.std())
            elif spec.scale == "minmax":
                center, scale = float(values.min()), float(values.max() - values.min())
            else:
                center, scale = 0.0, 1.0
            fitted.center[spec.name] = center
            fitted.scale[spec.name] = scale if scale > 1e-12 else 1.0
        self._install(fitted)
        return self

    def _install(self, fitted: _Fitted) -> None:
        self._fitted = fitted
        self._lookup = {name: {v: i for i, v in enumerate(vocab)}
                        for name, vocab in fitted.vocab.items()}
        specs = self._by_type("numeric")
        self._centers = np.array([fitted.center[s.name] for s in specs], dtype=np.float64)
        self._scales = np.array([fitted.scale[s.name] for s in specs], dtype=np.float64)
        self._log1p = np.array([s.transform == "log1p" for s in specs], dtype=bool)

    def _scaled(self, numeric: np.ndarray) -> np.ndarray:
        """Each numeric feature's column transformed and scaled as fitted."""
        values = numeric
        if self._log1p.any():
            values = numeric.copy()
            part = numeric[:, self._log1p]
            values[:, self._log1p] = _transform(part, "log1p")
        return (values - self._centers) / self._scales

    # --- encoding ----------------------------------------------------------------------------

    def encode(self, records: Records, *,
               textual: bool = False) -> Encoded:
        """Encode a batch; records that fail any feature are reported, not encoded.

        ``records`` are dicts, or a clean CSV block kept as columns, whose cells are then read
        in compiled code (`agent.columns`).
        """
        fitted = self._require_fitted()
        n = len(records)
        columns = _cleaned(self.schema.features,
                           _columns(records, [f.name for f in self.schema.features]))
        reasons = np.full(n, "", dtype=object)
        details = np.full(n, "", dtype=object)

        def note(bad: np.ndarray, name: str) -> None:
            if not bad.any():  # the common case: "" is falsy, so this is one C-level scan
                return
            fresh = (bad != "") & (reasons == "")
            reasons[fresh] = bad[fresh]
            details[fresh] = [f"{name}: {_REASON_TEXT[r]}" for r in bad[fresh]]

        blocks: list[np.ndarray] = []
        numeric_specs = self._by_type("numeric")
        # The analyst's units (explanations speak in them), one column per numeric feature;
        # transform and scaling then run once over the whole matrix, not once per feature.
        numeric = numeric_matrix([columns[spec.name] for spec in numeric_specs])
        if numeric is not None:  # a clean block: every numeric cell cast in one call
            for index in np.flatnonzero(~np.isfinite(numeric).all(axis=0)).tolist():
                finite = np.isfinite(numeric[:, index])
                note(np.where(finite, "", "non_finite").astype(object),
                     numeric_specs[index].name)
                numeric[~finite, index] = 0.0
        else:
            numeric = np.empty((n, len(numeric_specs)), dtype=np.float64)
            for j, spec in enumerate(numeric_specs):
                numeric[:, j], bad = _to_float(columns[spec.name], textual)
                note(bad, spec.name)
        if numeric_specs:
            scaled = self._scaled(numeric)
            over = _beyond_float32(scaled)
            for index in np.flatnonzero(over.any(axis=0)).tolist():
                note(np.where(over[:, index], "non_finite", "").astype(object),
                     numeric_specs[index].name)
            blocks.append(scaled)
        codes: list[np.ndarray] = []
        for spec in self._by_type("categorical"):
            lookup = self._lookup[spec.name]
            unknown = len(lookup)
            column = columns[spec.name]
            if is_arrow(column):  # every cell of a CSV block is text: nothing to refuse
                code = category_codes(column, lookup, unknown)
            else:
                strings, bad = _category_column(column, textual)
                note(bad, spec.name)
                code = np.fromiter((lookup.get(s, unknown) for s in strings), dtype=np.int32,
                                   count=n)
            codes.append(code)
            onehot = np.zeros((n, unknown + 1), dtype=np.float32)
            onehot[np.arange(n), code] = 1.0
            blocks.append(onehot)
        for spec in self._by_type("boolean"):
            flags, bad = _boolean_column(columns[spec.name])
            note(bad, spec.name)
            codes.append(flags.astype(np.int32))
            blocks.append(flags.astype(np.float32)[:, None])
        for spec in self._by_type("tensor"):
            values, bad = self._tensor_column(spec, columns[spec.name])
            note(bad, spec.name)
            scaled = (values - fitted.center[spec.name]) / fitted.scale[spec.name]
            note(np.where(_beyond_float32(scaled).any(axis=1), "non_finite", "").astype(object),
                 spec.name)
            blocks.append(scaled)

        ok = reasons == ""
        x = np.concatenate(blocks, axis=1)[ok].astype(np.float32, copy=False) if blocks else (
            np.zeros((int(ok.sum()), 0), dtype=np.float32))
        errors = [RecordError(int(i), str(reasons[i]), str(details[i]))
                  for i in np.flatnonzero(~ok)]
        categorical_specs = self._by_type("categorical") + self._by_type("boolean")
        labels = self._optional_field(self.schema.label, records, ok)
        times = self._optional_field(self.schema.timestamp, records, ok)
        batch = FeatureBatch(
            numeric=numeric[ok],
            numeric_names=tuple(f.name for f in self._by_type("numeric")),
            categorical=(np.stack(codes, axis=1)[ok] if codes
                         else np.zeros((int(ok.sum()), 0), dtype=np.int32)),
            categorical_names=tuple(f.name for f in categorical_specs),
            categorical_vocab=tuple(
                tuple(fitted.vocab[f.name]) if f.type == "categorical" else ("false", "true")
                for f in categorical_specs
            ),
            encoded=x,
            labels=labels,
            times=None if times is None else epoch_seconds(times),
        )
        return Encoded(x=x, ok=ok, errors=errors, features=batch,
                       labels=labels,
                       ids=self._optional_field(self.schema.id, records, ok),
                       times=times)

    def labels(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The label field of every record (None where absent), as an object array."""
        if not self.schema.label:
            raise ValueError("the schema names no `label:` field")
        return _text_field(self.schema.label, records)

    @staticmethod
    def _optional_field(name: str | None, records: Records,
                        ok: np.ndarray) -> np.ndarray | None:
        return _text_field(name, records)[ok] if name else None

    def _numeric_column(self, spec: FeatureSpec, raw: Sequence[Any],
                        textual: bool) -> tuple[np.ndarray, np.ndarray]:
        if spec.type == "tensor":
            return self._tensor_column(spec, raw)
        values, bad = _to_float(raw, textual)
        return _transform(values, spec.transform), bad

    @staticmethod
    def _tensor_column(spec: FeatureSpec, raw: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        shape = tuple(spec.shape or ())
        raw = python_values(raw)
        size = int(np.prod(shape))
        out = np.zeros((len(raw), size), dtype=np.float64)
        bad = np.full(len(raw), "", dtype=object)
        for i, value in enumerate(raw):  # tensors are parsed one by one: each is a nested list
            if value is _MISSING or value is None:
                bad[i] = "missing_field"
                continue
            if isinstance(value, (str, bytes)):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError:
                    bad[i] = "wrong_type"
                    continue
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                bad[i] = "wrong_type"
                continue
            if arr.shape != shape:
                bad[i] = "bad_shape"
            elif not np.isfinite(arr).all():
                bad[i] = "non_finite"
            else:
                out[i] = arr.reshape(-1)
        return _transform(out, spec.transform), bad

    # --- persistence (JSON, never pickle) ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        fitted = self._require_fitted()
        return {
            "version": STATE_VERSION,
            "schema": self.schema.model_dump(mode="json"),
            "center": fitted.center,
            "scale": fitted.scale,
            "vocab": fitted.vocab,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Encoder:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported encoder state version {state.get('version')!r}")
        encoder = cls(SchemaConfig.model_validate(state["schema"]))
        encoder._install(_Fitted(center=dict(state["center"]), scale=dict(state["scale"]),
                                 vocab={k: list(v) for k, v in state["vocab"].items()}))
        return encoder


def value_errors(spec: FeatureSpec, records: Sequence[Mapping[str, Any]], textual: bool
                 ) -> list[tuple[str, Any]]:
    """Why each record's ``spec`` field cannot be encoded: (reason text, the raw value), or
    ``("", value)`` where it can. What ``check-config`` reports against the data files."""
    raw = _cleaned([spec], _columns(records, [spec.name]))[spec.name]
    if spec.type == "numeric":
        _, bad = _to_float(raw, textual)
    elif spec.type == "tensor":
        _, bad = Encoder._tensor_column(spec, raw)
    elif spec.type == "categorical":
        _, bad = _category_column(raw, textual)
    else:
        _, bad = _boolean_column(raw)
    expected = {"numeric": "not a number", "categorical": "not text or an integer",
                "boolean": "not a boolean (true/false, yes/no, on/off, 1/0)",
                "tensor": f"not a nested list of numbers of shape {list(spec.shape or ())}"}
    text = {**_REASON_TEXT, "wrong_type": expected[spec.type]}
    return [(text[b] if b else "", None if v is _MISSING else v)
            for b, v in zip(bad, raw, strict=True)]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _beyond_float32(scaled: np.ndarray) -> np.ndarray:
    """Which cells of a scaled block the float32 matrix cannot hold (bool, same shape).

    A finite JSON number such as ``1e300`` passes the float64 checks but would become ``inf``
    in the model's input (found by fuzzing, `tests/unit/adapters/test_parser_fuzz.py`).
    """
    return np.abs(scaled) > _FLOAT32_MAX


_REASON_TEXT = {
    "missing_field": "field is missing",
    "wrong_type": "wrong type",
    "non_finite": "value is NaN or infinite",
    "bad_shape": "tensor has the wrong shape",
}


def _cleaned(specs: Sequence[FeatureSpec], columns: dict[str, Sequence[Any]]
             ) -> dict[str, Sequence[Any]]:
    """Columns with each feature's ``strip:`` and ``map:`` applied (others untouched)."""
    out = dict(columns)
    for spec in specs:
        if not spec.strip and not spec.values_map:
            continue
        mapping = spec.values_map or {}
        if spec.type == "categorical":  # categories are names, whatever the map says
            mapping = {k: str(v) for k, v in mapping.items()}
        values = []
        for value in python_values(columns[spec.name]):
            if spec.strip and isinstance(value, str):
                value = value.strip()
            if mapping and isinstance(value, str | int | float | bool) and value is not _MISSING:
                value = mapping.get(str(value).lower() if isinstance(value, bool)
                                    else str(value), value)
            values.append(value)
        out[spec.name] = values
    return out


def _columns(records: Records, names: list[str]) -> dict[str, Sequence[Any]]:
    """Transpose records into one sequence per field.

    One ``itemgetter`` call per record and one ``zip`` instead of a ``dict.get`` per record and
    field: the difference is most of the encoder's time on wide records. A record missing a
    field sends the batch down the slower path, which marks the gap for the column checks.
    """
    if isinstance(records, ColumnarRecords):
        return record_columns(records, names)
    if not records:
        return {name: () for name in names}
    getter = itemgetter(*names)
    try:
        rows = list(map(getter, records))
    except (KeyError, TypeError):
        return {name: [r.get(name, _MISSING) for r in records] for name in names}
    if len(names) == 1:
        return {names[0]: rows}
    return dict(zip(names, zip(*rows, strict=True), strict=True))


def _text_field(name: str, records: Records) -> np.ndarray:
    """A pass-through field (label, id, timestamp) of every record, as text or None."""
    if isinstance(records, ColumnarRecords):
        return text_field(records, name)
    return np.array([_label_text(r.get(name)) for r in records], dtype=object)


def epoch_seconds(values: np.ndarray) -> np.ndarray:
    """Timestamp fields (text or None) as float64 epoch seconds, NaN where unreadable.

    Read as :func:`agent.grouping.record_time` reads them, so a window detector and the
    grouping of findings agree on every record's time. Epoch numbers, the common case on a
    fast stream, convert in one numpy call; ISO 8601 text takes the per-record path.
    """
    try:
        seconds = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        parsed = (record_time(value) for value in values.tolist())
        seconds = np.fromiter((np.nan if t is None else t for t in parsed),
                              dtype=np.float64, count=len(values))
    return np.where(np.isfinite(seconds), seconds, np.nan)


def _label_text(value: Any) -> str | None:
    if value is None or value is _MISSING:
        return None
    return str(value)


def _transform(values: np.ndarray, transform: str) -> np.ndarray:
    # Sign-preserving log1p: heavy-tailed counters (bytes, durations) compress without
    # turning an occasional negative into NaN.
    return np.sign(values) * np.log1p(np.abs(values)) if transform == "log1p" else values


def _to_float(raw: Sequence[Any], textual: bool) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised conversion with a slow path only when something is wrong."""
    n = len(raw)
    bad = np.full(n, "", dtype=object)
    if is_arrow(raw):  # a columnar block's text: cast in compiled code, else cell by cell
        cast = cast_floats(raw)
        if cast is None:
            return _to_float(raw.to_pylist(), textual)  # type: ignore[attr-defined]
        finite = np.isfinite(cast)
        if finite.all():
            return cast, bad
        bad[~finite] = "non_finite"
        return np.where(finite, cast, 0.0), bad
    # Text cells (CSV) are always str, so numpy may parse them directly; a missing field is
    # the sentinel object, which numpy refuses. Typed records (JSON) are checked first: numpy
    # would also accept "12" or True, which a JSON number field must not.
    if textual or set(map(type, raw)) <= _NUMBER_TYPES:
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            values = None
        if values is not None:
            finite = np.isfinite(values)
            if finite.all():
                return values, bad
            bad[~finite] = "non_finite"
            return np.where(finite, values, 0.0), bad
    values = np.zeros(n, dtype=np.float64)
    for i, v in enumerate(raw):
        if v is _MISSING or v is None or (textual and v == ""):
            bad[i] = "missing_field"
        elif textual and isinstance(v, str):
            try:
                values[i] = float(v)
            except ValueError:
                bad[i] = "wrong_type"
        elif type(v) in _NUMBER_TYPES:
            try:
                values[i] = float(v)
            except OverflowError:
                bad[i] = "non_finite"
        else:
            bad[i] = "wrong_type"
    finite = np.isfinite(values)
    bad[(bad == "") & ~finite] = "non_finite"
    return np.where(bad == "", values, 0.0), bad


def _category_column(raw: Sequence[Any], textual: bool) -> tuple[np.ndarray, np.ndarray]:
    raw = python_values(raw)
    bad = np.full(len(raw), "", dtype=object)
    if set(map(type, raw)) <= {str}:
        return np.array(raw, dtype=object), bad
    out = np.empty(len(raw), dtype=object)
    for i, v in enumerate(raw):
        if v is _MISSING or v is None:
            bad[i], out[i] = "missing_field", ""
        elif isinstance(v, str) or (type(v) is int and not textual):
            out[i] = str(v)
        else:
            bad[i], out[i] = "wrong_type", ""
    return out, bad


def _boolean_column(raw: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    raw = python_values(raw)
    bad = np.full(len(raw), "", dtype=object)
    out = np.zeros(len(raw), dtype=bool)
    for i, v in enumerate(raw):
        if v is _MISSING or v is None:
            bad[i] = "missing_field"
        elif type(v) is bool:
            out[i] = v
        elif type(v) is int and v in (0, 1):
            out[i] = bool(v)
        elif isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            out[i] = v.strip().lower() in _TRUE
        else:
            bad[i] = "wrong_type"
    return out, bad
