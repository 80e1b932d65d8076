"""Per-record findings grouped into incidents: one per burst, stable across restarts."""

from __future__ import annotations

from agent.grouping import Finding, Grouper, incident_key, record_time


def _finding(index: int, *, kind: str = "attack", predicted: str | None = "neptune",
             time: float | None = None) -> Finding:
    return Finding(detector="classifier", kind=kind, predicted=predicted, index=index,
                   offset=f"gen1:{index * 100}", time=time, row=index % 500)


def test_a_burst_is_one_group_with_a_count_and_examples() -> None:
    grouper = Grouper(span_records=10_000, span_s=None, examples=5)
    placements = grouper.place(_finding(i) for i in range(2000))
    groups = {p.group.key for p in placements}
    assert len(groups) == 1
    group = placements[-1].group
    assert (group.count, group.first_offset, group.last_offset) == (2000, "gen1:0", "gen1:199900")
    assert sum(p.example for p in placements) == 5 and placements[0].opened
    assert not any(p.opened for p in placements[1:])


def test_kinds_and_classes_group_apart_and_spans_close_groups() -> None:
    grouper = Grouper(span_records=100, span_s=None, examples=2)
    placements = grouper.place([_finding(0), _finding(1, predicted="smurf"),
                                _finding(2, kind="novel", predicted=None), _finding(99),
                                _finding(100)])
    keys = [p.group.key for p in placements]
    assert len(set(keys[:3])) == 3
    assert keys[3] == keys[0]  # within the span: same group
    assert keys[4] != keys[0] and placements[4].opened  # span reached: a new incident


def test_time_spans_use_the_records_own_timestamps() -> None:
    grouper = Grouper(span_records=10_000, span_s=60.0, examples=1)
    placements = grouper.place([_finding(0, time=1000.0), _finding(1, time=1059.0),
                                _finding(2, time=1060.0)])
    assert [p.opened for p in placements] == [True, False, True]


def test_open_groups_survive_a_restart_through_the_position() -> None:
    uninterrupted = Grouper(span_records=1000, span_s=None, examples=3)
    whole = uninterrupted.place(_finding(i) for i in range(50))
    first = Grouper(span_records=1000, span_s=None, examples=3)
    first.place(_finding(i) for i in range(20))
    restarted = Grouper(span_records=1000, span_s=None, examples=3)
    restarted.restore(first.saved())
    rest = restarted.place(_finding(i) for i in range(20, 50))
    assert rest[-1].group.key == whole[-1].group.key
    assert rest[-1].group.count == whole[-1].group.count == 50
    assert not any(p.opened or p.example for p in rest)


def test_expired_groups_are_forgotten_and_keys_stay_short() -> None:
    grouper = Grouper(span_records=10, span_s=None, examples=1)
    grouper.place([_finding(0)])
    grouper.close_expired(5)
    assert grouper.saved()
    grouper.close_expired(10)
    assert grouper.saved() == []
    long = Finding(detector="d", kind="novel", predicted="x" * 100, index=0, offset="o" * 250,
                   time=None, row=0)
    assert len(incident_key(long)) <= 255
    assert incident_key(long) == incident_key(long)


def test_record_time_reads_epoch_and_iso_and_ignores_the_rest() -> None:
    assert record_time("1700000000.5") == 1700000000.5
    assert record_time("2026-11-30T12:00:00Z") == record_time("2026-11-30T12:00:00+00:00")
    assert record_time("yesterday") is None and record_time(None) is None
