"""What MetaSentry remembers: incidents, labels, quarantine, drift reports, positions, models.

SQLite by default, PostgreSQL by URL; the schema is managed by the Alembic migrations shipped
inside this package (``Store.upgrade``).
"""

from __future__ import annotations

from storage.records import (
    SEVERITIES,
    STATUSES,
    CommitResult,
    DriftReportRow,
    Incident,
    IncidentNotFound,
    Label,
    ModelVersion,
    ModelVersionNotFound,
    NewDriftReport,
    NewIncident,
    QuarantinedRecord,
    QuarantineEntry,
    StoreUnavailable,
)
from storage.store import Store

__all__ = [
    "SEVERITIES",
    "STATUSES",
    "CommitResult",
    "DriftReportRow",
    "Incident",
    "IncidentNotFound",
    "Label",
    "ModelVersion",
    "ModelVersionNotFound",
    "NewDriftReport",
    "NewIncident",
    "QuarantineEntry",
    "QuarantinedRecord",
    "Store",
    "StoreUnavailable",
]
