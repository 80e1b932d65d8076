"""Masking the fields ``schema.redact`` names in what the agent stores and shows of a record.

Records can carry IP addresses and user names that an incident, a sink's alert or a log line
has no need to repeat. Redaction happens where a record's text becomes an incident (its
excerpt, its fields, the detector's explanation) and where a bad record is quarantined, so the
store, the REST API and every sink downstream only ever see the masked form. Detectors still
see the real values: a redacted field that is also a feature is encoded as before.

A value is replaced by :data:`MASK`, or, with ``mode: hash``, by ``[redacted:<16 hex>]``, an
HMAC-SHA256 of the value under the key in ``$METASENTRY_REDACT_KEY``: equal values give equal
hashes, so incidents can still be grouped by the same address, and without the key a hash
cannot be reversed by trying every IPv4 address.

The excerpt is rebuilt from the record's parsed fields (a JSON object re-serialised, a CSV line
written again with its source's delimiter), never patched by searching the text. A record that
could not be parsed (a quarantined decode error) is masked when its text still parses; when it
does not, the excerpt is withheld, because the agent cannot tell where the field is in it.
"""

from __future__ import annotations

import csv
import hmac
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from hashlib import sha256
from typing import Any, Literal

import orjson

from agent.config import REDACT_KEY_ENV, AgentConfig, CsvFileSourceConfig
from detectors import FeatureTest
from detectors.base import DriftReport

MASK = "[redacted]"
WITHHELD = "[withheld: the record could not be parsed to mask its redacted fields]"
Mode = Literal["mask", "hash"]


