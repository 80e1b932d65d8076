"""``check-config`` against the data: does the schema describe the files it will read?

A configuration can be valid on its own and still not fit its data: a feature the files do
not have, a text column declared numeric, booleans written in a way the encoder cannot read.
The agent would find out at start (the reference would not encode) or, worse, quarantine
every record of a stream. This check reads the first records of the reference and of every
file source that exists, and reports each mismatch with the YAML path of the feature, the
file, how many records fail and one example value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import AgentConfig, CsvFileSourceConfig, JsonlFileSourceConfig
from agent.datafile import read_records
from agent.schema import value_errors

SAMPLE_RECORDS = 2000
_EXAMPLE_CHARS = 60


def data_errors(config: AgentConfig, *, sample: int = SAMPLE_RECORDS) -> list[str]:
    """One line per feature that does not fit a data file, for every file there is."""
    files: list[tuple[str, Path, bool]] = [
        ("reference.path", config.resolve(config.reference.path), config.reference.header)]
    for i, source in enumerate(config.sources):
        if isinstance(source, (CsvFileSourceConfig, JsonlFileSourceConfig)):
            header = getattr(source, "header", True)
            files.append((f"sources[{i}].path", config.resolve(source.path), header))
    errors: list[str] = []
    for where, path, header in files:
        if not path.is_file():
            continue  # a followed file may not exist yet; load_config names missing replays
        try:
            data = read_records(path, columns=config.schema.columns, header=header,
                                limit=sample)
        except (OSError, ValueError) as error:
            errors.append(f"{where}: cannot read {path} ({error})")
            continue
        if not data.records:
            if data.rejected:
                reasons = ", ".join(f"{reason}: {count}" for reason, count
                                    in sorted(data.rejected.items()))
                errors.append(f"{where}: none of the first lines of {path.name} could be "
                              f"parsed with this schema ({reasons}); check schema.columns "
                              "and the file's format")
            continue
        errors.extend(_feature_errors(config, where, path, data.records, data.textual))
    return errors


def _feature_errors(config: AgentConfig, where: str, path: Path,
                    records: list[dict[str, Any]], textual: bool) -> list[str]:
    out = []
    present = set().union(*(record.keys() for record in records[:50]))
    n = len(records)
    for i, spec in enumerate(config.schema.features):
        name = f"schema.features[{i}] ({spec.name})"
        if spec.name not in present and all(spec.name not in r for r in records):
            fields = ", ".join(sorted(str(f) for f in present)[:12])
            out.append(f"{name}: no record of {where} ({path.name}) has this field (its "
                       f"fields: {fields})")
            continue
        failures = [(reason, value) for reason, value in value_errors(spec, records, textual)
                    if reason]
        if failures:
            reason, value = failures[0]
            out.append(f"{name}: {len(failures)} of the first {n} records of {where} "
                       f"({path.name}) cannot be read as {spec.type}: {reason}, e.g. "
                       f"{_example(value)}")
    label = config.schema.label
    if label and all(label not in r for r in records):
        out.append(f"schema.label ({label}): no record of {where} ({path.name}) has this field")
    return out


def _example(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _EXAMPLE_CHARS else text[:_EXAMPLE_CHARS] + "…"
