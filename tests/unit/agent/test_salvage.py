"""A batch the database refuses is stored row by refused row: degraded, or dropped loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.salvage import commit_salvaging, degraded
from storage import NewDriftReport, NewIncident, QuarantinedRecord, Store


def _report(end: str, **overrides: object) -> NewDriftReport:
    values: dict[str, object] = {
        "source": "s", "detector": "d", "window_end_key": end, "n_reference": 10,
        "n_window": 10, "statistic": 0.1, "p_value": 0.5, "rejected": False,
        "features": [{"name": "é"}], "top_features": ["é"]}
    return NewDriftReport(**(values | overrides))  # type: ignore[arg-type]


def _quarantined(offset: int) -> QuarantinedRecord:
    return QuarantinedRecord(source="s", offset_key=str(offset), reason="not_json",
                             detail="", raw_excerpt="{")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'salvage.db'}")
    store.upgrade()
    return store


def test_only_the_refused_row_is_lost_and_it_is_named(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    # NOT NULL refuses n_window=None on every database, degraded or not.
    reports = [_report(str(i)) for i in range(7)] + [_report("bad", n_window=None)]
    incidents = [NewIncident(kind="drift", severity="low", source="s", offset_key=str(i),
                             detector="d") for i in range(3)]
    calls: list[int] = []

    def commit(**kwargs: object) -> object:
        calls.append(1)
        return store.commit_batch(**kwargs)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="agent.salvage"):
        result, salvage = commit_salvaging(commit, source="s", position={"line": 11},
                                           incidents=incidents,
                                           quarantine=[_quarantined(i) for i in range(4)],
                                           drift_reports=reports)

    assert (result.incidents_created, result.quarantined, result.drift_reports) == (3, 4, 7)
    assert len(result.created_ids) == 3
    assert dict(salvage.dropped) == {"drift_reports": 1} and not salvage.degraded
    assert store.load_position("s") == {"line": 11}
    assert sorted(r.window_end_key for r in store.list_drift_reports(limit=100)) == [
        str(i) for i in range(7)]
    assert "window_end_key bad" in caplog.text
    assert len(calls) <= 12, "halving finds one refused row among 14 in a few commits"


def test_a_replayed_salvage_creates_nothing_twice(store: Store) -> None:
    batch = {"source": "s", "position": {"line": 2}, "quarantine": [_quarantined(1)],
             "drift_reports": [_report("1"), _report("bad", n_window=None)]}
    commit_salvaging(store.commit_batch, **batch)  # type: ignore[arg-type]
    again, _ = commit_salvaging(store.commit_batch, **batch)  # type: ignore[arg-type]
    assert (again.quarantined, again.drift_reports) == (0, 0)
    assert store.count_quarantine() == {"not_json": 1}


def test_degraded_rows_keep_their_keys_and_spell_their_text_in_ascii() -> None:
    incident = NewIncident(kind="drift", severity="low", source="s", offset_key="7",
                           detector="d", record_excerpt="☃", predicted_class="é" * 100,
                           explanation={"é": ["☃"]})
    low = degraded(incident)
    assert isinstance(low, NewIncident)
    assert (low.source, low.offset_key, low.detector) == ("s", "7", "d")
    assert low.record_excerpt == "\\u2603"
    assert low.predicted_class == "\\xe9" * 25, "cut to the column's width"
    assert low.explanation == {"\\xe9": ["\\u2603"]}
    quarantined = degraded(QuarantinedRecord(source="s", offset_key="1", reason="decode",
                                             detail="é", raw_excerpt="\x00☃"))
    assert isinstance(quarantined, QuarantinedRecord)
    assert (quarantined.detail, quarantined.raw_excerpt) == ("\\xe9", "\\x00\\u2603")
    report = degraded(_report("1"))
    assert isinstance(report, NewDriftReport)
    assert (report.features, report.top_features) == ([{"name": "\\xe9"}], ["\\xe9"])
