"""The model registry in the store: versions, their lifecycle, weight files, the adaptation lock.

Every version row says where it came from (parent, trigger, the labels it enrolls, the base
weights) and what it showed on the canary set; its ``status`` moves candidate → active or
rejected, active → retired when another goes live. Exactly one version is active, enforced by
the database (a partial unique index), and activation is one transaction that retires the
previous version, so a crash never leaves two — or a half-written one — serving.

Meta-trained weights are stored as files (``model_artifacts``) keyed by their directory sha256,
so an agent on another host loads exactly the weights a version was built on, and verifies them.
"""

from __future__ import annotations

import fcntl
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select, text, update
from sqlalchemy.exc import IntegrityError

from storage.audit import AGENT_ACTOR, record_audit
from storage.models import Base
from storage.records import (
    MAX_MODEL_VERSION_CHARS,
    MODEL_STATUSES,
    ModelVersion,
    ModelVersionNotFound,
    require_text,
)

logger = logging.getLogger(__name__)

_MODEL_VERSIONS: Table = Base.metadata.tables["model_versions"]
_ARTIFACTS: Table = Base.metadata.tables["model_artifacts"]
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_ADAPTATION_LOCK_KEY = 0x4D534144  # "MSAD": any constant shared by every replica
_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class RegistryStore:
    """Model versions and artifacts; mixed into :class:`storage.Store`."""

    _session: Callable[..., AbstractContextManager[Connection]]
    _engine: Engine

    def add_model_version(
        self,
        *,
        version: str,
        algorithm: str,
        path: str,
        sha256: str,
        metrics: Mapping[str, Any],
        activate: bool = False,
        status: str | None = None,
        parent: str | None = None,
        base_sha256: str | None = None,
        benign_class: str | None = None,
        classes: Sequence[str] | None = None,
        label_ids: Sequence[int] = (),
        trigger: str | None = None,
        reasons: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        actor: str = AGENT_ACTOR,
        origin: str | None = None,
    ) -> ModelVersion:
        """Register a version; with ``activate`` it also becomes the one in service, atomically.

        An activation is audited (``model.activate`` by ``actor``, the agent unless told).
        """
        require_text("version", version, MAX_MODEL_VERSION_CHARS)
        require_text("algorithm", algorithm, 100)
        if len(path) > 4096:
            raise ValueError(f"path must be at most 4096 characters, got {len(path)}.")
        if not _SHA256_PATTERN.fullmatch(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}.")
        status = status or ("active" if activate else "candidate")
        if status not in MODEL_STATUSES:
            raise ValueError(f"status must be one of {list(MODEL_STATUSES)}, got {status!r}.")
        if (status == "active") != activate:
            raise ValueError("a version is registered active exactly when activate=True.")
        now = datetime.now(UTC)
        values = {
            "version": version, "created_at": now, "algorithm": algorithm,
            "path": path, "sha256": sha256, "metrics": dict(metrics), "active": False,
            "status": "candidate" if activate else status, "parent": parent,
            "base_sha256": base_sha256, "benign_class": benign_class,
            "classes": list(classes) if classes is not None else None,
            "label_ids": [int(i) for i in label_ids], "trigger": trigger,
            "reasons": list(reasons) if reasons is not None else None,
            "settings": dict(settings) if settings is not None else None,
        }
        with self._session("add_model_version", write=True) as connection:
            self._lock_registry(connection)
            try:
                connection.execute(_MODEL_VERSIONS.insert().values(**values))
            except IntegrityError:
                raise ValueError(f"model version {version!r} is already registered.") from None
            if activate:
                previous = self._activate(connection, version)
                record_audit(connection, actor=actor, action="model.activate",
                             target=f"model:{version}", origin=origin, now=now,
                             detail={"previous": previous, "trigger": trigger})
            return self._fetch_model_version(connection, version)

    def next_model_version(self) -> str:
        """The next version name: one more than the highest numbered version so far."""
        with self._session("next_model_version") as connection:
            names: list[str] = list(connection.execute(select(_MODEL_VERSIONS.c.version)).scalars())
        numbers = [int(name) for name in names if name.isdigit()]
        return str(max(numbers, default=0) + 1)

    def activate_model_version(self, version: str, *, actor: str = AGENT_ACTOR,
                               origin: str | None = None, rollback: bool = False
                               ) -> ModelVersion:
        """Make ``version`` the only active model, in one transaction (the old one retires).

        Audited in that transaction: ``model.activate``, or ``model.rollback`` when
        ``rollback`` says the operator asked to go back to the version the active one replaced.
        """
        with self._session("activate_model_version", write=True) as connection:
            self._lock_registry(connection)
            previous = self._activate(connection, version)
            record_audit(connection, actor=actor,
                         action="model.rollback" if rollback else "model.activate",
                         target=f"model:{version}", origin=origin,
                         detail={"previous": previous})
            return self._fetch_model_version(connection, version)

    def active_model_version(self) -> ModelVersion | None:
        query = select(_MODEL_VERSIONS).where(_MODEL_VERSIONS.c.active.is_(True))
        with self._session("active_model_version") as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else ModelVersion(**row._asdict())

    def get_model_version(self, version: str) -> ModelVersion:
        query = select(_MODEL_VERSIONS).where(_MODEL_VERSIONS.c.version == version)
        with self._session("get_model_version") as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            raise ModelVersionNotFound(version)
        return ModelVersion(**row._asdict())

    def list_model_versions(self) -> list[ModelVersion]:
        """Newest registration first."""
        query = select(_MODEL_VERSIONS).order_by(
            _MODEL_VERSIONS.c.created_at.desc(), _MODEL_VERSIONS.c.version.desc()
        )
        with self._session("list_model_versions") as connection:
            return [ModelVersion(**row._asdict()) for row in connection.execute(query)]

    # --- weight files ------------------------------------------------------------------------

    def save_model_artifact(self, sha256: str, files: Mapping[str, bytes]) -> None:
        """Store the files of a model directory under its sha256 (idempotent)."""
        if not _SHA256_PATTERN.fullmatch(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}.")
        now = datetime.now(UTC)
        with self._session("save_model_artifact", write=True) as connection:
            present: set[str] = set(connection.execute(select(_ARTIFACTS.c.name).where(
                _ARTIFACTS.c.sha256 == sha256)).scalars())
            rows = [{"sha256": sha256, "name": name, "created_at": now, "content": content}
                    for name, content in sorted(files.items()) if name not in present]
            if rows:
                connection.execute(_ARTIFACTS.insert(), rows)

    def load_model_artifact(self, sha256: str) -> dict[str, bytes] | None:
        """The files stored under ``sha256``, or None if there are none."""
        query = select(_ARTIFACTS.c.name, _ARTIFACTS.c.content).where(
            _ARTIFACTS.c.sha256 == sha256)
        files: dict[str, bytes] = {}
        with self._session("load_model_artifact") as connection:
            for row in connection.execute(query):
                files[str(row.name)] = bytes(row.content)
        return files or None

    # --- one adaptation at a time ------------------------------------------------------------

    @contextmanager
    def adaptation_lock(self, *, timeout_s: float = 0.0) -> Iterator[bool]:
        """Hold the lock that lets one process (of all sharing the database) adapt.

        Yields whether it was acquired within ``timeout_s``. PostgreSQL: a session advisory
        lock on a dedicated connection (released if the process dies). SQLite: a lock file
        beside the database, plus a lock per process for its threads.
        """
        if self._engine.dialect.name == "postgresql":
            with self._postgres_lock(timeout_s) as acquired:
                yield acquired
            return
        with self._file_lock(timeout_s) as acquired:
            yield acquired

    @contextmanager
    def _postgres_lock(self, timeout_s: float) -> Iterator[bool]:
        deadline_ms = max(0, int(timeout_s * 1000))
        with self._engine.connect() as connection:
            if deadline_ms:
                connection.execute(text("SELECT set_config('lock_timeout', :ms, false)"),
                                   {"ms": str(deadline_ms)})
                try:
                    connection.execute(text("SELECT pg_advisory_lock(:key)"),
                                       {"key": _ADAPTATION_LOCK_KEY})
                    acquired = True
                except Exception:  # lock_timeout: someone else holds it
                    connection.rollback()
                    acquired = False
            else:
                acquired = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                                   {"key": _ADAPTATION_LOCK_KEY}).scalar())
            connection.commit()
            try:
                yield acquired
            finally:
                if acquired:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                       {"key": _ADAPTATION_LOCK_KEY})
                    connection.commit()

    @contextmanager
    def _file_lock(self, timeout_s: float) -> Iterator[bool]:
        database = str(self._engine.url.database or "")
        key = database or ":memory:"
        with _process_locks_guard:
            local = _process_locks.setdefault(key, threading.Lock())
        held = (local.acquire(timeout=timeout_s) if timeout_s > 0
                else local.acquire(blocking=False))
        if not held:
            yield False
            return
        try:
            if not database or database == ":memory:":
                yield True
                return
            path = Path(database).with_name(Path(database).name + ".adapt.lock")
            with path.open("a") as handle:
                acquired = _flock(handle.fileno(), timeout_s)
                try:
                    yield acquired
                finally:
                    if acquired:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            local.release()

    # --- helpers ------------------------------------------------------------------------------

    def _lock_registry(self, connection: Connection) -> None:
        """Serialise registry writes across replicas (SQLite's write lock already does).

        Taken before anything else in the transaction: a replica that sees another's
        activation only after its own insert would otherwise violate the one-active index or
        deadlock upgrading its lock.
        """
        if self._engine.dialect.name == "postgresql":
            connection.execute(text("LOCK TABLE model_versions IN SHARE ROW EXCLUSIVE MODE"))

    @staticmethod
    def _activate(connection: Connection, version: str) -> str | None:
        """Activate ``version``; returns the version that was active before, if any."""
        # Two statements, in this order: the partial unique index forbids two active rows
        # even for an instant. The first writes before anything reads, so SQLite takes its
        # write lock up front (a read first would fail to upgrade under concurrent writers).
        previous: str | None = connection.execute(
            update(_MODEL_VERSIONS)
            .where(_MODEL_VERSIONS.c.active.is_(True), _MODEL_VERSIONS.c.version != version)
            .values(active=False, status="retired")
            .returning(_MODEL_VERSIONS.c.version)
        ).scalar_one_or_none()
        if previous is None:  # nothing retired: none was active, or ``version`` already is
            previous = connection.execute(select(_MODEL_VERSIONS.c.version).where(
                _MODEL_VERSIONS.c.active.is_(True))).scalar_one_or_none()
        activated = connection.execute(
            update(_MODEL_VERSIONS).where(_MODEL_VERSIONS.c.version == version)
            .values(active=True, status="active")
        )
        if activated.rowcount == 0:
            raise ModelVersionNotFound(version)
        logger.info("model version %s is now active", version)
        return previous

    @staticmethod
    def _fetch_model_version(connection: Connection, version: str) -> ModelVersion:
        query = select(_MODEL_VERSIONS).where(_MODEL_VERSIONS.c.version == version)
        return ModelVersion(**connection.execute(query).one()._asdict())

    def count_model_versions(self) -> dict[str, int]:
        """Versions per status."""
        query = select(_MODEL_VERSIONS.c.status, func.count()).group_by(_MODEL_VERSIONS.c.status)
        with self._session("count_model_versions") as connection:
            return {str(row[0]): int(row[1]) for row in connection.execute(query)}


def _flock(descriptor: int, timeout_s: float) -> bool:
    """An exclusive lock on the file, waiting up to ``timeout_s`` (0: do not wait)."""
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
