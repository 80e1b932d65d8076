"""The audit log on every Store backend (SQLite and real PostgreSQL).

Each audited change writes exactly one row, with its actor, action, target and origin, in the
transaction of the change: a change that fails leaves no row, and a row that cannot be
written takes its change down with it. Rows are listed and filtered, survive retention, and
the store offers no way to update or delete them.
"""

from __future__ import annotations

import hashlib
import inspect
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

import storage.feedback
import storage.registry
from storage import (
    AUDIT_ACTIONS,
    IncidentExample,
    ModelVersionNotFound,
    NewIncident,
    NewReferenceVersion,
    Store,
    StoreRejected,
)
from storage.audit import AuditStore, agent_origin, cli_origin, record_audit
from tests.pg import private_schema_url

SHA = "0" * 64
ORIGIN = "cli:ana@workstation"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        with Store(f"sqlite:///{tmp_path / 'audit.db'}") as sqlite_store:
            sqlite_store.upgrade()
            yield sqlite_store
        return
    with private_schema_url("metasentry_audit") as url, Store(url) as pg_store:
        pg_store.upgrade()
        yield pg_store


def _incident(store: Store, key: str, *, examples: int = 2, kind: str = "novel",
              detector: str = "classifier", created_at: datetime | None = None) -> int:
    result = store.commit_batch(
        source="s", position=None,
        incidents=[NewIncident(kind=kind, severity="high", source="s", offset_key=key,
                               detector=detector, created_at=created_at)],
        examples=[IncidentExample(source="s", incident_offset_key=key, detector=detector,
                                  offset_key=f"{key}:{i}", ordinal=i, fields={"a": i},
                                  textual=False, features=[float(i)])
                  for i in range(examples)])
    return result.created_ids[0]


def _reference(version: int | None, *, data: bytes, key: str | None = None,
               origin: str = "rolling") -> NewReferenceVersion:
    return NewReferenceVersion(
        source="s", detector="drift", origin=origin, data=data,
        sha256=hashlib.sha256(data).hexdigest(), n_records=3,
        summary={"applied_candidates": []}, version=version,
        parent=None if version in (None, 1) else version - 1, incident_key=key)  # type: ignore[arg-type]


def _version(store: Store, name: str, *, activate: bool = False, parent: str | None = None
             ) -> None:
    store.add_model_version(version=name, algorithm="knn", path="", sha256=SHA, metrics={},
                            activate=activate, parent=parent)


# --- one row per audited change, with who, what and from where ------------------------------


def test_a_label_writes_one_label_add_row(store: Store) -> None:
    incident_id = _incident(store, "k1")
    _, labels = store.apply_label(incident_id, "neptune", actor="ana", origin=ORIGIN)

    [row] = store.list_audit()
    assert (row.actor, row.action, row.target, row.origin) == (
        "ana", "label.add", f"incident:{incident_id}", ORIGIN)
    assert row.detail == {"label": "neptune", "label_ids": [x.id for x in labels],
                          "status": "pending"}
    assert row.at.tzinfo is not None and abs(datetime.now(UTC) - row.at) < timedelta(minutes=1)


def test_a_change_made_by_the_process_itself_has_the_agent_origin(store: Store) -> None:
    store.apply_label(_incident(store, "k1"), "neptune", actor="ana")
    assert store.list_audit()[0].origin == agent_origin() == f"agent:{socket.gethostname()}"
    assert cli_origin().startswith("cli:") and cli_origin().endswith(f"@{socket.gethostname()}")


def test_a_failed_label_leaves_neither_the_change_nor_a_row(store: Store) -> None:
    incident_id = _incident(store, "k1")
    with pytest.raises(ValueError, match="no example record"):
        store.apply_label(incident_id, "neptune", actor="ana", records=["missing"],
                          origin=ORIGIN)
    assert store.get_incident(incident_id).analyst_label is None
    assert store.list_audit() == []


