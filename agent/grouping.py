"""Grouping per-record findings into incidents: a burst of 2,000 similar records is one incident.

Consecutive findings of one detector, kind and predicted class on one source join the same
*group* until the group spans ``incidents.group_span_records`` records of the stream (or
``group_span_s`` seconds of the records' own timestamps); the next finding then opens a new
group. Each group is one incident, keyed by its first record (so a replay after a crash maps to
the same incident and the store drops the duplicate), with a count, its first and last offset,
and its first ``examples_per_incident`` records stored whole (an analyst's label on the incident
becomes support examples from them).

Open groups are part of the committed source position, so a restarted agent continues the
groups it had open: counts stay exact and no burst is split in two by a restart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from storage.records import MAX_OFFSET_KEY_CHARS


@dataclass
class Group:
    """One open group of findings (JSON-serialisable: it travels in the source position)."""

    key: str  # the incident's offset_key
    detector: str
    kind: str
    predicted: str | None
    first_index: int  # stream position (ok records since the source began) of the first finding
    first_offset: str
    first_time: float | None
    count: int
    last_offset: str
    last_index: int
    examples: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Group:
        return cls(**data)


@dataclass(frozen=True)
class Finding:
    """One flagged record, as the grouping sees it."""

    detector: str
    kind: str
    predicted: str | None
    index: int  # stream position
    offset: str
    time: float | None
    row: int  # position in the batch's feature rows


@dataclass(frozen=True)
class Placement:
    """Where a finding went: its group, and whether it opened it or is one of its examples."""

    finding: Finding
    group: Group
    opened: bool
    example: bool


class Grouper:
    """The open groups of one source and the rules that extend or close them."""

    def __init__(self, *, span_records: int, span_s: float | None, examples: int) -> None:
        self.span_records = span_records
        self.span_s = span_s
        self.examples = examples
        self.groups: dict[str, Group] = {}

    def restore(self, saved: Iterable[dict[str, Any]]) -> None:
        self.groups = {}
        for data in saved:
            group = Group.from_json(data)
            self.groups[_slot(group.detector, group.kind, group.predicted)] = group

    def saved(self) -> list[dict[str, Any]]:
        return [group.to_json() for group in self.groups.values()]

    def place(self, findings: Iterable[Finding]) -> list[Placement]:
        """Put findings (in stream order) into groups, opening new ones where a span ended."""
        placements = []
        for finding in findings:
            slot = _slot(finding.detector, finding.kind, finding.predicted)
            group = self.groups.get(slot)
            opened = group is None or self._expired(group, finding)
            if opened:
                group = Group(key=incident_key(finding), detector=finding.detector,
                              kind=finding.kind, predicted=finding.predicted,
                              first_index=finding.index, first_offset=finding.offset,
                              first_time=finding.time, count=0, last_offset=finding.offset,
                              last_index=finding.index, examples=0)
                self.groups[slot] = group
            assert group is not None
            group.count += 1
            group.last_offset = finding.offset
            group.last_index = finding.index
            example = group.examples < self.examples
            if example:
                group.examples += 1
            placements.append(Placement(finding, group, opened, example))
        return placements

    def close_expired(self, stream_index: int) -> None:
        """Forget groups no later finding can join (keeps the position small)."""
        self.groups = {slot: group for slot, group in self.groups.items()
                       if stream_index - group.first_index < self.span_records}

    def _expired(self, group: Group, finding: Finding) -> bool:
        if finding.index - group.first_index >= self.span_records:
            return True
        return (self.span_s is not None and finding.time is not None
                and group.first_time is not None
                and finding.time - group.first_time >= self.span_s)


def incident_key(finding: Finding) -> str:
    """The incident's offset_key: kind, class and first record; hashed if too long."""
    key = f"{finding.kind}:{finding.predicted or '-'}:{finding.offset}"
    if len(key) <= MAX_OFFSET_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{finding.kind}:{digest}:{finding.offset[-(MAX_OFFSET_KEY_CHARS - 80):]}"


def record_time(value: str | None) -> float | None:
    """A record's timestamp field as seconds (epoch number or ISO 8601); None if unreadable."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _slot(detector: str, kind: str, predicted: str | None) -> str:
    return f"{detector}\x1f{kind}\x1f{predicted or ''}"
