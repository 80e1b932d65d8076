"""Read a whole labelled or reference file (CSV or JSONL, gzip or not) into records.

Used for reference data at start-up and by the CLI commands that take a data file. It reads
through the same source adapters as the live stream, so a file that the agent can watch is a
file it can be fitted on, with the same parsing rules and the same error reasons.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import Source
from adapters.files import CsvFileSource, JsonlFileSource

log = logging.getLogger(__name__)

_READ_CHUNK = 20_000


@dataclass(frozen=True)
class RecordFile:
    """Parsed records of one file, and what could not be parsed."""

    records: list[dict[str, Any]]
    textual: bool
    rejected: Counter[str] = field(default_factory=Counter)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes: the identity of a reference or training file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_format(path: Path) -> str:
    """'csv' or 'jsonl', from the file name (``.gz`` is looked through)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def open_file_source(name: str, path: Path, *, columns: list[str] | None = None,
                     header: bool = True, max_record_bytes: int = 1_048_576) -> Source:
    """A replay-mode source for a finite file, chosen by its name."""
    if file_format(path) == "jsonl":
        return JsonlFileSource(name, path, mode="replay", max_record_bytes=max_record_bytes)
    return CsvFileSource(name, path, mode="replay", columns=columns, header=header,
                         max_record_bytes=max_record_bytes)


def read_records(path: Path | str, *, columns: list[str] | None = None, header: bool = True,
                 limit: int | None = None) -> RecordFile:
    """Read every parseable record of a file; unparseable lines are counted, not fatal."""
    path = Path(path)
    source = open_file_source("file", path, columns=columns if not header else None,
                              header=header)
    source.open(None)
    records: list[dict[str, Any]] = []
    rejected: Counter[str] = Counter()
    textual = True
    try:
        while limit is None or len(records) < limit:
            batch = source.fetch(_READ_CHUNK, timeout_s=0.0)
            textual = batch.textual
            for record in batch.records:
                if record.fields is None:
                    rejected[record.error or "decode"] += 1
                else:
                    records.append(record.fields)
            if batch.exhausted or not batch.records:
                break
    finally:
        source.close()
    if rejected:
        log.warning("%s: %d unparseable lines skipped (%s)", path, sum(rejected.values()),
                    dict(rejected))
    return RecordFile(records=records[:limit] if limit else records, textual=textual,
                      rejected=rejected)
