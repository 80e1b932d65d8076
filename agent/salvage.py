"""Storing a batch the database refused: find the refused rows and store degraded copies.

A batch whose commit fails with :class:`~storage.StoreRejected` fails the same way on every
retry, and after a restart too: the source position is committed with the batch, so the same
batch is read again. One unstorable row would stop ingestion for good. The store already makes
every text storable (``storage.text``), so this is the last line of defence, for whatever a
particular database still refuses: a PostgreSQL database created with a LATIN1 encoding, a
number out of a column's range, a constraint nobody foresaw.

The batch is split in halves until each refused row is alone. That row is stored once more
with its free text and JSON spelled in ASCII escapes (its identifying keys are kept, so a
replay of the batch still finds it and skips it); a row refused even then is dropped. Either
way it is counted in ``metasentry_store_rows_degraded_total{table, outcome}`` and logged:
nothing is dropped silently. The source position is committed last, once every row is in.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from storage import CommitResult, NewDriftReport, NewIncident, QuarantinedRecord, StoreRejected
from storage.records import MAX_CLASS_CHARS, MAX_MODEL_VERSION_CHARS
from storage.text import ascii_json, ascii_text

log = logging.getLogger(__name__)

Row = NewIncident | QuarantinedRecord | NewDriftReport
#: ``commit(source=..., position=..., incidents=..., quarantine=..., ...)``, retrying while the
#: database is unavailable and raising StoreRejected when it refuses.
Commit = Callable[..., CommitResult]


@dataclass
class Salvage:
    """What storing a refused batch took: rows stored degraded and rows dropped, by kind."""

    degraded: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)


def commit_salvaging(commit: Commit, *, source: str, position: Mapping[str, Any] | None,
                     **rows: Sequence[Any]) -> tuple[CommitResult, Salvage]:
    """Commit a batch that ``commit`` refused as a whole, refused row by row, position last.

    ``rows`` are ``commit``'s row arguments (``incidents=``, ``quarantine=``, ...); each kind
    is counted under its argument name. Only incidents, quarantined records and drift reports
    have a degraded form; a refused row of another kind is dropped, loudly.
    """
    tagged = [(kind, row) for kind, items in rows.items() for row in items]
    salvage = Salvage()
    results: list[CommitResult] = []
    _commit_rows(commit, source, tagged, results, salvage, known_refused=True)
    if position is not None:
        try:
            results.append(commit(source=source, position=position))
        except StoreRejected as error:
            salvage.reasons.append(str(error))
            # The same ASCII spelling every time, so a restart resumes from it consistently.
            results.append(commit(source=source, position=ascii_json(dict(position))))
            salvage.degraded["source_offsets"] += 1
    return _merge(results), salvage


def _commit_rows(commit: Commit, source: str, rows: list[tuple[str, Any]],
                 results: list[CommitResult], salvage: Salvage, *,
                 known_refused: bool = False) -> None:
    if not rows:
        return
    if not known_refused:
        try:
            results.append(commit(source=source, position=None, **_by_kind(rows)))
            return
        except StoreRejected as error:
            if len(rows) == 1:
                salvage.reasons.append(str(error))
    if len(rows) > 1:
        middle = len(rows) // 2
        _commit_rows(commit, source, rows[:middle], results, salvage)
        _commit_rows(commit, source, rows[middle:], results, salvage)
        return
    ((kind, row),) = rows
    lower = degraded(row) if isinstance(row, Row) else None
    if lower is not None:
        try:
            results.append(commit(source=source, position=None, **_by_kind([(kind, lower)])))
        except StoreRejected as error:
            salvage.reasons.append(str(error))
        else:
            salvage.degraded[kind] += 1
            return
    salvage.dropped[kind] += 1
    log.error("dropped a row of %s from source %s that the database refuses%s (%s): %s", kind,
              source, " even in ASCII" if lower is not None else "", _identity(row),
              salvage.reasons[-1] if salvage.reasons else "refused")


def degraded(row: Row) -> Row:
    """``row`` with its free text and JSON in ASCII escapes; its identifying keys unchanged."""
    if isinstance(row, QuarantinedRecord):
        return replace(row, detail=ascii_text(row.detail), raw_excerpt=ascii_text(row.raw_excerpt))
    if isinstance(row, NewIncident):
        return replace(
            row,
            explanation=ascii_json(dict(row.explanation)),
            record_excerpt=_ascii_or_none(row.record_excerpt),
            predicted_class=_ascii_or_none(row.predicted_class, MAX_CLASS_CHARS),
            model_version=_ascii_or_none(row.model_version, MAX_MODEL_VERSION_CHARS),
        )
    return replace(row, features=ascii_json(list(row.features)),
                   top_features=[ascii_text(name) for name in row.top_features])


def _ascii_or_none(value: str | None, max_chars: int | None = None) -> str | None:
    return None if value is None else ascii_text(value)[:max_chars]


def _by_kind(rows: Sequence[tuple[str, Any]]) -> dict[str, list[Any]]:
    kinds: dict[str, list[Any]] = {}
    for kind, row in rows:
        kinds.setdefault(kind, []).append(row)
    return kinds


def _identity(row: Any) -> str:
    names = ("detector", "window_end_key", "offset_key")
    found = [f"{name} {getattr(row, name)}" for name in names if hasattr(row, name)]
    return ", ".join(found) or type(row).__name__


def _merge(results: Sequence[CommitResult]) -> CommitResult:
    """One result for several commits: counts added up, id tuples joined."""
    merged: dict[str, Any] = {}
    for item in fields(CommitResult):
        values = [getattr(result, item.name) for result in results]
        if item.name == "created_ids" or all(isinstance(v, tuple) for v in values):
            merged[item.name] = tuple(i for value in values for i in value)
        else:
            merged[item.name] = sum(values)
    return CommitResult(**merged)