@dataclass(frozen=True)
class Redactor:
    """Masks the configured fields of one record's excerpt, fields and explanation.

    Parameters
    ----------
    rules:
        Field name to ``"mask"`` or ``"hash"``.
    key:
        The HMAC key for ``"hash"`` rules; required when one is configured.
    columns:
        ``schema.columns``: names the cells of a CSV line that arrives without parsed fields.
    delimiters:
        The CSV delimiter of each source that has one other than ``","``.
    id_field, timestamp_field:
        ``schema.id`` and ``schema.timestamp``: a drift window's span names their values.

    Examples
    --------
    >>> r = Redactor({"src_ip": "mask"})
    >>> r.excerpt('{"src_ip": "10.0.0.7", "bytes": 12}', {"src_ip": "10.0.0.7", "bytes": 12})
    '{"src_ip":"[redacted]","bytes":12}'
    >>> r.excerpt("10.0.0.7,12", {"src_ip": "10.0.0.7", "bytes": "12"})
    '[redacted],12'
    """

    rules: Mapping[str, Mode]
    key: bytes | None = None
    columns: tuple[str, ...] | None = None
    delimiters: Mapping[str, str] = field(default_factory=dict)
    id_field: str | None = None
    timestamp_field: str | None = None

    def __post_init__(self) -> None:
        if "hash" in self.rules.values() and not self.key:
            raise ValueError(f"a `mode: hash` redaction needs a key: set {REDACT_KEY_ENV}.")

    @classmethod
    def from_config(cls, config: AgentConfig,
                    environ: Mapping[str, str] = os.environ) -> Redactor:
        """The redactor ``schema.redact`` asks for (no rules: one that changes nothing)."""
        rules = config.schema.redact_rules
        key = environ.get(REDACT_KEY_ENV) if "hash" in rules.values() else None
        delimiters = {s.name: s.delimiter for s in config.sources
                      if isinstance(s, CsvFileSourceConfig) and s.delimiter != ","}
        columns = tuple(config.schema.columns) if config.schema.columns else None
        return cls(rules=rules, key=key.encode() if key else None, columns=columns,
                   delimiters=delimiters, id_field=config.schema.id,
                   timestamp_field=config.schema.timestamp)

    @property
    def active(self) -> bool:
        """Whether any field is redacted; an inactive redactor returns its inputs unchanged."""
        return bool(self.rules)

    def value(self, name: str, value: Any) -> Any:
        """What is shown instead of ``value`` of field ``name`` (itself when not redacted)."""
        mode = self.rules.get(name)
        if mode is None:
            return value
        if mode == "mask":
            return MASK
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        assert self.key is not None  # checked in __post_init__
        digest = hmac.new(self.key, text.encode(), sha256).hexdigest()[:16]
        return f"[redacted:{digest}]"

    def fields(self, fields: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A copy of a record's top-level fields with the redacted ones masked."""
        if fields is None:
            return None
        return {name: self.value(name, value) for name, value in fields.items()}

    def excerpt(self, raw: str, fields: Mapping[str, Any] | None, *, source: str = "") -> str:
        """The record's text with the redacted fields masked, or :data:`WITHHELD`.

        ``fields`` are the record's parsed fields (``None`` for a record that could not be
        parsed); ``source`` names the source, for the CSV delimiter.
        """
        if not self.active:
            return raw
        delimiter = self.delimiters.get(source, ",")
        if fields is None:
            fields = _parse(raw, self.columns, delimiter)
            if fields is None:
                return WITHHELD
        masked = self.fields(fields) or {}
        if raw.lstrip().startswith("{"):
            return orjson.dumps(masked, default=str).decode()
        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator="").writerow(
            ["" if v is None else v for v in masked.values()])
        return out.getvalue()

    def span(self, span: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A window's span (offsets, ids, times) with the ids or times masked if redacted."""
        if span is None:
            return None
        names = {"first_id": self.id_field, "last_id": self.id_field,
                 "first_time": self.timestamp_field, "last_time": self.timestamp_field}
        return {key: value if names.get(key) is None or value is None
                else self.value(names[key] or "", value) for key, value in span.items()}

    def drift_report(self, report: DriftReport) -> DriftReport:
        """The report with the categories of redacted categorical features masked.

        A drift test names the categories whose share moved most (in the report and in its
        one-line summary); for a redacted field those are the values themselves.
        """
        if not self.active or not any(f.name in self.rules for f in report.features):
            return report
        return replace(report, features=tuple(self._feature_result(f) for f in report.features))

    def _feature_result(self, result: Any) -> Any:
        if not isinstance(result, FeatureTest) or result.name not in self.rules:
            return result
        return replace(result, category_shifts=tuple(
            replace(s, category=self.value(result.name, s.category))
            for s in result.category_shifts))

    def explanation(self, data: Any) -> Any:
        """A detector's explanation with redacted values masked.

        Masks the value under a redacted key at any depth, and the ``value`` and ``nearest`` of
        an entry ``{"feature": <redacted name>, ...}`` (how the classifier names what
        separates a record from its nearest labelled one).
        """
        if not self.active:
            return data
        if isinstance(data, Mapping):
            named = data.get("feature")
            feature = named if isinstance(named, str) and named in self.rules else None
            out = {}
            for key, value in data.items():
                if key in self.rules:
                    out[key] = self.value(key, value)
                elif feature is not None and key in ("value", "nearest"):
                    out[key] = self.value(feature, value)
                else:
                    out[key] = self.explanation(value)
            return out
        if isinstance(data, list | tuple):
            return [self.explanation(item) for item in data]
        return data


def redact_excerpt(redactor: Redactor | None, raw: str, fields: Mapping[str, Any] | None, *,
                   source: str = "") -> str:
    """``redactor.excerpt(...)``, or ``raw`` itself when there is no redactor."""
    return raw if redactor is None else redactor.excerpt(raw, fields, source=source)


def _parse(raw: str, columns: tuple[str, ...] | None,
           delimiter: str) -> Mapping[str, Any] | None:
    """The fields of an unparsed record's text when it still parses cleanly, else ``None``."""
    if raw.lstrip().startswith("{"):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None
    if not columns:
        return None
    try:
        rows = list(csv.reader(io.StringIO(raw), delimiter=delimiter))
    except csv.Error:
        return None
    if len(rows) != 1 or len(rows[0]) != len(columns):
        return None
    return dict(zip(columns, rows[0], strict=True))