def test_a_row_that_cannot_be_written_takes_its_change_down(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    incident_id = _incident(store, "k1")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit insert failed")

    monkeypatch.setattr(storage.feedback, "record_audit", refuse)
    with pytest.raises(RuntimeError, match="audit insert failed"):
        store.apply_label(incident_id, "neptune", actor="ana", origin=ORIGIN)
    assert store.get_incident(incident_id).analyst_label is None
    assert store.list_labels() == []

    _version(store, "1", activate=True)
    _version(store, "2", parent="1")
    monkeypatch.setattr(storage.registry, "record_audit", refuse)
    with pytest.raises(RuntimeError, match="audit insert failed"):
        store.activate_model_version("2", actor="ops", origin=ORIGIN)
    assert store.active_model_version().version == "1"  # type: ignore[union-attr]


def test_label_status_moves_are_audited_with_their_actor(store: Store) -> None:
    incident_id = _incident(store, "k1", examples=3)
    _, labels = store.apply_label(incident_id, "neptune", actor="ana", origin=ORIGIN)
    first, second, third = (x.id for x in labels)

    store.set_label_status([first], "held", reason="neighbours disagree")
    store.release_label(first, actor="lead", origin="api:10.0.0.7")
    store.set_label_status([second, third], "used", model_version="2")
    store.set_label_status([first], "pending")  # not a move the log records

    hold, release, use = sorted(store.list_audit(action=None), key=lambda r: r.id)[1:]
    assert (hold.actor, hold.action, hold.target, hold.origin) == (
        "agent", "label.hold", f"label:{first}", agent_origin())
    assert hold.detail["reason"] == "neighbours disagree"
    assert (release.actor, release.action, release.target, release.origin) == (
        "lead", "label.release", f"label:{first}", "api:10.0.0.7")
    assert (use.actor, use.action, use.target) == ("agent", "label.use", "model:2")
    assert use.detail == {"label_ids": [second, third], "reason": None, "model_version": "2"}
    assert len(store.list_audit()) == 4


def test_a_release_that_is_refused_writes_no_row(store: Store) -> None:
    _, [label] = store.apply_label(_incident(store, "k1", examples=1), "x", actor="ana")
    with pytest.raises(ValueError, match="only held or rejected"):
        store.release_label(label.id, actor="lead", origin=ORIGIN)
    assert [r.action for r in store.list_audit()] == ["label.add"]


def test_model_activation_and_rollback_name_the_previous_version(store: Store) -> None:
    _version(store, "1", activate=True)  # the agent's own first version
    _version(store, "2", parent="1")  # a candidate: nothing changed what is served
    store.activate_model_version("2", actor="ops", origin=ORIGIN)
    store.activate_model_version("1", actor="ops", origin="api:10.0.0.9", rollback=True)

    rollback, activate, first = store.list_audit()
    assert (first.actor, first.action, first.target, first.origin) == (
        "agent", "model.activate", "model:1", agent_origin())
    assert first.detail["previous"] is None
    assert (activate.actor, activate.action, activate.target, activate.origin) == (
        "ops", "model.activate", "model:2", ORIGIN)
    assert activate.detail == {"previous": "1"}
    assert (rollback.action, rollback.target, rollback.origin) == (
        "model.rollback", "model:1", "api:10.0.0.9")
    assert rollback.detail == {"previous": "2"}

    with pytest.raises(ModelVersionNotFound):
        store.activate_model_version("99", actor="ops", origin=ORIGIN)
    assert len(store.list_audit()) == 3


def test_reference_rollback_and_approval_are_audited(store: Store) -> None:
    for version in (1, 2):
        store.commit_batch(source="s", position=None, references=[
            _reference(version, data=f"v{version}".encode(),
                       origin="initial" if version == 1 else "rolling")])
    store.rollback_reference("s", "drift", 1, actor="ana", origin=ORIGIN)
    [rollback] = store.list_audit()
    assert (rollback.actor, rollback.action, rollback.target, rollback.origin) == (
        "ana", "reference.rollback", "reference:s/drift/v3", ORIGIN)
    assert rollback.detail == {"copy_of": 1, "previous_active": 2}

    key = "window:9"
    drift = _incident(store, key, examples=0, kind="drift", detector="drift")
    store.commit_batch(source="s", position=None,
                       references=[_reference(None, data=b"w", key=key, origin="window")])
    store.apply_label(drift, "benign_drift", actor="lead", origin="api:10.0.0.8")
    approve, label = store.list_audit(limit=2)
    assert (label.action, label.target, label.detail["status"]) == (
        "label.add", f"incident:{drift}", "noted")
    assert (approve.actor, approve.action, approve.target, approve.origin) == (
        "lead", "reference.approve", "reference:s/drift/candidate", "api:10.0.0.8")
    assert approve.detail == {"incident_id": drift, "incident_key": key, "candidates": 1}


# --- reading ------------------------------------------------------------------------------------


def test_list_filters_by_action_actor_and_time_and_pages(store: Store) -> None:
    for n, actor in enumerate(["ana", "bob", "ana"]):
        store.apply_label(_incident(store, f"k{n}"), "x", actor=actor, origin=ORIGIN)
    _version(store, "1", activate=True)

    assert [r.action for r in store.list_audit()] == ["model.activate", *["label.add"] * 3]
    assert len(store.list_audit(action="label.add")) == 3
    assert [r.actor for r in store.list_audit(actor="ana")] == ["ana", "ana"]
    assert store.list_audit(actor="nobody") == []
    newest = store.list_audit(limit=2)
    assert len(newest) == 2
    rest = store.list_audit(before_id=newest[-1].id)
    assert [r.id for r in rest] == [r.id for r in store.list_audit()][2:]
    assert len(store.list_audit(since=datetime.now(UTC) - timedelta(minutes=5))) == 4
    assert store.list_audit(since=datetime.now(UTC) + timedelta(minutes=5)) == []
    with pytest.raises(ValueError, match="action must be one of"):
        store.list_audit(action="label.delete")
    with pytest.raises(ValueError, match="timezone-aware"):
        store.list_audit(since=datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose


# --- append-only ---------------------------------------------------------------------------


def test_retention_never_deletes_audit_rows(store: Store) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    incident_id = _incident(store, "old", examples=0, created_at=old)
    store.apply_label(incident_id, "x", actor="ana", origin=ORIGIN)  # noted: purgeable

    deleted = store.purge_older_than(0)
    assert deleted["incidents"] == 1 and "audit_log" not in deleted
    [row] = store.list_audit()
    assert row.target == f"incident:{incident_id}"


def test_the_store_offers_no_way_to_change_or_remove_a_row(store: Store) -> None:
    audit_methods = {name for name, _ in inspect.getmembers(Store, callable)
                     if "audit" in name and not name.startswith("__")}
    assert audit_methods == {"list_audit"}
    assert [name for name, _ in inspect.getmembers(AuditStore, inspect.isfunction)] == [
        "list_audit"]


def _audit_triggers(store: Store) -> set[str]:
    query = ("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
             if store.dialect == "sqlite" else
             "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass "
             "AND NOT tgisinternal")
    with store._session("test") as connection:  # noqa: SLF001
        return {row[0] for row in connection.execute(sa.text(query))}


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET actor = 'mallory'",
    # PostgreSQL's statement trigger refuses even a statement that matches no row; SQLite's
    # triggers are per row, and there it changes nothing anyway.
    "UPDATE audit_log SET detail = '{}' WHERE id = -1",
    "DELETE FROM audit_log",
    "DELETE FROM audit_log WHERE action = 'label.add'",
    "TRUNCATE audit_log",
])
def test_the_database_refuses_to_change_or_remove_a_row(store: Store, statement: str) -> None:
    if store.dialect == "sqlite" and ("TRUNCATE" in statement or "id = -1" in statement):
        pytest.skip("SQLite has no TRUNCATE and no statement-level trigger")
    incident_id = _incident(store, "k", examples=0)
    store.apply_label(incident_id, "x", actor="ana", origin=ORIGIN)
    with pytest.raises((IntegrityError, StoreRejected)) as refused:
        with store._session("test", write=True) as connection:  # noqa: SLF001
            connection.execute(sa.text(statement))
    assert "audit_log is append-only" in f"{refused.value} {refused.value.__cause__}"
    [row] = store.list_audit()
    assert (row.actor, row.action) == ("ana", "label.add")


