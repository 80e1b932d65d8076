"""One contract for every Store backend: SQLite (a temporary file) and PostgreSQL (the server).

Each PostgreSQL test runs in a schema of its own (``search_path`` in the URL), so tests are
independent of each other and of anything else using the same database.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage import (
    IncidentNotFound,
    ModelVersionNotFound,
    NewDriftReport,
    NewIncident,
    NewReferenceVersion,
    QuarantinedRecord,
    ReferenceVersionNotFound,
    Store,
    StoreRejected,
)
from storage.models import Base

PG_URL = os.environ.get(
    "METASENTRY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SHA = "0" * 64

_pg_reason: list[str | None] = []


def _postgres_unavailable_reason() -> str | None:
    """Asked once per session: the reason PostgreSQL tests must skip, or None."""
    if not _pg_reason:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            _pg_reason.append(None)
        except Exception as error:  # any failure means "no usable server"
            _pg_reason.append(f"PostgreSQL at {PG_URL} does not answer: {error}")
        finally:
            engine.dispose()
    return _pg_reason[0]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    reason = _postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    schema = f"metasentry_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'metasentry.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def empty_store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    yield store
    store.close()


@pytest.fixture
def store(empty_store: Store) -> Store:
    empty_store.upgrade()
    return empty_store


def incident(offset: int, **overrides: object) -> NewIncident:
    values: dict[str, object] = {
        "kind": "adversarial",
        "severity": "high",
        "source": "stream",
        "offset_key": str(offset),
        "detector": "mahalanobis",
        "score": 3.5 + offset,
        "p_value": 0.001,
        "explanation": {"top_features": ["src_bytes"], "offset": offset},
        "record_excerpt": f"record {offset}",
    }
    values.update(overrides)
    return NewIncident(**values)  # type: ignore[arg-type]


def drift_report(window_end: str, **overrides: object) -> NewDriftReport:
    values: dict[str, object] = {
        "source": "stream",
        "detector": "mmd",
        "window_end_key": window_end,
        "n_reference": 1000,
        "n_window": 500,
        "statistic": 0.12,
        "p_value": 0.004,
        "rejected": True,
        "features": [{"name": "src_bytes", "p_value": 0.001}],
        "top_features": ["src_bytes"],
    }
    values.update(overrides)
    return NewDriftReport(**values)  # type: ignore[arg-type]


def quarantined(offset: int, reason: str = "not_json") -> QuarantinedRecord:
    return QuarantinedRecord(
        source="stream", offset_key=str(offset), reason=reason, detail="x", raw_excerpt="{"
    )


# ---------------------------------------------------------------------------- schema


def test_upgrade_takes_an_empty_database_to_head(empty_store: Store) -> None:
    assert empty_store.current_revision() is None
    assert not empty_store.at_head()

    empty_store.upgrade()
    empty_store.upgrade()  # a second run finds nothing to do

    assert empty_store.current_revision() == empty_store.head_revision()
    assert empty_store.at_head()


def test_models_and_migrations_describe_the_same_schema(store: Store, store_url: str) -> None:
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []

            # The comparison must be able to see a difference, or the check above is empty.
            drifted = sa.MetaData()
            for table in Base.metadata.sorted_tables:
                table.to_metadata(drifted)
            drifted.tables["incidents"].append_column(sa.Column("extra", sa.Integer()))
            assert compare_metadata(context, drifted) != []
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- commit_batch


def test_replaying_a_batch_creates_nothing_new_and_moves_the_position(store: Store) -> None:
    incidents = [incident(i) for i in range(5)]
    records = [quarantined(100), quarantined(101)]
    reports = [drift_report("w1")]

    first = store.commit_batch(
        source="stream",
        position={"offset": 5},
        incidents=incidents,
        quarantine=records,
        drift_reports=reports,
    )
    replay = store.commit_batch(
        source="stream",
        position={"offset": 7},
        incidents=incidents,
        quarantine=records,
        drift_reports=reports,
    )

    assert (first.incidents_created, first.incidents_duplicate) == (5, 0)
    assert (first.quarantined, first.drift_reports) == (2, 1)
    assert len(set(first.created_ids)) == 5
    assert (replay.incidents_created, replay.incidents_duplicate) == (0, 5)
    assert (replay.quarantined, replay.drift_reports, replay.created_ids) == (0, 0, ())
    assert store.load_position("stream") == {"offset": 7}
    assert store.count_incidents() == {"adversarial": 5}
    assert sorted(i.id for i in store.list_incidents()) == sorted(first.created_ids)


def test_duplicates_within_one_batch_are_counted(store: Store) -> None:
    result = store.commit_batch(
        source="stream", position=None, incidents=[incident(1), incident(1), incident(2)]
    )
    assert (result.incidents_created, result.incidents_duplicate) == (2, 1)


def test_same_offset_from_another_detector_is_a_new_incident(store: Store) -> None:
    result = store.commit_batch(
        source="stream",
        position=None,
        incidents=[incident(1), incident(1, detector="knn"), incident(1, source="other")],
    )
    assert result.incidents_created == 3


def test_position_none_leaves_the_saved_position_alone(store: Store) -> None:
    assert store.load_position("stream") is None
    store.commit_batch(source="stream", position={"file": "a.csv", "line": 10})
    store.commit_batch(source="stream", position=None, incidents=[incident(1)])
    assert store.load_position("stream") == {"file": "a.csv", "line": 10}
    assert store.load_position("another") is None


def test_a_batch_failing_midway_commits_nothing(store: Store) -> None:
    store.commit_batch(source="stream", position={"offset": 1}, incidents=[incident(0)])

    # n_window=None violates NOT NULL after the incidents of the batch were already inserted.
    broken = drift_report("w9", n_window=None)
    with pytest.raises(StoreRejected, match="refused"):
        store.commit_batch(
            source="stream",
            position={"offset": 99},
            incidents=[incident(1), incident(2)],
            quarantine=[quarantined(50)],
            drift_reports=[broken],
        )

    assert [i.offset_key for i in store.list_incidents()] == ["0"]
    assert store.count_quarantine() == {}
    assert store.list_drift_reports() == []
    assert store.load_position("stream") == {"offset": 1}


def test_a_large_batch_round_trips(store: Store) -> None:
    result = store.commit_batch(
        source="stream", position={"offset": 1200}, incidents=[incident(i) for i in range(1200)]
    )
    assert result.incidents_created == 1200
    assert store.count_incidents() == {"adversarial": 1200}


def test_concurrent_batches_from_threads_all_land(store: Store) -> None:
    errors: list[BaseException] = []

    def commit(worker: int) -> None:
        try:
            for batch in range(5):
                offsets = range(worker * 1000 + batch * 20, worker * 1000 + batch * 20 + 20)
                store.commit_batch(
                    source=f"s{worker}",
                    position={"batch": batch},
                    incidents=[incident(o, source=f"s{worker}") for o in offsets],
                )
                store.list_incidents(limit=5)
        except BaseException as error:  # collected and re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=commit, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert store.count_incidents() == {"adversarial": 400}
    assert all(store.load_position(f"s{w}") == {"batch": 4} for w in range(4))


# ---------------------------------------------------------------------------- unstorable text

NUL_AND_SURROGATE = "GET /\x00admin \udcff end"
STORED_AS = "GET /\ufffdadmin \ufffd end"


def test_text_with_nul_and_lone_surrogates_is_stored_with_replacement_characters(
    store: Store,
) -> None:
    (incident_id,) = store.commit_batch(
        source="stream",
        position={"file": NUL_AND_SURROGATE, "offset": 1},
        incidents=[
            incident(
                1,
                record_excerpt=NUL_AND_SURROGATE,
                predicted_class="class\x00",
                explanation={"id\x00": NUL_AND_SURROGATE, "nested": [{"\ud800": "\x00"}]},
            )
        ],
        quarantine=[
            QuarantinedRecord(
                source="stream",
                offset_key="7",
                reason="not_json",
                detail=NUL_AND_SURROGATE,
                raw_excerpt=NUL_AND_SURROGATE,
            )
        ],
        drift_reports=[
            drift_report("w1", features=[{"name": "f\x00"}], top_features=["f\x00", "\udc80"])
        ],
    ).created_ids
    labelled = store.label_incident(incident_id, "dos\x00", actor="ana\udcff", note="\x00note")

    stored = store.get_incident(incident_id)
    assert stored.record_excerpt == STORED_AS
    assert stored.predicted_class == "class\ufffd"
    assert stored.explanation == {"id\ufffd": STORED_AS, "nested": [{"\ufffd": "\ufffd"}]}
    assert labelled.analyst_label == "dos\ufffd"
    label = store.list_labels()[0]
    assert (label.label, label.actor, label.note) == ("dos\ufffd", "ana\ufffd", "\ufffdnote")
    entry = store.list_quarantine()[0]
    assert (entry.detail, entry.raw_excerpt) == (STORED_AS, STORED_AS)
    report = store.list_drift_reports()[0]
    assert (report.features, report.top_features) == ([{"name": "f\ufffd"}], ["f\ufffd", "\ufffd"])
    assert store.load_position("stream") == {"file": STORED_AS, "offset": 1}
    assert json.dumps(stored.to_dict(), ensure_ascii=False).encode("utf-8")


def test_a_source_name_with_nul_resumes_from_its_own_position(store: Store) -> None:
    store.commit_batch(source="odd\x00name", position={"offset": 3})
    assert store.load_position("odd\x00name") == {"offset": 3}


def test_filters_with_unstorable_text_match_nothing(store: Store) -> None:
    store.commit_batch(
        source="a\ufffd",
        position=None,
        incidents=[incident(1, source="a\ufffd", kind="k\ufffd")],
        quarantine=[
            QuarantinedRecord(
                source="a\ufffd", offset_key="1", reason="not_json", detail="", raw_excerpt=""
            )
        ],
        drift_reports=[drift_report("w1", source="a\ufffd")],
    )
    # U+FFFD is a real character and can be searched for; NUL and lone surrogates never are.
    assert len(store.list_incidents(source="a\ufffd")) == 1
    assert store.list_incidents(source="a\x00") == []
    assert store.list_incidents(kind="k\x00") == []
    assert store.list_incidents(kind="k\ud800", source="a\ufffd") == []
    assert store.list_quarantine(source="a\x00") == []
    assert store.list_drift_reports(source="a\udcff") == []
    assert store.list_drift_reports(detector="mmd\x00") == []


# ---------------------------------------------------------------------------- incidents


def test_incidents_list_newest_first_with_keyset_pages(store: Store) -> None:
    created = store.commit_batch(
        source="stream",
        position=None,
        incidents=[incident(i, kind="drift" if i % 2 else "adversarial") for i in range(7)],
    ).created_ids

    first_page = store.list_incidents(limit=3)
    second_page = store.list_incidents(limit=3, before_id=first_page[-1].id)
    last_page = store.list_incidents(limit=3, before_id=second_page[-1].id)

    paged = [i.id for i in first_page + second_page + last_page]
    assert paged == sorted(created, reverse=True)
    assert len(last_page) == 1
    assert {i.kind for i in store.list_incidents(kind="drift")} == {"drift"}
    assert len(store.list_incidents(kind="drift")) == 3
    assert store.list_incidents(source="nowhere") == []
    assert len(store.list_incidents(status="open")) == 7
    assert store.count_incidents() == {"adversarial": 4, "drift": 3}


def test_get_incident_returns_what_was_committed(store: Store) -> None:
    created_at = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    new = incident(
        3,
        predicted_class="neptune",
        confidence=0.93,
        model_version="v7",
        created_at=created_at,
        explanation={"neighbours": np.array([1, 2]), "weight": np.float32(0.5), "bad": np.nan},
    )
    (incident_id,) = store.commit_batch(source="stream", position=None, incidents=[new]).created_ids

    stored = store.get_incident(incident_id)

    assert stored.created_at == created_at
    assert stored.created_at.tzinfo == UTC
    assert stored.updated_at.tzinfo == UTC
    assert (stored.kind, stored.severity, stored.status) == ("adversarial", "high", "open")
    assert (stored.source, stored.offset_key, stored.detector) == ("stream", "3", "mahalanobis")
    assert (stored.score, stored.p_value) == (6.5, 0.001)
    assert (stored.predicted_class, stored.confidence, stored.model_version) == (
        "neptune",
        0.93,
        "v7",
    )
    assert stored.explanation == {"neighbours": [1, 2], "weight": 0.5, "bad": None}
    assert stored.analyst_label is None
    as_json = json.loads(json.dumps(stored.to_dict()))
    assert as_json["created_at"] == "2024-05-01T10:00:00+00:00"


def test_record_excerpts_are_truncated(store: Store) -> None:
    long_text = "x" * 5000
    (incident_id,) = store.commit_batch(
        source="stream",
        position=None,
        incidents=[incident(1, record_excerpt=long_text)],
        quarantine=[
            QuarantinedRecord(
                source="stream", offset_key="9", reason="oversize", detail="", raw_excerpt=long_text
            )
        ],
    ).created_ids
    assert store.get_incident(incident_id).record_excerpt == "x" * 2000
    assert store.list_quarantine()[0].raw_excerpt == "x" * 2000


def test_missing_incident_raises_incident_not_found(store: Store) -> None:
    with pytest.raises(IncidentNotFound, match="12345"):
        store.get_incident(12345)
    with pytest.raises(IncidentNotFound):
        store.label_incident(12345, "normal", actor="ana")
    with pytest.raises(IncidentNotFound):
        store.set_status(12345, "resolved")
    assert store.list_labels() == []


def test_labelling_marks_the_incident_and_appends_a_label(store: Store) -> None:
    first, second = store.commit_batch(
        source="stream", position=None, incidents=[incident(1), incident(2)]
    ).created_ids

    labelled = store.label_incident(first, "neptune", actor="ana", note="SYN flood")
    store.label_incident(second, "normal", actor="bo")
    relabelled = store.label_incident(first, "smurf", actor="bo")

    assert (labelled.status, labelled.analyst_label) == ("labelled", "neptune")
    assert labelled.updated_at >= labelled.created_at
    assert relabelled.analyst_label == "smurf"
    labels = store.list_labels()
    assert [(x.incident_id, x.label, x.actor) for x in labels] == [
        (first, "neptune", "ana"),
        (second, "normal", "bo"),
        (first, "smurf", "bo"),
    ]
    assert labels[0].note == "SYN flood"
    assert [x.label for x in store.list_labels(since_id=labels[0].id)] == ["normal", "smurf"]
    assert len(store.list_labels(limit=1)) == 1
    assert labels[0].created_at.tzinfo == UTC
    assert json.dumps(labels[0].to_dict())


def test_set_status_moves_triage_and_rejects_unknown_states(store: Store) -> None:
    (incident_id,) = store.commit_batch(
        source="stream", position=None, incidents=[incident(1)]
    ).created_ids

    assert store.set_status(incident_id, "dismissed").status == "dismissed"
    assert [i.id for i in store.list_incidents(status="dismissed")] == [incident_id]
    with pytest.raises(ValueError, match="status"):
        store.set_status(incident_id, "closed")
    assert store.get_incident(incident_id).status == "dismissed"


# ---------------------------------------------------------------------------- quarantine, drift


def test_quarantine_is_listed_newest_first_and_counted_by_reason(store: Store) -> None:
    store.commit_batch(
        source="stream",
        position=None,
        quarantine=[quarantined(1), quarantined(2, "non_finite"), quarantined(3)],
    )
    store.commit_batch(
        source="other",
        position=None,
        quarantine=[
            QuarantinedRecord(
                source="other", offset_key="1", reason="bad_shape", detail="d", raw_excerpt="r"
            )
        ],
    )

    assert store.count_quarantine() == {"not_json": 2, "non_finite": 1, "bad_shape": 1}
    assert [q.offset_key for q in store.list_quarantine(source="stream")] == ["3", "2", "1"]
    assert len(store.list_quarantine(limit=2)) == 2
    entry = store.list_quarantine(source="other")[0]
    assert (entry.reason, entry.detail, entry.raw_excerpt) == ("bad_shape", "d", "r")
    assert json.dumps(entry.to_dict())


def test_drift_reports_round_trip_and_filter(store: Store) -> None:
    store.commit_batch(
        source="stream",
        position=None,
        drift_reports=[drift_report("w1"), drift_report("w2", detector="ks", rejected=False)],
    )

    reports = store.list_drift_reports()
    assert [(r.detector, r.window_end_key) for r in reports] == [("ks", "w2"), ("mmd", "w1")]
    mmd = store.list_drift_reports(detector="mmd")[0]
    assert (mmd.n_reference, mmd.n_window, mmd.statistic, mmd.p_value) == (1000, 500, 0.12, 0.004)
    assert mmd.rejected is True
    assert mmd.features == [{"name": "src_bytes", "p_value": 0.001}]
    assert mmd.top_features == ["src_bytes"]
    assert store.list_drift_reports(source="other") == []
    assert json.dumps(mmd.to_dict())


# ---------------------------------------------------------------------------- model registry


def test_exactly_one_model_version_is_active(store: Store) -> None:
    assert store.active_model_version() is None
    for version in ("v1", "v2", "v3"):
        store.add_model_version(
            version=version, algorithm="meta-sgd", path=f"/m/{version}", sha256=SHA, metrics={}
        )
    assert store.active_model_version() is None

    store.activate_model_version("v1")
    activated = store.activate_model_version("v3")

    assert activated.active
    assert [m.version for m in store.list_model_versions() if m.active] == ["v3"]
    with pytest.raises(ModelVersionNotFound, match="v9"):
        store.activate_model_version("v9")
    assert store.active_model_version() is not None
    assert store.active_model_version().version == "v3"  # type: ignore[union-attr]


def test_registering_with_activate_replaces_the_active_version(store: Store) -> None:
    store.add_model_version(
        version="v1", algorithm="maml", path="/m/1", sha256=SHA, metrics={"f1": 0.8}, activate=True
    )
    added = store.add_model_version(
        version="v2", algorithm="maml", path="/m/2", sha256=SHA, metrics={"f1": 0.9}, activate=True,
        settings={"min_class_calibration": 50, "min_reference_records_to_name": 3},
    )

    assert added.active and added.metrics == {"f1": 0.9}
    assert store.get_model_version("v2").settings == {
        "min_class_calibration": 50, "min_reference_records_to_name": 3}
    assert store.get_model_version("v1").settings is None
    assert added.created_at.tzinfo == UTC
    assert [(m.version, m.active) for m in store.list_model_versions()] == [
        ("v2", True),
        ("v1", False),
    ]
    with pytest.raises(ValueError, match="already registered"):
        store.add_model_version(version="v1", algorithm="maml", path="/m", sha256=SHA, metrics={})
    assert json.dumps(added.to_dict())


def test_concurrent_registrations_and_activations_leave_one_active(store: Store) -> None:
    errors: list[BaseException] = []

    def register_and_flip(worker: int) -> None:
        try:
            for step in range(4):
                store.add_model_version(
                    version=f"w{worker}-{step}",
                    algorithm="maml",
                    path="/m",
                    sha256=SHA,
                    metrics={},
                    activate=step % 2 == 0,
                )
                store.activate_model_version(f"w{worker}-0")
        except BaseException as error:  # collected and re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=register_and_flip, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    versions = store.list_model_versions()
    assert len(versions) == 12
    assert sum(m.active for m in versions) == 1


# ---------------------------------------------------------------------------- housekeeping


def test_purge_deletes_only_rows_older_than_the_cutoff(store: Store) -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    old = now - timedelta(days=40)
    recent = now - timedelta(days=5)
    old_id, _, recent_id = store.commit_batch(
        source="stream",
        position={"offset": 3},
        incidents=[
            incident(1, created_at=old),
            incident(2, created_at=old),
            incident(3, created_at=recent),
        ],
        drift_reports=[drift_report("w-old", created_at=old), drift_report("w-new")],
    ).created_ids
    store.label_incident(old_id, "normal", actor="ana")
    store.label_incident(recent_id, "normal", actor="ana")

    deleted = store.purge_older_than(30, now=now)

    assert deleted == {"labels": 1, "alert_outbox": 0, "incidents": 2, "quarantine": 0,
                       "drift_reports": 1}
    assert [i.id for i in store.list_incidents()] == [recent_id]
    assert [x.incident_id for x in store.list_labels()] == [recent_id]
    assert store.load_position("stream") == {"offset": 3}


def test_purge_of_everything_includes_quarantine(store: Store) -> None:
    store.commit_batch(source="stream", position=None, quarantine=[quarantined(1)])
    later = datetime.now(UTC) + timedelta(days=2)
    assert store.purge_older_than(1, now=later)["quarantine"] == 1
    assert store.list_quarantine() == []
    with pytest.raises(ValueError, match="days"):
        store.purge_older_than(-1)


def test_checkpoint_empties_the_sqlite_write_ahead_log(store: Store, store_url: str) -> None:
    store.commit_batch(source="stream", position=None, incidents=[incident(i) for i in range(50)])
    store.checkpoint()
    if store.dialect == "sqlite":
        database = Path(sa.make_url(store_url).database or "")
        wal = database.with_name(database.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
    assert store.count_incidents() == {"adversarial": 50}


def test_ping_answers_for_a_live_database(store: Store) -> None:
    assert store.ping()


# --- reference versions ------------------------------------------------------------------


def _reference_row(version: int | None, *, data: bytes = b"records", origin: str = "rolling",
                   key: str | None = None, **extra: object) -> NewReferenceVersion:
    import hashlib

    return NewReferenceVersion(
        source="stream", detector="drift", origin=origin, data=data,
        sha256=hashlib.sha256(data).hexdigest(), n_records=10,
        summary={"applied_candidates": [], **extra}, version=version,
        parent=None if version in (None, 1) else version - 1, incident_key=key)  # type: ignore[arg-type]


def test_reference_versions_keep_one_active_and_replays_add_nothing(store: Store) -> None:
    store.commit_batch(source="stream", position=None,
                       references=[_reference_row(1, origin="initial")])
    for version in range(2, 10):
        row = _reference_row(version, data=f"v{version}".encode())
        store.commit_batch(source="stream", position=None, references=[row])
        store.commit_batch(source="stream", position=None, references=[row])  # a replay
    versions = store.list_references(source="stream", detector="drift", limit=100)
    assert [v.version for v in versions] == list(range(9, 0, -1))
    assert [v.status for v in versions if v.status == "active"] == ["active"]
    assert store.active_reference("stream", "drift").version == 9  # type: ignore[union-attr]
    # Older rolling versions keep their row (the history), not their records.
    statuses = {v.version: v.status for v in versions}
    assert statuses[1] == "superseded"  # an initial version is never pruned
    assert [statuses[v] for v in range(2, 4)] == ["pruned", "pruned"]
    assert store.reference_data(store.find_reference("stream", "drift", 8).id) == b"v8"
    with pytest.raises(ValueError, match="pruned"):
        store.reference_data(store.find_reference("stream", "drift", 2).id)


def test_benign_drift_label_approves_the_window_kept_with_the_incident(store: Store) -> None:
    key = "window:120"
    drift = incident(120, kind="drift", offset_key=key, detector="drift")
    store.commit_batch(source="stream", position=None, incidents=[drift],
                       references=[_reference_row(None, origin="window", key=key)])
    store.commit_batch(source="stream", position=None,  # replayed: still one candidate
                       references=[_reference_row(None, origin="window", key=key)])
    [candidate] = store.list_references(candidates=True)
    assert candidate.status == "candidate"
    stored = store.list_incidents(kind="drift")[0]
    store.apply_label(stored.id, "benign", actor="ana")  # another label approves nothing
    assert store.approved_candidates("stream", "drift") == []
    store.apply_label(stored.id, "benign_drift", actor="ana")
    [approved] = store.approved_candidates("stream", "drift")
    assert (approved.id, approved.actor) == (candidate.id, "ana")


def test_reference_data_is_checked_against_its_sha256(store: Store) -> None:
    row = _reference_row(1, origin="initial")
    store.commit_batch(source="stream", position=None,
                       references=[NewReferenceVersion(**{**row.__dict__, "sha256": SHA})])
    with pytest.raises(ValueError, match="sha256"):
        store.reference_data(store.find_reference("stream", "drift", 1).id)


def test_rollback_copies_an_old_version_into_a_new_active_one(store: Store) -> None:
    for version in (1, 2):
        store.commit_batch(source="stream", position=None, references=[
            _reference_row(version, data=f"v{version}".encode(),
                           origin="initial" if version == 1 else "approved")])
    rolled = store.rollback_reference("stream", "drift", 1, actor="ana")
    assert (rolled.version, rolled.origin, rolled.parent, rolled.status) == (
        3, "rollback", 1, "active")
    assert store.reference_data(rolled.id) == b"v1"
    with pytest.raises(ReferenceVersionNotFound):
        store.rollback_reference("stream", "drift", 7, actor="ana")


@pytest.mark.postgres
def test_one_replica_at_a_time_runs_retention(postgres_url: str) -> None:
    # Replicas share one PostgreSQL: while one holds the retention lock, another's purge is
    # skipped (it deletes nothing and says so), and it runs once the lock is free.
    store = Store(postgres_url)
    store.upgrade()
    old = datetime.now(UTC) - timedelta(days=40)
    store.commit_batch(source="stream", position=None, quarantine=[quarantined(1)],
                       drift_reports=[drift_report("w-old", created_at=old)])
    holder = sa.create_engine(postgres_url)
    try:
        with holder.begin() as connection:
            assert connection.execute(sa.text(
                "SELECT pg_try_advisory_xact_lock(1297306196, hashtext(current_schema()))"  # MSRT
            )).scalar()
            skipped = store.purge_older_than(30, now=datetime.now(UTC) + timedelta(days=40))
            assert set(skipped.values()) == {0}
        assert len(store.list_drift_reports()) == 1
        deleted = store.purge_older_than(30, now=datetime.now(UTC) + timedelta(days=40))
        assert deleted["drift_reports"] == 1 and deleted["quarantine"] == 1
    finally:
        holder.dispose()
        store.close()