def test_the_downgrade_drops_the_triggers_and_the_upgrade_restores_them(store: Store) -> None:
    from alembic import command

    from storage.migrations import alembic_config

    assert _audit_triggers(store)
    store.apply_label(_incident(store, "k", examples=0), "x", actor="ana", origin=ORIGIN)
    with store._session("test", write=True, maintenance=True) as connection:  # noqa: SLF001
        command.downgrade(alembic_config(connection), "0006")
    assert _audit_triggers(store) == set()
    with store._session("test", write=True) as connection:  # noqa: SLF001
        connection.execute(sa.text("DELETE FROM audit_log"))
    assert store.list_audit() == []

    store.upgrade()
    assert store.at_head() and _audit_triggers(store)
    store.apply_label(_incident(store, "k2", examples=0), "x", actor="ana", origin=ORIGIN)
    with pytest.raises((IntegrityError, StoreRejected)):
        with store._session("test", write=True) as connection:  # noqa: SLF001
            connection.execute(sa.text("DELETE FROM audit_log"))


def test_the_vocabulary_is_enforced_by_the_code_and_the_database(store: Store) -> None:
    with store._session("test", write=True) as connection:  # noqa: SLF001
        with pytest.raises(ValueError, match="audit action must be one of"):
            record_audit(connection, actor="x", action="label.delete", target="t", origin="o")
    audit_log = sa.table("audit_log", sa.column("at"), sa.column("actor"),
                         sa.column("action"), sa.column("target"), sa.column("origin"),
                         sa.column("detail", sa.JSON()))
    with pytest.raises((IntegrityError, StoreRejected)):
        with store._session("test", write=True) as connection:  # noqa: SLF001
            connection.execute(audit_log.insert().values(
                at=datetime.now(UTC).replace(tzinfo=None), actor="x", action="label.delete",
                target="t", origin="o", detail={}))
    assert "label.add" in AUDIT_ACTIONS and store.list_audit() == []
